package worker

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// A poll of a large kept mailbox where nothing changed reads and plans
// every ledger entry to conclude that there is nothing to do. When a poll
// concludes that, it leaves an idle mark in the ledger: a digest of its
// listing and of everything else the conclusion rested on, and how long
// it holds. The next poll whose listing has the same digest within that
// time does nothing more: it neither reads the entries nor plans.
//
// The mark is only left when the run wrote nothing (state.SetIdleMark
// refuses once the entries changed since they were read), every listed
// message was delivered or skipped, nothing was due for deletion and no
// problem came up. It holds until the first moment time alone could
// change the plan: a kept message coming due for deletion, an entry of
// a message gone from the server coming due for removal; and never
// longer than idleMaxSpan. Any change to the account's entries
// (a delivery, a deletion, pophook ledger retry or forget) removes it,
// and a changed configuration changes the digest.
const (
	idleMaxSpan = time.Hour
	// Only listings this large get a mark: below, planning costs less
	// than keeping the mark would.
	idleAbove = readAheadAbove
)

// idleDigest condenses the listing and what the plan depends on besides
// the ledger: the account's sinks and their configuration, its policies.
func (r *run) idleDigest(list []pop3.MessageInfo) []byte {
	a := r.Account
	h := sha256.New()
	fmt.Fprintf(h, "pophook idle 1\nsinks %q\n", a.Sinks)
	for _, s := range slices.Sorted(maps.Keys(r.SinkConfig)) {
		fmt.Fprintf(h, "sink %q %q\n", s, r.SinkConfig[s])
	}
	fmt.Fprintf(h, "max %d keep %t %d skip %t grace %d initialized %t\n", a.MaxMessageSize, a.Keep.Forever, a.Keep.After,
		a.SkipExisting, pruneGrace, !r.meta.Initialized.IsZero())
	var b []byte
	for _, m := range list {
		b = strconv.AppendInt(b[:0], int64(m.Num), 10)
		b = append(b, ' ')
		b = append(b, m.UID...)
		b = append(b, '\n')
		h.Write(b)
	}
	return h.Sum(nil)
}

// idleHolds reports whether the mark covers this listing now.
func idleHolds(m state.IdleMark, digest []byte, now time.Time) bool {
	return m.Digest != nil && bytes.Equal(m.Digest, digest) && !now.Before(m.Since) && now.Before(m.Until)
}

// idleUntil returns how long a plan that found nothing to do holds for
// the same listing, or false when it found something (and leaves no
// mark). entries are all of the account's (r.known).
func (r *run) idleUntil(list []pop3.MessageInfo, plan Plan, entries map[string]*state.Entry, now time.Time) (time.Time, bool) {
	if entries == nil || len(plan.Fetch) > 0 || len(plan.Delete) > 0 ||
		len(plan.Record) > 0 || plan.Initialize || len(plan.Problems) > 0 || len(r.res.Problems) > 0 ||
		r.res.Delivered > 0 || r.res.Deleted > 0 {
		return time.Time{}, false
	}
	until := now.Add(idleMaxSpan)
	for id, e := range entries {
		if !r.listed[id] {
			// Gone from the server: removed once missing for pruneGrace.
			if e.MissingSince.IsZero() {
				return time.Time{}, false // the prune has yet to mark it
			}
			until = earliest(until, e.MissingSince.Add(pruneGrace))
			continue
		}
		if !settled(e, r.Account.Sinks) {
			return time.Time{}, false
		}
		if !e.Skipped && e.Suspect == "" && !r.Account.Keep.Forever {
			if r.Account.Keep.After <= 0 {
				return time.Time{}, false // due for deletion now
			}
			until = earliest(until, e.FirstSeen.Add(r.Account.Keep.After))
		}
	}
	if !until.After(now) {
		return time.Time{}, false
	}
	return until, true
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
