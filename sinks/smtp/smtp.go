// Package smtp is the sink that relays each message to an SMTP server: the
// operator's own mail system, or a help desk's inbound address.
//
// The message goes byte-exact: no header is added or rewritten, lines are
// not re-folded, and the only change on the wire is SMTP's dot-stuffing,
// which the receiving server undoes. TLS is required (implicit, or
// STARTTLS that is never skipped) unless the operator allowed a clear
// connection; credentials never cross one by accident.
//
// Outcomes follow the reply codes: 4xx is temporary (retried within the
// budget); 5xx at RCPT or DATA, or a message too large for the server,
// rejects this message; any other 5xx at MAIL FROM or AUTH, a refused
// certificate or a missing STARTTLS make the sink unavailable. One connection is reused across messages (RSET between)
// and replaced when the server has closed it.
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/pophook/pophook/internal/redact"
	"github.com/pophook/pophook/sinks"
)

var _ sinks.Sink = (*Sink)(nil)

// TLS modes.
const (
	TLSImplicit = "implicit" // TLS from the first byte (465)
	TLSStartTLS = "starttls" // STARTTLS, required (587, 25)
	TLSNone     = "none"     // clear text; needs AllowInsecure
)

const (
	defaultTimeout = 30 * time.Second
	maxIdle        = 4 // connections kept open between deliveries
	// idleLimit: a connection idle longer is not reused; servers close
	// idle sessions after a few minutes (Postfix: 300 s).
	idleLimit = time.Minute
)

// Options configure a Sink.
type Options struct {
	Name string // the sink's name in the configuration, for messages
	Host string
	Port int
	TLS  string // TLSImplicit (default), TLSStartTLS or TLSNone
	// TLSConfig verifies the server; nil means the system roots and Host.
	TLSConfig *tls.Config
	// AllowInsecure permits TLSNone, credentials included.
	AllowInsecure bool

	// Username, when set, logs in with AUTH PLAIN or LOGIN; Password is
	// read at every login.
	Username string
	Password func() (string, error)

	// From is the envelope sender; empty means the address of the
	// mailbox the message was fetched from (Message.Mailbox), so that
	// forwarded mail passes SPF as the mailbox's own domain.
	From string
	// To are the envelope recipients; at least one.
	To []string

	// Timeout bounds each command and the end of data; default 30s.
	Timeout time.Duration
	// Retry is the policy within one delivery; its Budget bounds it.
	Retry sinks.Retry
	// HelloName is sent with EHLO; default the host name.
	HelloName string
	// Dialer dials TCP; nil uses a net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	Logger *slog.Logger
	// OnRetry, if set, is called before each retry (a metric).
	OnRetry func()
}

// Sink relays messages to one SMTP server. It is safe for concurrent use.
type Sink struct {
	o     Options
	addr  string
	shown string // for errors: "smtp relay mail.example.com:587"
	log   *slog.Logger

	mu   sync.Mutex
	idle []*conn
}

// New checks opts and returns a sink. It touches neither the network nor
// the disk.
func New(opts Options) (*Sink, error) {
	if opts.Host == "" {
		return nil, errors.New("smtp: no host given")
	}
	if opts.Port <= 0 {
		return nil, errors.New("smtp: no port given")
	}
	switch opts.TLS {
	case "":
		opts.TLS = TLSImplicit
	case TLSImplicit, TLSStartTLS:
	case TLSNone:
		if !opts.AllowInsecure {
			return nil, errors.New("smtp: TLS none sends the mail and the password in clear text; it needs AllowInsecure")
		}
	default:
		return nil, fmt.Errorf("smtp: TLS mode %q is not implicit, starttls or none", opts.TLS)
	}
	if len(opts.To) == 0 {
		return nil, errors.New("smtp: no envelope recipient")
	}
	for _, a := range append(slices.Clone(opts.To), opts.From) {
		if strings.ContainsAny(a, "\r\n<>") {
			return nil, fmt.Errorf("smtp: %q is not an envelope address", a)
		}
	}
	if opts.Username != "" && opts.Password == nil {
		return nil, errors.New("smtp: a user name without a password")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.HelloName == "" {
		opts.HelloName = helloName()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Dialer == nil {
		opts.Dialer = &net.Dialer{Timeout: opts.Timeout}
	}
	s := &Sink{o: opts, addr: net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))}
	s.shown = "smtp " + s.addr
	if opts.Name != "" {
		s.shown = "smtp " + opts.Name + " (" + s.addr + ")"
	}
	s.log = opts.Logger.With("server", s.addr)
	return s, nil
}

