// Package shard splits accounts between replicas of pophook by rendezvous
// (highest random weight) hashing: each account goes to the shard whose
// hash of (account, shard index) is highest. Every replica computes the
// same owner without talking to the others, and when the number of shards
// changes from n to n+1 only the accounts the new shard wins move, about
// one in n+1.
package shard

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Shard is this instance's part: Index of Count. The zero value (Count 0)
// owns every account.
type Shard struct {
	Index, Count int
}

// Parse reads "INDEX/COUNT", with 0 <= INDEX < COUNT.
func Parse(s string) (Shard, error) {
	i, n, ok := strings.Cut(strings.TrimSpace(s), "/")
	index, err1 := strconv.Atoi(i)
	count, err2 := strconv.Atoi(n)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return Shard{}, fmt.Errorf("%q is not INDEX/COUNT, such as 0/3", s)
	case count < 1:
		return Shard{}, fmt.Errorf("%q: the count must be at least 1", s)
	case index < 0 || index >= count:
		return Shard{}, fmt.Errorf("%q: the index must be from 0 to %d", s, count-1)
	}
	return Shard{Index: index, Count: count}, nil
}

func (s Shard) String() string {
	if s.Count == 0 {
		return "all"
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// Owns reports whether this shard fetches the account identified by key
// (its server and user, so that renaming an account does not move it).
func (s Shard) Owns(key string) bool {
	return s.Count <= 1 || Owner(key, s.Count) == s.Index
}

// Owner is the index of the shard, of count, that owns key.
func Owner(key string, count int) int {
	best, owner := uint64(0), 0
	for i := range count {
		h := fnv.New64a()
		h.Write([]byte(key))
		var idx [8]byte
		binary.BigEndian.PutUint64(idx[:], uint64(i))
		h.Write(idx[:])
		// FNV's last bytes barely mix: finish with a 64-bit mixer so
		// neighbouring indexes score independently.
		if w := mix(h.Sum64()); w > best || i == 0 {
			best, owner = w, i
		}
	}
	return owner
}

// mix is the finaliser of SplitMix64.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
