package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/internal/testutil/testcorpus"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/maildir"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// recorder is an in-process sink for fault injection: it records every
// delivery and fails on demand.
type recorder struct {
	mu    sync.Mutex
	got   []delivery
	fail  func(m *sinks.Message, raw []byte) error
	calls int
}

type delivery struct {
	key, uidl string
	raw       []byte
}

func (r *recorder) Deliver(ctx context.Context, m *sinks.Message) error {
	raw, err := io.ReadAll(m.Reader())
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(m, raw); err != nil {
			return err
		}
	}
	r.got = append(r.got, delivery{m.Key, m.UIDL, raw})
	return nil
}

func (r *recorder) keys() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, d := range r.got {
		out[d.key]++
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// env is one account wired to a server, a ledger and sinks.
type env struct {
	t      *testing.T
	job    *Job
	dir    string
	clock  time.Time
	ledger *state.Ledger
	events []Event // what the job reported (runs are sequential)
}

func newEnv(t *testing.T, acct *Account, sinkMap map[string]sinks.Sink) *env {
	t.Helper()
	dir := t.TempDir()
	l, err := state.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	spool := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	if acct.Name == "" {
		acct.Name = "support"
	}
	if acct.Sinks == nil {
		for name := range sinkMap {
			acct.Sinks = append(acct.Sinks, name)
		}
	}
	slices.Sort(acct.Sinks)
	e := &env{t: t, dir: dir, ledger: l, clock: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}
	e.job = &Job{Account: acct, Sinks: sinkMap, Ledger: l, SpoolDir: spool, Now: func() time.Time { return e.clock },
		OnEvent: func(ev Event) { e.events = append(e.events, ev) }}
	return e
}

func (e *env) run() Result {
	e.t.Helper()
	res, err := e.job.Run(context.Background())
	if err != nil {
		e.t.Fatalf("run: %v", err)
	}
	if left, _ := os.ReadDir(e.job.SpoolDir); len(left) != 0 {
		e.t.Errorf("spool files left behind: %d", len(left))
	}
	return res
}

// password is a fixed credential.
func password(pw string) Credential {
	return CredentialFunc(func(context.Context) (string, error) { return pw, nil })
}

func dovecotAccount(t *testing.T, d *dovecottest.Server) *Account {
	cfg, err := pop3.TLSConfig(d.Host, d.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	return &Account{
		Name: "support", Host: d.Host, Port: d.TLSPort, TLS: pop3.TLSImplicit, TLSConfig: cfg,
		Username: "alice", Credential: password(d.Users["alice"]), MaxMessageSize: 64 << 20,
	}
}

// fakeAccount is an account on s, over implicit TLS unless s is plain.
func fakeAccount(s *pop3test.Server) *Account {
	host, port, _ := strings.Cut(s.Addr, ":")
	p, _ := strconv.Atoi(port)
	a := &Account{
		Name: "support", Host: host, Port: p, TLS: pop3.TLSNone, AllowInsecureAuth: true,
		Username: "alice", Credential: password("secret"), MaxMessageSize: 64 << 20,
	}
	if s.Certificate() != nil {
		a.TLS, a.AllowInsecureAuth = pop3.TLSImplicit, false
		a.TLSConfig = &tls.Config{RootCAs: s.RootCAs(), ServerName: host}
	}
	return a
}

// mixed returns n messages of mixed kinds: plain, dot-lines, long lines,
// binary-ish, CRLF and LF, a few real corpus files.
func mixed(t *testing.T, n int) [][]byte {
	corpus := testcorpus.Files(t)
	var out [][]byte
	for i := 0; i < n; i++ {
		var b bytes.Buffer
		switch i % 4 {
		case 0:
			b.Write(corpus[(i*7)%len(corpus)].Data)
		case 1:
			fmt.Fprintf(&b, "Subject: plain %d\nMessage-ID: <m%d@test>\n\nhello\n.\n..dots\n", i, i)
		case 2:
			fmt.Fprintf(&b, "Subject: long %d\r\nMessage-ID: <m%d@test>\r\n\r\n%s\r\n", i, i, strings.Repeat("z", 10_000+i))
		default:
			fmt.Fprintf(&b, "Subject: bytes %d\nMessage-ID: <m%d@test>\n\n", i, i)
			for k := 0; k < 300; k++ {
				b.WriteByte(byte(k))
			}
			b.WriteString("\n")
		}
		out = append(out, b.Bytes())
	}
	return out
}

// lf is what the Maildir sink must store: the message as served (CRLF)
// with every CRLF turned into LF.
func lf(served []byte) []byte { return bytes.ReplaceAll(served, []byte("\r\n"), []byte("\n")) }

func maildirFiles(t *testing.T, dir string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

func TestDovecotToMaildir(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	msgs := mixed(t, 24)
	for _, m := range msgs {
		d.Deliver(t, "alice", m)
	}
	mdir := filepath.Join(t.TempDir(), "Maildir")
	md, err := maildir.New(mdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"archive": md})
	res := e.run()
	if res.Delivered != len(msgs) || res.Deleted != len(msgs) || len(res.Problems) != 0 {
		t.Fatalf("result %+v", res)
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Errorf("%d messages left on the server", n)
	}
	stored := maildirFiles(t, mdir)
	want := map[string]bool{}
	for _, m := range msgs {
		want[string(lf(testcorpus.CRLF(m)))] = true
	}
	if len(stored) != len(msgs) {
		t.Fatalf("maildir holds %d messages, want %d", len(stored), len(msgs))
	}
	for _, s := range stored {
		if !want[string(s)] {
			t.Errorf("maildir file is not byte-exact (LF form) of any message: %.80q", s)
		}
	}
	// A second run finds nothing to do.
	if res := e.run(); res.Listed != 0 || res.Delivered != 0 {
		t.Errorf("second run: %+v", res)
	}
}

func TestKeepTrue(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, m := range mixed(t, 5) {
		d.Deliver(t, "alice", m)
	}
	rec := &recorder{}
	acct := dovecotAccount(t, d)
	acct.Keep = Keep{Forever: true}
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != 5 || res.Deleted != 0 {
		t.Fatalf("first run %+v", res)
	}
	if res := e.run(); res.Delivered != 0 || res.Deleted != 0 || res.Listed != 5 {
		t.Fatalf("second run %+v", res)
	}
	if rec.count() != 5 || d.Count(t, "alice") != 5 {
		t.Errorf("deliveries %d, on server %d; want 5 and 5", rec.count(), d.Count(t, "alice"))
	}
}

func TestKeepDurationDeletesOnlyOldMessages(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, m := range mixed(t, 3) {
		d.Deliver(t, "alice", m)
	}
	rec := &recorder{}
	acct := dovecotAccount(t, d)
	acct.Keep = Keep{After: 30 * 24 * time.Hour}
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != 3 || res.Deleted != 0 {
		t.Fatalf("first run %+v", res)
	}
	e.clock = e.clock.Add(31 * 24 * time.Hour)
	d.Deliver(t, "alice", []byte("Subject: new one\n\nfresh\n"))
	d.Deliver(t, "alice", []byte("Subject: new two\n\nfresh\n"))
	res := e.run()
	if res.Delivered != 2 || res.Deleted != 3 {
		t.Fatalf("second run %+v: want the 2 new delivered and the 3 old deleted", res)
	}
	if n := d.Count(t, "alice"); n != 2 {
		t.Errorf("%d on server, want the 2 new ones", n)
	}
	if rec.count() != 5 {
		t.Errorf("%d deliveries, want 5", rec.count())
	}
}

func TestSkipExisting(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, m := range mixed(t, 3) {
		d.Deliver(t, "alice", m)
	}
	rec := &recorder{}
	acct := dovecotAccount(t, d)
	acct.SkipExisting = true
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != 0 || res.Deleted != 0 {
		t.Fatalf("first run %+v", res)
	}
	d.Deliver(t, "alice", []byte("Subject: later\nMessage-ID: <later@x>\n\nnew\n"))
	res := e.run()
	if res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("second run %+v", res)
	}
	if rec.count() != 1 || !bytes.Contains(rec.got[0].raw, []byte("<later@x>")) {
		t.Errorf("delivered %d messages", rec.count())
	}
	if n := d.Count(t, "alice"); n != 3 {
		t.Errorf("%d on server, want the 3 skipped ones kept", n)
	}
}

func TestTemporarySinkFailureKeepsMessages(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, m := range mixed(t, 6) {
		d.Deliver(t, "alice", m)
	}
	down := true
	flaky := &recorder{fail: func(*sinks.Message, []byte) error {
		if down {
			return errors.New("connection refused")
		}
		return nil
	}}
	steady := &recorder{}
	e := newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"flaky": flaky, "steady": steady})
	res := e.run()
	if res.Delivered != 0 || res.Deleted != 0 || len(res.Problems) == 0 {
		t.Fatalf("run with a sink down: %+v", res)
	}
	if flaky.calls != 1 {
		t.Errorf("the failing sink was called %d times in one run; after a temporary failure it must be left alone", flaky.calls)
	}
	if steady.count() != 6 {
		t.Errorf("the working sink got %d messages, want all 6", steady.count())
	}
	if n := d.Count(t, "alice"); n != 6 {
		t.Fatalf("%d on server after a failed delivery, want 6", n)
	}
	down = false
	res = e.run()
	if res.Delivered != 6 || res.Deleted != 6 {
		t.Fatalf("recovery run: %+v", res)
	}
	for k, n := range steady.keys() {
		if n != 1 {
			t.Errorf("steady sink got %s %d times", k, n)
		}
	}
	if flaky.count() != 6 || len(flaky.keys()) != 6 {
		t.Errorf("recovered sink got %d deliveries of %d messages, want 6 of 6", flaky.count(), len(flaky.keys()))
	}
}

