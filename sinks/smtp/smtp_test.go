package smtp

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/sinktest"
)

const relayPassword = "relay-Secret-pw-42"

func hostPort(t *testing.T, addr string) (string, int) {
	host, port, _ := net.SplitHostPort(addr)
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, p
}

// sinkFor is a sink relaying to f over STARTTLS with AUTH, to one or more
// recipients.
func sinkFor(t *testing.T, f *fake, mod func(*Options)) *Sink {
	t.Helper()
	host, port := hostPort(t, f.Addr)
	o := Options{
		Name: "relay", Host: host, Port: port, TLS: TLSStartTLS, TLSConfig: f.clientTLS(),
		To: []string{"tickets@help.example"}, Timeout: 5 * time.Second,
		// A budget that a 4 MiB message under -race on a busy machine
		// fits in; tests that spend it on purpose set their own.
		Retry: sinks.Retry{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Budget: 30 * time.Second},
	}
	if f.password != "" {
		o.Username, o.Password = "relay", func() (string, error) { return relayPassword, nil }
	}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// shortBudget is for tests that retry until the budget is spent.
func shortBudget(o *Options) { o.Retry.Budget = time.Second }

// onWire is the message as the SMTP server takes it: byte-exact, with the
// CRLF that ends the data added when the message lacked a final one.
func onWire(raw []byte) []byte {
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		return append(bytes.Clone(raw), '\r', '\n')
	}
	return raw
}

// TestConformanceFault runs the sink suite against go-smtp's server, which
// keeps the DATA exactly as it arrived (dot-stuffing undone, CRLF kept).
func TestConformanceFault(t *testing.T) {
	sinktest.Run(t, sinktest.Target{
		New: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			f := newFake(t, fakeOpts{tls: true, utf8: true, password: relayPassword})
			return sinkFor(t, f, nil), f.messages
		},
		Stored: onWire,
		Faulty: func(t *testing.T, fault sinktest.Fault) (sinks.Sink, func() [][]byte) {
			f := newFake(t, fakeOpts{tls: true, utf8: true, password: relayPassword})
			mod := func(*Options) {}
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			switch fault {
			case sinktest.Reject:
				f.onRcpt = func(string) error {
					return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
				}
			case sinktest.Unavailable:
				mod = func(o *Options) { o.Password = func() (string, error) { return "wrong-" + relayPassword, nil } }
			case sinktest.Temporary:
				f.onRcpt = func(string) error {
					return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
				}
				mod = shortBudget
			case sinktest.TemporaryOnce:
				f.onData = func(n int, c *gosmtp.Conn, r io.Reader) error {
					if n == 0 {
						io.CopyN(io.Discard, r, 4096)
						c.Close() // cut mid-DATA
						return io.ErrUnexpectedEOF
					}
					return nil
				}
			case sinktest.Stall:
				f.onData = func(int, *gosmtp.Conn, io.Reader) error { <-release; return nil }
				mod = func(o *Options) { o.Timeout = time.Minute; o.Retry.Budget = time.Minute }
			}
			return sinkFor(t, f, mod), f.messages
		},
		CancelWithin: 2 * time.Second,
		Secrets:      []string{relayPassword},
		Large:        4 << 20,
	})
}

// Every refused recipient is named and nothing is sent; a 5xx for one is a
// rejection of the message, only 4xx ones a temporary failure.
func TestRecipientsRefused(t *testing.T) {
	for _, tc := range []struct {
		codes map[string]int
		want  sinks.Outcome
	}{
		{map[string]int{"a@help.example": 550, "b@help.example": 551}, sinks.OutcomeRejected},
		{map[string]int{"b@help.example": 550}, sinks.OutcomeRejected},
		{map[string]int{"a@help.example": 452, "b@help.example": 450}, sinks.OutcomeTemporary},
	} {
		f := newFake(t, fakeOpts{tls: true})
		f.onRcpt = func(to string) error {
			if code := tc.codes[to]; code != 0 {
				return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{code / 100, 1, 1}, Message: "no " + to}
			}
			return nil
		}
		s := sinkFor(t, f, func(o *Options) {
			o.To = []string{"a@help.example", "b@help.example", "c@help.example"}
			shortBudget(o)
		})
		err := s.Deliver(context.Background(), sinktest.Message(sinktest.Messages()["small"]))
		if sinks.Classify(err) != tc.want {
			t.Errorf("%v: %v (%s), want %s", tc.codes, err, sinks.Classify(err), tc.want)
		}
		for to, code := range tc.codes {
			if err == nil || !strings.Contains(err.Error(), "<"+to+">: "+strconv.Itoa(code)) {
				t.Errorf("%v: the error does not name %s with its code: %v", tc.codes, to, err)
			}
		}
		if len(f.received()) != 0 {
			t.Errorf("%v: a message was sent although a recipient was refused", tc.codes)
		}
	}
}

