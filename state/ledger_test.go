package state

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, dir string) *Ledger {
	t.Helper()
	l, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	open(t, dir)
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	start := time.Now()
	_, err := Open(dir, 200*time.Millisecond)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("err = %v, want ErrInUse", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("second open hung")
	}
}

func TestCorruptFileIsNotReplaced(t *testing.T) {
	dir := t.TempDir()
	garbage := bytes.Repeat([]byte("not a bolt file "), 1000)
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, time.Second)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, garbage) {
		t.Error("corrupt ledger was modified")
	}
}

func TestCorruptEntryIsAnError(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir)
	a := l.Account(AccountID("pop.example.com", "bob"))
	if err := a.Put(&Entry{UIDL: "u1"}); err != nil {
		t.Fatal(err)
	}
	l.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).Bucket(a.id).Bucket(bucketMessages).Put([]byte("u1"), []byte("{broken"))
	})
	if _, err := a.Get([]string{"u1"}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir)
	l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, []byte("99")) })
	l.Close()
	if _, err := Open(dir, time.Second); err == nil {
		t.Fatal("a ledger from a newer pophook was opened")
	}
}

func TestEntriesRoundTripAndSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir)
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	a := l.Account(AccountID("POP.Example.com.", "bob"))
	e := &Entry{UIDL: "u1", FirstSeen: now, Size: 10, SHA256: "ab", Key: "k"}
	e.Sink("archive").DeliveredAt = now
	dup := &Entry{UIDL: "u1", Occurrence: 1, FirstSeen: now}
	if err := a.Put(e, dup); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMeta(AccountMeta{Initialized: now}); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l = open(t, dir)
	// The same mailbox under a differently spelled host name.
	a = l.Account(AccountID("pop.example.com", "bob"))
	got, err := a.Get([]string{"u1", EntryID("u1", 1), "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["u1"].Key != "k" || !got["u1"].Delivered([]string{"archive"}) || got["u1"].Delivered([]string{"archive", "helpdesk"}) {
		t.Fatalf("got %+v", got)
	}
	if got[EntryID("u1", 1)].Occurrence != 1 {
		t.Error("second occurrence lost")
	}
	// Family finds every occurrence under a UIDL, and no other UIDL's,
	// even one that sorts between "u1" and "u1 1".
	if err := a.Put(&Entry{UIDL: "u1\x01", FirstSeen: now}, &Entry{UIDL: "u10", FirstSeen: now}); err != nil {
		t.Fatal(err)
	}
	fam, err := a.Family([]string{"u1", "nothing"})
	if err != nil || len(fam["u1"]) != 2 || len(fam["nothing"]) != 0 {
		t.Errorf("Family = %v, %v: want the two occurrences of u1", fam, err)
	}
	m, err := a.Meta()
	if err != nil || !m.Initialized.Equal(now) {
		t.Errorf("meta = %+v, %v", m, err)
	}
	other := l.Account(AccountID("pop.example.com", "alice"))
	if got, _ := other.Get([]string{"u1"}); len(got) != 0 {
		t.Error("accounts share entries")
	}
}

func TestPruneAfterGrace(t *testing.T) {
	l := open(t, t.TempDir())
	a := l.Account("acct")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := a.Put(&Entry{UIDL: "kept"}, &Entry{UIDL: "gone"}, &Entry{UIDL: "back"}); err != nil {
		t.Fatal(err)
	}
	grace := 24 * time.Hour
	if n, err := a.Prune(map[string]bool{"kept": true}, t0, grace); err != nil || n != 0 {
		t.Fatalf("first prune removed %d, %v", n, err)
	}
	// "back" is listed again: its missing mark goes.
	if n, err := a.Prune(map[string]bool{"kept": true, "back": true}, t0.Add(time.Hour), grace); err != nil || n != 0 {
		t.Fatalf("second prune removed %d, %v", n, err)
	}
	n, err := a.Prune(map[string]bool{"kept": true}, t0.Add(25*time.Hour), grace)
	if err != nil || n != 1 {
		t.Fatalf("third prune removed %d, %v; want only 'gone'", n, err)
	}
	var ids []string
	a.Each(func(e *Entry) error { ids = append(ids, e.UIDL); return nil })
	if len(ids) != 2 || ids[0] != "back" || ids[1] != "kept" {
		t.Errorf("left: %v", ids)
	}
}