func TestPermanentRejection(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: fine\n\nok\n"))
	d.Deliver(t, "alice", []byte("Subject: reject me\n\nno\n"))
	d.Deliver(t, "alice", []byte("Subject: fine too\n\nok\n"))
	reject := true
	rec := &recorder{fail: func(_ *sinks.Message, raw []byte) error {
		if reject && bytes.Contains(raw, []byte("reject me")) {
			return sinks.Reject(errors.New("HTTP 422"))
		}
		return nil
	}}
	e := newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"hook": rec})
	res := e.run()
	if res.Delivered != 2 || res.Deleted != 2 || len(res.Problems) != 1 {
		t.Fatalf("run %+v", res)
	}
	if n := d.Count(t, "alice"); n != 1 {
		t.Fatalf("%d on server, want the rejected one", n)
	}
	// Not offered again before its next attempt.
	calls := rec.calls
	res = e.run()
	if rec.calls != calls || len(res.Problems) != 1 {
		t.Errorf("rejected message offered again at once (calls %d -> %d), problems %v", calls, rec.calls, res.Problems)
	}
	// Later, and accepted: delivered once and deleted.
	reject = false
	e.clock = e.clock.Add(2 * time.Hour)
	if res = e.run(); res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("retry run %+v", res)
	}
	if d.Count(t, "alice") != 0 || rec.count() != 3 {
		t.Errorf("on server %d, delivered %d", d.Count(t, "alice"), rec.count())
	}
}

