package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/sinks"

	"github.com/pophook/pophook/internal/testutil/syncbuf"
)

func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, statuses(http.StatusInternalServerError, http.StatusOK))
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	hits := rec.got()
	if len(hits) != 2 {
		t.Fatalf("%d requests, want 2", len(hits))
	}
	for i, h := range hits {
		if !bytes.Equal(h.body, sample) {
			t.Errorf("request %d: body differs", i)
		}
	}
}

func TestSuccessStatuses(t *testing.T) {
	t.Parallel()
	for _, code := range []int{200, 201, 202, 204} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, statuses(code))
			s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
			if err := deliver(t, s, message(testKey, sample)); err != nil {
				t.Fatal(err)
			}
			if n := len(rec.got()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestRetryableStatuses(t *testing.T) {
	t.Parallel()
	for _, code := range []int{408, 425, 429, 500, 501, 502, 503, 504} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, statuses(code, http.StatusOK))
			s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
			if err := deliver(t, s, message(testKey, sample)); err != nil {
				t.Fatal(err)
			}
			hits := rec.got()
			if len(hits) != 2 {
				t.Fatalf("%d requests, want 2", len(hits))
			}
			// The first retry waits about sinks.DefaultRetryMin (±25%).
			if gap := hits[1].at.Sub(hits[0].at); gap < 300*time.Millisecond {
				t.Errorf("retried after %s, want a backoff of about %s", gap, sinks.DefaultRetryMin)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	cases := map[string]func() string{
		"seconds": func() string { return "1" },
		"date":    func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) },
	}
	for name, value := range cases {
		for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
			t.Run(fmt.Sprintf("%s/%d", name, code), func(t *testing.T) {
				t.Parallel()
				rec := newRecorder(t, func(n int, w http.ResponseWriter, _ *http.Request, _ []byte) {
					if n == 0 {
						w.Header().Set("Retry-After", value())
						w.WriteHeader(code)
					}
				})
				s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
				if err := deliver(t, s, message(testKey, sample)); err != nil {
					t.Fatal(err)
				}
				hits := rec.got()
				if len(hits) != 2 {
					t.Fatalf("%d requests, want 2", len(hits))
				}
				// An HTTP date has whole seconds: "now + 2s" is 1 to 2s away.
				if gap := hits[1].at.Sub(hits[0].at); gap < 800*time.Millisecond {
					t.Errorf("retried after %s, before Retry-After", gap)
				}
			})
		}
	}
}

// A Retry-After beyond the budget gives up at once, temporarily, rather
// than sleep past the budget.
func TestRetryAfterBeyondBudget(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, "slow down")
	})
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw, Budget: 5 * time.Second})
	start := time.Now()
	err := deliver(t, s, message(testKey, sample))
	if err == nil || sinks.Classify(err) != sinks.OutcomeTemporary {
		t.Fatalf("got %v, want a temporary error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s, want an immediate give-up", d)
	}
	if n := len(rec.got()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	for _, want := range []string{"retry after 2m0s", "1 attempt", "429", "slow down"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestPermanentStatuses(t *testing.T) {
	t.Parallel()
	// 401, 403 and 407 make the sink unavailable instead: see
	// TestAnswersThatMakeTheSinkUnavailable.
	for _, code := range []int{400, 404, 405, 410, 413, 415, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.WriteHeader(code)
				io.WriteString(w, "{\"error\": \"bad\tthing\"}\r\n\x1b[31m")
			})
			s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
			err := deliver(t, s, message(testKey, sample))
			if sinks.Classify(err) != sinks.OutcomeRejected {
				t.Fatalf("got %v, want a permanent error", err)
			}
			if n := len(rec.got()); n != 1 {
				t.Errorf("%d requests, want exactly 1", n)
			}
			want := fmt.Sprintf(`HTTP %d %s: "{\"error\": \"bad thing\"} [31m"`, code, http.StatusText(code))
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != code {
				t.Errorf("error does not wrap a *StatusError with code %d", code)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			var followed atomic.Int32
			target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed.Add(1) }))
			defer target.Close()
			rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Location", target.URL+"/final")
				w.WriteHeader(code)
			})
			s := newSink(t, Options{Name: "helpdesk", URL: rec.URL + "/old", Format: FormatRaw})
			err := deliver(t, s, message(testKey, sample))
			if sinks.Classify(err) != sinks.OutcomeUnavailable {
				t.Fatalf("got %v (%s), want the sink unavailable", err, sinks.Classify(err))
			}
			if n := followed.Load(); n != 0 {
				t.Errorf("the redirect target got %d requests", n)
			}
			if n := len(rec.got()); n != 1 {
				t.Errorf("%d requests, want 1 (a redirect is not retried)", n)
			}
			want := "redirects to " + target.URL + "/final"
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "set POPHOOK_SINK_HELPDESK_URL to the final URL") {
				t.Errorf("error %q does not say %q and which variable to set", err, want)
			}
		})
	}
	t.Run("relative", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Location", "/v2/hook")
			w.WriteHeader(http.StatusMovedPermanently)
		})
		s := newSink(t, Options{URL: rec.URL + "/hook", Format: FormatRaw})
		err := deliver(t, s, message(testKey, sample))
		if err == nil || !strings.Contains(err.Error(), "redirects to "+rec.URL+"/v2/hook") ||
			!strings.Contains(err.Error(), "POPHOOK_SINK_<NAME>_URL") {
			t.Errorf("error %v", err)
		}
	})
}

