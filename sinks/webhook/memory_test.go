package webhook

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/memtest"
	"github.com/pophook/pophook/sinks"
)

// bigMessage writes a message of about size bytes (CRLF lines) to a file,
// a line at a time, and returns it as the job would hand it over.
func bigMessage(t *testing.T, size int64) *sinks.Message {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	h := sha256.New()
	w := bufio.NewWriter(io.MultiWriter(f, h))
	n, _ := fmt.Fprint(w, "From: big@example.com\r\nSubject: big\r\n\r\n")
	for i, written := 0, int64(n); written < size; i++ {
		n, _ := fmt.Fprintf(w, "%08d the quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n", i)
		written += int64(n)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return &sinks.Message{Account: "support", Mailbox: "support@example.com", UIDL: "big", Key: "ph1_big",
		Size: fi.Size(), SHA256: hex.EncodeToString(h.Sum(nil)), Raw: f}
}

// A 50 MiB message goes through raw and form without the heap growing
// anywhere near its size: the body streams from the spool or the staged
// file on both sides of the wire. Not parallel, so that other tests do
// not move the heap.
func TestLargeMessageMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MiB message")
	}
	const size = 50 << 20
	m := bigMessage(t, size)

	// The measurement itself: reading the message into memory shows.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := memtest.HeapPeak()
	held, _ := io.ReadAll(m.Reader())
	time.Sleep(20 * time.Millisecond)
	peak := stop()
	if grew := int64(peak) - int64(before.HeapInuse); grew < size/2 {
		t.Fatalf("holding %d MiB grew the heap by only %d KiB: the measurement does not work", len(held)>>20, grew>>10)
	}
	held = nil
	for _, format := range []string{FormatRaw, FormatForm} {
		t.Run(format, func(t *testing.T) {
			var received atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer io.WriteString(w, "ok")
				if format == FormatRaw {
					n, _ := io.Copy(io.Discard, r.Body)
					received.Store(n)
					return
				}
				mr, err := r.MultipartReader()
				if err != nil {
					t.Errorf("multipart: %v", err)
					return
				}
				for {
					p, err := mr.NextPart()
					if err != nil {
						break
					}
					n, _ := io.Copy(io.Discard, p)
					if p.FormName() == "message" {
						received.Store(n)
					}
				}
			}))
			defer srv.Close()
			s := newSink(t, Options{URL: srv.URL, Format: format, Secret: Fixed(testSecret), Timeout: 2 * time.Minute, Budget: 3 * time.Minute})

			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			stop := memtest.HeapPeak()
			err := deliver(t, s, m)
			peak := stop()
			if err != nil {
				t.Fatal(err)
			}
			if received.Load() != m.Size {
				t.Errorf("server received %d bytes of message, want %d", received.Load(), m.Size)
			}
			grew := int64(peak) - int64(before.HeapInuse)
			t.Logf("%s: HeapInuse %d MiB before, peak %d MiB (+%d KiB) for a %d MiB message",
				format, before.HeapInuse>>20, peak>>20, grew>>10, m.Size>>20)
			if grew > 8<<20 {
				t.Errorf("heap grew by %d MiB during a %d MiB delivery", grew>>20, m.Size>>20)
			}
		})
	}
}