// helloName is the name sent with EHLO: the host name when it looks like
// one a server accepts, else localhost.
func helloName() string {
	h, err := os.Hostname()
	if err != nil || h == "" || strings.ContainsAny(h, " \r\n") {
		return "localhost"
	}
	return h
}

// Deliver relays m to every recipient within the retry budget.
func (s *Sink) Deliver(ctx context.Context, m *sinks.Message) error {
	if m == nil || m.Raw == nil {
		return fmt.Errorf("%s: no message", s.shown)
	}
	from := s.o.From
	if from == "" {
		from = m.Mailbox
	}
	if !strings.Contains(from, "@") {
		return sinks.Unavailable(fmt.Errorf("%s: no envelope sender: set FROM (the mailbox %q is not an address)", s.shown, from))
	}
	need, err := scan(m.Reader())
	if err != nil {
		return fmt.Errorf("%s: reading the message: %w", s.shown, err)
	}
	err = s.o.Retry.Do(ctx, func(ctx context.Context) error {
		return s.attempt(ctx, from, m, need)
	}, func(n int, err error, wait time.Duration) {
		if s.o.OnRetry != nil {
			s.o.OnRetry()
		}
		s.log.Debug("smtp delivery failed; retrying", "key", m.Key, "attempt", n, "err", err, "retry_in", wait.Round(time.Millisecond).String())
	})
	if err != nil {
		// Debug only: the job reports the failure once, as a problem.
		s.log.Debug("smtp delivery failed; the message stays on the server", "key", m.Key, "err", err)
		return err
	}
	s.log.Debug("relayed", "key", m.Key, "size", m.Size)
	return nil
}

// attempt is one try on one connection.
func (s *Sink) attempt(ctx context.Context, from string, m *sinks.Message, need needs) error {
	c, err := s.take(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.c.Close() })
	err = s.send(c, from, m, need)
	if !stop() {
		c.c.Close()
		return fmt.Errorf("%s: delivery cancelled or over its budget: %w", s.shown, context.Cause(ctx))
	}
	if err != nil {
		if c.broken(err) {
			c.c.Close()
		} else if rerr := c.c.Reset(); rerr != nil {
			c.c.Close()
		} else {
			s.put(c)
		}
		return err
	}
	s.put(c)
	return nil
}

// send runs one transaction: MAIL, RCPT for every recipient, DATA.
func (s *Sink) send(c *conn, from string, m *sinks.Message, need needs) error {
	opts := &gosmtp.MailOptions{Size: m.Size}
	utf8Envelope := !isASCII(from) || slices.ContainsFunc(s.o.To, func(a string) bool { return !isASCII(a) })
	if need.utf8Header || utf8Envelope {
		if ok, _ := c.c.Extension("SMTPUTF8"); !ok {
			return sinks.Reject(&intact{fmt.Errorf("%s: the message has UTF-8 in its header or envelope and the server does not offer SMTPUTF8", s.shown), 0})
		}
		opts.UTF8 = true
	}
	if need.eightBit {
		if ok, _ := c.c.Extension("8BITMIME"); !ok {
			return sinks.Reject(&intact{fmt.Errorf("%s: the message has 8-bit content and the server does not offer 8BITMIME", s.shown), 0})
		}
	}
	if err := c.c.Mail(from, opts); err != nil {
		// A refused sender holds for every message, except a refusal of
		// this message's SIZE (552, 5.3.4), which only this one meets.
		on5xx := sinks.Unavailable
		var se *gosmtp.SMTPError
		if errors.As(err, &se) && (se.Code == 552 || se.EnhancedCode == gosmtp.EnhancedCode{5, 3, 4}) {
			on5xx = sinks.Reject
		}
		return s.failed("MAIL FROM:<"+from+">", err, on5xx)
	}
	var refused []string
	var temporary bool
	code := 0 // a 421 among the refusals closes the connection
	for _, to := range s.o.To {
		if err := c.c.Rcpt(to, nil); err != nil {
			var se *gosmtp.SMTPError
			if !errors.As(err, &se) {
				return s.failed("RCPT TO:<"+to+">", err, nil)
			}
			temporary = temporary || se.Code/100 == 4
			if code != 421 {
				code = se.Code
			}
			refused = append(refused, fmt.Sprintf("<%s>: %s", to, reply(se)))
		}
	}
	if len(refused) > 0 {
		err := error(&intact{fmt.Errorf("%s: recipient(s) refused, nothing sent: %s", s.shown, strings.Join(refused, "; ")), code})
		if temporary {
			return err
		}
		return sinks.Reject(err)
	}
	w, err := c.c.Data()
	if err != nil {
		return s.failed("DATA", err, sinks.Reject)
	}
	if _, err := io.Copy(w, m.Reader()); err != nil {
		return fmt.Errorf("%s: sending the message: %w", s.shown, err)
	}
	if err := w.Close(); err != nil {
		return s.failed("end of data", err, sinks.Reject)
	}
	return nil
}

