// Package faultproxy is a TCP proxy for tests that breaks connections on
// purpose. It listens on 127.0.0.1 and forwards every connection to a
// target address; per connection, a Plan (seeded, or an explicit list)
// picks one Fault:
//
//   - Pass: forward untouched;
//   - Cut: after Offset bytes in one direction, close both ends (FIN);
//   - Reset: the same, but with SO_LINGER 0, so both peers see RST;
//   - Stall: after Offset bytes, stop forwarding that direction for a
//     duration (longer than the client's timeouts, to make them fire);
//     the connection ends as soon as either peer gives up;
//   - DropTail: hold the server's bytes back until the server has been
//     quiet for a moment, and drop what it sent just before it closed
//     (the reply to QUIT: the server applied it, the client never heard).
//
// The proxy sees bytes, not commands: in front of implicit TLS (POP3S,
// 995) small offsets into the server-to-client stream land in the TLS
// handshake, larger ones in the greeting, LIST/UIDL and RETR bodies; in
// the client-to-server stream late offsets land in DELE and QUIT. For
// STARTTLS (110), where the first lines are plain text, Fault.AfterLine
// counts the offset from the end of a given plaintext line ("STLS",
// "+OK Begin TLS"). Arm applies a fault to the open connections from
// where they are now, for a test that knows (from its sink) that the
// client is about to send DELE.
//
// Stats says, per connection, what was planned and whether it happened
// (a cut at an offset beyond the end of the stream never does). When the
// target cannot be reached (a server being restarted) the proxy closes
// the client's connection right after accepting it: the client sees the
// connection close, not a refusal.
package faultproxy

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Dir is a direction of a connection.
type Dir int

const (
	ToServer Dir = iota // client to server
	ToClient            // server to client
)

func (d Dir) String() string {
	if d == ToServer {
		return "c>s"
	}
	return "s>c"
}

// Action is what a Fault does.
type Action int

const (
	Pass     Action = iota // forward untouched
	Cut                    // close both ends
	Reset                  // close both ends with RST
	Stall                  // stop forwarding Dir for Fault.Stall
	DropTail               // drop the server's last words before it closes (ToClient only)
)

func (a Action) String() string {
	return [...]string{"pass", "cut", "reset", "stall", "droptail"}[a]
}

// Fault is what happens to one connection.
type Fault struct {
	Action Action
	Dir    Dir
	// Offset is how many bytes of Dir are forwarded before the fault
	// (counted from the end of the AfterLine line when that is set).
	Offset int64
	// AfterLine, if set, is the start of a plaintext line in Dir; Offset
	// counts from the end of the first line that starts with it. Lines
	// are looked for in the first 64 KiB only.
	AfterLine string
	// Stall is how long a Stall lasts; after it, forwarding resumes.
	Stall time.Duration
}

func (f Fault) String() string {
	if f.Action == Pass {
		return "pass"
	}
	if f.Action == DropTail {
		return "droptail"
	}
	s := fmt.Sprintf("%s %s@%d", f.Action, f.Dir, f.Offset)
	if f.AfterLine != "" {
		s += fmt.Sprintf(" after %q", f.AfterLine)
	}
	if f.Action == Stall {
		s += " for " + f.Stall.String()
	}
	return s
}

// Plan picks the fault of connection n: 0 for the first accepted since
// the plan was given to New or SetPlan. It is called once per connection,
// in accept order, never concurrently.
type Plan func(n int) Fault

// Sequence is an explicit plan: connection n gets faults[n], later ones
// pass.
func Sequence(faults ...Fault) Plan {
	return func(n int) Fault {
		if n < len(faults) {
			return faults[n]
		}
		return Fault{}
	}
}

// Mix is the recipe of Random: the weight of each action, where in each
// direction offsets fall, and how long stalls last.
type Mix struct {
	Weights  map[Action]int
	ToServer float64 // probability a fault is on the client-to-server stream
	// Offsets are log-uniform in [MinOffset, MaxOffset), per Dir: the
	// first bytes after MinOffset get as many faults as the next few
	// thousand and the hundreds of thousands after.
	MinOffset, MaxOffset [2]int64
	Stall                time.Duration // length of a stall
}

// Random is a seeded plan drawing each connection's fault from m.
func Random(rng *rand.Rand, m Mix) Plan {
	var actions []Action
	total := 0
	for a := Pass; a <= DropTail; a++ {
		if w := m.Weights[a]; w > 0 {
			actions = append(actions, a)
			total += w
		}
	}
	return func(int) Fault {
		if total == 0 {
			return Fault{}
		}
		x := rng.IntN(total)
		var f Fault
		for _, a := range actions {
			if x -= m.Weights[a]; x < 0 {
				f.Action = a
				break
			}
		}
		switch f.Action {
		case Pass, DropTail:
			return f
		}
		f.Dir = ToClient
		if rng.Float64() < m.ToServer {
			f.Dir = ToServer
		}
		lo, hi := m.MinOffset[f.Dir], m.MaxOffset[f.Dir]
		f.Offset = lo
		if hi > lo+1 {
			f.Offset += int64(math.Exp(rng.Float64()*math.Log(float64(hi-lo)))) - 1
		}
		f.Stall = m.Stall
		return f
	}
}

