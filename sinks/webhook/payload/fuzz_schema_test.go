package payload

// Hostile and broken input, MIME to payload (issue #13 point 4):
//
//   - FuzzWriteSchema: FuzzWrite's checks (render: valid JSON, valid UTF-8,
//     every field present, arrays never null, attachment content matching
//     its size and digest, every U+FFFD named in parse_errors) plus the
//     published schema (docs/webhook.schema.json), the raw field, the
//     inline limit and a writer that fails part way, under options the
//     fuzzer chooses.
//   - TestWriteMemoryBounded: for each hostile shape of message, the heap
//     Write needs does not grow with the size of the message, and the
//     streaming path (attachment content, raw) allocates no more for a
//     large message than for a small one.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/jsonschema"
	"github.com/pophook/pophook/internal/testutil/memtest"
	"github.com/pophook/pophook/internal/testutil/testcorpus"
)

// FuzzWriteSchema feeds arbitrary bytes with arbitrary options: whatever
// the message, Write succeeds and its output is what docs/webhook.md
// promises a receiver.
func FuzzWriteSchema(f *testing.F) {
	for _, m := range hostileSeeds() {
		f.Add([]byte(m), int32(0), true, uint16(0))
	}
	for i, c := range testcorpus.Files(f) {
		f.Add(testcorpus.CRLF(c.Data), int32(i%3-1)*512, i%2 == 0, uint16(i*37))
	}
	v, err := jsonschema.Load(filepath.Join("..", "..", "..", "docs", "webhook.schema.json"))
	if err != nil {
		f.Fatal(err)
	}
	skipKnown := os.Getenv("PHTEST_FUZZ_SKIP_KNOWN") != ""
	f.Fuzz(func(t *testing.T, data []byte, limit int32, raw bool, cut uint16) {
		opts := Options{InlineLimit: int64(limit), IncludeRaw: raw}
		if skipKnown {
			if d := knownDefect(data); d != "" {
				t.Skip("known defect:", d)
			}
		}
		start := time.Now()
		d, out := render(t, "fuzz", data, opts) // FuzzWrite's checks
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("%d bytes took %v", len(data), took)
		}
		var value any
		if err := json.Unmarshal(out, &value); err != nil {
			t.Fatal(err)
		}
		if errs := v.Validate(value); len(errs) > 0 {
			t.Fatalf("payload does not match docs/webhook.schema.json:\n%s\n%s", strings.Join(errs, "\n"), clip(string(out), 2000))
		}
		checkOptions(t, d, data, opts)
		for _, s := range []string{d.Data.Text, d.Data.HTML, d.Data.StrippedText} {
			if strings.Contains(s, "\r\n") {
				t.Errorf("text field with CRLF line breaks (promised \\n): %q", clip(s, 200))
			}
		}
		// A receiver that hangs up part way: Write reports it, whatever
		// the point, and never panics.
		if len(out) > 1 {
			n := int(cut) % (len(out) - 1)
			err := Write(&failingWriter{n: n}, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), metaFor("fuzz", data), opts)
			if err == nil {
				t.Fatalf("Write to a writer that fails after %d of %d bytes returned nil", n, len(out))
			}
		}
	})
}

// knownDefect names the defect, already reported and kept in
// testdata/fuzz/FuzzWriteSchema, that data would run into, or "". With
// PHTEST_FUZZ_SKIP_KNOWN set, a long fuzzing run skips such inputs so as
// to look for new defects; without it (CI, go test) nothing is skipped.
//
// None at present: the file name of a single-part message, once reported
// as "message: file name: ..." while its other problems were "part 1:
// ...", is now reported under "part 1" (seed
// defect-single-part-file-name-reported-as-message).
func knownDefect([]byte) string {
	return ""
}