// failed classifies an error at step: a 5xx reply is marked by on5xx
// (nil: temporary), 4xx is temporary, anything else (the connection) too.
func (s *Sink) failed(step string, err error, on5xx func(error) error) error {
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return fmt.Errorf("%s: %s: %w", s.shown, step, err)
	}
	e := error(&intact{fmt.Errorf("%s: %s refused: %s", s.shown, step, reply(se)), se.Code})
	if se.Code/100 == 5 && on5xx != nil {
		return on5xx(e)
	}
	return e
}

// intact marks an error after which the session can carry the next
// transaction (after RSET): a reply from the server other than 421, or a
// check pophook made before sending anything. Any other error leaves the
// session in an unknown state, and the connection is closed.
type intact struct {
	error
	code int // the server's reply code; 0 for pophook's own check
}

func (e *intact) Unwrap() error { return e.error }

// reply shows a server reply in one line.
func reply(se *gosmtp.SMTPError) string {
	msg := strings.Join(strings.Fields(se.Message), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return strconv.Itoa(se.Code) + " " + strings.ToValidUTF8(msg, "?")
}

// conn is a connection in the pool.
type conn struct {
	c    *gosmtp.Client
	used time.Time
}

// broken reports whether err leaves the session unusable (see intact).
func (c *conn) broken(err error) bool {
	var i *intact
	return !errors.As(err, &i) || i.code == 421
}

// take returns an idle connection that still answers RSET, or a new one.
func (s *Sink) take(ctx context.Context) (*conn, error) {
	for {
		s.mu.Lock()
		if len(s.idle) == 0 {
			s.mu.Unlock()
			break
		}
		c := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		s.mu.Unlock()
		if time.Since(c.used) < idleLimit && c.c.Reset() == nil {
			return c, nil
		}
		c.c.Close() // the server closed it, or it is stale
	}
	return s.dial(ctx)
}

func (s *Sink) put(c *conn) {
	c.used = time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle) >= maxIdle {
		go c.c.Quit()
		return
	}
	s.idle = append(s.idle, c)
}

// Close ends the idle connections with QUIT.
func (s *Sink) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, c := range idle {
		if c.c.Quit() != nil {
			c.c.Close()
		}
	}
	return nil
}

// dial connects, protects the connection and logs in. Failures that no
// retry can fix (a refused certificate, no STARTTLS, refused credentials)
// make the sink unavailable.
func (s *Sink) dial(ctx context.Context) (*conn, error) {
	raw, err := s.o.Dialer.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.shown, err)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	raw.SetDeadline(time.Now().Add(s.o.Timeout))
	cfg := s.tlsConfig()
	var c *gosmtp.Client
	switch s.o.TLS {
	case TLSImplicit:
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, s.tlsFailed(err)
		}
		c = gosmtp.NewClient(tc)
	case TLSStartTLS:
		// go-smtp refuses to go on when STARTTLS is not offered: never a
		// silent downgrade. Its first EHLO says "localhost"; the one
		// after the handshake, which counts, gives the host name.
		c, err = gosmtp.NewClientStartTLS(raw, cfg)
		if err != nil {
			raw.Close()
			return nil, s.tlsFailed(err)
		}
	default:
		c = gosmtp.NewClient(raw)
	}
	c.CommandTimeout, c.SubmissionTimeout = s.o.Timeout, s.o.Timeout
	// After STARTTLS this is the first exchange over TLS, so a refused
	// certificate shows here.
	if err := c.Hello(s.o.HelloName); err != nil {
		c.Close()
		return nil, s.tlsFailed(err)
	}
	if s.o.Username != "" {
		if err := s.auth(c); err != nil {
			c.Close()
			return nil, err
		}
	}
	raw.SetDeadline(time.Time{})
	return &conn{c: c, used: time.Now()}, nil
}

