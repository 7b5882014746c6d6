//go:build unix

package dovecottest

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// popConn is a deliberately dumb POP3 client: one command, one reply.
type popConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func newPopConn(t testing.TB, c net.Conn) *popConn {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &popConn{t: t, c: c, r: bufio.NewReader(c)}
}

func dialPlain(t testing.TB, s *Server) *popConn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	p := newPopConn(t, c)
	p.expectOK(p.line())
	return p
}

func dialTLS(t testing.TB, s *Server, cfg *tls.Config) *popConn {
	t.Helper()
	c, err := tls.Dial("tcp", s.TLSAddr(), cfg)
	if err != nil {
		t.Fatalf("implicit TLS to %s: %v", s.TLSAddr(), err)
	}
	p := newPopConn(t, c)
	p.expectOK(p.line())
	return p
}

func (p *popConn) line() string {
	p.t.Helper()
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		p.t.Fatalf("line without CRLF: %q", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (p *popConn) cmd(format string, a ...any) string {
	p.t.Helper()
	if _, err := fmt.Fprintf(p.c, format+"\r\n", a...); err != nil {
		p.t.Fatalf("write: %v", err)
	}
	return p.line()
}

func (p *popConn) ok(format string, a ...any) string {
	p.t.Helper()
	return p.expectOK(p.cmd(format, a...))
}

func (p *popConn) expectOK(l string) string {
	p.t.Helper()
	if !strings.HasPrefix(l, "+OK") {
		p.t.Fatalf("want +OK, got %q", l)
	}
	return l
}

// multi returns a multi-line body as on the wire (still dot-stuffed, CRLF),
// without the terminating ".\r\n".
func (p *popConn) multi() []byte {
	p.t.Helper()
	var body []byte
	for {
		l, err := p.r.ReadBytes('\n')
		if err != nil {
			p.t.Fatalf("read multi-line: %v", err)
		}
		if string(l) == ".\r\n" {
			return body
		}
		body = append(body, l...)
	}
}

func (p *popConn) capa() []string {
	p.t.Helper()
	p.ok("CAPA")
	return strings.Split(strings.TrimSuffix(string(p.multi()), "\r\n"), "\r\n")
}

func (p *popConn) login(user, pass string) {
	p.t.Helper()
	p.ok("USER %s", user)
	p.ok("PASS %s", pass)
}

func (p *popConn) starttls(cfg *tls.Config) {
	p.t.Helper()
	p.ok("STLS")
	if p.r.Buffered() != 0 {
		p.t.Fatal("data after STLS reply")
	}
	tc := tls.Client(p.c, cfg)
	if err := tc.Handshake(); err != nil {
		p.t.Fatalf("STLS handshake: %v", err)
	}
	p.c, p.r = tc, bufio.NewReader(tc)
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var (
	msg1 = []byte("From: a@example.com\nTo: alice@example.com\nSubject: one\n\n.leading dot\n..two dots\nlast line\n")
	// CRLF given: stored and served as is, not doubled.
	msg2 = []byte("From: b@example.com\r\nSubject: two\r\n\r\nsecond\r\n.\r\nend\r\n")

	wire1 = []byte("From: a@example.com\r\nTo: alice@example.com\r\nSubject: one\r\n\r\n..leading dot\r\n...two dots\r\nlast line\r\n")
	wire2 = []byte("From: b@example.com\r\nSubject: two\r\n\r\nsecond\r\n..\r\nend\r\n")
)

func TestServer(t *testing.T) {
	begin := time.Now()
	s := Start(t, Options{})
	t.Logf("Start took %v; Host %s Port %d TLSPort %d", time.Since(begin), s.Host, s.Port, s.TLSPort)

	if s.Count(t, "alice") != 0 {
		t.Fatal("fresh Maildir not empty")
	}
	s.Deliver(t, "alice", msg1)
	s.Deliver(t, "alice", msg2)
	if n := s.Count(t, "alice"); n != 2 {
		t.Fatalf("Count = %d, want 2", n)
	}
	if fi, err := os.Stat(s.CAFile); err != nil || fi.Size() == 0 {
		t.Fatalf("CAFile %s: %v", s.CAFile, err)
	}

	t.Run("STLS", func(t *testing.T) {
		p := dialPlain(t, s)
		capa := p.capa()
		t.Logf("CAPA before STLS: %q", capa)
		if !has(capa, "STLS") {
			t.Fatalf("no STLS in CAPA %q", capa)
		}
		if !s.PlaintextAllowed {
			// Credentials before STLS must be refused (at USER or at PASS).
			if l := p.cmd("USER alice"); strings.HasPrefix(l, "+OK") {
				l = p.cmd("PASS alice-secret")
				if strings.HasPrefix(l, "+OK") {
					t.Fatalf("PASS accepted before STLS: %q", l)
				}
				t.Logf("before STLS: PASS -> %q", l)
			} else {
				t.Logf("before STLS: USER -> %q", l)
			}
		} else {
			t.Logf("Dovecot on %s accepts plaintext credentials: not testing the refusal", s.Host)
		}
		p.starttls(s.TLSConfig())
		capa = p.capa()
		t.Logf("CAPA after STLS: %q", capa)
		if has(capa, "STLS") {
			t.Errorf("STLS still offered after STLS: %q", capa)
		}
		p.login("alice", "alice-secret")
		t.Logf("CAPA after login: %q", p.capa())
		if l := p.ok("STAT"); !strings.HasPrefix(l, "+OK 2 ") {
			t.Fatalf("STAT = %q, want 2 messages", l)
		}
		p.ok("RETR 1")
		if got := p.multi(); !bytes.Equal(got, wire1) {
			t.Fatalf("RETR 1:\n got %q\nwant %q", got, wire1)
		}
		p.ok("QUIT")
	})

	t.Run("ImplicitTLS", func(t *testing.T) {
		p := dialTLS(t, s, s.TLSConfig())
		t.Logf("CAPA on TLS port: %q", p.capa())
		p.login("alice", "alice-secret")
		if l := p.ok("STAT"); !strings.HasPrefix(l, "+OK 2 ") {
			t.Fatalf("STAT = %q, want 2 messages", l)
		}
		p.ok("RETR 2")
		if got := p.multi(); !bytes.Equal(got, wire2) {
			t.Fatalf("RETR 2:\n got %q\nwant %q", got, wire2)
		}
		p.ok("QUIT")

		// The certificate also carries IP SANs.
		cfg := s.TLSConfig()
		cfg.ServerName = "127.0.0.1"
		dialTLS(t, s, cfg).ok("QUIT")
		cfg.ServerName = s.Host
		dialTLS(t, s, cfg).ok("QUIT")
	})

	t.Run("UntrustedCAFails", func(t *testing.T) {
		_, err := tls.Dial("tcp", s.TLSAddr(), &tls.Config{ServerName: s.ServerName})
		var uerr x509.UnknownAuthorityError
		if err == nil || !errors.As(err, &uerr) {
			t.Fatalf("dial without RootCAs: err = %v, want unknown authority", err)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		p := dialTLS(t, s, s.TLSConfig())
		p.ok("USER alice")
		begin := time.Now()
		l := p.cmd("PASS wrong")
		t.Logf("wrong password -> %q after %v", l, time.Since(begin))
		if !strings.HasPrefix(l, "-ERR [AUTH]") {
			t.Fatalf("wrong password: %q, want -ERR [AUTH]", l)
		}
	})

	t.Run("UIDLAndDeleteAtQuit", func(t *testing.T) {
		p := dialTLS(t, s, s.TLSConfig())
		p.login("alice", "alice-secret")
		p.ok("UIDL")
		uidl := strings.Split(strings.TrimSuffix(string(p.multi()), "\r\n"), "\r\n")
		t.Logf("UIDL: %q", uidl)
		if len(uidl) != 2 || len(strings.Fields(uidl[0])) != 2 || len(strings.Fields(uidl[0])[1]) != 16 {
			t.Fatalf("UIDL = %q, want 2 entries of %%08Xu%%08Xv", uidl)
		}
		p.ok("DELE 1")
		if n := s.Count(t, "alice"); n != 2 {
			t.Fatalf("Count before QUIT = %d, want 2", n)
		}
		p.ok("QUIT")
		// QUIT's reply comes after the expunge.
		if n := s.Count(t, "alice"); n != 1 {
			t.Fatalf("Count after QUIT = %d, want 1", n)
		}
	})
}

func TestAllowPlaintextAuthAndUsers(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{
		Users:              map[string]string{"bob": "b0b pass", "carol@example.com": "c"},
		AllowPlaintextAuth: true,
	})
	if !s.PlaintextAllowed {
		t.Fatal("PlaintextAllowed not set")
	}
	s.Deliver(t, "carol@example.com", []byte("Subject: x\n\nno final newline"))
	p := dialPlain(t, s)
	p.login("carol@example.com", "c")
	p.ok("RETR 1")
	got := p.multi()
	t.Logf("message without final newline comes back as %q", got)
	if !bytes.HasPrefix(got, []byte("Subject: x\r\n\r\nno final newline")) {
		t.Fatalf("RETR 1 = %q", got)
	}
	p.ok("QUIT")
	p = dialPlain(t, s)
	p.login("bob", "b0b pass")
	if l := p.ok("STAT"); l != "+OK 0 0" {
		t.Fatalf("STAT = %q", l)
	}
	p.ok("QUIT")
	if s.Count(t, "bob") != 0 || s.Count(t, "carol@example.com") != 1 {
		t.Fatal("wrong counts")
	}
}

func TestDeliverOrder(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	const n = 30
	for i := 1; i <= n; i++ {
		s.Deliver(t, "alice", fmt.Appendf(nil, "Subject: %d\n\nbody %d\n", i, i))
	}
	p := dialTLS(t, s, s.TLSConfig())
	p.login("alice", "alice-secret")
	for i := 1; i <= n; i++ {
		p.ok("RETR %d", i)
		if want := fmt.Sprintf("Subject: %d\r\n", i); !strings.HasPrefix(string(p.multi()), want) {
			t.Fatalf("message %d out of order", i)
		}
	}
	p.ok("QUIT")
}

func TestStopAndOddTestName(t *testing.T) {
	t.Parallel()
	t.Run("name with # and spaces", func(t *testing.T) {
		s := Start(t, Options{})
		if strings.ContainsAny(s.Dir, "# ") {
			t.Fatalf("Dir %q unusable in dovecot.conf", s.Dir)
		}
		p := dialTLS(t, s, s.TLSConfig())
		p.login("alice", "alice-secret")
		s.Deliver(t, "alice", msg1)
		begin := time.Now()
		s.Stop()
		t.Logf("Stop took %v", time.Since(begin))
		// The session dies with the server.
		if _, err := p.r.ReadString('\n'); err == nil {
			t.Error("session still alive after Stop")
		}
		if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
			c.Close()
			t.Error("port still open after Stop")
		}
		s.Stop() // idempotent; Cleanup calls it again
		if n := s.Count(t, "alice"); n != 1 {
			t.Errorf("Count after Stop = %d", n)
		}
	})
}

func TestExtraConfigAndMechanisms(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{
		AuthMechanisms: []string{"plain", "cram-md5", "apop"},
		ExtraConfig:    "login_greeting = hello from dovecottest\nprotocol pop3 {\n  mail_max_userip_connections = 1\n}",
	})

	// APOP adds a timestamp to the greeting.
	c, err := tls.Dial("tcp", s.TLSAddr(), s.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := newPopConn(t, c)
	greeting := p.expectOK(p.line())
	i := strings.Index(greeting, "<")
	if !strings.HasPrefix(greeting, "+OK hello from dovecottest <") || i < 0 {
		t.Fatalf("greeting %q", greeting)
	}
	digest := md5.Sum([]byte(greeting[i:] + "alice-secret"))
	p.ok("APOP alice %x", digest)

	// mail_max_userip_connections = 1: a second session of the same user
	// from the same IP is refused at once with [IN-USE]. (pop3_lock_session
	// = yes gives [IN-USE] too, but only after a fixed 10s lock wait.)
	p2 := dialTLS(t, s, s.TLSConfig())
	l := p2.cmd("AUTH CRAM-MD5")
	challenge, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "+ "))
	if err != nil || !strings.HasPrefix(l, "+ ") {
		t.Fatalf("AUTH CRAM-MD5: %q", l)
	}
	h := hmac.New(md5.New, []byte("alice-secret"))
	h.Write(challenge)
	l = p2.cmd("%s", base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "alice %x", h.Sum(nil))))
	t.Logf("second session: %q", l)
	if !strings.HasPrefix(l, "-ERR [IN-USE]") {
		t.Fatalf("second session: %q, want -ERR [IN-USE]", l)
	}
	p.ok("QUIT")
}

