//go:build linux

package main

import (
	"bytes"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

// drain is a receiver that reads and discards every body, counting. It
// answers "ok", as a mail gateway must for format form.
type drain struct{ requests, bytes atomic.Int64 }

func (d *drain) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	d.requests.Add(1)
	d.bytes.Add(n)
	io.WriteString(w, "ok\n")
}

// attachmentMessage is a message with one base64 attachment of size bytes.
func attachmentMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: big@example.org\nTo: support@example.com\nSubject: big attachment\nMessage-ID: <big@example.org>\n" +
		"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\nsee attached\n" +
		"--b1\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"big.bin\"\nContent-Transfer-Encoding: base64\n\n")
	raw := make([]byte, 57*1024)
	r := rand.New(rand.NewPCG(1, 2))
	enc := make([]byte, base64.StdEncoding.EncodedLen(57))
	for written := 0; written < size; written += len(raw) {
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		for off := 0; off < len(raw) && written+off < size; off += 57 {
			line := raw[off:min(off+57, len(raw), off+size-written)]
			n := base64.StdEncoding.EncodedLen(len(line))
			base64.StdEncoding.Encode(enc[:n], line)
			b.Write(enc[:n])
			b.WriteByte('\n')
		}
	}
	b.WriteString("--b1--\n")
	return b.Bytes()
}

// onceRSS delivers msg, runs `pophook once` into a webhook of the given
// format and returns the child's peak RSS in MiB.
func onceRSS(t testing.TB, format string, msg []byte, extra ...string) float64 {
	t.Helper()
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", msg)
	rc := &drain{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), append([]string{
		"POPHOOK_SINKS=hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=hook",
		"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL=" + srv.URL,
		"POPHOOK_SINK_HOOK_FORMAT=" + format, "POPHOOK_LOG_LEVEL=warn"}, extra...)...)
	cmd := exec.Command(pophookBinary(t), "once")
	cmd.Env = env
	cmd, peakRSS := withPeakRSS(t, cmd)
	var out bytes.Buffer
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("pophook once (%s): %v\n%s", format, err, out.String())
	}
	if rc.requests.Load() != 1 || d.Count(t, "alice") != 0 {
		t.Fatalf("%s: %d requests, %d left on the server", format, rc.requests.Load(), d.Count(t, "alice"))
	}
	return float64(peakRSS()) / 1024
}

// TestWebhookMemoryBound measures the whole pophook process (peak RSS from
// the kernel, not timing) posting a message with a 25 MiB attachment:
// under 64 MiB in json format, whether the attachment is inlined or not,
// and in raw and form formats no more than a few MiB above what a 1 MiB
// message takes.
func TestWebhookMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs pophook on 25 MiB messages")
	}
	big := attachmentMessage(25 << 20)
	small := attachmentMessage(1 << 20)
	json := onceRSS(t, "json", big)
	jsonInline := onceRSS(t, "json", big, "POPHOOK_SINK_HOOK_INLINE_LIMIT=32MiB")
	t.Logf("peak RSS, 25 MiB attachment: json %.1f MiB, json with the attachment inlined %.1f MiB", json, jsonInline)
	for _, rss := range []float64{json, jsonInline} {
		if rss >= 64 {
			t.Errorf("json: peak RSS %.1f MiB, want under 64 MiB", rss)
		}
	}
	for _, format := range []string{"raw", "form"} {
		b, s := onceRSS(t, format, big), onceRSS(t, format, small)
		t.Logf("peak RSS, %s: 25 MiB attachment %.1f MiB, 1 MiB attachment %.1f MiB", format, b, s)
		if b-s > 8 {
			t.Errorf("%s: peak RSS grows with the message: %.1f MiB for 25 MiB, %.1f MiB for 1 MiB", format, b, s)
		}
	}
}

// BenchmarkWebhookThroughput moves the 2000-message set (about 200 MB)
// from Dovecot to a local receiver with `pophook once`, in json and raw
// formats in the same run, and reports messages per second.
//
//	go test ./cmd/pophook/ -run '^$' -bench WebhookThroughput -benchtime=1x -timeout 30m
func BenchmarkWebhookThroughput(b *testing.B) {
	n := benchMessageCount(b)
	for b.Loop() {
		for _, format := range []string{"json", "raw"} {
			b.StopTimer()
			d := dovecottest.Start(b, dovecottest.Options{})
			total := deliverBenchMail(b, d, n)
			rc := &drain{}
			srv := httptest.NewServer(rc)
			dir := b.TempDir()
			cmd := exec.Command(pophookBinary(b), "once")
			cmd.Env = dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
				"POPHOOK_SINKS=hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=hook",
				"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL="+srv.URL,
				"POPHOOK_SINK_HOOK_FORMAT="+format, "POPHOOK_LOG_LEVEL=warn")
			m := runMeasured(b, "pophook once "+format, cmd)
			srv.Close()
			if got := rc.requests.Load(); got != int64(n) || d.Count(b, "alice") != 0 {
				b.Fatalf("%s: %d requests for %d messages, %d left", format, got, n, d.Count(b, "alice"))
			}
			rate := float64(n) / m.wall.Seconds()
			b.ReportMetric(rate, format+"-msgs/s")
			b.ReportMetric(float64(m.rssKiB)/1024, format+"-peakRSS-MiB")
			b.Logf("%s: %d messages, %.1f MB, %s, %.0f msgs/s, %.1f MB/s, peak RSS %.1f MiB",
				format, n, float64(total)/1e6, m.wall.Round(time.Millisecond), rate, float64(total)/1e6/m.wall.Seconds(), float64(m.rssKiB)/1024)
			d.Stop()
		}
		b.StartTimer() // runMeasured leaves it stopped; b.Loop needs it running
	}
}
