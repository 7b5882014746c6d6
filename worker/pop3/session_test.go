package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestRetrEachPipelined(t *testing.T) {
	opts := plainOpts
	opts.PipelineWindow = 2
	// With a window of two, RETR 3 may only be sent after the reply to
	// RETR 1 has been read; the transcript fails otherwise.
	c := loggedIn(t, opts, caps("PIPELINING"),
		"C: NOOP", "C: NOOP", "S: +OK", "S: +OK",
		"C: RETR 1", "C: RETR 2",
		"S: +OK", "S: one", "S: .",
		"C: RETR 3",
		"S: -ERR [SYS/TEMP] message 2 is being moved",
		"S: +OK", "S: ..three", "S: .",
		"C: DELE 1", "C: DELE 3", "S: +OK", "S: -ERR no such message",
		"C: QUIT", "S: +OK bye")
	got := map[int]string{}
	var errs []error
	err := c.RetrEach(ctx(t), []int{1, 2, 3}, func(num int, body io.Reader, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		b, err := io.ReadAll(body)
		got[num] = string(b)
		return err
	})
	ok(t, err)
	if got[1] != "one\r\n" || got[3] != ".three\r\n" || len(got) != 2 {
		t.Errorf("bodies = %v", got)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrSysTemp) {
		t.Errorf("per-message errors = %v", errs)
	}
	derrs, err := c.DeleMany(ctx(t), []int{1, 3})
	ok(t, err)
	if derrs[0] != nil || derrs[1] == nil {
		t.Errorf("DELE errors = %v", derrs)
	}
	ok(t, c.Quit(ctx(t)))
	if err := c.Noop(ctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("after QUIT: %v", err)
	}
}

func TestRetrEachCallbackErrorKeepsSession(t *testing.T) {
	opts := plainOpts
	opts.PipelineWindow = 3
	c := loggedIn(t, opts, caps("PIPELINING"),
		"C: NOOP", "C: NOOP", "S: +OK", "S: +OK",
		"C: RETR 1", "C: RETR 2", "C: RETR 3",
		"S: +OK", "S: first line", "S: second line", "S: .",
		"S: +OK", "S: two", "S: .",
		"S: -ERR gone",
		"C: NOOP", "S: +OK")
	diskFull := errors.New("no space left on device")
	calls := 0
	err := c.RetrEach(ctx(t), []int{1, 2, 3}, func(num int, body io.Reader, err error) error {
		calls++
		// Read a little, then fail like a full disk would.
		io.ReadFull(body, make([]byte, 3))
		return diskFull
	})
	if !errors.Is(err, diskFull) || calls != 1 {
		t.Fatalf("err = %v after %d calls, want the callback's error after 1", err, calls)
	}
	var ce *CallerError
	if !errors.As(err, &ce) {
		t.Errorf("err is %T, want *CallerError", err)
	}
	ok(t, c.Noop(ctx(t)))
}

func TestPipeliningRefusedFallsBackToLockStep(t *testing.T) {
	c := loggedIn(t, plainOpts, caps("PIPELINING"),
		"C: NOOP", "C: NOOP", "S: +OK", "S: -ERR one command at a time please",
		"C: RETR 1", "S: +OK", "S: a", "S: .",
		"C: RETR 2", "S: +OK", "S: b", "S: .")
	var got []string
	ok(t, c.RetrEach(ctx(t), []int{1, 2}, func(num int, body io.Reader, err error) error {
		b, _ := io.ReadAll(body)
		got = append(got, string(b))
		return err
	}))
	if strings.Join(got, "") != "a\r\nb\r\n" || c.Pipelined() {
		t.Errorf("got %q, pipelined %v", got, c.Pipelined())
	}
}

func TestPipeliningDroppedClosesSession(t *testing.T) {
	old := probeGrace
	probeGrace = 100 * time.Millisecond
	t.Cleanup(func() { probeGrace = old })
	// The second NOOP is never answered: the server dropped it.
	c := loggedIn(t, plainOpts, caps("PIPELINING"), "C: NOOP", "C: NOOP", "S: +OK")
	_, err := c.Scan(ctx(t))
	if !errors.Is(err, ErrPipeliningBroken) || IsTemporary(err) {
		t.Fatalf("err = %v, want ErrPipeliningBroken", err)
	}
	if err := c.Noop(ctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("session still used: %v", err)
	}
}

