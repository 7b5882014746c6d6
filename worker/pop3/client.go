// Package pop3 is a POP3 client (RFC 1939) with the extensions a mail
// fetcher needs: CAPA, PIPELINING and response codes (RFC 2449), STLS (RFC
// 2595), SASL PLAIN, LOGIN and XOAUTH2 (RFC 5034).
//
// Message bodies are streamed: RETR and TOP hand out an io.Reader that
// removes dot-stuffing and keeps every other byte, CRLF included, so memory
// does not grow with message size. Every call takes a context: its deadline
// bounds the exchange and its cancellation closes the connection.
//
// A Client is not safe for concurrent use; POP3 is a strict
// request-response protocol over one connection.
package pop3

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pophook/pophook/internal/redact"
)

// TLSMode says how a connection is protected.
type TLSMode int

const (
	TLSImplicit TLSMode = iota // TLS from the first byte (port 995)
	TLSStartTLS                // plain connect, then STLS before any credential (port 110)
	TLSNone                    // no TLS; credentials need Options.AllowInsecureAuth
)

func (m TLSMode) String() string {
	switch m {
	case TLSImplicit:
		return "implicit"
	case TLSStartTLS:
		return "starttls"
	case TLSNone:
		return "none"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// Options configure a connection. The zero value is secure: implicit TLS
// verified against the system roots, no plaintext credentials.
type Options struct {
	TLS TLSMode

	// TLSConfig is cloned; nil means system roots and the host from the
	// address as server name. MinVersion is raised to TLS 1.2 if lower.
	TLSConfig *tls.Config

	// AllowInsecureAuth permits credentials on a connection without TLS.
	AllowInsecureAuth bool

	// Dialer dials the TCP connection; nil uses a net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}

	// Timeout bounds how long any single read or write may wait for
	// progress, on top of the context's deadline. Default 60s.
	Timeout time.Duration

	// GreetingTimeout bounds the wait for the server's greeting (and the
	// TLS handshake before it). Servers greet at once; a long silence
	// means a client speaking plain text to a TLS port, which would
	// otherwise wait the whole Timeout. Default 8s.
	GreetingTimeout time.Duration

	// DisablePipelining forces lock-step even when the server offers
	// PIPELINING.
	DisablePipelining bool

	// PipelineWindow is the most commands in flight at once. Default 16.
	PipelineWindow int

	// MaxMessageSize caps a RETR or TOP body in bytes; 0 means no cap.
	MaxMessageSize int64

	// MaxListEntries caps how many entries List, UIDL and Scan collect,
	// so a hostile or broken server cannot exhaust memory. Default 1<<20.
	MaxListEntries int

	// Trace receives the protocol exchange, one line per command or
	// reply, with passwords, tokens and SASL responses redacted. Message
	// bodies are summarised, not copied.
	Trace io.Writer
}

const (
	defaultTimeout        = 60 * time.Second
	defaultGreeting       = 8 * time.Second
	defaultPipelineWindow = 16
	defaultMaxListEntries = 1 << 20

	// maxLineLength bounds status and listing lines. RFC 2449 allows 512
	// octets; some servers send longer human text, so a few KiB are
	// tolerated, and anything longer is refused as hostile.
	maxLineLength = 4096

	readBufferSize = 32 << 10
)

// Client is one POP3 session.
type Client struct {
	opts     Options
	host     string
	conn     net.Conn // plain or *tls.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	greeting string
	caps     Capabilities
	capaOK   bool // the server answers CAPA
	utf8     bool // UTF8 accepted (RFC 6856)
	authed   bool
	mech     Mechanism // what Authenticate used
	// secrets are cut out of what the server says while a login is under
	// way: a server may quote the credential it refuses.
	secrets []string

	// pipelining: 0 not yet tried, 1 works, -1 off for this session.
	pipelining int

	deadline      time.Time // from the context of the current exchange
	probeDeadline time.Time // tighter deadline while probing pipelining
	err           error     // sticky: set once the connection is unusable
}

// Dial connects to addr (host:port), reads the greeting, asks for the
// capabilities and, for TLSStartTLS, upgrades the connection before
// returning. Nothing is authenticated yet.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: address %q: %w", addr, err)
	}
	dialer := opts.Dialer
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pop3: dial %s: %w", addr, err)
	}
	c := newClient(conn, host, opts)
	if err := c.start(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NewClient runs a session over an established connection, as Dial does
// after dialing. host is the name the server certificate must carry.
func NewClient(ctx context.Context, conn net.Conn, host string, opts Options) (*Client, error) {
	c := newClient(conn, host, opts)
	if err := c.start(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func newClient(conn net.Conn, host string, opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.GreetingTimeout <= 0 {
		opts.GreetingTimeout = defaultGreeting
	}
	if opts.PipelineWindow <= 0 {
		opts.PipelineWindow = defaultPipelineWindow
	}
	if opts.MaxListEntries <= 0 {
		opts.MaxListEntries = defaultMaxListEntries
	}
	c := &Client{opts: opts, host: host}
	c.setConn(conn)
	return c
}

func (c *Client) setConn(conn net.Conn) {
	c.conn = conn
	dc := deadlineConn{c}
	if c.br == nil {
		c.br = bufio.NewReaderSize(dc, readBufferSize)
		c.bw = bufio.NewWriter(dc)
		return
	}
	// After a TLS handshake: the buffers start over (nothing read in
	// clear text may be taken for what came over TLS) but are not made
	// again.
	c.br.Reset(dc)
	c.bw.Reset(dc)
}

func (c *Client) start(ctx context.Context) error {
	gctx, cancel := context.WithTimeoutCause(ctx, c.opts.GreetingTimeout, ErrNoGreeting)
	defer cancel()
	if c.opts.TLS == TLSImplicit {
		if err := c.handshake(gctx); err != nil {
			return c.noGreeting(gctx, err)
		}
	}
	err := c.exchange(gctx, func() error {
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("pop3: greeting: %w", err)
		}
		r, err := parseStatus([]byte(line))
		if err != nil {
			return c.fail(fmt.Errorf("greeting: %w", err))
		}
		if !r.ok {
			return &Error{Command: "greeting", Code: r.code, Text: r.text}
		}
		c.greeting = r.text
		return nil
	})
	if err != nil {
		return c.noGreeting(gctx, err)
	}
	if err := c.capa(ctx); err != nil {
		return err
	}
	if c.opts.TLS == TLSStartTLS {
		if err := c.startTLS(ctx); err != nil {
			return err
		}
	}
	return c.enableUTF8(ctx)
}

// enableUTF8 sends UTF8 (RFC 6856) when the server offers it. A server
// that offers it may otherwise hand a client that did not ask a substitute
// ("Cannot display Unicode content", as Courier does) in place of any
// message with raw UTF-8 in a header, and that substitute would be
// delivered and the original deleted. A refusal is not an error: the
// server then serves messages as they are.
func (c *Client) enableUTF8(ctx context.Context) error {
	if !c.caps.Has("UTF8") {
		return nil
	}
	_, err := c.cmd(ctx, "UTF8", "")
	if err != nil && !isReply(err) {
		return err
	}
	c.utf8 = err == nil
	return nil
}

// UTF8 reports whether the server accepted the UTF8 command.
func (c *Client) UTF8() bool { return c.utf8 }

// noGreeting says so when the wait for the greeting ran out, and when the
// server answered a TLS handshake with plain text: the two ways of using
// the wrong TLS mode for the port.
func (c *Client) noGreeting(gctx context.Context, err error) error {
	// The read deadline is the context's deadline; either may report it
	// first.
	deadline, _ := gctx.Deadline()
	if errors.Is(err, ErrNoGreeting) || (errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(deadline)) {
		return fmt.Errorf("%w within %s", ErrNoGreeting, c.opts.GreetingTimeout)
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return fmt.Errorf("%w: %w", ErrNotTLS, err)
	}
	return err
}

// startTLS sends STLS even when CAPA does not list it (RFC 2595 lets a
// client try), and fails rather than carrying on in clear text.
func (c *Client) startTLS(ctx context.Context) error {
	if _, err := c.cmd(ctx, "STLS", ""); err != nil {
		var refused *Error
		if errors.As(err, &refused) {
			return fmt.Errorf("pop3: STLS refused, not continuing without TLS: %w", err)
		}
		return fmt.Errorf("pop3: STLS: %w", err)
	}
	if c.br.Buffered() > 0 {
		// Bytes after the STLS reply would be injected into the TLS
		// session by a man in the middle (CVE-2011-0411 family).
		return c.fail(fmt.Errorf("%w: data sent before the TLS handshake", ErrProtocol))
	}
	if err := c.handshake(ctx); err != nil {
		return err
	}
	// Capabilities seen before TLS cannot be trusted.
	return c.capa(ctx)
}

func (c *Client) handshake(ctx context.Context) error {
	cfg, err := c.tlsConfig()
	if err != nil {
		return c.fail(err)
	}
	tc := tls.Client(c.conn, cfg)
	c.setConn(tc)
	err = c.exchange(ctx, func() error {
		if err := tc.HandshakeContext(ctx); err != nil {
			return c.fail(fmt.Errorf("pop3: TLS handshake with %s: %w", c.host, err))
		}
		return nil
	})
	if err == nil {
		st := tc.ConnectionState()
		c.tracef("-- TLS %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	return err
}

func (c *Client) tlsConfig() (*tls.Config, error) {
	var cfg *tls.Config
	if c.opts.TLSConfig != nil {
		cfg = c.opts.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = c.host
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg, nil
}

// TLSConfig builds the tls.Config most callers want: system roots plus the
// PEM certificates in caFile (if not empty), the given server name, TLS 1.2
// at least, and verification skipped only when skipVerify is set.
func TLSConfig(serverName, caFile string, skipVerify bool) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pop3: CA file: %w", err)
	}
	sum := sha256.Sum256(pem)
	if pool, ok := caPools.Load(sum); ok {
		cfg.RootCAs = pool.(*x509.CertPool)
		return cfg, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("pop3: CA file %s holds no PEM certificate", caFile)
	}
	actual, _ := caPools.LoadOrStore(sum, pool)
	cfg.RootCAs = actual.(*x509.CertPool)
	return cfg, nil
}

// caPools holds one pool of roots per CA file content: a pool is a copy of
// the system's ~140 roots plus the file's, and a thousand accounts that
// name the same file kept a thousand copies (34 MB). A pool is never
// changed once made, so configurations can share it; a file that changes
// makes a new one.
var caPools sync.Map // [sha256.Size]byte -> *x509.CertPool

// TLSConnectionState returns the negotiated TLS parameters (version,
// cipher suite, peer certificates), and false on a connection without TLS.
func (c *Client) TLSConnectionState() (tls.ConnectionState, bool) {
	tc, ok := c.conn.(*tls.Conn)
	if !ok {
		return tls.ConnectionState{}, false
	}
	return tc.ConnectionState(), true
}

// Greeting is the text of the server's +OK greeting.
func (c *Client) Greeting() string { return c.greeting }

// Capabilities returns what the server last listed in reply to CAPA (empty
// if it does not support CAPA).
func (c *Client) Capabilities() Capabilities { return c.caps }

// Close drops the connection without QUIT, so no deletion takes effect.
func (c *Client) Close() error {
	if c.err == nil {
		c.err = ErrClosed
	}
	return c.conn.Close()
}

// fail marks the connection unusable, closes it and returns err.
func (c *Client) fail(err error) error {
	if c.err == nil || c.err == ErrClosed {
		c.err = err
	}
	c.conn.Close()
	return err
}

// exchange runs fn under ctx: the context deadline bounds every read and
// write, and cancellation closes the connection at once.
func (c *Client) exchange(ctx context.Context, fn func() error) error {
	if c.err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, c.err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pop3: %w", err)
	}
	c.deadline, _ = ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	err := fn()
	if !stop() {
		// The connection was closed under fn; report why.
		cause := fmt.Errorf("pop3: %w", context.Cause(ctx))
		c.fail(cause)
		return cause
	}
	if err != nil && c.err == nil && !keepsSession(err) {
		// Anything else leaves the stream in an unknown state.
		c.fail(err)
	}
	return err
}

// keepsSession reports whether the protocol stream is still in step after
// err: a -ERR reply, a destination that failed while the body was read to
// its end, or a refusal decided before anything was sent.
func keepsSession(err error) bool {
	var ce *CallerError
	return isReply(err) || errors.As(err, &ce) || errors.Is(err, ErrInsecureAuth)
}

func isReply(err error) bool {
	var pe *Error
	return errors.As(err, &pe)
}

// deadlineConn applies the per-exchange deadline to every read and write,
// so a stalled server costs at most Options.Timeout per step.
type deadlineConn struct{ c *Client }

func (d deadlineConn) Read(p []byte) (int, error) {
	d.c.conn.SetReadDeadline(d.c.nextDeadline())
	return d.c.conn.Read(p)
}

func (d deadlineConn) Write(p []byte) (int, error) {
	d.c.conn.SetWriteDeadline(d.c.nextDeadline())
	return d.c.conn.Write(p)
}

func (c *Client) nextDeadline() time.Time {
	t := time.Now().Add(c.opts.Timeout)
	if !c.deadline.IsZero() && c.deadline.Before(t) {
		t = c.deadline
	}
	if !c.probeDeadline.IsZero() && c.probeDeadline.Before(t) {
		t = c.probeDeadline
	}
	return t
}

// readLine reads one line, bounded by maxLineLength, without its line
// ending.
func (c *Client) readLine() (string, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxLineLength {
		return "", c.fail(fmt.Errorf("%w: line longer than %d octets", ErrProtocol, maxLineLength))
	}
	if err != nil {
		return "", c.fail(unexpected(err))
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if c.secrets != nil {
		text := redact.Scrub(string(line), c.secrets...)
		c.tracef("S: %s", text)
		return text, nil
	}
	c.tracef("S: %s", line)
	return string(line), nil
}

// send buffers one command; redacted is what the trace shows instead when
// the command carries a secret.
func (c *Client) send(command, redacted string) {
	if redacted == "" {
		redacted = command
	}
	c.tracef("C: %s", redacted)
	c.bw.WriteString(command)
	c.bw.WriteString("\r\n")
}

func (c *Client) flush() error {
	if err := c.bw.Flush(); err != nil {
		return c.fail(err)
	}
	return nil
}

// readReply reads a status line and turns -ERR into *Error for command.
func (c *Client) readReply(command string) (string, error) {
	line, err := c.readLine()
	if err != nil {
		return "", fmt.Errorf("pop3: %s: %w", command, err)
	}
	r, err := parseStatus([]byte(line))
	if err != nil {
		return "", c.fail(fmt.Errorf("pop3: %s: %w", command, err))
	}
	if !r.ok {
		return "", &Error{Command: command, Code: r.code, Text: r.text}
	}
	return r.text, nil
}

// cmd sends one command and reads its status line.
func (c *Client) cmd(ctx context.Context, command, redacted string) (string, error) {
	var text string
	err := c.exchange(ctx, func() error {
		c.send(command, redacted)
		if err := c.flush(); err != nil {
			return fmt.Errorf("pop3: %s: %w", commandName(command, redacted), err)
		}
		var err error
		text, err = c.readReply(commandName(command, redacted))
		return err
	})
	return text, err
}

// commandName is how a command appears in errors: with its arguments
// unless they are secret.
func commandName(command, redacted string) string {
	if redacted != "" {
		return redacted
	}
	return command
}

// readLines reads a multi-line body line by line, unstuffed, bounded per
// line, calling fn for each.
func (c *Client) readLines(command string, fn func(line string) error) error {
	for {
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("pop3: %s: %w", command, err)
		}
		if line == "." {
			return nil
		}
		line = strings.TrimPrefix(line, ".")
		if err := fn(line); err != nil {
			return c.fail(fmt.Errorf("pop3: %s: %w", command, err))
		}
	}
}

func (c *Client) tracef(format string, args ...any) {
	if c.opts.Trace != nil {
		fmt.Fprintf(c.opts.Trace, format+"\n", args...)
	}
}
