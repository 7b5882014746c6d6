package worker

import (
	"slices"
	"testing"
	"time"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

func TestMakePlan(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	delivered := func(sinks ...string) map[string]*state.SinkState {
		m := map[string]*state.SinkState{}
		for _, s := range sinks {
			m[s] = &state.SinkState{DeliveredAt: now.Add(-time.Hour)}
		}
		return m
	}
	rejected := func(next time.Time, config string) map[string]*state.SinkState {
		return map[string]*state.SinkState{"a": {Permanent: true, NextAttempt: next, LastError: "HTTP 422", Config: config, Attempts: 1}}
	}
	one := []pop3.MessageInfo{{Num: 1, Size: 100, UID: "u1"}}

	type want struct {
		fetch      map[string][]string // uidl -> sinks
		del        []string
		record     int
		initialize bool
		problems   []ProblemKind
		reoffered  []string
	}
	cases := []struct {
		name    string
		in      PlanInput
		entries map[string]*state.Entry
		want    want
	}{
		{
			name: "new message goes to every sink",
			in:   PlanInput{Listing: one, Initialized: true},
			want: want{fetch: map[string][]string{"u1": {"a", "b"}}},
		},
		{
			name:    "only the sink still missing it",
			in:      PlanInput{Listing: one, Initialized: true},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Sinks: delivered("b")}},
			want:    want{fetch: map[string][]string{"u1": {"a"}}},
		},
		{
			name:    "delivered earlier, DELE never confirmed: delete without sending",
			in:      PlanInput{Listing: one, Initialized: true},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Sinks: delivered("a", "b")}},
			want:    want{del: []string{"u1"}},
		},
		{
			name:    "KEEP=true never deletes",
			in:      PlanInput{Listing: one, Initialized: true, Keep: Keep{Forever: true}},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Sinks: delivered("a", "b")}},
		},
		{
			name:    "KEEP=30d keeps a message first seen 10 days ago",
			in:      PlanInput{Listing: one, Initialized: true, Keep: Keep{After: 30 * day}},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", FirstSeen: now.Add(-10 * day), Sinks: delivered("a", "b")}},
		},
		{
			name:    "KEEP=30d deletes one first seen 40 days ago",
			in:      PlanInput{Listing: one, Initialized: true, Keep: Keep{After: 30 * day}},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", FirstSeen: now.Add(-40 * day), Sinks: delivered("a", "b")}},
			want:    want{del: []string{"u1"}},
		},
		{
			name:    "a suspect message is never deleted automatically",
			in:      PlanInput{Listing: one, Initialized: true},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Suspect: "RETR gave 842 octets, LIST said 116", Sinks: delivered("a", "b")}},
		},
		{
			name:    "a deleted id listed again is a new message",
			in:      PlanInput{Listing: one, Initialized: true},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", DeletedAt: now.Add(-day), Sinks: delivered("a", "b")}},
			want:    want{fetch: map[string][]string{"u1": {"a", "b"}}, record: 1},
		},
		{
			name:    "skipped by SKIP_EXISTING: left alone",
			in:      PlanInput{Listing: one, Initialized: true},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Skipped: true}},
		},
		{
			name: "SKIP_EXISTING on the first listing records, sends and deletes nothing",
			in:   PlanInput{Listing: []pop3.MessageInfo{{Num: 1, Size: 5, UID: "u1"}, {Num: 2, Size: 5, UID: "u2"}}, SkipExisting: true},
			want: want{record: 2, initialize: true},
		},
		{
			name: "SKIP_EXISTING after the first listing changes nothing",
			in:   PlanInput{Listing: one, SkipExisting: true, Initialized: true},
			want: want{fetch: map[string][]string{"u1": {"a", "b"}}},
		},
		{
			name: "the first listing initializes",
			in:   PlanInput{Listing: one},
			want: want{fetch: map[string][]string{"u1": {"a", "b"}}, initialize: true},
		},
		{
			name: "over MAX_MESSAGE_SIZE by LIST: marked once, not fetched",
			in:   PlanInput{Listing: one, Initialized: true, MaxMessageSize: 99},
			want: want{record: 1, problems: []ProblemKind{ProblemTooLarge}},
		},
		{
			name:    "over the limit by an earlier RETR although LIST is small",
			in:      PlanInput{Listing: one, Initialized: true, MaxMessageSize: 1000},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", TooLarge: true, SizeLimit: 1000}},
			want:    want{problems: []ProblemKind{ProblemTooLarge}},
		},
		{
			name:    "the limit was raised since: fetched again",
			in:      PlanInput{Listing: one, Initialized: true, MaxMessageSize: 5000},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", TooLarge: true, SizeLimit: 1000}},
			want:    want{fetch: map[string][]string{"u1": {"a", "b"}}, record: 1},
		},
		{
			name:    "rejected, next attempt not due, same configuration: waits",
			in:      PlanInput{Listing: one, Initialized: true, SinkConfig: map[string]string{"a": "A"}},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Sinks: rejected(now.Add(time.Hour), "A")}},
			want:    want{fetch: map[string][]string{"u1": {"b"}}, problems: []ProblemKind{ProblemWaiting}},
		},
		{
			name:    "rejected and due: offered again",
			in:      PlanInput{Listing: one, Initialized: true, SinkConfig: map[string]string{"a": "A"}},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Sinks: rejected(now.Add(-time.Minute), "A")}},
			want:    want{fetch: map[string][]string{"u1": {"a", "b"}}},
		},
		{
			name:    "rejected under another configuration: offered again at once",
			in:      PlanInput{Listing: one, Initialized: true, SinkConfig: map[string]string{"a": "B"}},
			entries: map[string]*state.Entry{"u1": {UIDL: "u1", Sinks: rejected(now.Add(time.Hour), "A")}},
			want:    want{fetch: map[string][]string{"u1": {"a", "b"}}, record: 1, reoffered: []string{"a"}},
		},
		{
			name:    "one UIDL listed twice is two messages",
			in:      PlanInput{Listing: []pop3.MessageInfo{{Num: 1, Size: 5, UID: "same"}, {Num: 2, Size: 5, UID: "same"}}, Initialized: true},
			entries: map[string]*state.Entry{"same": {UIDL: "same", Sinks: delivered("a", "b")}},
			want:    want{fetch: map[string][]string{"same": {"a", "b"}}, del: []string{"same"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.in
			in.Sinks, in.Now = []string{"a", "b"}, now
			in.Entries = c.entries
			if in.Entries == nil {
				in.Entries = map[string]*state.Entry{}
			}
			p := MakePlan(in)
			fetch := map[string][]string{}
			for _, f := range p.Fetch {
				fetch[f.Info.UID] = f.Sinks
			}
			if len(fetch) != len(c.want.fetch) {
				t.Errorf("fetch %v, want %v", fetch, c.want.fetch)
			}
			for uid, s := range c.want.fetch {
				if !slices.Equal(fetch[uid], s) {
					t.Errorf("fetch %s for %v, want %v", uid, fetch[uid], s)
				}
			}
			var del []string
			for _, d := range p.Delete {
				del = append(del, d.Info.UID)
			}
			if !slices.Equal(del, c.want.del) {
				t.Errorf("delete %v, want %v", del, c.want.del)
			}
			if len(p.Record) != c.want.record || p.Initialize != c.want.initialize {
				t.Errorf("record %d, initialize %v; want %d, %v", len(p.Record), p.Initialize, c.want.record, c.want.initialize)
			}
			var kinds []ProblemKind
			for _, pr := range p.Problems {
				kinds = append(kinds, pr.Kind)
			}
			if !slices.Equal(kinds, c.want.problems) {
				t.Errorf("problems %v, want %v", p.Problems, c.want.problems)
			}
			var re []string
			for s := range p.Reoffered {
				re = append(re, s)
			}
			if !slices.Equal(re, c.want.reoffered) {
				t.Errorf("reoffered %v, want %v", re, c.want.reoffered)
			}
		})
	}
}