// ConnStat is what happened to one connection.
type ConnStat struct {
	N         int
	Fault     Fault
	Triggered bool     // the fault took effect
	At        int64    // for a triggered fault: bytes of Fault.Dir forwarded before it
	Bytes     [2]int64 // forwarded, per Dir
	DialErr   error    // the target could not be reached (the client was closed)
	Done      bool     // both ends are closed
}

// Proxy is a running proxy.
type Proxy struct {
	ln     net.Listener
	target string
	// Quiet is how long the server must be silent before DropTail
	// forwards what it holds. Default 50ms. Set before connections come.
	Quiet time.Duration

	mu       sync.Mutex
	plan     Plan
	planBase int // connections accepted before plan was set
	conns    []*conn
	closed   bool
	wg       sync.WaitGroup
}

// New starts a proxy on 127.0.0.1 in front of target; plan nil passes
// everything.
func New(target string, plan Plan) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, plan: plan, Quiet: 50 * time.Millisecond}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetPlan replaces the plan for the connections to come.
func (p *Proxy) SetPlan(plan Plan) {
	p.mu.Lock()
	p.plan, p.planBase = plan, len(p.conns)
	p.mu.Unlock()
}

// Arm gives every open connection whose own fault has not happened the
// fault f, with f.Offset counted from the bytes already forwarded in
// f.Dir (or, with f.AfterLine, from the end of the next such line). It
// returns how many connections it armed.
func (p *Proxy) Arm(f Fault) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		c.mu.Lock()
		if !c.stat.Done && !c.stat.Triggered {
			g := f
			if g.AfterLine == "" { // else the offset counts from the line
				g.Offset += c.stat.Bytes[f.Dir]
			}
			c.stat.Fault = g
			c.line, c.lineEnd = nil, -1
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// Stats returns every connection so far, in accept order.
func (p *Proxy) Stats() []ConnStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnStat, len(p.conns))
	for i, c := range p.conns {
		c.mu.Lock()
		out[i] = c.stat
		c.mu.Unlock()
	}
	return out
}

// Close stops listening, tears down every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.teardown(true)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed { // accepted just before Close: nobody would tear it down
			p.mu.Unlock()
			client.Close()
			return
		}
		f := Fault{}
		if p.plan != nil {
			f = p.plan(len(p.conns) - p.planBase)
		}
		c := &conn{p: p, client: client.(*net.TCPConn), done: make(chan struct{}), gone: make(chan struct{}), lineEnd: -1}
		c.stat = ConnStat{N: len(p.conns), Fault: f}
		p.conns = append(p.conns, c)
		p.wg.Add(1)
		p.mu.Unlock()
		go c.run()
	}
}

// conn is one proxied connection. Each direction has a reader (which
// always reads, so that a peer giving up is seen even while the other
// direction stalls) and a writer that applies the fault.
type conn struct {
	p                *Proxy
	client, server   *net.TCPConn
	done             chan struct{} // closed by teardown
	gone             chan struct{} // closed when the client closes or fails
	goneOnce, tdOnce sync.Once
	readers          sync.WaitGroup

	mu      sync.Mutex
	stat    ConnStat
	line    []byte // AfterLine: the line being read
	lineEnd int64  // AfterLine: where the line ended; -1 not yet
}

type chunk struct {
	b   []byte
	err error // io.EOF or a read error; ends the stream
}

func (c *conn) run() {
	defer c.p.wg.Done()
	d := net.Dialer{Timeout: 5 * time.Second}
	sc, err := d.Dial("tcp", c.p.target)
	c.mu.Lock()
	c.stat.DialErr = err
	closed := c.stat.Done
	if err == nil && !closed {
		c.server = sc.(*net.TCPConn)
		c.readers.Add(2)
	}
	c.mu.Unlock()
	if err != nil || closed {
		if sc != nil {
			sc.Close()
		}
		c.teardown(false)
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.pipe(ToServer, c.client, c.server) }()
	go func() { defer wg.Done(); c.pipe(ToClient, c.server, c.client) }()
	wg.Wait()
	c.teardown(false)
}

