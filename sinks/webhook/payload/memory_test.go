package payload

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/pophook/pophook/internal/testutil/memtest"
)

const bigSize = 25 << 20

// writeBigMessage streams a message with a 25 MiB base64 attachment (and
// a text body) into a temporary file, never holding it in memory.
func writeBigMessage(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "big.eml"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprint(w, crlfJoin("From: =?gbk?B?1cXI/Q==?= <zhang@example.cn>", "To: support@example.com",
		"Subject: big", `Content-Type: multipart/mixed; boundary="big"`, "",
		"--big", "Content-Type: text/plain; charset=utf-8", "", "See the attachment.",
		"--big", "Content-Type: application/octet-stream; name=\"data.bin\"",
		"Content-Disposition: attachment; filename=\"data.bin\"", "Content-Transfer-Encoding: base64", ""))
	enc := base64.NewEncoder(base64.StdEncoding, &lineBreaker{w: w})
	block := make([]byte, 57*1024)
	for written := 0; written < bigSize; written += len(block) {
		for i := range block {
			block[i] = byte(written + i*7)
		}
		n := min(len(block), bigSize-written)
		enc.Write(block[:n])
	}
	enc.Close()
	fmt.Fprint(w, "\r\n--big--\r\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

// lineBreaker breaks base64 into 76-character lines.
type lineBreaker struct {
	w   io.Writer
	col int
}

func (l *lineBreaker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(76-l.col, len(p))
		l.w.Write(p[:k])
		p, l.col = p[k:], l.col+k
		if l.col == 76 {
			l.w.Write([]byte("\r\n"))
			l.col = 0
		}
	}
	return n, nil
}

// countingWriter counts bytes and keeps the last two, to check the end
// of the JSON, without allocating.
type countingWriter struct {
	n    int64
	tail [2]byte
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	switch {
	case len(p) >= 2:
		copy(c.tail[:], p[len(p)-2:])
	case len(p) == 1:
		c.tail[0], c.tail[1] = c.tail[1], p[0]
	}
	return len(p), nil
}

// TestMemoryBigAttachment writes the payload of a message with a 25 MiB
// attachment, above the inline limit and inlined, and samples the heap
// while it runs: it must stay well under 64 MiB (the bound the whole
// process must keep while posting such a message).
func TestMemoryBigAttachment(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 34 MiB file")
	}
	f := writeBigMessage(t)
	defer f.Close()
	st, _ := f.Stat()
	for _, c := range []struct {
		name   string
		opts   Options
		inline bool
	}{
		{"above the inline limit", Options{}, false},
		{"inlined, InlineLimit 32 MiB", Options{InlineLimit: 32 << 20, IncludeRaw: true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			stopPeak := memtest.HeapPeak()
			cw := &countingWriter{}
			raw := io.NewSectionReader(f, 0, st.Size())
			err := Write(cw, raw, Meta{ID: "big", Size: st.Size(), SHA256: "x"}, c.opts)
			p := stopPeak()
			if err != nil {
				t.Fatal(err)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			t.Logf("output %d bytes; heap in use before %.1f MiB, peak %.1f MiB; allocated %.1f MiB in total",
				cw.n, mib(before.HeapInuse), mib(p), mib(after.TotalAlloc-before.TotalAlloc))
			if p > 16<<20 {
				t.Errorf("peak heap in use %.1f MiB, want well under 64 MiB (limit here 16 MiB)", mib(p))
			}
			wantMin := int64(0)
			if c.inline {
				wantMin = bigSize * 4 / 3 * 2 // content and raw, base64
			}
			if cw.n < wantMin || (!c.inline && cw.n > 1<<20) {
				t.Errorf("output %d bytes, unexpected for inline=%v", cw.n, c.inline)
			}
			if string(cw.tail[:]) != "}}" {
				t.Errorf("output ends in %q, not the end of the JSON", cw.tail[:])
			}
		})
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// TestBigAttachmentContent checks that the inlined 25 MiB content decodes
// to what was written (size and digest from the first pass agree with the
// streamed content of the third).
func TestBigAttachmentContent(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 34 MiB file")
	}
	f := writeBigMessage(t)
	defer f.Close()
	st, _ := f.Stat()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Write(pw, io.NewSectionReader(f, 0, st.Size()), Meta{}, Options{InlineLimit: 32 << 20}))
	}()
	dec := json.NewDecoder(pr)
	var d doc
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if len(d.Data.Attachments) != 1 || d.Data.Attachments[0].Content == nil {
		t.Fatalf("attachments %+v", d.Data.Attachments)
	}
	a := d.Data.Attachments[0]
	b, err := base64.StdEncoding.DecodeString(*a.Content)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if len(b) != bigSize || a.Size != bigSize || fmt.Sprintf("%x", sum) != a.SHA256 {
		t.Errorf("content %d bytes, size %d, digest match %v", len(b), a.Size, fmt.Sprintf("%x", sum) == a.SHA256)
	}
	if d.Data.Text != "See the attachment." || d.Data.From == nil || d.Data.From.Name != "张三" {
		t.Errorf("text %q from %+v", d.Data.Text, d.Data.From)
	}
}
