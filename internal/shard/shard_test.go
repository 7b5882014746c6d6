package shard

import (
	"fmt"
	"testing"
)

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("pop%d.example.com\x00user%d@example.com", i%7, i)
	}
	return out
}

// 3 shards over 1000 accounts: each account exactly once, each shard
// within 10 % of an even third.
func TestCoverage(t *testing.T) {
	counts := make([]int, 3)
	for _, k := range keys(1000) {
		owners := 0
		for i := range 3 {
			if (Shard{Index: i, Count: 3}).Owns(k) {
				owners++
				counts[i]++
			}
		}
		if owners != 1 {
			t.Fatalf("%q owned by %d shards", k, owners)
		}
	}
	for i, c := range counts {
		if c < 300 || c > 367 {
			t.Errorf("shard %d/3 owns %d of 1000, want 333 ± 10 %%", i, c)
		}
	}
	t.Logf("1000 accounts over 3 shards: %v", counts)
}

// From 3 to 4 shards about a quarter of the accounts move, all to the new
// shard.
func TestRebalance(t *testing.T) {
	moved := 0
	for _, k := range keys(1000) {
		before, after := Owner(k, 3), Owner(k, 4)
		if before != after {
			moved++
			if after != 3 {
				t.Errorf("%q moved from %d to %d, not to the new shard", k, before, after)
			}
		}
	}
	if moved < 200 || moved > 300 {
		t.Errorf("%d of 1000 accounts moved from 3 to 4 shards, want about 250", moved)
	}
	t.Logf("3 -> 4 shards: %d of 1000 accounts moved", moved)
}

func TestParse(t *testing.T) {
	for in, want := range map[string]Shard{"0/1": {0, 1}, "2/3": {2, 3}, " 1/4 ": {1, 4}} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "3", "3/3", "-1/3", "a/b", "1/0", "$(POD_INDEX)/3"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if !(Shard{}).Owns("anything") {
		t.Error("the zero Shard must own every account")
	}
}