func TestTopRsetNoopQuit(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: TOP 1 0", "S: +OK", "S: Subject: hi", "S: ", "S: .",
		"C: DELE 1", "S: +OK marked",
		"C: RSET", "S: +OK",
		"C: NOOP", "S: +OK",
		"C: QUIT", "S: -ERR [SYS/TEMP] could not remove messages")
	var buf bytes.Buffer
	_, err := c.Top(ctx(t), 1, 0, &buf)
	ok(t, err)
	if buf.String() != "Subject: hi\r\n\r\n" {
		t.Errorf("TOP = %q", buf.String())
	}
	ok(t, c.Dele(ctx(t), 1))
	ok(t, c.Rset(ctx(t)))
	ok(t, c.Noop(ctx(t)))
	if err := c.Quit(ctx(t)); !errors.Is(err, ErrSysTemp) {
		t.Errorf("QUIT = %v, want the server's [SYS/TEMP]: deletions did not happen", err)
	}
}

func TestOverlongStatusLine(t *testing.T) {
	c := loggedIn(t, plainOpts, nil, "C: STAT", "S? +OK "+strings.Repeat("A", 40_000))
	_, _, err := c.Stat(ctx(t))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want protocol error", err)
	}
}

func TestGarbageReply(t *testing.T) {
	for _, reply := range []string{"S: OK", "S: +OKAY", "S: *", "S: ", "S: 250 hello"} {
		c := loggedIn(t, plainOpts, nil, "C: NOOP", reply)
		if err := c.Noop(ctx(t)); !errors.Is(err, ErrProtocol) {
			t.Errorf("%q: err = %v, want protocol error", reply, err)
		}
	}
}

func TestMaxMessageSize(t *testing.T) {
	opts := plainOpts
	opts.MaxMessageSize = 10
	c := loggedIn(t, opts, nil, "C: RETR 1", "S: +OK", "S: 0123456789 is longer than ten", "S: .")
	_, err := c.Retr(ctx(t), 1, io.Discard)
	if !errors.Is(err, ErrMessageTooLarge) || IsTemporary(err) {
		t.Fatalf("err = %v, want ErrMessageTooLarge", err)
	}
	if err := c.Noop(ctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("documented: the session is closed after an oversized body; got %v", err)
	}
}

func TestWriterErrorKeepsSession(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: RETR 1", "S: +OK", "S: line one", "S: line two", "S: .",
		"C: NOOP", "S: +OK")
	w := failingWriter{}
	_, err := c.Retr(ctx(t), 1, w)
	if !errors.Is(err, errWriter) {
		t.Fatalf("err = %v", err)
	}
	ok(t, c.Noop(ctx(t)))
}

var errWriter = errors.New("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errWriter }

func TestConnectionCutMidBody(t *testing.T) {
	c := loggedIn(t, plainOpts, nil, "C: RETR 1", "S: +OK", "S! partial line", "X: ")
	var buf bytes.Buffer
	_, err := c.Retr(ctx(t), 1, &buf)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary unexpected EOF", err)
	}
}

func TestContextCancelClosesConnection(t *testing.T) {
	// The server never answers; cancellation must not wait for it.
	c := loggedIn(t, plainOpts, nil, "C: STAT")
	cx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := c.Stat(cx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancellation took %s", d)
	}
}

func TestContextDeadline(t *testing.T) {
	c := loggedIn(t, plainOpts, nil, "C: STAT")
	cx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := c.Stat(cx)
	if err == nil || !IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary timeout", err)
	}
}

func TestStartTLSRefused(t *testing.T) {
	conn := startTranscript(t, "S: +OK", "C: CAPA", "S: +OK", "S: USER", "S: .", "C: STLS", "S: -ERR not here")
	_, err := NewClient(context.Background(), conn, "example.org", Options{TLS: TLSStartTLS})
	if err == nil || !strings.Contains(err.Error(), "STLS refused") {
		t.Fatalf("err = %v, want STLS refusal", err)
	}
}

func TestStartTLSInjectionRejected(t *testing.T) {
	// Bytes pipelined after the STLS reply, before the handshake, would be
	// taken as coming from inside TLS (CVE-2011-0411).
	conn := startTranscript(t, "S: +OK", "C: CAPA", "S: -ERR", "C: STLS", "S! +OK begin TLS\r\n+OK injected\r\n")
	_, err := NewClient(context.Background(), conn, "example.org", Options{TLS: TLSStartTLS})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want protocol error", err)
	}
}

func TestScanEntryLimit(t *testing.T) {
	opts := plainOpts
	opts.MaxListEntries = 3
	script := []string{"C: LIST", "S: +OK"}
	script = append(script, lines(4, "S: %d %d0")...)
	c := loggedIn(t, opts, nil, script...)
	if _, err := c.List(ctx(t)); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "more than 3") {
		t.Fatalf("err = %v", err)
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Command: "RETR 7", Code: "SYS/TEMP", Text: "try later"}
	if got, want := e.Error(), "pop3: RETR 7: -ERR [SYS/TEMP] try later"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("account x: %w", e)
	if !errors.Is(wrapped, ErrSysTemp) || errors.Is(wrapped, ErrSysPerm) {
		t.Error("errors.Is through a wrap")
	}
}
