// Package sinktest is the conformance suite every sink's tests run: the
// promises of the sinks.Sink contract, checked the same way for each.
//
//   - small, large (25 MiB) and odd messages arrive byte-exact, in the form
//     the sink promises (LF for a Maildir, CRLF on the wire);
//   - a retry re-reads the message from the start;
//   - the same message twice (same key) is handled as the sink promises:
//     stored once, or sent twice under one key for the receiver to drop;
//   - a cancelled delivery returns within the sink's bound;
//   - rejections, unavailability and temporary failures come out as such;
//   - no secret appears in any error.
package sinktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pophook/pophook/sinks"
)

// Fault is a way a receiver fails.
type Fault int

const (
	// Reject: the receiver refuses this message for good.
	Reject Fault = iota
	// Unavailable: the receiver cannot take anything until someone fixes
	// it (credentials refused, an unwritable directory).
	Unavailable
	// Temporary: the receiver fails every time, in a way that may pass.
	Temporary
	// TemporaryOnce: the first attempt fails partway through the message,
	// the next succeeds.
	TemporaryOnce
	// Stall: the receiver stops answering.
	Stall
)

func (f Fault) String() string {
	return [...]string{"reject", "unavailable", "temporary", "temporary once", "stall"}[f]
}

// Target is one sink implementation under test.
type Target struct {
	// New returns a fresh sink and a function that lists the messages its
	// receiver holds, as stored, with whatever the receiver adds (trace
	// headers) already taken off.
	New func(t *testing.T) (sinks.Sink, func() [][]byte)
	// Stored turns a message as fetched into the form the receiver holds:
	// nil means unchanged (CRLF, byte for byte).
	Stored func(raw []byte) []byte
	// Dedupes says a second delivery under the same key stores nothing
	// new; otherwise it arrives a second time, for the receiver to drop
	// by its key.
	Dedupes bool
	// Faulty returns a sink whose receiver fails as f says, and a
	// function listing what that receiver holds; nil when the sink cannot
	// meet that fault (a Maildir never rejects).
	Faulty func(t *testing.T, f Fault) (sinks.Sink, func() [][]byte)
	// CancelWithin bounds how long a delivery takes to return once its
	// context is cancelled.
	CancelWithin time.Duration
	// Secrets must never appear in an error.
	Secrets []string
	// Large is the size of the large message; 0 means 25 MiB.
	Large int
}

// LF is Target.Stored for receivers that store LF line endings.
func LF(raw []byte) []byte { return bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n")) }

// Messages are the odd and plain messages every sink must carry; each is
// as POP3 delivers it (CRLF, dot-stuffing removed).
func Messages() map[string][]byte {
	long := strings.Repeat("0123456789", 120) // 1200 octets, over SMTP's 998
	return map[string][]byte{
		"small":            []byte("From: a@example.org\r\nTo: b@example.com\r\nSubject: hello\r\nMessage-ID: <small@sinktest>\r\n\r\nhello\r\n"),
		"long line":        []byte("Subject: long line\r\nMessage-ID: <long@sinktest>\r\n\r\n" + long + "\r\nend\r\n"),
		"8-bit header":     []byte("From: =?UTF-8?B?5byg5LiJ?= <zhang@example.cn>\r\nSubject: 报价单 Grüße\r\nMessage-ID: <8bit@sinktest>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n请查收附件。\r\n"),
		"single dot line":  []byte("Subject: dots\r\nMessage-ID: <dots@sinktest>\r\n\r\nbefore\r\n.\r\n..two\r\n.x\r\nafter\r\n"),
		"binary-ish body":  append([]byte("Subject: gbk\r\nMessage-ID: <gbk@sinktest>\r\nContent-Type: text/plain; charset=gbk\r\n\r\n"), 0xc4, 0xe3, 0xba, 0xc3, '\r', '\n'),
		"no final newline": []byte("Subject: cut\r\nMessage-ID: <cut@sinktest>\r\n\r\nlast line without a break"),
	}
}

// Large returns a message of about size bytes: a text part and a base64
// attachment, as POP3 delivers it.
func Large(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: big@example.org\r\nSubject: large\r\nMessage-ID: <large@sinktest>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	line := []byte("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n")
	for n := 0; b.Len() < size; n++ {
		line[0] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[n%26] // lines differ, so a lost or repeated one shows
		b.Write(line)
	}
	b.WriteString("--b1--\r\n")
	return b.Bytes()
}

// Message wraps raw as a sinks.Message with a key derived from its
// content; readers count how often the raw bytes were read from the start.
func Message(raw []byte) *sinks.Message {
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])
	return &sinks.Message{
		Account: "support", Mailbox: "support@example.com", UIDL: digest[:12],
		Key: "ph1_" + digest[:40], Size: int64(len(raw)), SHA256: digest, Raw: bytes.NewReader(raw),
	}
}