// Fingerprints are stable for one ledger across restarts, differ for
// different inputs, and differ between ledgers (the key is the ledger's
// own), so a stored fingerprint of a password is no use elsewhere.
func TestFingerprint(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := l.Fingerprint("host", "user", "password-1")
	if a == l.Fingerprint("host", "user", "password-2") || a == l.Fingerprint("hostuser", "", "password-1") {
		t.Error("different inputs gave the same fingerprint")
	}
	l.Close()
	l, err = Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Fingerprint("host", "user", "password-1"); got != a {
		t.Errorf("after reopening: %s, want %s", got, a)
	}
	l.Close()
	other, err := Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.Fingerprint("host", "user", "password-1") == a {
		t.Error("two ledgers gave the same fingerprint")
	}
	if strings.Contains(a, "password") || len(a) != 24 {
		t.Errorf("fingerprint %q", a)
	}
}

// The login back-off survives a restart (pophook once from cron).
func TestLoginStatePersists(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	acct := l.Account(AccountID("pop.example.com", "u"))
	when := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	if err := acct.SetMeta(AccountMeta{Login: LoginState{NotBefore: when, Failures: 2, Reason: "-ERR [AUTH]", Credential: "abc"}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m, err := l.Account(AccountID("pop.example.com", "u")).Meta()
	if err != nil || !m.Login.NotBefore.Equal(when) || m.Login.Failures != 2 || m.Login.Credential != "abc" {
		t.Errorf("meta after reopen: %+v, %v", m, err)
	}
}

func TestFindUpdateCount(t *testing.T) {
	l, err := Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := l.Account(AccountID("pop.example.com", "u"))
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	done := &SinkState{DeliveredAt: now}
	err = a.Put(
		&Entry{UIDL: "ok", Sinks: map[string]*SinkState{"a": done, "b": done}},
		&Entry{UIDL: "gone", DeletedAt: now, Sinks: map[string]*SinkState{"a": done, "b": done}},
		&Entry{UIDL: "rej", Sinks: map[string]*SinkState{"a": done, "b": {Permanent: true, LastError: "HTTP 422", NextAttempt: now.Add(time.Hour)}}},
		&Entry{UIDL: "rej", Occurrence: 1, Sinks: map[string]*SinkState{"a": {LastError: "timeout"}}},
		&Entry{UIDL: "big", TooLarge: true},
		&Entry{UIDL: "old", Skipped: true},
		&Entry{UIDL: "odd", Suspect: "RETR gave 842 octets, LIST said 116", Sinks: map[string]*SinkState{"a": done, "b": done}},
	)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Count([]string{"a", "b"})
	want := Counts{Delivered: 2, Deleted: 1, Pending: 2, Failing: 1, Rejected: 1, TooLarge: 1, Skipped: 1, Suspect: 1, Entries: 7}
	if err != nil || c != want {
		t.Errorf("Count = %+v, %v\nwant %+v", c, err, want)
	}
	found, err := a.Find("rej")
	if err != nil || len(found) != 2 {
		t.Fatalf("Find = %d entries, %v", len(found), err)
	}
	// Retry: clear the rejection in place.
	err = a.Update("rej", func(e *Entry) *Entry {
		e.Sinks["b"].Permanent, e.Sinks["b"].NextAttempt = false, time.Time{}
		return e
	})
	if got, _ := a.Get([]string{"rej"}); err != nil || got["rej"].Sinks["b"].Permanent || got["rej"].Sinks["b"].LastError != "HTTP 422" {
		t.Errorf("after Update: %+v, %v", got["rej"].Sinks["b"], err)
	}
	// Forget: delete it.
	if err := a.Update("big", func(*Entry) *Entry { return nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Get([]string{"big"}); len(got) != 0 {
		t.Error("entry still there after Update returned nil")
	}
	// An account the ledger has never seen.
	if err := l.Account("new\x00u").Update("x", func(e *Entry) *Entry { return e }); err != nil {
		t.Errorf("Update on a new account: %v", err)
	}
}

// One damaged meta page makes bbolt open the file at the transaction
// before the newest; after PutBatch that older state holds the batch too.
func TestPutBatchSurvivesOneDamagedMetaPage(t *testing.T) {
	for _, page := range []int{0, 1} {
		dir := t.TempDir()
		l := open(t, dir)
		a := l.Account(AccountID("pop.example.com", "bob"))
		now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
		if err := a.Put(&Entry{UIDL: "before", FirstSeen: now}); err != nil {
			t.Fatal(err)
		}
		if err := a.PutBatch(&Entry{UIDL: "b1", FirstSeen: now}, &Entry{UIDL: "b2", FirstSeen: now}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		path := filepath.Join(dir, FileName)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		const meta = 16 // page header; the meta's page size is 8 bytes in
		ps := int(binary.LittleEndian.Uint32(b[meta+8:]))
		for i := range ps {
			b[page*ps+i] = byte(i*7 + 3)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		l = open(t, dir)
		got, err := l.Account(AccountID("pop.example.com", "bob")).Get([]string{"before", "b1", "b2"})
		if err != nil || len(got) != 3 {
			t.Errorf("meta page %d damaged: got %d of 3 entries (%v): the batch was lost with it", page, len(got), err)
		}
		l.Close()
	}
}

// The transaction a batch is owed is paid by the next write of any account,
// so that a run that deletes pays nothing extra; Settle pays it otherwise.
func TestPutBatchDebtPaidByNextWrite(t *testing.T) {
	l := open(t, t.TempDir())
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	a, b := l.Account(AccountID("pop.example.com", "a")), l.Account(AccountID("pop.example.com", "b"))
	if err := a.PutBatch(&Entry{UIDL: "x", FirstSeen: now}); err != nil {
		t.Fatal(err)
	}
	if l.owed == 0 {
		t.Fatal("a batch owes no transaction")
	}
	if err := b.Put(&Entry{UIDL: "y", FirstSeen: now}); err != nil {
		t.Fatal(err)
	}
	if l.owed != 0 {
		t.Error("a later write of another account did not pay the debt")
	}
	if err := a.PutBatch(&Entry{UIDL: "z", FirstSeen: now}); err != nil {
		t.Fatal(err)
	}
	if err := l.Settle(); err != nil || l.owed != 0 {
		t.Errorf("Settle: %v, owed %d", err, l.owed)
	}
}

// PruneKnown, given every entry as All read it, leaves the ledger exactly
// as Prune does, whatever is listed and however long each entry has been
// missing.
func TestPruneKnownAsPrune(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	grace := 24 * time.Hour
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		var entries []*Entry
		listed := map[string]bool{}
		for i := range 200 {
			e := &Entry{UIDL: fmt.Sprintf("u%d", i), FirstSeen: t0}
			switch rng.IntN(3) {
			case 1:
				e.MissingSince = t0.Add(-time.Hour) // missing, within grace
			case 2:
				e.MissingSince = t0.Add(-48 * time.Hour) // missing past grace
			}
			entries = append(entries, e)
			if rng.IntN(2) == 0 {
				listed[e.ID()] = true
			}
		}
		snapshot := func(a *Account) []string {
			var out []string
			a.Each(func(e *Entry) error {
				out = append(out, fmt.Sprintf("%s missing=%v", e.ID(), e.MissingSince))
				return nil
			})
			return out
		}
		a, b := open(t, t.TempDir()).Account("acct"), open(t, t.TempDir()).Account("acct")
		for _, acct := range []*Account{a, b} {
			if err := acct.Put(entries...); err != nil {
				t.Fatal(err)
			}
		}
		known, err := b.All(nil)
		if err != nil {
			t.Fatal(err)
		}
		na, err := a.Prune(listed, t0, grace)
		if err != nil {
			t.Fatal(err)
		}
		nb, err := b.PruneKnown(known, listed, t0, grace)
		if err != nil {
			t.Fatal(err)
		}
		if na != nb || !slices.Equal(snapshot(a), snapshot(b)) {
			t.Fatalf("round %d: Prune removed %d, PruneKnown %d; ledgers differ:\n%v\n%v", round, na, nb, snapshot(a), snapshot(b))
		}
		if na == 0 {
			t.Fatalf("round %d: nothing removed: the test does not exercise removal", round)
		}
	}
}

// The idle mark is stored only while the entries are as they were when
// the version was read, and any later change to an entry removes it.
func TestIdleMarkFollowsEntries(t *testing.T) {
	l := open(t, t.TempDir())
	a := l.Account("acct")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mark := IdleMark{Digest: bytes.Repeat([]byte{7}, 32), Since: t0, Until: t0.Add(time.Hour), Listed: 12345}
	has := func() bool {
		m, _, err := a.Idle()
		if err != nil {
			t.Fatal(err)
		}
		return m.Digest != nil
	}
	_, v, err := a.Idle()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(&Entry{UIDL: "x"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.SetIdleMark(mark, v); err != nil || ok || has() {
		t.Fatalf("mark stored over a change made after its version was read: %v %v", ok, err)
	}
	_, v, _ = a.Idle()
	if ok, err := a.SetIdleMark(mark, v); err != nil || !ok {
		t.Fatalf("SetIdleMark: %v %v", ok, err)
	}
	m, _, _ := a.Idle()
	if !bytes.Equal(m.Digest, mark.Digest) || !m.Since.Equal(t0) || !m.Until.Equal(t0.Add(time.Hour)) || m.Listed != 12345 {
		t.Fatalf("Idle() = %+v, want %+v", m, mark)
	}
	for name, change := range map[string]func() error{
		"Put":      func() error { return a.Put(&Entry{UIDL: "y"}) },
		"PutBatch": func() error { return a.PutBatch(&Entry{UIDL: "z"}) },
		"Update": func() error {
			return a.Update("x", func(e *Entry) *Entry { e.Size = 9; return e })
		},
		"Prune": func() error { _, err := a.Prune(map[string]bool{}, t0, time.Hour); return err },
	} {
		_, v, _ := a.Idle()
		if ok, err := a.SetIdleMark(mark, v); err != nil || !ok {
			t.Fatalf("SetIdleMark before %s: %v %v", name, ok, err)
		}
		if err := change(); err != nil {
			t.Fatal(err)
		}
		if has() {
			t.Errorf("the mark survived %s", name)
		}
	}
}

// A process killed at any moment while creating a ledger leaves either
// no ledger.db or a complete one: never an empty file that Open would
// refuse (and the user would have to move aside) at the next start.
func TestKilledWhileCreating(t *testing.T) {
	if dir := os.Getenv("PHTEST_CREATE_LOOP"); dir != "" {
		for i := 0; ; i++ {
			l, err := Open(filepath.Join(dir, strconv.Itoa(i)), time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
			l.Close()
			if i == 0 {
				// Tell the parent the loop is running: a fixed sleep
				// from exec could end before a loaded machine has even
				// started the child.
				fmt.Println("created")
			}
		}
	}
	root := t.TempDir()
	for round := range 20 {
		dir := filepath.Join(root, strconv.Itoa(round))
		cmd := exec.Command(os.Args[0], "-test.run=^TestKilledWhileCreating$")
		cmd.Env = append(os.Environ(), "PHTEST_CREATE_LOOP="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != "created" {
		}
		if sc.Text() != "created" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: the child did not start its loop: %v", round, sc.Err())
		}
		// Kill it at a different moment of some later creation each round.
		time.Sleep(time.Duration(round*3) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		subs, _ := os.ReadDir(dir)
		for _, sub := range subs {
			l, err := Open(filepath.Join(dir, sub.Name()), time.Second)
			if err != nil {
				t.Fatalf("round %d: after a kill during creation: %v", round, err)
			}
			l.Close()
		}
	}
}
