package pop3test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// client is a bare POP3 client: it sends lines and reads raw replies.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialRaw connects without reading the greeting.
func dialRaw(t *testing.T, s *Server) *client {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return wrap(t, conn)
}

// Generous limits for a loaded machine (go test -race on 2 cores): ioLimit
// bounds a client session's I/O so that a server that stops answering
// fails the test rather than hanging it; waitLimit bounds polling for
// the server's state.
const (
	ioLimit   = 30 * time.Second
	waitLimit = 20 * time.Second
)

func wrap(t *testing.T, conn net.Conn) *client {
	conn.SetDeadline(time.Now().Add(ioLimit))
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dial connects and checks the greeting.
func dial(t *testing.T, s *Server) *client {
	t.Helper()
	c := dialRaw(t, s)
	if g := c.line(); g != "+OK pop3test ready" {
		t.Fatalf("greeting = %q", g)
	}
	return c
}

// send writes all lines in one write.
func (c *client) send(lines ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, strings.Join(lines, "\r\n")+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
}

// line reads one line without its CRLF.
func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading a reply: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("reply %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// cmd sends a command and returns the status line.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line)
	return c.line()
}

// ok sends a command and fails unless the reply is +OK.
func (c *client) ok(line string) string {
	c.t.Helper()
	r := c.cmd(line)
	if !strings.HasPrefix(r, "+OK") {
		c.t.Fatalf("%s: %q", line, r)
	}
	return r
}

// body reads a multi-line body as sent, terminator included.
func (c *client) body() string {
	c.t.Helper()
	var b strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading a body: %v (got %q)", err, b.String()+l)
		}
		b.WriteString(l)
		if l == ".\r\n" {
			return b.String()
		}
	}
}

// lines reads a multi-line body and returns its lines, unstuffed.
func (c *client) lines() []string {
	c.t.Helper()
	body := strings.TrimSuffix(c.body(), ".\r\n")
	var out []string
	for _, l := range strings.SplitAfter(body, "\r\n") {
		if l != "" {
			out = append(out, strings.TrimPrefix(strings.TrimSuffix(l, "\r\n"), "."))
		}
	}
	return out
}

func (c *client) login() {
	c.t.Helper()
	c.ok("USER alice")
	c.ok("PASS secret")
}

// eof fails unless the server closes the connection without sending more.
func (c *client) eof() {
	c.t.Helper()
	if rest, err := io.ReadAll(c.r); err != nil || len(rest) > 0 {
		c.t.Fatalf("want EOF, got %q, %v", rest, err)
	}
}

// silent fails if a reply arrives within d.
func (c *client) silent(d time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	l, err := c.r.ReadString('\n')
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("want no reply, got %q, %v", l, err)
	}
	c.conn.SetReadDeadline(time.Now().Add(ioLimit))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func newServer(t *testing.T, opts Options) *Server {
	s := NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// waitUnlocked waits until no session holds user's mailbox.
func waitUnlocked(t *testing.T, s *Server, user string) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.mu.Lock()
		locked := s.locked[user]
		s.mu.Unlock()
		if !locked {
			return
		}
	}
	t.Fatal("mailbox still locked")
}

func sample() []Message {
	return []Message{
		{UID: "u1", Data: []byte("Subject: one\n\nfirst\n")},
		{UID: "u2", Data: []byte("Subject: two\r\n\r\nsecond\r\n")},
	}
}