// A fetched message gets a ledger entry with the occurrence that tells two
// messages under one UIDL apart.
func TestEntryIDs(t *testing.T) {
	ids, occ := EntryIDs([]pop3.MessageInfo{{UID: "a"}, {UID: "b"}, {UID: "a"}, {UID: "a"}})
	if !slices.Equal(ids, []string{"a", "b", "a 1", "a 2"}) || !slices.Equal(occ, []int{0, 0, 1, 2}) {
		t.Errorf("ids %q, occ %v", ids, occ)
	}
}

// Once one of several messages under a UIDL is deleted, the survivors keep
// their entries rather than move up into the deleted one's; new arrivals
// take the deleted ids (a new generation), then unused numbers.
func TestMatchIDs(t *testing.T) {
	gone := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	list := []pop3.MessageInfo{{UID: "a"}, {UID: "b"}, {UID: "a"}, {UID: "a"}}
	ids, occ := EntryIDs(list)
	families := map[string][]*state.Entry{"a": {
		{UIDL: "a", Occurrence: 2},
		{UIDL: "a", DeletedAt: gone},
		{UIDL: "a", Occurrence: 1},
	}}
	ids, occ = MatchIDs(list, ids, occ, families)
	if !slices.Equal(ids, []string{"a 1", "b", "a 2", "a"}) || !slices.Equal(occ, []int{1, 0, 2, 0}) {
		t.Errorf("ids %q, occ %v", ids, occ)
	}
	// More listed than on record: fresh numbers after the highest.
	list = append(list, pop3.MessageInfo{UID: "a"})
	ids, occ = EntryIDs(list)
	ids, _ = MatchIDs(list, ids, occ, families)
	if ids[4] != "a 3" {
		t.Errorf("ids %q: a fifth message under a should be a 3", ids)
	}
	if r := Reused(list[:2], []string{"a", "b"}, []int{0, 0}, map[string]*state.Entry{"a": {UIDL: "a", DeletedAt: gone}}); !slices.Equal(r, []string{"a"}) {
		t.Errorf("Reused = %q, want a (listed under a deleted id)", r)
	}
	if r := Reused(list[:2], []string{"a", "b"}, []int{0, 0}, map[string]*state.Entry{"a": {UIDL: "a"}}); r != nil {
		t.Errorf("Reused = %q, want none", r)
	}
}