// A 4xx followed by success is retried within the budget and delivered.
func TestTemporaryThenDelivered(t *testing.T) {
	f := newFake(t, fakeOpts{tls: true})
	f.onData = func(n int, _ *gosmtp.Conn, r io.Reader) error {
		if n < 2 {
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "queue busy"}
		}
		return nil
	}
	retries := 0
	s := sinkFor(t, f, func(o *Options) { o.OnRetry = func() { retries++ } })
	raw := sinktest.Messages()["small"]
	if err := s.Deliver(context.Background(), sinktest.Message(raw)); err != nil {
		t.Fatal(err)
	}
	if got := f.messages(); len(got) != 1 || !bytes.Equal(got[0], raw) || retries != 2 {
		t.Errorf("received %q after %d retries (want 2)", got, retries)
	}
}

// A refusal leaves the session usable: the retry goes over the same
// connection after RSET. Only 421 (the server is closing) or a broken
// connection makes the sink dial again.
func TestRefusalKeepsConnection(t *testing.T) {
	refuse := func(code int) error {
		return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{code / 100, 0, 0}, Message: "not now"}
	}
	for name, tc := range map[string]struct {
		setup func(f *fake, n *int)
		conns int
	}{
		"451 at MAIL FROM": {func(f *fake, n *int) {
			f.onMail = func(string) error { *n++; return map[bool]error{true: refuse(451)}[*n == 1] }
		}, 1},
		"450 at RCPT TO": {func(f *fake, n *int) {
			f.onRcpt = func(string) error { *n++; return map[bool]error{true: refuse(450)}[*n == 1] }
		}, 1},
		"451 at end of data": {func(f *fake, n *int) {
			f.onData = func(int, *gosmtp.Conn, io.Reader) error { *n++; return map[bool]error{true: refuse(451)}[*n == 1] }
		}, 1},
		"421 at MAIL FROM": {func(f *fake, n *int) {
			f.onMail = func(string) error { *n++; return map[bool]error{true: refuse(421)}[*n == 1] }
		}, 2},
	} {
		f := newFake(t, fakeOpts{tls: true})
		n := 0
		tc.setup(f, &n)
		if err := sinkFor(t, f, nil).Deliver(context.Background(), sinktest.Message(sinktest.Messages()["small"])); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := f.connections(); got != tc.conns {
			t.Errorf("%s: %d connections, want %d", name, got, tc.conns)
		}
	}
}

// What makes the sink unavailable, and what rejects only the message.
func TestOutcomes(t *testing.T) {
	reply := func(code int) error {
		return &gosmtp.SMTPError{Code: code, EnhancedCode: gosmtp.EnhancedCode{code / 100, 0, 0}, Message: "said " + strconv.Itoa(code)}
	}
	for name, tc := range map[string]struct {
		setup func(*fake)
		want  sinks.Outcome
	}{
		"5xx at MAIL FROM":   {func(f *fake) { f.onMail = func(string) error { return reply(553) } }, sinks.OutcomeUnavailable},
		"4xx at MAIL FROM":   {func(f *fake) { f.onMail = func(string) error { return reply(451) } }, sinks.OutcomeTemporary},
		"5xx at end of DATA": {func(f *fake) { f.onData = func(int, *gosmtp.Conn, io.Reader) error { return reply(554) } }, sinks.OutcomeRejected},
		"552 too large":      {func(f *fake) { f.onData = func(int, *gosmtp.Conn, io.Reader) error { return reply(552) } }, sinks.OutcomeRejected},
	} {
		f := newFake(t, fakeOpts{tls: true})
		tc.setup(f)
		err := sinkFor(t, f, shortBudget).Deliver(context.Background(), sinktest.Message(sinktest.Messages()["small"]))
		if got := sinks.Classify(err); got != tc.want || !strings.Contains(err.Error(), "said") {
			t.Errorf("%s: %v (%s), want %s with the server's words", name, err, got, tc.want)
		}
	}
}

// STARTTLS is required: a server that does not offer it gets nothing, not
// even the envelope; an untrusted certificate is refused the same way.
func TestTLSRequired(t *testing.T) {
	plain := newFake(t, fakeOpts{})
	err := sinkFor(t, plain, func(o *Options) { o.TLSConfig = nil }).Deliver(context.Background(), sinktest.Message(sinktest.Messages()["small"]))
	if sinks.Classify(err) != sinks.OutcomeUnavailable || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Errorf("no STARTTLS: %v (%s)", err, sinks.Classify(err))
	}
	f := newFake(t, fakeOpts{tls: true})
	err = sinkFor(t, f, func(o *Options) { o.TLSConfig = nil }).Deliver(context.Background(), sinktest.Message(sinktest.Messages()["small"]))
	if sinks.Classify(err) != sinks.OutcomeUnavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v (%s)", err, sinks.Classify(err))
	}
	if len(plain.received())+len(f.received()) != 0 || len(plain.mails)+len(f.mails) != 0 {
		t.Error("a transaction started without TLS")
	}
	if _, err := New(Options{Host: "h", Port: 25, TLS: TLSNone, To: []string{"a@b"}}); err == nil {
		t.Error("TLS none accepted without AllowInsecure")
	}
}