// fakeTB records Skip and Fatal instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Skip(args ...any)  { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any) { f.failed = fmt.Sprint(args...) }

func TestUnavailable(t *testing.T) {
	for _, ci := range []bool{false, true} {
		f := &fakeTB{}
		unavailable(f, ci, "dovecot is not installed")
		msg := f.skipped
		if ci {
			msg = f.failed
			if f.skipped != "" {
				t.Errorf("CI: skipped %q", f.skipped)
			}
		} else if f.failed != "" {
			t.Errorf("not CI: failed %q", f.failed)
		}
		if !strings.Contains(msg, "apt-get install dovecot-core dovecot-pop3d") {
			t.Errorf("ci=%v: message %q lacks the install hint", ci, msg)
		}
	}
}

func TestFindDovecot(t *testing.T) {
	notFound := func(string) (string, error) { return "", errors.New("not found") }
	files := func(have ...string) func(string) bool {
		return func(p string) bool { return has(have, p) }
	}
	if _, err := findDovecot(notFound, files()); err == nil {
		t.Error("no dovecot: no error")
	}
	if _, err := findDovecot(notFound, files("/usr/sbin/dovecot")); err == nil || !strings.Contains(err.Error(), "POP3") {
		t.Errorf("dovecot without pop3d: err = %v", err)
	}
	bin, err := findDovecot(notFound, files("/usr/sbin/dovecot", "/usr/lib/dovecot/pop3-login", "/usr/lib/dovecot/pop3"))
	if err != nil || bin != "/usr/sbin/dovecot" {
		t.Errorf("Debian layout: %q, %v", bin, err)
	}
	inPath := func(string) (string, error) { return "/usr/local/sbin/dovecot", nil }
	bin, err = findDovecot(inPath, files("/usr/local/libexec/dovecot/pop3-login", "/usr/local/libexec/dovecot/pop3"))
	if err != nil || bin != "/usr/local/sbin/dovecot" {
		t.Errorf("libexec layout: %q, %v", bin, err)
	}
}
