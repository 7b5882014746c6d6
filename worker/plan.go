package worker

import (
	"fmt"
	"slices"
	"time"

	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// PlanInput is everything a plan depends on. Listing must be a complete
// listing of the mailbox from this session: a plan made from anything
// less could initialize the account or delete what it should not.
type PlanInput struct {
	Listing []pop3.MessageInfo
	// Entries are the ledger's records of the listed messages, by entry
	// id (see EntryIDs).
	Entries map[string]*state.Entry
	// IDs, when set, are the ledger ids of the listed messages (see
	// MatchIDs); by default EntryIDs numbers them.
	IDs         []string
	Occurrences []int
	Initialized bool // the account had a complete listing before

	Sinks []string
	// SinkConfig fingerprints each sink's configuration now; a rejection
	// recorded under another one is offered again at once.
	SinkConfig     map[string]string
	SkipExisting   bool
	MaxMessageSize int64
	Keep           Keep
	Now            time.Time
	// Floor is the latest time the ledger has recorded for the account. A
	// message first seen while the clock is behind it (set back, or a
	// board without a real-time clock booting with the time it saved) is
	// recorded as first seen at Floor, not in the past: KEEP would delete
	// it early once the clock is right again.
	Floor time.Time
}

// Plan is what a session does with a listing.
type Plan struct {
	// Record are entries to commit before anything is fetched: the
	// messages SKIP_EXISTING records, new generations of reused ids,
	// size marks, cleared rejections.
	Record []*state.Entry
	// Initialize marks the account as listed once, after Record.
	Initialize bool
	// Fetch are the messages to retrieve, in server order, each with the
	// sinks still missing it.
	Fetch []*Pending
	// Delete are messages every sink has and that are due for deletion.
	Delete []*Pending
	// Problems are reported without anything being tried.
	Problems []Problem
	// Reoffered names sinks whose configuration changed since they
	// rejected a message now offered again.
	Reoffered map[string]bool
}

// Pending is a listed message a session acts on.
type Pending struct {
	Info  pop3.MessageInfo
	Entry *state.Entry
	Sinks []string // sinks still to deliver to in this run
}

// MakePlan decides, from a complete listing, the ledger and the policy,
// what to fetch, what only to delete again and what to report. It does no
// I/O.
func MakePlan(in PlanInput) Plan {
	var p Plan
	ids, occ := in.IDs, in.Occurrences
	if ids == nil {
		ids, occ = EntryIDs(in.Listing)
	}
	seen := in.Now
	if seen.Before(in.Floor) {
		seen = in.Floor
	}
	if !in.Initialized && in.SkipExisting {
		// SKIP_EXISTING: record every message present at the first
		// complete listing as seen, send and delete none of them.
		for i, m := range in.Listing {
			p.Record = append(p.Record, &state.Entry{UIDL: m.UID, Occurrence: occ[i], FirstSeen: seen, Size: m.Size, Skipped: true})
		}
		p.Initialize = true
		return p
	}
	p.Initialize = !in.Initialized
	limit := in.MaxMessageSize
	for i, m := range in.Listing {
		e := in.Entries[ids[i]]
		switch {
		case e == nil:
			e = &state.Entry{UIDL: m.UID, Occurrence: occ[i], FirstSeen: seen, Size: m.Size}
		case !e.DeletedAt.IsZero():
			// Deleted, confirmed by QUIT, and listed again: a new
			// message under a reused id. Deliver it afresh.
			e = &state.Entry{UIDL: e.UIDL, Occurrence: e.Occurrence, Generation: e.Generation + 1, FirstSeen: seen, Size: m.Size}
			p.Record = append(p.Record, e)
		}
		if e.Skipped {
			continue
		}
		overList := limit > 0 && m.Size > limit
		overRetr := limit > 0 && e.TooLarge && e.SizeLimit >= limit
		switch {
		case overList || overRetr:
			if !e.TooLarge {
				e.TooLarge = true
				p.Record = append(p.Record, e)
			}
			err := fmt.Errorf("%d octets is over MAX_MESSAGE_SIZE (%d)", m.Size, limit)
			if overRetr && !overList {
				err = fmt.Errorf("the server lists %d octets but sent more than MAX_MESSAGE_SIZE (%d)", m.Size, limit)
			}
			p.Problems = append(p.Problems, Problem{Kind: ProblemTooLarge, UIDL: m.UID, Err: err})
			continue
		case e.TooLarge:
			// The limit was raised: try again.
			e.TooLarge, e.SizeLimit = false, 0
			p.Record = append(p.Record, e)
		}
		pend := &Pending{Info: m, Entry: e}
		if e.Delivered(in.Sinks) {
			if e.Suspect == "" && in.Keep.ShouldDelete(e.FirstSeen, in.Now) {
				p.Delete = append(p.Delete, pend)
			}
			continue
		}
		for _, s := range in.Sinks {
			st := e.Sinks[s]
			switch {
			case st != nil && !st.DeliveredAt.IsZero():
			case st != nil && st.Permanent && st.Config != in.SinkConfig[s]:
				// Rejected under another configuration of the sink:
				// whatever made it reject may be fixed.
				st.Permanent, st.NextAttempt = false, time.Time{}
				p.Record = appendOnce(p.Record, e)
				if p.Reoffered == nil {
					p.Reoffered = map[string]bool{}
				}
				p.Reoffered[s] = true
				pend.Sinks = append(pend.Sinks, s)
			case st != nil && st.Permanent && in.Now.Before(st.NextAttempt) && st.NextAttempt.Sub(in.Now) <= rejectRetryMax:
				// (A next attempt further ahead than ever set means the
				// clock went back: it is due.)
				p.Problems = append(p.Problems, Problem{Kind: ProblemWaiting, UIDL: m.UID, Sink: s,
					Err: fmt.Errorf("%s; next attempt %s", st.LastError, st.NextAttempt.Format(time.RFC3339))})
			default:
				pend.Sinks = append(pend.Sinks, s)
			}
		}
		if len(pend.Sinks) > 0 {
			p.Fetch = append(p.Fetch, pend)
		}
	}
	return p
}

func appendOnce(l []*state.Entry, e *state.Entry) []*state.Entry {
	for _, have := range l {
		if have == e {
			return l
		}
	}
	return append(l, e)
}

// EntryIDs gives each listed message its ledger id: the UIDL, numbered
// when the server lists the same UIDL more than once, so that neither of
// two messages under one id is taken for the other.
func EntryIDs(list []pop3.MessageInfo) (ids []string, occ []int) {
	ids, occ, _ = listingIDs(list)
	return ids, occ
}

// listingIDs is EntryIDs, and the set of the ids for the ledger's lookups
// and its prune: one map for a listing that may hold 100,000 messages.
func listingIDs(list []pop3.MessageInfo) (ids []string, occ []int, listed map[string]bool) {
	ids, occ = make([]string, len(list)), make([]int, len(list))
	listed = make(map[string]bool, len(list))
	var repeats map[string]int // occurrences so far of UIDLs listed more than once
	for i, m := range list {
		id := m.UID
		if listed[id] {
			if repeats == nil {
				repeats = map[string]int{}
			}
			repeats[m.UID]++
			occ[i] = repeats[m.UID]
			id = state.EntryID(m.UID, occ[i])
		}
		ids[i] = id
		listed[id] = true
	}
	return ids, occ, listed
}

// Reused names the UIDLs whose ledger ids EntryIDs alone may get wrong:
// listed more than once, or listed under an id whose message was deleted
// (a later occurrence may then be the one still on the server).
func Reused(list []pop3.MessageInfo, ids []string, occ []int, entries map[string]*state.Entry) []string {
	var out []string
	var seen map[string]bool
	for i, m := range list {
		if occ[i] == 0 {
			if e := entries[ids[i]]; e == nil || e.DeletedAt.IsZero() {
				continue
			}
		}
		if !seen[m.UID] {
			if seen == nil {
				seen = map[string]bool{}
			}
			seen[m.UID] = true
			out = append(out, m.UID)
		}
	}
	return out
}

// MatchIDs renumbers the listed messages of each UIDL in families (every
// entry on record under it, see state.Account.Family). The server lists
// messages in the order they arrived, and EntryIDs numbered them in that
// order when they were first seen; but once one of them is deleted the
// survivors move up, and numbering by position would take a survivor for
// the deleted message, reused for a new one, and send it again under
// another key. So the messages listed under a UIDL take, in order, the
// ids of its entries still on the server, then those of deleted ones
// (a new message under a reused id), then unused numbers.
//
// Where another client removed one of several identical UIDLs, this can
// still pair a message with the wrong entry, as positions could; content
// checks at fetch (handle) catch it for messages not yet delivered.
func MatchIDs(list []pop3.MessageInfo, ids []string, occ []int, families map[string][]*state.Entry) ([]string, []int) {
	ids, occ = slices.Clone(ids), slices.Clone(occ)
	type slots struct {
		free []int // occurrences to hand out, in order
		next int   // the first number no entry uses
	}
	byUID := map[string]*slots{}
	for uid, fam := range families {
		var live, gone []int
		next := 0
		for _, e := range fam {
			if e.DeletedAt.IsZero() {
				live = append(live, e.Occurrence)
			} else {
				gone = append(gone, e.Occurrence)
			}
			next = max(next, e.Occurrence+1)
		}
		slices.Sort(live)
		slices.Sort(gone)
		byUID[uid] = &slots{free: append(live, gone...), next: next}
	}
	for i, m := range list {
		s := byUID[m.UID]
		if s == nil {
			continue
		}
		if len(s.free) > 0 {
			occ[i], s.free = s.free[0], s.free[1:]
		} else {
			occ[i] = s.next
			s.next++
		}
		ids[i] = state.EntryID(m.UID, occ[i])
	}
	return ids, occ
}