// pipe forwards one direction until its source ends or the connection is
// torn down.
func (c *conn) pipe(dir Dir, src, dst *net.TCPConn) {
	ch := make(chan chunk, 4096)
	go func() {
		// After a teardown the reader drains its source until the peer
		// closes (or the drain deadline), so that closing a socket
		// with unread bytes does not turn a Cut into a reset.
		defer c.readers.Done()
		draining := false
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 && !draining {
				select {
				case ch <- chunk{b: buf[:n]}:
				case <-c.done:
					draining = true
				}
			}
			if err != nil {
				if dir == ToServer { // the client went away
					c.goneOnce.Do(func() { close(c.gone) })
				}
				if !draining {
					select {
					case ch <- chunk{err: err}:
					case <-c.done:
					}
				}
				return
			}
		}
	}()
	var held []byte // DropTail
	for {
		var quiet <-chan time.Time
		if len(held) > 0 {
			quiet = time.After(c.p.Quiet)
		}
		var k chunk
		select {
		case k = <-ch:
		case <-quiet:
			if !c.writeDir(dir, dst, held) {
				return
			}
			held = nil
			continue
		case <-c.done:
			return
		}
		if k.err != nil {
			if len(held) > 0 {
				c.mu.Lock()
				c.stat.Triggered, c.stat.At = true, c.stat.Bytes[dir]
				c.mu.Unlock()
				c.teardown(false)
				return
			}
			if k.err == io.EOF {
				dst.CloseWrite()
			} else {
				c.teardown(false)
			}
			return
		}
		c.mu.Lock()
		f := c.stat.Fault
		c.mu.Unlock()
		if f.Action == DropTail && dir == ToClient {
			held = append(held, k.b...)
			continue
		}
		if len(held) > 0 { // disarmed: not expected, but keep the order
			if !c.writeDir(dir, dst, held) {
				return
			}
			held = nil
		}
		if !c.forward(dir, dst, k.b) {
			return
		}
	}
}

// forward writes b, applying the connection's fault when its offset is in
// b. It reports whether to go on.
func (c *conn) forward(dir Dir, dst *net.TCPConn, b []byte) bool {
	c.mu.Lock()
	f := c.stat.Fault
	at := int64(-1)
	if !c.stat.Triggered && f.Dir == dir && (f.Action == Cut || f.Action == Reset || f.Action == Stall) {
		base := int64(0)
		if f.AfterLine != "" {
			base = c.findLine(f.AfterLine, b)
		}
		// <=: an offset at the very end of b takes effect right after
		// it, not when the peer next sends something (by then the other
		// direction may have carried the reply to what b held).
		if base >= 0 && base+f.Offset <= c.stat.Bytes[dir]+int64(len(b)) {
			at = max(base+f.Offset, c.stat.Bytes[dir])
			c.stat.Triggered, c.stat.At = true, at
		}
	}
	start := c.stat.Bytes[dir]
	c.mu.Unlock()
	if at < 0 {
		return c.writeDir(dir, dst, b)
	}
	if !c.writeDir(dir, dst, b[:at-start]) {
		return false
	}
	switch f.Action {
	case Cut:
		c.teardown(false)
		return false
	case Reset:
		c.teardown(true)
		return false
	}
	// Stall: hold the rest until the time is up or either peer gives up.
	t := time.NewTimer(f.Stall)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.gone:
		c.teardown(false)
		return false
	case <-c.done:
		return false
	}
	return c.writeDir(dir, dst, b[at-start:])
}

// findLine looks for the end of the first line starting with prefix in
// the stream of the fault's direction, b being its next bytes; it returns
// the stream offset just after that line's LF, or -1.
func (c *conn) findLine(prefix string, b []byte) int64 {
	if c.lineEnd >= 0 {
		return c.lineEnd
	}
	pos := c.stat.Bytes[c.stat.Fault.Dir]
	if pos > 64<<10 {
		return -1
	}
	for i, ch := range b {
		c.line = append(c.line, ch)
		if ch != '\n' {
			continue
		}
		if bytes.HasPrefix(c.line, []byte(prefix)) {
			c.lineEnd = pos + int64(i) + 1
			c.line = nil
			return c.lineEnd
		}
		c.line = c.line[:0]
	}
	return -1
}

func (c *conn) writeDir(dir Dir, dst *net.TCPConn, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	// Counted before the write: once the peer has the bytes, Arm must
	// count from after them.
	c.mu.Lock()
	c.stat.Bytes[dir] += int64(len(b))
	c.mu.Unlock()
	return c.write(dst, b)
}

func (c *conn) write(dst *net.TCPConn, b []byte) bool {
	if _, err := dst.Write(b); err != nil {
		c.teardown(false)
		return false
	}
	return true
}

// teardown closes both ends: with RST when rst is set, else with FIN
// first (shutdown for writing), closing the sockets once the readers
// have drained them (at most drainTime).
func (c *conn) teardown(rst bool) {
	c.tdOnce.Do(func() {
		c.mu.Lock()
		ends := []*net.TCPConn{c.client}
		if c.server != nil {
			ends = append(ends, c.server)
		}
		c.stat.Done = true
		c.mu.Unlock()
		close(c.done)
		for _, tc := range ends {
			if rst {
				tc.SetLinger(0)
				tc.Close()
				continue
			}
			tc.CloseWrite()
			tc.SetReadDeadline(time.Now().Add(drainTime))
		}
		if !rst {
			go func() {
				c.readers.Wait()
				for _, tc := range ends {
					tc.Close()
				}
			}()
		}
	})
}

// drainTime bounds how long a torn-down connection waits for its peers
// to close after its FIN.
const drainTime = 2 * time.Second
