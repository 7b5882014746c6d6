//go:build unix

package smtp

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/postfixtest"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/sinktest"
)

// postfixSink relays to a private Postfix over the given TLS mode.
func postfixSink(t *testing.T, p *postfixtest.Server, mode string, to ...string) *Sink {
	t.Helper()
	addr := p.Addr()
	if mode == TLSImplicit {
		addr = p.TLSAddr()
	}
	host, port := hostPort(t, addr)
	if len(to) == 0 {
		to = []string{"tickets@pophook.test"}
	}
	s, err := New(Options{
		Name: "relay", Host: host, Port: port, TLS: mode, TLSConfig: p.TLSConfig(), To: to,
		Timeout: 30 * time.Second, Retry: sinks.Retry{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Budget: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// stored reads what Postfix delivered, once its queue is empty, without
// the four trace fields it prepends.
func stored(t *testing.T, p *postfixtest.Server) func() [][]byte {
	return func() [][]byte {
		p.WaitQueueEmpty(t, 30*time.Second)
		var out [][]byte
		for _, m := range p.Messages(t, "") {
			out = append(out, postfixtest.StripTrace(t, m))
		}
		return out
	}
}

// inPostfix is a message as Postfix stores it: LF line endings, a final
// line break.
func inPostfix(raw []byte) []byte { return sinktest.LF(onWire(raw)) }

// TestConformancePostfix: the real relay. The bytes Postfix stores are the
// bytes fetched, apart from its trace fields and its LF line endings.
func TestConformancePostfix(t *testing.T) {
	for _, mode := range []string{TLSStartTLS, TLSImplicit} {
		t.Run(mode, func(t *testing.T) {
			sinktest.Run(t, sinktest.Target{
				New: func(t *testing.T) (sinks.Sink, func() [][]byte) {
					p := postfixtest.Start(t, postfixtest.Options{MessageSizeLimit: 64 << 20})
					return postfixSink(t, p, mode), stored(t, p)
				},
				Stored: inPostfix,
				Faulty: func(t *testing.T, f sinktest.Fault) (sinks.Sink, func() [][]byte) {
					switch f {
					case sinktest.Reject:
						p := postfixtest.Start(t, postfixtest.Options{RejectRecipients: []string{"tickets@pophook.test"}})
						return postfixSink(t, p, mode), stored(t, p)
					case sinktest.Temporary:
						p := postfixtest.Start(t, postfixtest.Options{DeferRecipients: []string{"tickets@pophook.test"}})
						s := postfixSink(t, p, mode)
						s.o.Retry.Budget = time.Second
						return s, stored(t, p)
					case sinktest.Unavailable:
						// A certificate the sink does not trust.
						p := postfixtest.Start(t, postfixtest.Options{})
						s := postfixSink(t, p, mode)
						s.o.TLSConfig = nil
						return s, stored(t, p)
					}
					return nil, nil // Postfix cannot drop a connection or stall on demand: see TestConformanceFault
				},
			})
		})
	}
}

// A message too large for the relay is rejected, not retried.
func TestPostfixTooLarge(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{MessageSizeLimit: 1 << 20})
	s := postfixSink(t, p, TLSStartTLS)
	err := s.Deliver(context.Background(), sinktest.Message(sinktest.Large(2<<20)))
	if sinks.Classify(err) != sinks.OutcomeRejected {
		t.Errorf("2 MiB to a 1 MiB relay: %v (%s)", err, sinks.Classify(err))
	}
	// The connection is still good for the next message.
	raw := sinktest.Messages()["small"]
	if err := s.Deliver(context.Background(), sinktest.Message(raw)); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, p)(); len(got) != 1 || !bytes.Equal(got[0], inPostfix(raw)) {
		t.Errorf("stored %q", got)
	}
}

// A header with UTF-8 needs SMTPUTF8: with Postfix's it is relayed, and
// without it rejected before anything is sent.
func TestPostfixSMTPUTF8(t *testing.T) {
	raw := sinktest.Messages()["8-bit header"]
	p := postfixtest.Start(t, postfixtest.Options{})
	if err := postfixSink(t, p, TLSStartTLS).Deliver(context.Background(), sinktest.Message(raw)); err != nil {
		t.Fatal(err)
	}
	if got := stored(t, p)(); len(got) != 1 || !bytes.Equal(got[0], inPostfix(raw)) {
		t.Errorf("stored %q", got)
	}
	off := postfixtest.Start(t, postfixtest.Options{DisableSMTPUTF8: true})
	err := postfixSink(t, off, TLSStartTLS).Deliver(context.Background(), sinktest.Message(raw))
	if sinks.Classify(err) != sinks.OutcomeRejected {
		t.Errorf("relay without SMTPUTF8: %v (%s)", err, sinks.Classify(err))
	}
	if got := stored(t, off)(); len(got) != 0 {
		t.Errorf("stored %d messages", len(got))
	}
}

// Several recipients each get the message; one refused means none is sent.
func TestPostfixRecipients(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{RejectRecipients: []string{"gone@pophook.test"}})
	raw := sinktest.Messages()["small"]
	if err := postfixSink(t, p, TLSStartTLS, "a@pophook.test", "b@pophook.test").Deliver(context.Background(), sinktest.Message(raw)); err != nil {
		t.Fatal(err)
	}
	if a, b := p.WaitMessages(t, "a@pophook.test", 1, 30*time.Second), p.WaitMessages(t, "b@pophook.test", 1, 30*time.Second); len(a) != 1 || len(b) != 1 {
		t.Fatalf("a got %d, b got %d", len(a), len(b))
	}
	err := postfixSink(t, p, TLSStartTLS, "c@pophook.test", "gone@pophook.test").Deliver(context.Background(), sinktest.Message(raw))
	if sinks.Classify(err) != sinks.OutcomeRejected || !bytes.Contains([]byte(err.Error()), []byte("<gone@pophook.test>: 550")) {
		t.Errorf("one refused recipient: %v", err)
	}
	p.WaitQueueEmpty(t, 30*time.Second)
	if got := p.Messages(t, "c@pophook.test"); len(got) != 0 {
		t.Error("the accepted recipient got the message although another was refused")
	}
}

// A relay that does not announce 8BITMIME gets no 8-bit message: it is
// rejected with that reason before anything is sent. (Postfix would store
// it anyway, but a relay that does not announce it may mangle it.)
func TestPostfixWithout8BITMIME(t *testing.T) {
	p := postfixtest.Start(t, postfixtest.Options{Disable8BITMIME: true})
	s := postfixSink(t, p, TLSStartTLS)
	err := s.Deliver(context.Background(), sinktest.Message(sinktest.Messages()["binary-ish body"]))
	if sinks.Classify(err) != sinks.OutcomeRejected || !bytes.Contains([]byte(err.Error()), []byte("8BITMIME")) {
		t.Errorf("8-bit body to a relay without 8BITMIME: %v (%s)", err, sinks.Classify(err))
	}
	raw := sinktest.Messages()["small"]
	if err := s.Deliver(context.Background(), sinktest.Message(raw)); err != nil {
		t.Fatalf("a 7-bit message: %v", err)
	}
	if got := stored(t, p)(); len(got) != 1 || !bytes.Equal(got[0], inPostfix(raw)) {
		t.Errorf("stored %q", got)
	}
}