// checkOptions checks what the options promise: raw is the message and
// present only when asked for; content is present exactly for the
// attachments within the inline limit.
func checkOptions(t *testing.T, d *doc, data []byte, opts Options) {
	t.Helper()
	switch {
	case opts.IncludeRaw && d.Data.Raw == nil:
		t.Error("raw missing with IncludeRaw")
	case opts.IncludeRaw:
		if b, err := base64Decode(*d.Data.Raw); err != nil || !bytes.Equal(b, data) {
			t.Errorf("raw is not the message (%v)", err)
		}
	case d.Data.Raw != nil:
		t.Error("raw present without IncludeRaw")
	}
	limit := opts.InlineLimit
	if limit == 0 {
		limit = DefaultInlineLimit
	}
	for _, a := range d.Data.Attachments {
		if want := limit >= 0 && a.Size <= limit; (a.Content != nil) != want {
			t.Errorf("attachment %q of %d octets: content present %v, InlineLimit %d", a.Filename, a.Size, a.Content != nil, opts.InlineLimit)
		}
	}
}

// hostileSeeds are messages built to reach the limits of the parser.
func hostileSeeds() []string {
	nest := ""
	for i := range maxDepth + 2 {
		nest += fmt.Sprintf("Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n--n%d\r\n", i, i)
	}
	return []string{
		crlfJoin("Subject: =?gbk?B?1cXI/Q==?=", `Content-Type: multipart/mixed; boundary="b"`, "", "--b", "", "x", "--b--"),
		"From x\r\n\r\n",
		"",
		"\r\n\r\n\r\n",
		".\r\n",
		"Subject: no body",
		crlfJoin("Subject: "+strings.Repeat("=?utf-8?B?/w==?=", 50), "From: "+strings.Repeat("a@b, ", 200), "", "x"),
		crlfJoin("Content-Type: multipart/alternative; boundary=a", "", "--a", "Content-Type: text/html; charset=shift_jis", "",
			"<meta charset=utf-7><p>+AGEAYgBj-\xff</p>", "--a", "Content-Type: text/plain; charset=utf-7", "", "+ZeVnLIqe-", "--a--"),
		crlfJoin("Content-Type: multipart/mixed; boundary=b", "", "--b", "Content-Type: message/rfc822", "",
			"Subject: inner", "Content-Type: multipart/mixed; boundary=b", "", "--b", "", "inner", "--b--", "--b--"),
		crlfJoin("Content-Type: multipart/digest; boundary=d", "", "--d", "", "Subject: digest part", "", "x", "--d--"),
		crlfJoin("Content-Type: text/plain", "Content-Transfer-Encoding: base64", "", "!!!!", "====", "QUJD=RE"),
		crlfJoin("Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable", "", "a=0Db=0D=0Ac=", "=ZZ=\xff"),
		crlfJoin("Content-Type: application/pdf; name*0*=utf-8''%E6%8A; name*1*=%A5%E4.pdf",
			"Content-Disposition: attachment; filename*=gbk''%D5%C5%C8%FD.pdf; filename=\"..\\\\..\\etc\\passwd\"", "", "%PDF"),
		crlfJoin("Content-Type: multipart/mixed; boundary=\""+strings.Repeat("x", 80)+"\"", "", "--"+strings.Repeat("x", 80)+" junk", "", "part", "--"+strings.Repeat("x", 80)+"--"),
		"Content-Type: multipart/mixed; boundary=\"n\"\r\n\r\n--n\r\n" + nest + "deep\r\n",
		crlfJoin("Date: Fri, 31 Dec 99999 23:59:60 +9999", "Message-ID: <\x00@\xff>", "References: <a> <b> <<c>>", "", "x"),
		crlfJoin("Content-Type: text/html", "", "<p>&#0;&#xD800;&#x110000;&#65533;<script>x</script><br><br><pre>\t</pre>"),
		"Subject: bare\rCR\rline\r\rbody\r",
		"Subject: lf only\n\nbody\n",
	}
}