func TestOversizedMessageStays(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: small\n\nok\n"))
	d.Deliver(t, "alice", append([]byte("Subject: big\n\n"), bytes.Repeat([]byte("0123456789\n"), 1000)...))
	rec := &recorder{}
	acct := dovecotAccount(t, d)
	acct.MaxMessageSize = 5000
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	res := e.run()
	if res.Delivered != 1 || len(res.Problems) != 1 || !strings.Contains(res.Problems[0].Error(), "MAX_MESSAGE_SIZE") {
		t.Fatalf("run %+v", res)
	}
	if d.Count(t, "alice") != 1 {
		t.Error("oversized message did not stay on the server")
	}
}

// TestLedgerFailureMeansNoDele: when the ledger cannot record a delivery,
// the message is not deleted.
func TestLedgerFailureMeansNoDele(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, m := range mixed(t, 4) {
		d.Deliver(t, "alice", m)
	}
	var e *env
	rec := &recorder{}
	rec.fail = func(*sinks.Message, []byte) error {
		if len(rec.got) == 1 {
			e.ledger.Close() // the next commit fails, as on a full disk
		}
		return nil
	}
	e = newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"hook": rec})
	_, err := e.job.Run(context.Background())
	if err == nil {
		t.Fatal("run succeeded with a broken ledger")
	}
	if n := d.Count(t, "alice"); n != 4 {
		// The ledger broke before the batch with the first deliveries
		// was committed (see commit): nothing is on record, so nothing
		// may be deleted.
		t.Errorf("%d on server, want all 4", n)
	}
}

