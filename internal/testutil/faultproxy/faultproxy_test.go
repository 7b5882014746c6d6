package faultproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// target serves each connection with handle, then closes its side for
// writing and reads on; it hands the test what the server read (until EOF
// or error) and the read error. A nil handle only reads.
type target struct {
	ln   net.Listener
	got  chan []byte
	errs chan error
}

func startTarget(t *testing.T, handle func(c net.Conn)) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, got: make(chan []byte, 16), errs: make(chan error, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				rec := &recorder{Conn: c}
				if handle != nil { // else just read until the client ends
					handle(rec)
					c.(*net.TCPConn).CloseWrite()
				}
				_, err := io.Copy(io.Discard, rec)
				tg.got <- rec.buf.Bytes()
				tg.errs <- err
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return tg
}

// recorder keeps what the server read.
type recorder struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.buf.Write(b[:n])
	return n, err
}

func startProxy(t *testing.T, target string, plan Plan) *Proxy {
	t.Helper()
	p, err := New(target, plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

var payload = bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB

func TestPass(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) { c.Write(payload) })
	p := startProxy(t, tg.ln.Addr().String(), nil)
	c := dial(t, p)
	c.Write([]byte("hello"))
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("client read %d bytes, err %v; want the 64 KiB intact", len(got), err)
	}
	if b := <-tg.got; string(b) != "hello" {
		t.Fatalf("server read %q", b)
	}
	waitDone(t, p, 0)
	if s := p.Stats()[0]; s.Triggered || s.Bytes != [2]int64{5, int64(len(payload))} {
		t.Fatalf("stats %+v", s)
	}
}

func TestCutToClient(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) { c.Write(payload) })
	p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: Cut, Dir: ToClient, Offset: 1000}))
	c := dial(t, p)
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload[:1000]) {
		t.Fatalf("client read %d bytes, err %v; want exactly 1000 then EOF", len(got), err)
	}
	if err := <-tg.errs; err != nil {
		t.Fatalf("server: %v, want EOF", err)
	}
	waitDone(t, p, 0)
	if s := p.Stats()[0]; !s.Triggered || s.At != 1000 || s.Bytes[ToClient] != 1000 {
		t.Fatalf("stats %+v", s)
	}
}

func TestResetToServer(t *testing.T) {
	tg := startTarget(t, nil)
	p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: Reset, Dir: ToServer, Offset: 7}))
	c := dial(t, p)
	c.Write([]byte("USER alice\r\n"))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client: %v, want a reset", err)
	}
	got, err := <-tg.got, <-tg.errs
	if string(got) != "USER al" || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server read %q, %v; want the first 7 bytes and a reset", got, err)
	}
}

func TestStall(t *testing.T) {
	t.Run("past the client's patience", func(t *testing.T) {
		tg := startTarget(t, func(c net.Conn) { c.Write(payload) })
		p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: Stall, Dir: ToClient, Offset: 100, Stall: time.Hour}))
		c := dial(t, p)
		buf := make([]byte, len(payload))
		n, _ := io.ReadFull(c, buf[:100])
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		m, err := c.Read(buf[n:])
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || n != 100 || m != 0 {
			t.Fatalf("read %d then %d (%v); want 100 then a timeout", n, m, err)
		}
		c.Close() // the client gives up: the proxy must not wait the hour
		select {
		case <-tg.errs:
		case <-time.After(5 * time.Second):
			t.Fatal("the server's side stayed open after the client gave up")
		}
	})
	t.Run("shorter than the client's patience", func(t *testing.T) {
		tg := startTarget(t, func(c net.Conn) { c.Write(payload) })
		p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: Stall, Dir: ToClient, Offset: 100, Stall: 200 * time.Millisecond}))
		c := dial(t, p)
		start := time.Now()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("read %d bytes, %v; want all after the pause", len(got), err)
		}
		if d := time.Since(start); d < 100*time.Millisecond { // loose: a pause, not its length
			t.Fatalf("no pause: %s", d)
		}
	})
}

func TestAfterLine(t *testing.T) {
	script := "+OK hello\r\n+OK Begin TLS negotiation now.\r\n\x16\x03\x01binary"
	tg := startTarget(t, func(c net.Conn) {
		for _, part := range []string{script[:5], script[5:20], script[20:]} { // lines split across reads
			c.Write([]byte(part))
			time.Sleep(10 * time.Millisecond)
		}
	})
	p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: Cut, Dir: ToClient, AfterLine: "+OK Begin TLS", Offset: 2}))
	c := dial(t, p)
	got, _ := io.ReadAll(c)
	if want := script[:strings.Index(script, "\x16")+2]; string(got) != want {
		t.Fatalf("client read %q, want %q", got, want)
	}
}

func TestDropTail(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) {
		c.Write([]byte("+OK 2 messages\r\n"))
		b := make([]byte, 64)
		c.Read(b) // the client's QUIT
		c.Write([]byte("+OK Logging out, messages deleted.\r\n"))
	})
	p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: DropTail}))
	c := dial(t, p)
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "+OK 2 messages\r\n" {
		t.Fatalf("first reply %q, %v: DropTail must forward what is followed by a quiet moment", buf[:n], err)
	}
	c.Write([]byte("QUIT\r\n"))
	rest, err := io.ReadAll(c)
	if len(rest) != 0 || err != nil {
		t.Fatalf("after QUIT the client read %q, %v; want nothing and EOF", rest, err)
	}
	if got := <-tg.got; string(got) != "QUIT\r\n" {
		t.Fatalf("server read %q", got)
	}
	waitDone(t, p, 0)
	if s := p.Stats()[0]; !s.Triggered {
		t.Fatalf("stats %+v", s)
	}
}