// TestWriteMemoryBounded runs Write on hostile messages of two sizes,
// read from a file (so the message itself is not on the heap), and checks
// that the memory Write holds does not grow with the message. Each shape
// is past every fixed cap at the smaller size (bodies are cut at 4 MiB,
// parts at 1000, nesting at 20, parse_errors at 100), so what grows from
// there grows with the input.
//
// What Write holds is measured where it cannot depend on when the
// collector happens to run: the message's reader collects the garbage and
// reads the live heap every sixteenth of the message, in every pass, so
// anything kept per byte or per part read is seen whole. The peak of the
// heap in use is sampled too, for the bound of the whole process (it
// also sees the buffers of the steps between reads). Allocation totals
// must grow at most in proportion to the message (a quadratic parser
// allocates sixteen times more for four times the input), and not at all
// on the streaming path. No timing is asserted: the machine may be busy.
func TestWriteMemoryBounded(t *testing.T) {
	for _, s := range memoryShapes() {
		t.Run(s.name, func(t *testing.T) {
			large := s.large
			if large == 0 {
				large = 4 * s.small
			}
			if (testing.Short() || raceEnabled) && large > 4<<20 {
				// The race detector changes nothing measured here.
				t.Skipf("writes a message of %d MiB (not in -short or -race runs)", large>>20)
			}
			sm := measureWrite(t, s, s.small)
			lg := measureWrite(t, s, large)
			t.Logf("%.2f MiB: held %.2f MiB, heap peak %.1f MiB, allocated %.1f MiB, %v; %.2f MiB: held %.2f MiB, heap peak %.1f MiB, allocated %.1f MiB, %v",
				mib(uint64(s.small)), mib(sm.live), mib(sm.peak), mib(sm.alloc), sm.took.Round(time.Millisecond),
				mib(uint64(large)), mib(lg.live), mib(lg.peak), mib(lg.alloc), lg.took.Round(time.Millisecond))
			extra := uint64(large - s.small)
			// The live heap is read exactly: allow a sixteenth of the extra
			// bytes (at least 128 KiB) for buffers that are cut or capped
			// at different points of the two messages.
			if lg.live > sm.live+max(extra/16, 128<<10) {
				t.Errorf("Write held %.2f MiB for %.2f MiB and %.2f MiB for %.2f MiB: memory grows with the message (%.2f bytes per extra byte)",
					mib(sm.live), mib(uint64(s.small)), mib(lg.live), mib(uint64(large)), float64(lg.live-sm.live)/float64(extra))
			}
			if lg.peak > 48<<20 {
				t.Errorf("heap grew %.1f MiB for one message (the process must stay within 64 MiB)", mib(lg.peak))
			}
			// Linear: the larger message may allocate in proportion to its
			// size, plus a quarter; a quadratic parser would go far beyond.
			if ratio := float64(large) / float64(s.small); float64(lg.alloc) > 1.25*ratio*float64(sm.alloc)+1<<20 {
				t.Errorf("allocated %.1f MiB for %.2f MiB and %.1f MiB for %.2f MiB: more than in proportion to the message",
					mib(sm.alloc), mib(uint64(s.small)), mib(lg.alloc), mib(uint64(large)))
			}
			if s.streaming && lg.alloc > sm.alloc+256<<10 {
				t.Errorf("allocated %.2f MiB for %.2f MiB and %.2f MiB for %.2f MiB: the streaming path allocates per byte",
					mib(sm.alloc), mib(uint64(s.small)), mib(lg.alloc), mib(uint64(large)))
			}
		})
	}
}

type memoryShape struct {
	name      string
	small     int // bytes of the smaller message
	large     int // bytes of the larger one; 0 means 4 × small
	opts      Options
	streaming bool // only streamed content grows: allocations must not
	// write writes the body of a multipart/mixed with boundary "B" until
	// the message is n bytes long.
	write func(w *msgWriter, n int)
}

// msgWriter writes a test message, counting its bytes.
type msgWriter struct {
	w *bufio.Writer
	n int
}

func (m *msgWriter) print(format string, args ...any) {
	k, _ := fmt.Fprintf(m.w, format, args...)
	m.n += k
}

// until calls f(0), f(1)... until the message is n bytes long.
func (m *msgWriter) until(n int, f func(i int)) {
	for i := 0; m.n < n; i++ {
		f(i)
	}
}