// A server that does not answer: the request times out and is retried.
func TestHangingServer(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request, _ []byte) {
		if n == 0 {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
	})
	// Timeout is well short of the 10s hang, so the first attempt times
	// out and is retried, and long enough that the answered retry does
	// not time out as well on a loaded machine.
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw, Timeout: 2 * time.Second})
	start := time.Now()
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.got()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	// Less than the 10s hang: the first attempt was cut by Timeout.
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("took %s", d)
	}
}

// A connection closed or reset before an answer is retried.
func TestConnectionDropped(t *testing.T) {
	t.Parallel()
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, func(n int, w http.ResponseWriter, _ *http.Request, _ []byte) {
				if n > 0 {
					return
				}
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				if tc, ok := conn.(*net.TCPConn); ok && reset {
					tc.SetLinger(0) // close with RST
				}
				conn.Close()
			})
			s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
			if err := deliver(t, s, message(testKey, sample)); err != nil {
				t.Fatal(err)
			}
			hits := rec.got()
			if len(hits) < 2 || !bytes.Equal(hits[len(hits)-1].body, sample) {
				t.Errorf("%d requests; want a retry with the whole body", len(hits))
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	s := newSink(t, Options{URL: addr, Format: FormatRaw, Budget: 1500 * time.Millisecond})
	err := deliver(t, s, message(testKey, sample))
	if err == nil || sinks.Classify(err) != sinks.OutcomeTemporary || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("got %v, want a temporary error naming the refused connection", err)
	}
}