func TestArm(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) {
		b := make([]byte, 64)
		n, _ := c.Read(b)
		c.Write(b[:n])
	})
	p := startProxy(t, tg.ln.Addr().String(), nil)
	c := dial(t, p)
	c.Write([]byte("RETR 1\r\n"))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "RETR 1\r\n" {
		t.Fatalf("echo %q, %v", buf[:n], err)
	}
	if n := p.Arm(Fault{Action: Cut, Dir: ToServer, Offset: 3}); n != 1 {
		t.Fatalf("armed %d connections, want 1", n)
	}
	c.Write([]byte("DELE 1\r\n"))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	if got, err := <-tg.got, <-tg.errs; string(got) != "RETR 1\r\nDEL" {
		t.Fatalf("server read %q (%v), want the armed cut 3 bytes into DELE", got, err)
	}
	// The plan counts from when it was set.
	p.SetPlan(Sequence(Fault{Action: Cut, Dir: ToClient}))
	c2 := dial(t, p)
	c2.Write([]byte("x"))
	if b, err := io.ReadAll(c2); len(b) != 0 || err != nil {
		t.Fatalf("second connection read %q, %v; want the planned cut at 0", b, err)
	}
}

func TestDialError(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := startProxy(t, addr, nil)
	c := dial(t, p)
	if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("read %q, %v; want the connection closed", b, err)
	}
	waitDone(t, p, 0)
	if s := p.Stats()[0]; s.DialErr == nil {
		t.Fatalf("stats %+v, want a dial error", s)
	}
}

func TestRandomIsSeeded(t *testing.T) {
	m := Mix{Weights: map[Action]int{Pass: 1, Cut: 2, Reset: 2, Stall: 1, DropTail: 1}, ToServer: 0.3,
		MinOffset: [2]int64{0, 1000}, MaxOffset: [2]int64{2000, 500_000}, Stall: time.Second}
	a, b := Random(rand.New(rand.NewPCG(7, 7)), m), Random(rand.New(rand.NewPCG(7, 7)), m)
	seen := map[Action]bool{}
	for i := range 500 {
		fa, fb := a(i), b(i)
		if fa != fb {
			t.Fatalf("connection %d: %v and %v from the same seed", i, fa, fb)
		}
		seen[fa.Action] = true
		if fa.Action != Pass && fa.Action != DropTail && (fa.Offset < m.MinOffset[fa.Dir] || fa.Offset >= m.MaxOffset[fa.Dir]) {
			t.Fatalf("offset %d out of range for %v", fa.Offset, fa)
		}
	}
	if len(seen) != 5 {
		t.Fatalf("actions drawn: %v", seen)
	}
}

func waitDone(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st := p.Stats(); len(st) > n && st[n].Done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection %d not done: %+v", n, p.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestArmAfterLine(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) {
		b := make([]byte, 64)
		n, _ := c.Read(b)
		c.Write(b[:n])
	})
	p := startProxy(t, tg.ln.Addr().String(), nil)
	c := dial(t, p)
	c.Write([]byte("RETR 1\r\n"))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "RETR 1\r\n" {
		t.Fatalf("echo %q, %v", buf[:n], err)
	}
	// With AfterLine the offset counts from the end of the line, not
	// from what was forwarded before Arm.
	if n := p.Arm(Fault{Action: Cut, Dir: ToServer, AfterLine: "QUIT", Offset: 1}); n != 1 {
		t.Fatalf("armed %d connections, want 1", n)
	}
	c.Write([]byte("DELE 1\r\nQUIT\r\nxyz"))
	c.CloseWrite()
	io.ReadAll(c)
	if got := <-tg.got; string(got) != "RETR 1\r\nDELE 1\r\nQUIT\r\nx" {
		t.Fatalf("server read %q, want the cut one byte after QUIT", got)
	}
}

func TestCloseWithOpenConnections(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p, err := New(tg.ln.Addr().String(), Sequence(Fault{Action: Stall, Dir: ToServer, Stall: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	c.Write([]byte("stalled"))
	c2 := dial(t, p)
	c2.Write([]byte("passing"))
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a stalled connection")
	}
	for _, cc := range []net.Conn{c, c2} {
		cc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(cc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("after Close the client read: %v; want the connection closed", err)
		}
	}
}

// A fault at the end of what the client sent takes effect at once: the
// server gets the command, the client never gets the reply.
func TestCutRightAfterLine(t *testing.T) {
	tg := startTarget(t, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("+OK reply to " + line))
	})
	p := startProxy(t, tg.ln.Addr().String(), Sequence(Fault{Action: Cut, Dir: ToServer, AfterLine: "UIDL"}))
	c := dial(t, p)
	c.Write([]byte("LIST\r\nUIDL\r\n"))
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("client read %q, %v; want nothing: the cut comes right after UIDL", b, err)
	}
	if got := <-tg.got; string(got) != "LIST\r\nUIDL\r\n" {
		t.Fatalf("server read %q", got)
	}
}