func memoryShapes() []memoryShape {
	b64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xef, 0xbe}, 19))
	gbk := strings.Repeat("\xd5\xc5", 500_000)
	return []memoryShape{
		{name: "one base64 attachment inlined, and raw", small: 512 << 10, streaming: true,
			opts: Options{InlineLimit: 1 << 30, IncludeRaw: true},
			write: func(w *msgWriter, n int) {
				w.print("--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
				w.until(n, func(int) { w.print("%s\r\n", b64) })
			}},
		{name: "one text body with lines of 1 MB", small: 5 << 20, large: 10 << 20,
			write: func(w *msgWriter, n int) {
				w.print("--B\r\nContent-Type: text/plain; charset=gbk\r\n\r\n")
				w.until(n, func(int) { w.print("%s\r\n", gbk) })
			}},
		{name: "html body without text", small: 5 << 20, large: 10 << 20,
			write: func(w *msgWriter, n int) {
				w.print("--B\r\nContent-Type: text/html\r\n\r\n")
				w.until(n, func(int) { w.print("<p>a &amp; <b>b</b><blockquote>q</blockquote>\r\n") })
			}},
		{name: "parts beyond the part limit", small: 256 << 10,
			write: func(w *msgWriter, n int) {
				w.until(n, func(i int) { w.print("--B\r\nContent-Type: text/plain; charset=x-unknown-%d\r\n\r\n\xff\r\n", i) })
			}},
		{name: "multiparts without parts", small: 256 << 10,
			write: func(w *msgWriter, n int) {
				w.until(n, func(i int) { w.print("--B\r\nContent-Type: multipart/mixed; boundary=\"x%d\"\r\n\r\nnone\r\n", i) })
			}},
		{name: "part headers with lines without a colon", small: 256 << 10,
			write: func(w *msgWriter, n int) {
				w.until(n, func(i int) { w.print("--B\r\nContent-Type: text/plain\r\nnot a field %d\r\nX: y\r\n\r\nz\r\n", i) })
			}},
		{name: "nested multiparts, repeated", small: 256 << 10,
			write: func(w *msgWriter, n int) {
				w.until(n, func(int) {
					w.print("--B\r\nContent-Type: multipart/mixed; boundary=C\r\n\r\n--C\r\nContent-Type: multipart/alternative; boundary=D\r\n\r\n--D\r\n\r\nx\r\n--D--\r\n--C--\r\n")
				})
			}},
	}
}

type measured struct {
	live  uint64 // the most the live heap held above its level before Write
	peak  uint64 // the highest heap in use sampled, above its level before
	alloc uint64 // bytes allocated
	took  time.Duration
}

// measureWrite writes a message of about n bytes of shape s to a file and
// measures one Write of its payload.
func measureWrite(t *testing.T, s memoryShape, n int) measured {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "m.eml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &msgWriter{w: bufio.NewWriterSize(f, 64<<10)}
	w.print("From: a@example.com\r\nSubject: hostile\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n")
	s.write(w, n)
	w.print("\r\n--B--\r\n")
	if err := w.w.Flush(); err != nil {
		t.Fatal(err)
	}
	size := int64(w.n)
	out := &countingWriter{}
	// A low GC target keeps the sampled heap close to what Write holds,
	// rather than to when the collector last ran.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	// Twice: the first collection only moves what sync.Pools hold to
	// their victim caches, and the base would count it.
	runtime.GC()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := &liveHeapReader{r: f, step: max(size/16, 1), base: before.HeapAlloc}
	stop := memtest.HeapPeak()
	start := time.Now()
	err = Write(out, io.NewSectionReader(r, 0, size), Meta{ID: "m", Size: size, SHA256: "x"}, s.opts)
	took := time.Since(start)
	peak := stop()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if string(out.tail[:]) != "}}" {
		t.Fatalf("output ends in %q", out.tail[:])
	}
	if r.checks < 16 {
		t.Fatalf("live heap read %d times, want at least 16", r.checks)
	}
	return measured{live: r.live, peak: peak - min(peak, before.HeapInuse), alloc: after.TotalAlloc - before.TotalAlloc, took: took}
}

// liveHeapReader reads the message and, every step bytes read, collects
// the garbage and notes the live heap above base: what the reader of the
// message holds at that point, whenever the collector would have run.
type liveHeapReader struct {
	r          io.ReaderAt
	step, read int64
	base, live uint64
	checks     int
}

func (l *liveHeapReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := l.r.ReadAt(p, off)
	if (l.read+int64(n))/l.step > l.read/l.step {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		l.live = max(l.live, ms.HeapAlloc-min(ms.HeapAlloc, l.base))
		l.checks++
	}
	l.read += int64(n)
	return n, err
}
