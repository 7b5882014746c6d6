package worker

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/pophook/pophook/internal/testutil/popa3dtest"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker/pop3"
)

// The tests in this file run the real job against popa3d, the second real
// server besides Dovecot: no CAPA, no SASL, no TLS, mbox storage, and the
// login refusals recorded in testdata/transcripts/courier-popa3d.txt.

// popa3dAccount is an account for user on p: plain POP3 (popa3d has no
// TLS), so USER/PASS must be allowed in the clear.
func popa3dAccount(p *popa3dtest.Server, user string) *Account {
	return &Account{
		Name: "support", Host: p.Host, Port: p.Port, TLS: pop3.TLSNone, AllowInsecureAuth: true,
		Username: user, Credential: password(p.Users[user]), MaxMessageSize: 64 << 20,
	}
}

// credentialLines returns the lines clients sent that carry a credential.
func credentialLines(p *popa3dtest.Server) []string {
	var out []string
	for _, l := range p.Log() {
		u := strings.ToUpper(l)
		if strings.HasPrefix(u, "USER") || strings.HasPrefix(u, "PASS") || strings.HasPrefix(u, "AUTH") || strings.HasPrefix(u, "APOP") {
			out = append(out, l)
		}
	}
	return out
}

func TestPopa3dDeliversByteExactAndDeletes(t *testing.T) {
	p := popa3dtest.Start(t, popa3dtest.Options{})
	msgs := mixed(t, 24)
	want := map[string]int{}
	for _, m := range msgs {
		p.Deliver(t, "alice", m)
		want[string(popa3dtest.Served(m))]++
	}
	rec := &recorder{}
	e := newEnv(t, popa3dAccount(p, "alice"), map[string]sinks.Sink{"hook": rec})
	res := e.run()
	if res.Listed != len(msgs) || res.Delivered != len(msgs) || res.Deleted != len(msgs) || len(res.Problems) != 0 {
		t.Fatalf("result %+v, problems %v", res, res.Problems)
	}
	if n := p.Count(t, "alice"); n != 0 {
		t.Errorf("%d messages left in the mbox", n)
	}
	if rec.count() != len(msgs) {
		t.Fatalf("%d deliveries, want %d", rec.count(), len(msgs))
	}
	for _, d := range rec.got {
		if want[string(d.raw)] == 0 {
			t.Errorf("delivered %s is not byte-exact what popa3d serves for any message: %.120q", d.uidl, d.raw)
			continue
		}
		want[string(d.raw)]--
	}

	// Nothing new: the second run lists an empty mailbox.
	if res := e.run(); res.Listed != 0 || res.Delivered != 0 || res.Deleted != 0 || len(res.Problems) != 0 {
		t.Errorf("second run %+v", res)
	}
	// Mail that arrives later is the only one sent.
	later := []byte("Subject: later\nMessage-ID: <later@popa3d.test>\n\nFrom the start of a line\n.\n")
	p.Deliver(t, "alice", later)
	if res := e.run(); res.Listed != 1 || res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("third run %+v", res)
	}
	if got := rec.got[len(rec.got)-1].raw; !bytes.Equal(got, popa3dtest.Served(later)) {
		t.Errorf("later message delivered as %q, want %q", got, popa3dtest.Served(later))
	}
	if n := p.Count(t, "alice"); n != 0 || rec.count() != len(msgs)+1 {
		t.Errorf("%d left in the mbox, %d deliveries; want 0 and %d", n, rec.count(), len(msgs)+1)
	}
}

// popa3d answers CAPA with a bare -ERR and offers no SASL: auto logs in
// with USER/PASS; an explicit SASL mechanism is refused before any
// credential is sent.
func TestPopa3dAuthMechanisms(t *testing.T) {
	p := popa3dtest.Start(t, popa3dtest.Options{})
	p.Deliver(t, "alice", []byte("Subject: auth\nMessage-ID: <auth@popa3d.test>\n\nbody\n"))
	rec := &recorder{}
	acct := popa3dAccount(p, "alice")
	acct.Mechanism = pop3.MechPlain
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	_, err := e.job.Run(context.Background())
	if !errors.Is(err, pop3.ErrMechanism) || errors.Is(err, pop3.ErrAuth) || strings.Contains(err.Error(), "password") || !strings.Contains(err.Error(), "no CAPA") {
		t.Fatalf("AUTH=plain against popa3d: %v; want ErrMechanism saying the server has no CAPA", err)
	}
	if sent := credentialLines(p); len(sent) != 0 {
		t.Errorf("credentials were sent for AUTH=plain: %q", sent)
	}
	if log := strings.Join(p.Log(), "\n"); strings.Contains(log, p.Users["alice"]) {
		t.Errorf("the password crossed the wire:\n%s", log)
	}
	if len(p.Log()) == 0 || p.Log()[0] != "CAPA" {
		t.Errorf("client lines %q: want CAPA first", p.Log())
	}

	acct.Mechanism = pop3.MechAuto
	e.newJob() // the mechanism changed: the credential fingerprint differs
	if res := e.run(); res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("auto: %+v", res)
	}
	sent := credentialLines(p)
	if len(sent) != 2 || sent[0] != "USER alice" || sent[1] != "PASS "+p.Users["alice"] {
		t.Errorf("auto sent %q, want USER alice and PASS", sent)
	}
}