// Implicit TLS (port 465) delivers too.
func TestImplicitTLS(t *testing.T) {
	f := newFake(t, fakeOpts{implicit: true, password: relayPassword})
	s := sinkFor(t, f, func(o *Options) { o.TLS = TLSImplicit })
	raw := sinktest.Messages()["single dot line"]
	if err := s.Deliver(context.Background(), sinktest.Message(raw)); err != nil {
		t.Fatal(err)
	}
	if got := f.messages(); len(got) != 1 || !bytes.Equal(got[0], raw) {
		t.Errorf("received %q", got)
	}
}

// One connection serves message after message, and a connection the
// server closed is replaced without the delivery failing.
func TestConnectionReused(t *testing.T) {
	f := newFake(t, fakeOpts{tls: true, password: relayPassword})
	s := sinkFor(t, f, nil)
	for i := range 3 {
		raw := []byte("Subject: " + strconv.Itoa(i) + "\r\n\r\nbody\r\n")
		if err := s.Deliver(context.Background(), sinktest.Message(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.connections(); n != 1 {
		t.Errorf("%d connections for 3 messages, want 1", n)
	}
	// The server goes away and comes back on the same port.
	addr := f.Addr
	f.srv.Close()
	g := newFakeAt(t, addr, fakeOpts{tls: true, password: relayPassword})
	if err := s.Deliver(context.Background(), sinktest.Message([]byte("Subject: after\r\n\r\nb\r\n"))); err != nil {
		t.Fatalf("after the server closed the connection: %v", err)
	}
	if len(g.received()) != 1 {
		t.Error("the message did not arrive on a new connection")
	}
}

// newFakeAt is newFake on a given address.
func newFakeAt(t *testing.T, addr string, o fakeOpts) *fake {
	t.Helper()
	var f *fake
	for range 50 { // the port is free again once the old listener closed
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	f = newFakeOn(t, addr, o)
	return f
}

// The envelope sender is the mailbox the message came from, unless FROM is
// set; UTF-8 in the header asks for SMTPUTF8, and without it on the server
// the message is rejected with a clear reason.
func TestEnvelope(t *testing.T) {
	f := newFake(t, fakeOpts{tls: true, utf8: true})
	s := sinkFor(t, f, nil)
	utf8Msg := sinktest.Messages()["8-bit header"]
	if err := s.Deliver(context.Background(), sinktest.Message(utf8Msg)); err != nil {
		t.Fatal(err)
	}
	fixed := sinkFor(t, f, func(o *Options) { o.From = "pophook@relay.example" })
	if err := fixed.Deliver(context.Background(), sinktest.Message(sinktest.Messages()["small"])); err != nil {
		t.Fatal(err)
	}
	got := f.received()
	if len(got) != 2 || got[0].from != "support@example.com" || got[1].from != "pophook@relay.example" {
		t.Fatalf("envelope senders: %+v", got)
	}
	if f.mails[0] != "support@example.com SMTPUTF8" || f.mails[1] != "pophook@relay.example" {
		t.Errorf("MAIL FROM: %q; want SMTPUTF8 only for the UTF-8 header", f.mails)
	}
	noUTF8 := newFake(t, fakeOpts{tls: true})
	err := sinkFor(t, noUTF8, nil).Deliver(context.Background(), sinktest.Message(utf8Msg))
	if sinks.Classify(err) != sinks.OutcomeRejected || !strings.Contains(err.Error(), "SMTPUTF8") {
		t.Errorf("server without SMTPUTF8: %v (%s)", err, sinks.Classify(err))
	}
}

func TestScan(t *testing.T) {
	for in, want := range map[string]needs{
		"Subject: a\r\n\r\nbody\r\n":              {},
		"Subject: a\r\n\r\nb\xc3\xa9\r\n":         {eightBit: true},
		"Subject: \xc3\xa9\r\n\r\nbody\r\n":       {eightBit: true, utf8Header: true},
		"Subject: a\n\nb\xc3\xa9\n":               {eightBit: true},
		"Subject: a\r\nX: b\r\n \xc3\xa9\r\n\r\n": {eightBit: true, utf8Header: true},
	} {
		got, err := scan(strings.NewReader(in))
		if err != nil || got != want {
			t.Errorf("scan(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}
