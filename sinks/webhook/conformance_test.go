package webhook

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/sinktest"
)

// TestConformance runs the sink suite against a real HTTP server that
// keeps every raw body it takes.
func TestConformance(t *testing.T) {
	const token = "conformance-bearer-token"
	receiver := func(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request) bool) (sinks.Sink, func() [][]byte) {
		var (
			mu   sync.Mutex
			got  [][]byte
			seen atomic.Int32
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := int(seen.Add(1)) - 1
			if handle != nil && !handle(n, w, r) {
				return
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, body)
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}))
		t.Cleanup(srv.Close)
		s := newSink(t, Options{URL: srv.URL, Format: FormatRaw, Secret: Fixed(testSecret),
			Headers: Fixed("Authorization: Bearer " + token), Budget: 3 * time.Second})
		return s, func() [][]byte {
			mu.Lock()
			defer mu.Unlock()
			return append([][]byte(nil), got...)
		}
	}
	sinktest.Run(t, sinktest.Target{
		New: func(t *testing.T) (sinks.Sink, func() [][]byte) { return receiver(t, nil) },
		Faulty: func(t *testing.T, f sinktest.Fault) (sinks.Sink, func() [][]byte) {
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			return receiver(t, func(n int, w http.ResponseWriter, r *http.Request) bool {
				switch f {
				case sinktest.Reject:
					w.WriteHeader(http.StatusUnprocessableEntity)
				case sinktest.Unavailable:
					w.WriteHeader(http.StatusUnauthorized)
				case sinktest.Temporary:
					w.WriteHeader(http.StatusServiceUnavailable)
				case sinktest.TemporaryOnce:
					if n > 0 {
						return true
					}
					// Read part of the body, then drop the connection.
					io.CopyN(io.Discard, r.Body, r.ContentLength/2)
					conn, _, err := http.NewResponseController(w).Hijack()
					if err == nil {
						conn.Close()
					}
				case sinktest.Stall:
					// With the body read, the server notices the client
					// hanging up and cancels the request's context.
					io.Copy(io.Discard, r.Body)
					select {
					case <-release:
					case <-r.Context().Done():
					}
				}
				return false
			})
		},
		CancelWithin: 2 * time.Second,
		Secrets:      []string{token, testSecret},
	})
}