func TestDuplicateAndReusedUIDLs(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
	defer s.Close()
	s.SetMailbox("alice", []pop3test.Message{
		{UID: "same", Data: []byte("Subject: first\n\none\n")},
		{UID: "same", Data: []byte("Subject: second\n\ntwo\n")},
	})
	rec := &recorder{}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != 2 || res.Deleted != 2 {
		t.Fatalf("run %+v", res)
	}
	// The server reuses the id for a new message.
	s.AddMessages("alice", pop3test.Message{UID: "same", Data: []byte("Subject: third\n\nthree\n")})
	if res := e.run(); res.Delivered != 1 {
		t.Fatalf("reused id: %+v", res)
	}
	if len(rec.keys()) != 3 {
		t.Errorf("%d distinct keys for 3 messages", len(rec.keys()))
	}
}

func TestBrokenPipeliningFallsBack(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true, Faults: pop3test.Faults{BrokenPipelining: true}})
	defer s.Close()
	var msgs []pop3test.Message
	for i := 0; i < 5; i++ {
		msgs = append(msgs, pop3test.Message{Data: []byte(fmt.Sprintf("Subject: %d\n\nbody\n", i))})
	}
	s.SetMailbox("alice", msgs)
	rec := &recorder{}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != 5 || res.Deleted != 5 {
		t.Fatalf("run %+v", res)
	}
}

func TestAuthFailureBacksOff(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	acct := fakeAccount(s)
	acct.Credential = password("wrong")
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
	if _, err := e.job.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("err = %v", err)
	}
	logins := func() int {
		n := 0
		for _, l := range s.Log() {
			if strings.HasPrefix(l, "PASS") || strings.HasPrefix(l, "AUTH") {
				n++
			}
		}
		return n
	}
	before := logins()
	res, err := e.job.Run(context.Background())
	if err != nil || res.Skipped == SkipNone || logins() != before {
		t.Fatalf("second run did not back off: %+v %v, logins %d -> %d", res, err, before, logins())
	}
	e.clock = e.clock.Add(2 * time.Minute)
	e.job.Run(context.Background())
	if logins() != before+1 {
		t.Errorf("no retry after the backoff")
	}
	if strings.Contains(fmt.Sprint(s.Log()), "wrong") == false {
		t.Log("(server log does not show the password: fine)")
	}
}

func TestMailboxInUseSkipsQuietly(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Faults: pop3test.Faults{LoginError: "[IN-USE] locked"}})
	defer s.Close()
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": &recorder{}})
	res, err := e.job.Run(context.Background())
	if err != nil || res.Skipped == SkipNone {
		t.Fatalf("res %+v err %v", res, err)
	}
}

func TestStopFinishesCurrentMessage(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, m := range mixed(t, 6) {
		d.Deliver(t, "alice", m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	rec.fail = func(*sinks.Message, []byte) error {
		if len(rec.got) == 1 {
			cancel() // SIGTERM while the second message is being delivered
		}
		return nil
	}
	e := newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"hook": rec})
	res, err := e.job.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 2 || res.Deleted != 2 {
		t.Fatalf("stopped run %+v: want the message in hand finished, delivered ones deleted", res)
	}
	if n := d.Count(t, "alice"); n != 4 {
		t.Errorf("%d on server, want 4", n)
	}
}