// A wrong password gets popa3d's reason, so the refusal is not vague.
func TestPopa3dWrongPassword(t *testing.T) {
	p := popa3dtest.Start(t, popa3dtest.Options{})
	p.Deliver(t, "alice", []byte("Subject: stays\nMessage-ID: <stays@popa3d.test>\n\nbody\n"))
	acct := popa3dAccount(p, "alice")
	acct.Credential = password("not-" + p.Users["alice"])
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
	_, err := e.job.Run(context.Background())
	var pe *pop3.Error
	if !errors.As(err, &pe) || !pe.Login || pe.Vague || pe.Command != "PASS" || pe.Text != "Authentication failed (bad password?)" {
		t.Fatalf("err = %v (%+v); want a -ERR to PASS with popa3d's reason, not vague", err, pe)
	}
	if !errors.Is(err, pop3.ErrAuth) || !strings.Contains(err.Error(), "check the user name and password") {
		t.Errorf("err = %v; want an authentication failure asking to check the credentials", err)
	}
	if meta, _ := e.ledger.Account(acct.LedgerID()).Meta(); meta.Login.Failures != 1 || !meta.Login.NotBefore.Equal(e.clock.Add(loginBackoffMin)) {
		t.Errorf("login state %+v, want one failure and a back-off of %s", meta.Login, loginBackoffMin)
	}
	if n := p.Count(t, "alice"); n != 1 {
		t.Errorf("%d in the mbox, want 1", n)
	}
}

// The right password but an mbox popa3d cannot open as the user: a bare
// -ERR to PASS, which is vague, and the job says the server gave no reason.
// Once the mbox is readable again the run after the back-off delivers.
func TestPopa3dMailboxItCannotOpen(t *testing.T) {
	p := popa3dtest.Start(t, popa3dtest.Options{})
	p.Deliver(t, "alice", []byte("Subject: locked away\nMessage-ID: <locked@popa3d.test>\n\nbody\n"))
	mbox := p.MailboxPath("alice")
	fi, err := os.Stat(mbox)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Chown(mbox, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(mbox, 0); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	acct := popa3dAccount(p, "alice")
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	_, err = e.job.Run(context.Background())
	var pe *pop3.Error
	if !errors.As(err, &pe) || !pe.Login || !pe.Vague || pe.Command != "PASS" || pe.Text != "" || pe.Code != "" {
		t.Fatalf("err = %v (%+v); want a bare -ERR to PASS, vague", err, pe)
	}
	if !errors.Is(err, pop3.ErrAuth) || !strings.Contains(err.Error(), "the server refused the login without saying why") ||
		strings.Contains(err.Error(), "check the user name and password") {
		t.Errorf("err = %v; want it to say the server refused without saying why", err)
	}
	if sent := credentialLines(p); len(sent) != 2 || sent[1] != "PASS "+p.Users["alice"] {
		t.Errorf("client sent %q; want the right password", sent)
	}

	if err := os.Chmod(mbox, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mbox, int(st.Uid), int(st.Gid)); err != nil {
		t.Fatal(err)
	}
	if res := e.run(); res.Skipped != SkipAuthBackoff {
		t.Fatalf("run during the back-off: %+v", res)
	}
	e.clock = e.clock.Add(loginBackoffMin)
	if res := e.run(); res.Delivered != 1 || res.Deleted != 1 || p.Count(t, "alice") != 0 {
		t.Fatalf("run after the back-off with the mbox readable: %+v, %d left", res, p.Count(t, "alice"))
	}
	if !bytes.Contains(rec.got[0].raw, []byte("<locked@popa3d.test>")) {
		t.Errorf("delivered %q", rec.got[0].raw)
	}
}