func TestKeepShouldDelete(t *testing.T) {
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		keep Keep
		age  time.Duration
		want bool
	}{
		{Keep{}, 0, true},
		{Keep{Forever: true}, 1000 * time.Hour, false},
		{Keep{After: 720 * time.Hour}, 719 * time.Hour, false},
		{Keep{After: 720 * time.Hour}, 721 * time.Hour, true},
	} {
		if got := tt.keep.ShouldDelete(now.Add(-tt.age), now); got != tt.want {
			t.Errorf("%+v.ShouldDelete(age %v) = %v", tt.keep, tt.age, got)
		}
	}
}

// A listing above readAheadAbove is planned from the entries read while
// the server listed: the second poll sends nothing again, the messages
// due are deleted, and a new message among them is sent once.
func TestLargeListingUsesEntriesReadAhead(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
	defer s.Close()
	n := readAheadAbove + 200
	s.SetMailbox("alice", messages(n, "Subject: m%d\n\nbody\n"))
	rec := &recorder{}
	acct := fakeAccount(s)
	acct.Keep = Keep{After: time.Hour}
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != n || res.Deleted != 0 {
		t.Fatalf("first run: %+v", res)
	}
	s.AddMessages("alice", pop3test.Message{UID: "late", Data: []byte("Subject: late\n\nx\n")})
	if res := e.run(); res.Delivered != 1 || res.Deleted != 0 || res.Listed != n+1 {
		t.Errorf("second run %+v: want only the new message sent", res)
	}
	// Five messages taken by another client: the prune, from the
	// entries read ahead, marks exactly those missing.
	s.SetMailbox("alice", s.Messages("alice")[5:])
	if res := e.run(); res.Delivered != 0 || res.Listed != n-4 {
		t.Errorf("run after five were taken %+v", res)
	}
	missing := 0
	e.ledger.Account(acct.LedgerID()).Each(func(en *state.Entry) error {
		if !en.MissingSince.IsZero() {
			missing++
		}
		return nil
	})
	if missing != 5 {
		t.Errorf("%d entries marked missing, want the 5 taken", missing)
	}
	e.clock = e.clock.Add(2 * time.Hour)
	if res := e.run(); res.Delivered != 0 || res.Deleted != n-4 {
		t.Errorf("third run %+v: want all %d deleted, none sent", res, n-4)
	}
	for k, c := range rec.keys() {
		if c != 1 {
			t.Errorf("key %s delivered %d times", k, c)
		}
	}
}