func TestUserPass(t *testing.T) {
	s := newServer(t, Options{})
	s.SetMailbox("alice", sample())

	c := dial(t, s)
	if r := c.cmd("PASS secret"); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("PASS before USER: %q", r)
	}
	if r := c.cmd("STAT"); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("STAT before login: %q", r)
	}
	c.ok("USER alice")
	if r := c.cmd("PASS wrong"); r != "-ERR [AUTH] invalid credentials" {
		t.Errorf("wrong password: %q", r)
	}
	c.ok("user alice") // case-insensitive
	c.ok("pass secret")
	if r := c.cmd("stat"); r != "+OK 2 47" {
		t.Errorf("STAT = %q", r)
	}
	if r := c.cmd("USER alice"); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("USER after login: %q", r)
	}
	c.ok("NOOP")
	c.ok("QUIT")
	c.eof()

	want := []string{"PASS secret", "STAT", "USER alice", "PASS wrong", "user alice", "pass secret", "stat", "USER alice", "NOOP", "QUIT"}
	if got := s.Log(); !slices.Equal(got, want) {
		t.Errorf("Log = %q, want %q", got, want)
	}
}

func TestCAPA(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"default", Options{},
			[]string{"TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION pop3test"}},
		{"all", Options{Pipelining: true, STLS: true, SASL: []string{"plain", "LOGIN", "XOAUTH2"}},
			[]string{"TOP", "UIDL", "USER", "SASL PLAIN LOGIN XOAUTH2", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS", "IMPLEMENTATION pop3test"}},
		{"bare", Options{NoUIDL: true, NoUser: true},
			[]string{"TOP", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION pop3test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, newServer(t, tc.opts))
			c.ok("CAPA")
			if got := c.lines(); !slices.Equal(got, tc.want) {
				t.Errorf("CAPA = %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("NoUIDL", func(t *testing.T) {
		c := dial(t, newServer(t, Options{NoUIDL: true}))
		c.login()
		if r := c.cmd("UIDL"); !strings.HasPrefix(r, "-ERR") {
			t.Errorf("UIDL = %q", r)
		}
	})
	t.Run("NoUser", func(t *testing.T) {
		c := dial(t, newServer(t, Options{NoUser: true}))
		if r := c.cmd("USER alice"); !strings.HasPrefix(r, "-ERR") {
			t.Errorf("USER = %q", r)
		}
	})
}

func TestSASL(t *testing.T) {
	xo := func(user, token string) string { return b64("user=" + user + "\x01auth=Bearer " + token + "\x01\x01") }
	jsonErr := "+ " + b64(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`)
	for _, tc := range []struct {
		name string
		// dialogue alternates client line and expected server line; the
		// last server line is compared by prefix.
		dialogue []string
	}{
		{"PLAIN initial", []string{"AUTH PLAIN " + b64("\x00alice\x00secret"), "+OK"}},
		{"PLAIN authzid", []string{"AUTH PLAIN " + b64("alice\x00alice\x00secret"), "+OK"}},
		{"PLAIN foreign authzid", []string{"AUTH PLAIN " + b64("bob\x00alice\x00secret"), "-ERR [AUTH] invalid credentials"}},
		{"PLAIN two-step", []string{"AUTH PLAIN", "+ ", b64("\x00alice\x00secret"), "+OK"}},
		{"PLAIN wrong", []string{"AUTH PLAIN " + b64("\x00alice\x00nope"), "-ERR [AUTH] invalid credentials"}},
		{"PLAIN cancel", []string{"auth plain", "+ ", "*", "-ERR"}},
		{"PLAIN bad base64", []string{"AUTH PLAIN !!!", "-ERR"}},
		{"LOGIN", []string{"AUTH LOGIN", "+ VXNlcm5hbWU6", b64("alice"), "+ UGFzc3dvcmQ6", b64("secret"), "+OK"}},
		{"LOGIN initial", []string{"AUTH LOGIN " + b64("alice"), "+ UGFzc3dvcmQ6", b64("secret"), "+OK"}},
		{"LOGIN wrong", []string{"AUTH LOGIN", "+ VXNlcm5hbWU6", b64("alice"), "+ UGFzc3dvcmQ6", b64("x"), "-ERR [AUTH] invalid credentials"}},
		{"LOGIN cancel", []string{"AUTH LOGIN", "+ VXNlcm5hbWU6", b64("alice"), "+ UGFzc3dvcmQ6", "*", "-ERR"}},
		{"XOAUTH2 initial", []string{"AUTH XOAUTH2 " + xo("alice", "token"), "+OK"}},
		{"XOAUTH2 two-step", []string{"AUTH XOAUTH2", "+ ", xo("alice", "token"), "+OK"}},
		{"XOAUTH2 bad token", []string{"AUTH XOAUTH2 " + xo("alice", "stale"), jsonErr, "", "-ERR [AUTH] invalid credentials"}},
		{"XOAUTH2 bad token two-step", []string{"AUTH XOAUTH2", "+ ", xo("alice", "stale"), jsonErr, "", "-ERR [AUTH]"}},
		{"unknown mechanism", []string{"AUTH CRAM-MD5", "-ERR"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{SASL: []string{"PLAIN", "LOGIN", "XOAUTH2"}})
			s.SetMailbox("alice", sample())
			c := dial(t, s)
			d := tc.dialogue
			for i := 0; i+1 < len(d); i += 2 {
				got := c.cmd(d[i])
				if last := i+2 >= len(d); last && !strings.HasPrefix(got, d[i+1]) || !last && got != d[i+1] {
					t.Fatalf("after %q: got %q, want %q", d[i], got, d[i+1])
				}
			}
			if strings.HasPrefix(d[len(d)-1], "+OK") {
				c.ok("STAT")
			} else {
				c.login() // the session is back in AUTHORIZATION state
			}
		})
	}

	t.Run("not offered", func(t *testing.T) {
		c := dial(t, newServer(t, Options{SASL: []string{"LOGIN"}}))
		if r := c.cmd("AUTH PLAIN " + b64("\x00alice\x00secret")); !strings.HasPrefix(r, "-ERR") {
			t.Errorf("AUTH PLAIN = %q", r)
		}
		c.ok("AUTH")
		if got := c.lines(); !slices.Equal(got, []string{"LOGIN"}) {
			t.Errorf("AUTH list = %q", got)
		}
	})
}

func TestInUse(t *testing.T) {
	s := newServer(t, Options{})
	a := dial(t, s)
	a.login()
	b := dial(t, s)
	b.ok("USER alice")
	if r := b.cmd("PASS secret"); r != "-ERR [IN-USE] mailbox locked by another session" {
		t.Errorf("second login = %q", r)
	}
	a.ok("QUIT")
	b.login() // the lock is released before QUIT's reply
}

func TestTLSServer(t *testing.T) {
	s := NewTLSServer(Options{})
	defer s.Close()
	s.SetMailbox("alice", sample())

	conn, err := tls.Dial("tcp", s.Addr, s.ClientTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := wrap(t, conn)
	if g := c.line(); g != "+OK pop3test ready" {
		t.Fatalf("greeting = %q", g)
	}
	c.ok("CAPA")
	if got := c.lines(); slices.Contains(got, "STLS") {
		t.Errorf("CAPA over TLS offers STLS: %q", got)
	}
	c.login()
	c.ok("QUIT")
	if tr := s.Transcript(); len(tr) == 0 || !tr[0].TLS || tr[0].Conn != 1 {
		t.Errorf("Transcript = %+v", tr)
	}

	// The certificate is good for "localhost" too, and for nothing else.
	conn2, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: s.RootCAs(), ServerName: "localhost"})
	if err != nil {
		t.Fatalf("ServerName localhost: %v", err)
	}
	conn2.Close()
	if c, err := tls.Dial("tcp", s.Addr, &tls.Config{RootCAs: s.RootCAs(), ServerName: "example.com"}); err == nil {
		c.Close()
		t.Error("certificate accepted for example.com")
	}
	// Another server's certificate does not verify this one.
	other := NewTLSServer(Options{})
	defer other.Close()
	if c, err := tls.Dial("tcp", s.Addr, other.ClientTLSConfig()); err == nil {
		c.Close()
		t.Error("certificate of another server accepted")
	}
	if s.Certificate() == nil || newServer(t, Options{}).Certificate() != nil {
		t.Error("Certificate() wrong")
	}
}

func TestSTLS(t *testing.T) {
	s := newServer(t, Options{STLS: true, SASL: []string{"PLAIN"}})
	c := dial(t, s)
	c.ok("CAPA")
	if got := c.lines(); !slices.Contains(got, "STLS") {
		t.Fatalf("CAPA lacks STLS: %q", got)
	}
	// A command sent with STLS, before the handshake, is discarded
	// (RFC 2595 section 3.1; a defence against plaintext injection).
	c.send("STLS", "CAPA")
	if r := c.line(); r != "+OK begin TLS negotiation" {
		t.Fatalf("STLS = %q", r)
	}
	tc := tls.Client(c.conn, s.ClientTLSConfig())
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = wrap(t, tc)
	if r := c.cmd("NOOP"); r != "-ERR not logged in" {
		t.Fatalf("first reply over TLS = %q (injected CAPA answered?)", r)
	}
	c.ok("CAPA")
	if got := c.lines(); slices.Contains(got, "STLS") {
		t.Errorf("CAPA after STLS offers STLS: %q", got)
	}
	if r := c.cmd("STLS"); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("second STLS = %q", r)
	}
	c.login()
	c.ok("QUIT")

	var sawSTLS bool
	for _, l := range s.Transcript() {
		if l.Text == "STLS" {
			sawSTLS = true
		}
		if strings.HasPrefix(l.Text, "PASS") && !l.TLS {
			t.Errorf("PASS recorded without TLS: %+v", l)
		}
		if l.Text == "CAPA" && l.TLS != sawSTLS {
			t.Errorf("CAPA recorded with TLS=%v", l.TLS)
		}
	}

	// STLS after login is refused.
	c = dial(t, s)
	c.login()
	if r := c.cmd("STLS"); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("STLS after login = %q", r)
	}
}

func TestRetrExact(t *testing.T) {
	s := newServer(t, Options{})
	msgs := []Message{
		{UID: "dots", Data: []byte("Subject: dots\n\n.leading dot\r\n..two\n.\nlast line, no newline")},
		{Data: []byte("Subject: hashed\n\nbody\n")},
		{UID: "empty"},
	}
	s.SetMailbox("alice", msgs)
	stored := s.Messages("alice")
	if _, err := hex.DecodeString(stored[1].UID); err != nil || len(stored[1].UID) != 16 {
		t.Errorf("derived UID = %q", stored[1].UID)
	}

	wire := "Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nlast line, no newline\r\n"
	if got := string(msgs[0].Wire()); got != wire {
		t.Errorf("Wire = %q, want %q", got, wire)
	}
	stuffed := "Subject: dots\r\n\r\n..leading dot\r\n...two\r\n..\r\nlast line, no newline\r\n.\r\n"

	c := dial(t, s)
	c.login()
	c.ok("LIST")
	wantList := []string{"1 64", "2 25", "3 0"}
	if got := c.lines(); !slices.Equal(got, wantList) {
		t.Errorf("LIST = %q, want %q", got, wantList)
	}
	if len(wire) != 64 || len(msgs[1].Wire()) != 25 {
		t.Fatalf("test sizes are off: %d %d", len(wire), len(msgs[1].Wire()))
	}
	if r := c.cmd("LIST 2"); r != "+OK 2 25" {
		t.Errorf("LIST 2 = %q", r)
	}
	c.ok("UIDL")
	if got := c.lines(); !slices.Equal(got, []string{"1 dots", "2 " + stored[1].UID, "3 empty"}) {
		t.Errorf("UIDL = %q", got)
	}
	if r := c.cmd("UIDL 3"); r != "+OK 3 empty" {
		t.Errorf("UIDL 3 = %q", r)
	}
	if r := c.ok("RETR 1"); r != "+OK 64 octets" {
		t.Errorf("RETR status = %q", r)
	}
	if got := c.body(); got != stuffed {
		t.Errorf("RETR 1 body = %q, want %q", got, stuffed)
	}
	c.ok("RETR 3")
	if got := c.body(); got != ".\r\n" {
		t.Errorf("RETR of an empty message = %q", got)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"TOP 1 0", "Subject: dots\r\n\r\n.\r\n"},
		{"TOP 1 2", "Subject: dots\r\n\r\n..leading dot\r\n...two\r\n.\r\n"},
		{"TOP 1 99", stuffed},
		{"TOP 2 0", "Subject: hashed\r\n\r\n.\r\n"},
	} {
		c.ok(tc.cmd)
		if got := c.body(); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.cmd, got, tc.want)
		}
	}
	for _, cmd := range []string{"RETR 0", "RETR 4", "RETR x", "RETR", "TOP 1", "TOP 1 -1", "LIST 9", "FOO"} {
		if r := c.cmd(cmd); !strings.HasPrefix(r, "-ERR") {
			t.Errorf("%s = %q", cmd, r)
		}
	}
}

func TestDeleteOnlyAtQuit(t *testing.T) {
	s := newServer(t, Options{})
	s.SetMailbox("alice", sample())

	// A dropped connection applies nothing.
	c := dial(t, s)
	c.login()
	c.ok("DELE 1")
	c.ok("DELE 2")
	c.conn.Close()
	waitUnlocked(t, s, "alice")
	if n := len(s.Messages("alice")); n != 2 {
		t.Fatalf("after a drop: %d messages, want 2", n)
	}

	// RSET unmarks; QUIT applies.
	c = dial(t, s)
	c.login()
	c.ok("DELE 2")
	if r := c.cmd("RETR 2"); r != "-ERR message 2 already deleted" {
		t.Errorf("RETR of a deleted message = %q", r)
	}
	if r := c.cmd("DELE 2"); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("second DELE = %q", r)
	}
	c.ok("RSET")
	if r := c.cmd("STAT"); r != "+OK 2 47" {
		t.Errorf("STAT after RSET = %q", r)
	}
	c.ok("DELE 1")
	if r := c.cmd("STAT"); r != "+OK 1 24" {
		t.Errorf("STAT after DELE = %q", r)
	}
	c.ok("LIST")
	if got := c.lines(); !slices.Equal(got, []string{"2 24"}) {
		t.Errorf("LIST after DELE = %q", got)
	}
	// A message added mid-session is not seen by it, and survives its QUIT.
	s.AddMessages("alice", Message{UID: "u3", Data: []byte("new\n")})
	c.ok("STAT")
	if r := c.cmd("QUIT"); r != "+OK pop3test signing off (2 messages left)" {
		t.Errorf("QUIT = %q", r)
	}
	c.eof()
	got := s.Messages("alice")
	if len(got) != 2 || got[0].UID != "u2" || got[1].UID != "u3" {
		t.Errorf("after QUIT: %+v", got)
	}
}

func TestPipelining(t *testing.T) {
	s := newServer(t, Options{Pipelining: true})
	s.SetMailbox("alice", sample())
	c := dial(t, s)
	c.send("USER alice", "PASS secret", "STAT", "LIST", "UIDL", "RETR 1", "DELE 1", "NOOP", "QUIT")
	for _, want := range []string{"+OK send PASS", "+OK alice has 2 messages (47 octets)", "+OK 2 47"} {
		if r := c.line(); r != want {
			t.Fatalf("got %q, want %q", r, want)
		}
	}
	c.line()
	if got := c.lines(); !slices.Equal(got, []string{"1 23", "2 24"}) {
		t.Errorf("LIST = %q", got)
	}
	c.line()
	if got := c.lines(); !slices.Equal(got, []string{"1 u1", "2 u2"}) {
		t.Errorf("UIDL = %q", got)
	}
	if r := c.line(); r != "+OK 23 octets" {
		t.Errorf("RETR = %q", r)
	}
	if got := c.body(); got != "Subject: one\r\n\r\nfirst\r\n.\r\n" {
		t.Errorf("RETR body = %q", got)
	}
	for _, want := range []string{"+OK message 1 deleted", "+OK", "+OK pop3test signing off (1 messages left)"} {
		if r := c.line(); r != want {
			t.Errorf("got %q, want %q", r, want)
		}
	}
}

func TestPipelinedPartialLine(t *testing.T) {
	// A command split across writes must not hold back the replies to
	// the complete ones before it.
	s := newServer(t, Options{Pipelining: true})
	c := dial(t, s)
	io.WriteString(c.conn, "USER alice\r\nPA")
	if r := c.line(); r != "+OK send PASS" {
		t.Fatalf("USER = %q", r)
	}
	io.WriteString(c.conn, "SS secret\r\n")
	if r := c.line(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("PASS = %q", r)
	}
}

func TestLineTooLong(t *testing.T) {
	c := dial(t, newServer(t, Options{}))
	if r := c.cmd("NOOP " + strings.Repeat("x", 5000)); r != "-ERR line too long" {
		t.Errorf("long line = %q", r)
	}
	c.login() // the session goes on
}

func TestClose(t *testing.T) {
	s := NewServer(Options{Faults: Faults{SlowReply: time.Hour}})
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitConns(t, s, 1)
	start := time.Now()
	s.Close() // interrupts the hour-long pause before the greeting
	// Far short of the hour: Close does not wait for the pause.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %v", d)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("after Close: %v", err)
	}
	s.Close() // twice is fine
	if _, err := net.Dial("tcp", s.Addr); err == nil {
		t.Error("still listening")
	}
}

func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.mu.Lock()
		got := s.nconn
		s.mu.Unlock()
		if got >= n {
			return
		}
	}
	t.Fatalf("fewer than %d connections", n)
}

func TestFaults(t *testing.T) {
	big := Message{UID: "big", Data: []byte(strings.Repeat("0123456789abcdef\n", 100))}

	t.Run("CutRetrAfter", func(t *testing.T) {
		s := newServer(t, Options{Faults: Faults{CutRetrAfter: 100}})
		s.SetMailbox("alice", []Message{big, sample()[0]})
		c := dial(t, s)
		c.login()
		c.ok("DELE 2")
		if r := c.cmd("RETR 1"); r != "+OK 1800 octets" {
			t.Fatalf("RETR = %q", r)
		}
		rest, err := io.ReadAll(c.r)
		if err != nil || len(rest) != 100 || string(rest[:18]) != "0123456789abcdef\r\n" {
			t.Fatalf("got %d bytes %q, %v", len(rest), rest, err)
		}
		waitUnlocked(t, s, "alice")
		if n := len(s.Messages("alice")); n != 2 {
			t.Errorf("%d messages left, want 2", n)
		}
		// A message shorter than the cut is sent whole.
		c = dial(t, s)
		c.login()
		c.ok("RETR 2")
		c.body()
	})

	t.Run("GarbageReply", func(t *testing.T) {
		s := newServer(t, Options{Faults: Faults{GarbageOn: "list", GarbageReply: "HELLO"}})
		s.SetMailbox("alice", sample())
		c := dial(t, s)
		c.login()
		if r := c.cmd("LIST"); r != "HELLO" {
			t.Errorf("LIST = %q", r)
		}
		if r := c.cmd("STAT"); r != "+OK 2 47" {
			t.Errorf("STAT after garbage = %q", r)
		}
	})

	t.Run("GarbageGreeting", func(t *testing.T) {
		c := dialRaw(t, newServer(t, Options{Faults: Faults{GarbageReply: "SMTP ready"}}))
		if r := c.line(); r != "SMTP ready" {
			t.Errorf("greeting = %q", r)
		}
	})

	t.Run("LongReply", func(t *testing.T) {
		c := dialRaw(t, newServer(t, Options{Faults: Faults{LongReply: 100000}}))
		if r := c.line(); len(r) != 100000 || !strings.HasPrefix(r, "+OK xxx") {
			t.Errorf("greeting of %d bytes, starting %q", len(r), r[:min(len(r), 10)])
		}
		c = dial(t, newServer(t, Options{Faults: Faults{GarbageOn: "CAPA", LongReply: 5000}}))
		if r := c.cmd("CAPA"); len(r) != 5000 {
			t.Errorf("CAPA reply of %d bytes", len(r))
		}
	})

	t.Run("SlowReply", func(t *testing.T) {
		start := time.Now()
		c := dial(t, newServer(t, Options{Faults: Faults{SlowReply: 30 * time.Millisecond}}))
		c.ok("CAPA")
		c.body()
		if d := time.Since(start); d < 60*time.Millisecond {
			t.Errorf("two replies in %v", d)
		}
	})

	t.Run("BrokenPipelining", func(t *testing.T) {
		s := newServer(t, Options{Pipelining: true, Faults: Faults{BrokenPipelining: true}})
		s.SetMailbox("alice", sample())
		c := dial(t, s)
		c.ok("CAPA")
		if got := c.lines(); !slices.Contains(got, "PIPELINING") {
			t.Errorf("CAPA = %q", got)
		}
		c.login()
		c.send("NOOP", "STAT", "LIST")
		if r := c.line(); r != "+OK" {
			t.Errorf("NOOP = %q", r)
		}
		c.silent(150 * time.Millisecond) // STAT and LIST were lost
		if r := c.cmd("STAT"); r != "+OK 2 47" {
			t.Errorf("STAT alone = %q", r)
		}
		log := s.Log()
		if want := []string{"CAPA", "USER alice", "PASS secret", "NOOP", "STAT"}; !slices.Equal(log, want) {
			t.Errorf("Log = %q, want %q", log, want)
		}
	})

	t.Run("LoginError", func(t *testing.T) {
		for _, code := range []string{"[IN-USE] mailbox locked", "[LOGIN-DELAY] 300", "[SYS/TEMP] try later", "[AUTH] bad password", "[SYS/PERM] gone"} {
			s := newServer(t, Options{SASL: []string{"PLAIN", "XOAUTH2"}, Faults: Faults{LoginError: code}})
			c := dial(t, s)
			c.ok("USER alice")
			if r := c.cmd("PASS secret"); r != "-ERR "+code {
				t.Errorf("PASS = %q, want -ERR %s", r, code)
			}
			if r := c.cmd("AUTH PLAIN " + b64("\x00alice\x00secret")); r != "-ERR "+code {
				t.Errorf("AUTH PLAIN = %q, want -ERR %s", r, code)
			}
			if r := c.cmd("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer bad\x01\x01")); r != "-ERR "+code {
				t.Errorf("AUTH XOAUTH2 = %q, want -ERR %s", r, code)
			}
		}
	})

	t.Run("GreetingError", func(t *testing.T) {
		c := dialRaw(t, newServer(t, Options{Faults: Faults{GreetingError: "[SYS/TEMP] overloaded"}}))
		if r := c.line(); r != "-ERR [SYS/TEMP] overloaded" {
			t.Errorf("greeting = %q", r)
		}
		c.eof()
	})

	t.Run("RetrError", func(t *testing.T) {
		s := newServer(t, Options{Faults: Faults{RetrError: "[SYS/TEMP] disk on fire"}})
		s.SetMailbox("alice", sample())
		c := dial(t, s)
		c.login()
		if r := c.cmd("RETR 1"); r != "-ERR [SYS/TEMP] disk on fire" {
			t.Errorf("RETR = %q", r)
		}
		c.ok("TOP 1 0")
		c.body()
	})

	t.Run("Hook", func(t *testing.T) {
		s := newServer(t, Options{Faults: Faults{Hook: func(user, line string) (string, bool) {
			switch {
			case line == "NOOP":
				return "+OK hooked by " + user + "\r\n", true
			case line == "QUIT" && user != "":
				return "", true // drop instead of entering UPDATE
			}
			return "", false
		}}})
		s.SetMailbox("alice", sample())
		c := dial(t, s)
		c.login()
		if r := c.cmd("NOOP"); r != "+OK hooked by alice" {
			t.Errorf("NOOP = %q", r)
		}
		c.ok("DELE 1")
		c.send("QUIT")
		c.eof()
		waitUnlocked(t, s, "alice")
		if n := len(s.Messages("alice")); n != 2 {
			t.Errorf("%d messages left, want 2", n)
		}
	})

	t.Run("SetFaults", func(t *testing.T) {
		s := newServer(t, Options{})
		live := dial(t, s)
		s.SetFaults(Faults{GreetingError: "[SYS/TEMP] later"})
		if r := dialRaw(t, s).line(); r != "-ERR [SYS/TEMP] later" {
			t.Errorf("greeting after SetFaults = %q", r)
		}
		live.login() // live connections keep the faults they started with
		s.SetFaults(Faults{})
		dial(t, s).ok("CAPA")
	})
}

// TestPersonalities: the options that make the server answer like popa3d
// (no CAPA) and Courier (UTF8 substitutes), and sizes LIST misreports.
func TestPersonalities(t *testing.T) {
	t.Run("NoCAPA", func(t *testing.T) {
		s := NewServer(Options{NoCAPA: true, SASL: []string{"PLAIN"}})
		defer s.Close()
		c := dial(t, s)
		if r := c.cmd("CAPA"); r != "-ERR" {
			t.Errorf("CAPA: %q", r)
		}
		if r := c.cmd("AUTH PLAIN"); r != "-ERR" {
			t.Errorf("AUTH: %q", r)
		}
	})
	t.Run("UTF8Substitute", func(t *testing.T) {
		notice := []byte("Subject: Cannot display Unicode content\n\nnot for you\n")
		s := NewServer(Options{UTF8Substitute: notice})
		defer s.Close()
		utf8Msg := []byte("Subject: Grüße\n\nbody\n")
		s.SetMailbox("alice", []Message{{UID: "a", Data: utf8Msg}, {UID: "b", Data: []byte("Subject: plain\n\nbody\n")}})
		retr := func(utf8 bool) (string, string) {
			c := dial(t, s)
			if utf8 {
				c.ok("UTF8")
			}
			c.ok("USER alice")
			c.ok("PASS secret")
			list := c.ok("LIST 1")
			c.send("RETR 1")
			c.line()
			var body strings.Builder
			for l := c.line(); l != "."; l = c.line() {
				body.WriteString(l + "\n")
			}
			c.ok("QUIT")
			return list, body.String()
		}
		list, body := retr(false)
		if body != string(notice) || !strings.HasSuffix(list, " "+strconv.Itoa(len(Message{Data: utf8Msg}.Wire()))) {
			t.Errorf("without UTF8: LIST %q, body %q; want the original's size and the notice", list, body)
		}
		if _, body := retr(true); body != string(utf8Msg) {
			t.Errorf("with UTF8: body %q", body)
		}
	})
	t.Run("ListSize", func(t *testing.T) {
		s := NewServer(Options{})
		defer s.Close()
		s.SetMailbox("alice", []Message{{UID: "a", Data: []byte("x\n"), ListSize: 999}})
		c := dial(t, s)
		c.ok("USER alice")
		c.ok("PASS secret")
		if r := c.ok("LIST 1"); r != "+OK 1 999" {
			t.Errorf("LIST 1: %q", r)
		}
		if r := c.ok("STAT"); r != "+OK 1 999" {
			t.Errorf("STAT: %q", r)
		}
	})
}