// Run runs the suite against target.
func Run(t *testing.T, target Target) {
	errs := &errorLog{}
	t.Run("byte-exact", func(t *testing.T) {
		s, received := target.New(t)
		msgs := Messages()
		msgs["large"] = Large(cmp(target.Large, 25<<20))
		for name, raw := range msgs {
			err := deliver(context.Background(), s, Message(raw))
			errs.add(err)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if n := count(received(), target.stored(raw)); n != 1 {
				t.Errorf("%s: the receiver holds it %d times byte-exact, want once%s", name, n, diff(received(), target.stored(raw)))
			}
		}
	})
	t.Run("same key twice", func(t *testing.T) {
		s, received := target.New(t)
		raw := Messages()["small"]
		for range 2 {
			err := deliver(context.Background(), s, Message(raw))
			errs.add(err)
			if err != nil {
				t.Fatal(err)
			}
		}
		want := 2
		if target.Dedupes {
			want = 1
		}
		if n := count(received(), target.stored(raw)); n != want {
			t.Errorf("the receiver holds it %d times, want %d", n, want)
		}
	})
	t.Run("retry re-reads the message", func(t *testing.T) {
		s, received := target.faulty(t, TemporaryOnce)
		if s == nil {
			t.Log("not applicable: this sink does not retry within a delivery")
			return
		}
		raw := Large(1 << 20)
		err := deliver(context.Background(), s, Message(raw))
		errs.add(err)
		if err != nil {
			t.Fatalf("delivery after one failed attempt: %v", err)
		}
		if n := count(received(), target.stored(raw)); n != 1 {
			t.Errorf("the receiver holds the retried message %d times byte-exact, want once%s", n, diff(received(), target.stored(raw)))
		}
	})
	for _, f := range []Fault{Reject, Unavailable, Temporary} {
		t.Run("outcome "+f.String(), func(t *testing.T) {
			s, received := target.faulty(t, f)
			if s == nil {
				t.Logf("not applicable: this sink has no %s failure", f)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := deliver(ctx, s, Message(Messages()["small"]))
			errs.add(err)
			want := map[Fault]sinks.Outcome{Reject: sinks.OutcomeRejected, Unavailable: sinks.OutcomeUnavailable, Temporary: sinks.OutcomeTemporary}[f]
			if got := sinks.Classify(err); got != want {
				t.Errorf("err = %v (%s), want %s", err, got, want)
			}
			if n := len(received()); n != 0 {
				t.Errorf("the receiver holds %d messages after a failure", n)
			}
		})
	}
	t.Run("cancellation", func(t *testing.T) {
		s, _ := target.faulty(t, Stall)
		if s == nil {
			t.Log("not applicable: the receiver cannot stall")
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- deliver(ctx, s, Message(Messages()["small"])) }()
		time.Sleep(200 * time.Millisecond)
		cancel()
		start := time.Now()
		select {
		case err := <-done:
			errs.add(err)
			if sinks.Classify(err) != sinks.OutcomeTemporary {
				t.Errorf("cancelled delivery: %v (%s), want a temporary error", err, sinks.Classify(err))
			}
			if !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "cancel") {
				t.Errorf("the error does not say the delivery was cancelled: %v", err)
			}
		case <-time.After(cmp(target.CancelWithin, 5*time.Second)):
			t.Fatalf("Deliver still running %s after cancellation", time.Since(start))
		}
	})
	t.Run("no secret in errors", func(t *testing.T) {
		all := errs.String()
		if len(target.Secrets) > 0 && all == "" {
			t.Log("no error was produced to check")
		}
		for _, secret := range target.Secrets {
			if secret != "" && strings.Contains(all, secret) {
				t.Errorf("an error shows the secret %q:\n%s", secret, all)
			}
		}
	})
}

// deliver hands m to s as the worker does: Deliver, then, for a sink
// whose deliveries are durable only then, Flush.
func deliver(ctx context.Context, s sinks.Sink, m *sinks.Message) error {
	if err := s.Deliver(ctx, m); err != nil {
		return err
	}
	if f, ok := s.(sinks.Flusher); ok {
		return f.Flush(ctx, []string{m.Key})
	}
	return nil
}

func (target Target) stored(raw []byte) []byte {
	if target.Stored == nil {
		return raw
	}
	return target.Stored(raw)
}

func (target Target) faulty(t *testing.T, f Fault) (sinks.Sink, func() [][]byte) {
	if target.Faulty == nil {
		return nil, nil
	}
	return target.Faulty(t, f)
}

func count(got [][]byte, want []byte) int {
	n := 0
	for _, g := range got {
		if bytes.Equal(g, want) {
			n++
		}
	}
	return n
}

// diff describes the closest received message, for a failure.
func diff(got [][]byte, want []byte) string {
	best, at := -1, 0
	for i, g := range got {
		n := 0
		for n < len(g) && n < len(want) && g[n] == want[n] {
			n++
		}
		if n > at || best < 0 {
			best, at = i, n
		}
	}
	if best < 0 {
		return " (it holds nothing)"
	}
	g := got[best]
	show := func(b []byte) string { return fmt.Sprintf("%q", b[at:min(len(b), at+40)]) }
	return fmt.Sprintf(" (closest: %d bytes against %d, first difference at %d: %s, want %s)", len(g), len(want), at, show(g), show(want))
}

func cmp[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

type errorLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *errorLog) add(err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	l.errs = append(l.errs, err.Error())
	l.mu.Unlock()
}

func (l *errorLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.errs, "\n")
}

// Maildir lists the messages in a Maildir's new/ and cur/, for targets
// whose receiver stores into one.
func Maildir(t *testing.T, dir string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}
