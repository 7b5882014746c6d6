//go:build unix

package popa3dtest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSHA512Crypt(t *testing.T) {
	// From the specification ("Unix crypt using SHA-256 and SHA-512");
	// openssl passwd -6 -salt saltstring 'Hello world!' agrees.
	const want = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
	if got := sha512Crypt("Hello world!", "saltstring"); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// A password longer than a SHA-512 block, and the longest salt.
	long := strings.Repeat("pw", 40)
	if h := sha512Crypt(long, "0123456789abcdefXYZ"); !strings.HasPrefix(h, "$6$0123456789abcdef$") || len(h) != len("$6$0123456789abcdef$")+86 {
		t.Errorf("hash %q", h)
	}
}

func TestServed(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Subject: a\n\nb", "Subject: a\r\n\r\nb\r\n"},
		{"Subject: a\r\n\r\nb\r\n", "Subject: a\r\n\r\nb\r\n"},
		{"Subject: a\n\nFrom me\n>From you\n", "Subject: a\r\n\r\n>From me\r\n>From you\r\n"},
		{"S: x\n\nbare\rcr\n\n\n", "S: x\r\n\r\nbare\rcr\r\n\r\n\r\n"},
	} {
		if got := string(Served([]byte(tc.in))); got != tc.want {
			t.Errorf("Served(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// popConn is a one-command-one-reply POP3 client.
type popConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dial(t testing.TB, s *Server) *popConn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	p := &popConn{t: t, c: c, r: bufio.NewReader(c)}
	if g := p.line(); g != "+OK" {
		t.Fatalf("greeting %q", g)
	}
	return p
}

func (p *popConn) line() string {
	p.t.Helper()
	l, err := p.r.ReadString('\n')
	if err != nil || !strings.HasSuffix(l, "\r\n") {
		p.t.Fatalf("read: %v (got %q)", err, l)
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
	l := p.cmd(format, a...)
	if !strings.HasPrefix(l, "+OK") {
		p.t.Fatalf("%s: %q", fmt.Sprintf(format, a...), l)
	}
	return l
}

// multi reads a dot-terminated body and undoes the dot-stuffing.
func (p *popConn) multi() []byte {
	p.t.Helper()
	var b bytes.Buffer
	for {
		l, err := p.r.ReadBytes('\n')
		if err != nil {
			p.t.Fatalf("read: %v", err)
		}
		if string(l) == ".\r\n" {
			return b.Bytes()
		}
		b.Write(bytes.TrimPrefix(l, []byte(".")))
	}
}

func TestPopa3d(t *testing.T) {
	s := Start(t, Options{Users: map[string]string{"alice": "alice-secret", "bob": "bob pass"}})
	msgs := [][]byte{
		[]byte("Subject: one\nMessage-ID: <1@x>\n\nhello\n.\n..two dots\nFrom the start\n"),
		[]byte("Subject: two\r\nMessage-ID: <2@x>\r\n\r\nCRLF\r\nno final newline"),
		[]byte("Subject: three\nMessage-ID: <3@x>\n\nnul \x00 bare \r cr\n\n\n"),
	}
	for _, m := range msgs {
		s.Deliver(t, "alice", m)
	}
	if n := s.Count(t, "alice"); n != len(msgs) {
		t.Fatalf("Count = %d, want %d", n, len(msgs))
	}

	p := dial(t, s)
	for _, c := range []string{"CAPA", "AUTH PLAIN", "STLS"} {
		if r := p.cmd("%s", c); r != "-ERR" {
			t.Errorf("%s: %q, want a bare -ERR", c, r)
		}
	}
	p.ok("USER alice")
	p.ok("PASS alice-secret")
	p.ok("LIST")
	for i, l := range strings.Split(string(p.multi()), "\r\n") {
		if l == "" {
			continue
		}
		if want := fmt.Sprintf("%d %d", i+1, len(Served(msgs[i]))); l != want {
			t.Errorf("LIST line %q, want %q", l, want)
		}
	}
	for i, m := range msgs {
		p.ok("RETR %d", i+1)
		if got := p.multi(); !bytes.Equal(got, Served(m)) {
			t.Errorf("RETR %d:\n got %q\nwant %q", i+1, got, Served(m))
		}
	}
	p.ok("DELE 2")
	p.ok("QUIT")
	if n := s.Count(t, "alice"); n != 2 {
		t.Errorf("after DELE 2 and QUIT: Count = %d, want 2", n)
	}

	p = dial(t, s)
	p.ok("USER bob")
	p.ok("PASS bob pass")
	if r := p.ok("STAT"); r != "+OK 0 0" {
		t.Errorf("bob's STAT %q", r)
	}
	p.ok("QUIT")

	p = dial(t, s)
	p.ok("USER alice")
	if r := p.cmd("PASS wrong"); r != "-ERR Authentication failed (bad password?)" {
		t.Errorf("wrong password: %q", r)
	}

	if err := os.Chown(s.MailboxPath("alice"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.MailboxPath("alice"), 0); err != nil {
		t.Fatal(err)
	}
	p = dial(t, s)
	p.ok("USER alice")
	if r := p.cmd("PASS alice-secret"); r != "-ERR" {
		t.Errorf("mailbox it cannot open: %q, want a bare -ERR", r)
	}

	log := s.Log()
	if !slices.Contains(log, "PASS bob pass") || log[0] != "CAPA" {
		t.Errorf("log %q", log)
	}
}

// Servers in parallel do not see each other's users or mail.
func TestParallelServers(t *testing.T) {
	for i := range 3 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			s := Start(t, Options{})
			for range i + 1 {
				s.Deliver(t, "alice", []byte("Subject: x\n\ny\n"))
			}
			p := dial(t, s)
			p.ok("USER alice")
			p.ok("PASS alice-secret")
			if r, want := p.ok("STAT"), fmt.Sprintf("+OK %d %d", i+1, (i+1)*len(Served([]byte("Subject: x\n\ny\n")))); r != want {
				t.Errorf("STAT %q, want %q", r, want)
			}
			p.ok("QUIT")
		})
	}
}