func TestLoginAuditLog(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	var buf syncbuf.Buffer
	e := newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"hook": &recorder{}})
	e.job.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.run()
	e.run()
	logins := strings.Count(buf.String(), `"msg":"logged in"`)
	if logins != 1 {
		t.Fatalf("%d login audit lines at info level for two identical logins, want 1:\n%s", logins, buf.String())
	}
	for _, want := range []string{`"tls":"TLS 1.3"`, `"cert_sha256":"`, `"cert_expires":"`, `"user":"alice"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("audit line lacks %s:\n%s", want, buf.String())
		}
	}
	if strings.Contains(buf.String(), d.Users["alice"]) {
		t.Error("the password is in the log")
	}
}

// flushingRecorder is a sink whose deliveries count only once Flush
// returns (sinks.Flusher), as the Maildir sink's do.
type flushingRecorder struct {
	recorder
	flushes  int
	flushed  []string // the keys Flush was given
	flushErr error
}

func (f *flushingRecorder) Flush(_ context.Context, keys []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes++
	f.flushed = append(f.flushed, keys...)
	return f.flushErr
}

// A batch is flushed once before it is recorded, and a failed flush
// records the batch as not delivered to that sink: nothing is deleted,
// and the next run offers the messages again under the same keys.
func TestFlushBeforeRecord(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
	defer s.Close()
	s.SetMailbox("alice", messages(5, "Subject: m%d\n\nbody\n"))
	archive := &flushingRecorder{flushErr: errors.New("fsync: input/output error")}
	hook := &recorder{}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"archive": archive, "hook": hook})
	res, err := e.job.Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if archive.flushes != 1 {
		t.Errorf("%d flushes for one batch, want 1", archive.flushes)
	}
	if n := len(s.Messages("alice")); n != 5 || res.Deleted != 0 || res.Delivered != 0 {
		t.Errorf("after a failed flush: %d left, result %+v: want all 5 kept and none counted delivered", n, res)
	}
	failed := 0
	for _, p := range res.Problems {
		if p.Sink == "archive" && strings.Contains(p.Error(), "input/output error") {
			failed++
		}
	}
	if failed == 0 {
		t.Errorf("the failed flush is not reported: %v", res.Problems)
	}
	first := archive.keys()
	if len(archive.flushed) != len(first) {
		t.Errorf("Flush was given %d keys for %d deliveries", len(archive.flushed), len(first))
	}
	for _, k := range archive.flushed {
		if first[k] != 1 {
			t.Errorf("Flush was given key %s, which the sink was not handed once", k)
		}
	}
	archive.flushErr = nil
	res = e.run()
	if n := len(s.Messages("alice")); n != 0 || res.Deleted != 5 {
		t.Errorf("after a good flush: %d left, result %+v", n, res)
	}
	again := archive.keys()
	for k := range first {
		if again[k] != 2 {
			t.Errorf("key %s offered %d times to the archive, want twice under the same key", k, again[k])
		}
	}
	if n := hook.count(); n != 5 {
		t.Errorf("the webhook got %d deliveries, want 5: its deliveries were recorded despite the archive's failure", n)
	}
}

// A first listing is recorded as such (meta.Initialized) with the first
// batch of results, or on its own when there is nothing to deliver, and
// never before the listing is complete.
func TestFirstListingRecorded(t *testing.T) {
	for _, n := range []int{0, 3} {
		s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
		defer s.Close()
		s.SetMailbox("alice", messages(n, "Subject: m%d\n\nbody\n"))
		e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": &recorder{}})
		if res := e.run(); res.Delivered != n {
			t.Fatalf("%d messages: %+v", n, res)
		}
		meta, err := e.ledger.Account(e.job.Account.LedgerID()).Meta()
		if err != nil || !meta.Initialized.Equal(e.clock) {
			t.Errorf("%d messages: Initialized %v (%v), want %v", n, meta.Initialized, err, e.clock)
		}
	}
}
