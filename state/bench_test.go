package state

import (
	"fmt"
	"testing"
	"time"
)

// kept fills an account with n delivered, kept messages (KEEP=true), as
// an idle poll of a large mailbox finds them.
func kept(b *testing.B, n int) (*Account, []string, map[string]bool) {
	b.Helper()
	l, err := Open(b.TempDir(), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	a := l.Account(AccountID("pop.example.com", "support@example.com"))
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ids := make([]string, n)
	listed := make(map[string]bool, n)
	var batch []*Entry
	for i := range n {
		e := &Entry{UIDL: fmt.Sprintf("%08x%024x", i, i*7919), FirstSeen: now, Size: 20_000 + int64(i%5000),
			SHA256: fmt.Sprintf("%064x", i), Key: fmt.Sprintf("ph1_%040x", i)}
		e.Sink("helpdesk").DeliveredAt = now
		e.Sink("archive").DeliveredAt = now
		ids[i], listed[e.ID()] = e.ID(), true
		if batch = append(batch, e); len(batch) == 5000 {
			if err := a.Put(batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := a.Put(batch...); err != nil {
		b.Fatal(err)
	}
	return a, ids, listed
}

// BenchmarkIdlePoll is the ledger's share of a poll that finds nothing
// new in a mailbox of 100,000 kept messages: look every listed message up,
// then age what has left the listing.
func BenchmarkIdlePoll(b *testing.B) {
	a, ids, listed := kept(b, 100_000)
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	b.Run("get", func(b *testing.B) {
		for b.Loop() {
			got, err := a.Get(ids)
			if err != nil || len(got) != len(ids) {
				b.Fatal(len(got), err)
			}
		}
	})
	b.Run("prune", func(b *testing.B) {
		for b.Loop() {
			if _, err := a.Prune(listed, now, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
}