// An endpoint that never recovers costs about Budget, then a temporary
// error that counts the attempts and names the last failure.
func TestBudgetExhausted(t *testing.T) {
	t.Parallel()
	const budget, timeout = 2 * time.Second, time.Second
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "maintenance")
	})
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw, Budget: budget, Timeout: timeout})
	start := time.Now()
	err := deliver(t, s, message(testKey, sample))
	took := time.Since(start)
	if err == nil || sinks.Classify(err) != sinks.OutcomeTemporary {
		t.Fatalf("got %v, want a temporary error", err)
	}
	// Generous slack for a loaded machine; the default budget (45s) would
	// still be far past it.
	if took > budget+timeout+3*time.Second {
		t.Errorf("took %s, budget %s", took, budget)
	}
	n := len(rec.got())
	if n < 2 {
		t.Errorf("%d requests, want retries", n)
	}
	for _, want := range []string{"delivery budget of 2s", fmt.Sprintf("%d attempt(s)", n), `HTTP 503 Service Unavailable: "maintenance"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The budget also cuts a request that is still waiting for its answer.
func TestBudgetCutsSlowRequest(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(_ int, _ http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw, Budget: time.Second, Timeout: 5 * time.Second})
	start := time.Now()
	err := deliver(t, s, message(testKey, sample))
	if err == nil || sinks.Classify(err) != sinks.OutcomeTemporary || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("got %v, want a temporary budget error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s, budget 1s", d)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	t.Run("waiting", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		checkCancel(t, rec.URL)
	})
	t.Run("in flight", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder(t, func(_ int, _ http.ResponseWriter, r *http.Request, _ []byte) {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		})
		checkCancel(t, rec.URL)
	})
	t.Run("before", func(t *testing.T) {
		t.Parallel()
		s := newSink(t, Options{URL: "http://127.0.0.1:1/"})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Deliver(ctx, message(testKey, sample)); !errors.Is(err, context.Canceled) || sinks.Classify(err) != sinks.OutcomeTemporary {
			t.Errorf("got %v", err)
		}
	})
}

func checkCancel(t *testing.T, url string) {
	t.Helper()
	s := newSink(t, Options{URL: url, Format: FormatForm, Budget: 30 * time.Second, Timeout: 20 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	err := s.Deliver(ctx, message(testKey, sample))
	if !errors.Is(err, context.Canceled) || sinks.Classify(err) != sinks.OutcomeTemporary {
		t.Errorf("got %v, want a temporary error wrapping context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned %s after the start, want promptly after the cancel", d)
	}
}

func TestTLSUntrusted(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	s := newSink(t, Options{URL: srv.URL, Format: FormatRaw})
	start := time.Now()
	err := deliver(t, s, message(testKey, sample))
	if sinks.Classify(err) != sinks.OutcomeUnavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("got %v (%s), want the sink unavailable for its certificate", err, sinks.Classify(err))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s: a certificate problem is not retried", d)
	}

	// With the server's CA the same sink setup works.
	s = newSink(t, Options{URL: srv.URL, Format: FormatRaw, Client: srv.Client()})
	if err := deliver(t, s, message(testKey, sample)); err != nil || hits.Load() != 1 {
		t.Errorf("trusted: %v, %d requests", err, hits.Load())
	}
}

// An attempt that fails after the server has read half the body is
// retried with the whole body again, byte for byte.
func TestBodyReplay(t *testing.T) {
	t.Parallel()
	big := make([]byte, 3<<20)
	rand.Read(big)
	raw := append(append([]byte("Subject: big\r\n\r\n"), big...), "\r\n"...)
	for _, format := range []string{FormatRaw, FormatForm} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var (
				n             atomic.Int32
				mu            sync.Mutex
				first, second []byte
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					half := make([]byte, r.ContentLength/2)
					io.ReadFull(r.Body, half)
					mu.Lock()
					first = half
					mu.Unlock()
					w.Header().Set("Connection", "close")
					w.WriteHeader(http.StatusInternalServerError)
					return
				}
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				second = b
				mu.Unlock()
				io.WriteString(w, "ok")
			}))
			defer srv.Close()
			s := newSink(t, Options{URL: srv.URL, Format: format, Secret: Fixed(testSecret)})
			if err := deliver(t, s, message(testKey, raw)); err != nil {
				t.Fatal(err)
			}
			if n.Load() != 2 {
				t.Fatalf("%d requests, want 2", n.Load())
			}
			mu.Lock()
			defer mu.Unlock()
			if !bytes.HasPrefix(second, first) {
				t.Error("the retry's body does not start with what the first attempt sent")
			}
			got := second
			if format == FormatForm {
				got = formFile(t, second, "message")
			}
			if !bytes.Equal(got, raw) {
				t.Errorf("the retry carried %d bytes of message, want the %d of the message", len(got), len(raw))
			}
		})
	}
}

// formFile returns the content of the file field name of a multipart body
// whose boundary it finds in the body's first line.
func formFile(t *testing.T, body []byte, name string) []byte {
	t.Helper()
	first, _, _ := bytes.Cut(body, []byte("\r\n"))
	_, params, _ := mime.ParseMediaType("multipart/form-data; boundary=" + string(bytes.TrimPrefix(first, []byte("--"))))
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no field %s: %v", name, err)
		}
		if p.FormName() == name {
			b, _ := io.ReadAll(p)
			return b
		}
	}
}

func TestRetryAfterParse(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	cases := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 7 ", 7 * time.Second, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"99999999999999", 0, false},
		{"Fri, 27 Nov 2026 05:00:30 GMT", 30 * time.Second, true},
		{"Friday, 27-Nov-26 05:01:00 GMT", time.Minute, true},
		{"Fri Nov 27 05:00:10 2026", 10 * time.Second, true},
		{"Fri, 27 Nov 2026 04:00:00 GMT", 0, true},
		{"soon", 0, false},
	}
	for _, c := range cases {
		got, ok := retryAfter(http.Header{"Retry-After": {c.v}}, now)
		if got != c.want || ok != c.ok {
			t.Errorf("Retry-After %q: %s %v, want %s %v", c.v, got, ok, c.want, c.ok)
		}
	}
}

// Retries are logged at debug only when the failure changes; the give-up
// at warn.
func TestRetryLogging(t *testing.T) {
	t.Parallel()
	codes := []int{503, 503, 502, 200}
	rec := newRecorder(t, statuses(codes...))
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	retries := 0
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw, Logger: logger, OnRetry: func() { retries++ }})
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.got()); n != len(codes) || retries != len(codes)-1 {
		t.Fatalf("%d requests, %d retries reported; want %d, %d", n, retries, len(codes), len(codes)-1)
	}
	if n := strings.Count(logs.String(), "retrying"); n != 3 {
		t.Errorf("%d retry lines for 503, 503, 502, want 3 (one per retry, at debug):\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "WARN") {
		t.Errorf("warning logged for a delivery that succeeded:\n%s", logs)
	}

	// A delivery that fails logs each retry at debug and nothing above:
	// the job reports the failure once, as a problem of the run.
	logs = &syncbuf.Buffer{}
	logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	down := newRecorder(t, statuses(503))
	s = newSink(t, Options{URL: down.URL, Format: FormatRaw, Logger: logger, Budget: 1200 * time.Millisecond})
	if err := deliver(t, s, message(testKey, sample)); err == nil {
		t.Fatal("delivered to a receiver that is down")
	}
	if strings.Contains(logs.String(), `"level":"WARN"`) || strings.Count(logs.String(), "retrying") < 1 {
		t.Errorf("logs for a failed delivery:\n%s", logs)
	}
}