func (s *Sink) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if s.o.TLSConfig != nil {
		cfg = s.o.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = s.o.Host
	}
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
	return cfg
}

// tlsFailed classifies a failed TLS start: a refused certificate, a
// server without STARTTLS or one that refuses it cannot be retried into
// working; a dropped connection can.
func (s *Sink) tlsFailed(err error) error {
	e := fmt.Errorf("%s: %w", s.shown, err)
	var cv *tls.CertificateVerificationError
	var se *gosmtp.SMTPError
	var alert tls.AlertError
	switch {
	case errors.As(err, &cv), errors.As(err, &alert), errors.As(err, &se) && se.Code/100 == 5:
		return sinks.Unavailable(e)
	case strings.Contains(err.Error(), "doesn't support STARTTLS"):
		return sinks.Unavailable(fmt.Errorf("%s does not offer STARTTLS; pophook does not send mail or credentials in clear text (for port 465 use TLS=implicit)", s.shown))
	}
	return e
}

// auth logs in with PLAIN or LOGIN. The password is read now, never
// crosses a clear connection unless allowed, and never appears in an
// error.
func (s *Sink) auth(c *gosmtp.Client) error {
	if _, ok := c.TLSConnectionState(); !ok && !s.o.AllowInsecure {
		return sinks.Unavailable(fmt.Errorf("%s: refusing to send the password over a connection without TLS", s.shown))
	}
	pass, err := s.o.Password()
	if err != nil {
		return sinks.Unavailable(fmt.Errorf("%s: reading the password: %w", s.shown, err))
	}
	var mech sasl.Client
	switch {
	case c.SupportsAuth("PLAIN"):
		mech = sasl.NewPlainClient("", s.o.Username, pass)
	case c.SupportsAuth("LOGIN"):
		mech = sasl.NewLoginClient(s.o.Username, pass)
	default:
		_, offered := c.Extension("AUTH")
		return sinks.Unavailable(fmt.Errorf("%s offers no AUTH PLAIN or LOGIN (it offers %q)", s.shown, offered))
	}
	if err := c.Auth(mech); err != nil {
		// A relay may quote what it refused: the password, or the base64
		// of the PLAIN or LOGIN response carrying it.
		secrets := redact.Wire(pass, "\x00"+s.o.Username+"\x00"+pass)
		var se *gosmtp.SMTPError
		if errors.As(err, &se) && se.Code/100 == 4 {
			return fmt.Errorf("%s: AUTH refused for now: %s", s.shown, redact.Scrub(reply(se), secrets...))
		}
		if errors.As(err, &se) {
			return sinks.Unavailable(fmt.Errorf("%s: AUTH as %s refused: %s; check USERNAME and PASSWORD", s.shown, s.o.Username, redact.Scrub(reply(se), secrets...)))
		}
		return fmt.Errorf("%s: AUTH: %s", s.shown, redact.Scrub(err.Error(), secrets...))
	}
	return nil
}

// needs are the extensions a message needs.
type needs struct {
	eightBit   bool // a byte above 0x7F anywhere (8BITMIME)
	utf8Header bool // a byte above 0x7F in the header (SMTPUTF8, RFC 6532)
}

// scan reads the message once to see what it needs.
func scan(r io.Reader) (needs, error) {
	var n needs
	buf := make([]byte, 64<<10)
	inHeader := true
	lineLen := 0 // bytes other than CR since the last LF
	for {
		k, err := r.Read(buf)
		for _, b := range buf[:k] {
			switch {
			case b == '\n':
				if lineLen == 0 {
					inHeader = false // the empty line that ends the header
				}
				lineLen = 0
			case b != '\r':
				lineLen++
			}
			if b >= 0x80 {
				n.eightBit = true
				n.utf8Header = n.utf8Header || inHeader
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
