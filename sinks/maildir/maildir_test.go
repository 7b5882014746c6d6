package maildir

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pophook/pophook/sinks"
)

func msg(key string, raw []byte) *sinks.Message {
	return &sinks.Message{
		Account: "support",
		Mailbox: "support@example.com",
		UIDL:    "uidl-" + key,
		Key:     key,
		Size:    int64(len(raw)),
		Raw:     bytes.NewReader(raw),
	}
}

// deliver hands m to s and flushes it, as the worker does for a batch
// of one.
func deliver(ctx context.Context, s *Sink, m *sinks.Message) error {
	if err := s.Deliver(ctx, m); err != nil {
		return err
	}
	return s.Flush(ctx, []string{m.Key})
}

func newSink(t *testing.T, dir string) *Sink {
	t.Helper()
	s, err := New(dir, nil)
	if err != nil {
		t.Fatalf("New(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() }) // its spare files, before a test's file system is unmounted
	return s
}

// files lists the names in dir/sub.
func files(t *testing.T, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func assertEmpty(t *testing.T, dir string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if n := files(t, dir, sub); len(n) != 0 {
			t.Errorf("%s/ not empty: %q", sub, n)
		}
	}
}

func TestDeliverContent(t *testing.T) {
	binary := make([]byte, 4096)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"crlf", "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n", "From: a@example.com\nSubject: hi\n\nbody\n"},
		{"mixed", "A: 1\r\nB: 2\n\r\nx\ry\r\n", "A: 1\nB: 2\n\nx\ry\n"},
		{"bare-cr", "a\rb\r\rc\r", "a\rb\r\rc\r"},
		{"cr-cr-lf", "a\r\r\nb", "a\r\nb"},
		{"no-final-newline", "Subject: x\r\n\r\nlast line", "Subject: x\n\nlast line"},
		{"lf-only", "a\nb\n", "a\nb\n"},
		{"empty", "", ""},
		{"binary", string(binary), strings.ReplaceAll(string(binary), "\r\n", "\n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := newSink(t, dir)
			key := "key_" + strings.ReplaceAll(c.name, "-", "_")
			if err := deliver(context.Background(), s, msg(key, []byte(c.in))); err != nil {
				t.Fatal(err)
			}
			names := files(t, dir, "new")
			if len(names) != 1 {
				t.Fatalf("new/ = %q, want one file", names)
			}
			name := names[0]
			re := regexp.MustCompile(`^[0-9]+\.K` + regexp.QuoteMeta(key) + `\.[^/]+,S=([0-9]+)$`)
			mm := re.FindStringSubmatch(name)
			if mm == nil {
				t.Fatalf("file name %q does not match %s", name, re)
			}
			if mm[1] != strconv.Itoa(len(c.want)) {
				t.Errorf("S=%s, want %d", mm[1], len(c.want))
			}
			p := filepath.Join(dir, "new", name)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte(c.want)) {
				t.Errorf("content = %q, want %q", got, c.want)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
			}
			assertEmpty(t, dir, "tmp", "cur")
		})
	}
}

// TestCopyLFChunking checks CRLF conversion however the input is split,
// in particular with a CR at the end of one read and LF at the start of
// the next.
func TestCopyLFChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("\r\n\r\nab\x00\xff")
	for i := range 500 {
		in := make([]byte, rng.IntN(300))
		for j := range in {
			in[j] = alphabet[rng.IntN(len(alphabet))]
		}
		want := bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n"))
		readers := map[string]io.Reader{
			"whole":   bytes.NewReader(in),
			"onebyte": iotest.OneByteReader(bytes.NewReader(in)),
			"half":    iotest.HalfReader(bytes.NewReader(in)),
			"dataerr": iotest.DataErrReader(bytes.NewReader(in)),
		}
		for rn, r := range readers {
			var out bytes.Buffer
			read, written, err := copyLF(context.Background(), &out, r)
			if err != nil {
				t.Fatalf("case %d %s: %v", i, rn, err)
			}
			if read != int64(len(in)) || written != int64(len(want)) {
				t.Fatalf("case %d %s: read %d written %d, want %d %d", i, rn, read, written, len(in), len(want))
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("case %d %s: %q -> %q, want %q", i, rn, in, out.Bytes(), want)
			}
		}
	}
	// A CR exactly at the chunk boundary of a real read.
	for _, tail := range []string{"\n", "x", "\r\n", ""} {
		in := append(bytes.Repeat([]byte("a"), chunkSize-1), '\r')
		in = append(in, tail...)
		want := bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n"))
		var out bytes.Buffer
		if _, _, err := copyLF(context.Background(), &out, bytes.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("boundary CR + %q: wrong output (len %d, want %d)", tail, out.Len(), len(want))
		}
	}
}

// patternLine is one 78-character line ending in CRLF, or in LF.
func patternLine(lf bool) []byte {
	l := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&()*+,-./:;<")
	if lf {
		return append(l, '\n')
	}
	return append(l, '\r', '\n')
}

// genReader is a ReaderAt of any size repeating line, generated on the
// fly so the test holds no message in memory.
type genReader struct {
	line []byte
	size int64
}

func (g *genReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= g.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && off < g.size {
		b[n] = g.line[off%int64(len(g.line))]
		n++
		off++
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func TestLargeMessageBoundedMemory(t *testing.T) {
	const size = 50 << 20 // 50 MiB
	crlf := patternLine(false)
	if size%len(crlf) != 0 {
		t.Fatalf("size %d not a multiple of line length %d", size, len(crlf))
	}
	dir := t.TempDir()
	s := newSink(t, dir)
	m := &sinks.Message{Key: "big", Size: size, Raw: &genReader{line: crlf, size: size}}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := deliver(context.Background(), s, m); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d bytes delivering a %d-byte message", alloc, size)
	if alloc > 4<<20 {
		t.Errorf("allocated %d bytes for a %d-byte message; want well under its size", alloc, size)
	}

	names := files(t, dir, "new")
	if len(names) != 1 {
		t.Fatalf("new/ = %q", names)
	}
	wantSize := int64(size / len(crlf) * (len(crlf) - 1))
	if !strings.HasSuffix(names[0], ",S="+strconv.FormatInt(wantSize, 10)) {
		t.Errorf("name %q lacks S=%d", names[0], wantSize)
	}
	f, err := os.Open(filepath.Join(dir, "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h1 := sha256.New()
	n, err := io.Copy(h1, f)
	if err != nil {
		t.Fatal(err)
	}
	if n != wantSize {
		t.Fatalf("stored %d bytes, want %d", n, wantSize)
	}
	h2 := sha256.New()
	if _, err := io.Copy(h2, io.NewSectionReader(&genReader{line: patternLine(true), size: wantSize}, 0, wantSize)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h1.Sum(nil), h2.Sum(nil)) {
		t.Error("stored content differs from the input with CRLF turned into LF")
	}
}

func TestIdempotency(t *testing.T) {
	raw := []byte("Subject: once\r\n\r\nbody\r\n")

	t.Run("same sink", func(t *testing.T) {
		dir := t.TempDir()
		var logbuf bytes.Buffer
		s, err := New(dir, slog.New(slog.NewTextHandler(&logbuf, nil)))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := deliver(context.Background(), s, msg("k1", raw)); err != nil {
				t.Fatal(err)
			}
		}
		if n := files(t, dir, "new"); len(n) != 1 {
			t.Fatalf("new/ = %q, want one file", n)
		}
		logs := logbuf.String()
		if strings.Count(logs, "message already in maildir, not stored again") != 2 || !strings.Contains(logs, "key=k1") {
			t.Errorf("log does not report the two skipped repeats with their key:\n%s", logs)
		}
		if !strings.Contains(logs, "level=INFO") {
			t.Errorf("skip not logged at info level:\n%s", logs)
		}
	})

	t.Run("fresh sink", func(t *testing.T) {
		dir := t.TempDir()
		if err := deliver(context.Background(), newSink(t, dir), msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		if err := deliver(context.Background(), newSink(t, dir), msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		if n := files(t, dir, "new"); len(n) != 1 {
			t.Fatalf("new/ = %q, want one file", n)
		}
	})

	t.Run("moved to cur", func(t *testing.T) {
		dir := t.TempDir()
		s := newSink(t, dir)
		if err := deliver(context.Background(), s, msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		name := files(t, dir, "new")[0]
		if err := os.Rename(filepath.Join(dir, "new", name), filepath.Join(dir, "cur", name+":2,S")); err != nil {
			t.Fatal(err)
		}
		// The same process, then a new one.
		if err := deliver(context.Background(), s, msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		if err := deliver(context.Background(), newSink(t, dir), msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		assertEmpty(t, dir, "new", "tmp")
		if n := files(t, dir, "cur"); len(n) != 1 {
			t.Fatalf("cur/ = %q, want one file", n)
		}
	})

	t.Run("different keys", func(t *testing.T) {
		dir := t.TempDir()
		s := newSink(t, dir)
		for _, k := range []string{"k1", "k2", "k1x", "k"} {
			if err := deliver(context.Background(), s, msg(k, raw)); err != nil {
				t.Fatal(err)
			}
		}
		if n := files(t, dir, "new"); len(n) != 4 {
			t.Fatalf("new/ = %q, want four files", n)
		}
	})

	t.Run("removed from maildir", func(t *testing.T) {
		// A key the sink remembers but whose file is gone must be stored
		// again: skipping it would lose the message.
		dir := t.TempDir()
		s := newSink(t, dir)
		if err := deliver(context.Background(), s, msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		name := files(t, dir, "new")[0]
		if err := os.Remove(filepath.Join(dir, "new", name)); err != nil {
			t.Fatal(err)
		}
		if err := deliver(context.Background(), s, msg("k1", raw)); err != nil {
			t.Fatal(err)
		}
		if n := files(t, dir, "new"); len(n) != 1 {
			t.Fatalf("new/ = %q, want the message stored again", n)
		}
	})

	t.Run("key sanitised", func(t *testing.T) {
		dir := t.TempDir()
		key := "a/b:c.d,e"
		for range 2 {
			if err := deliver(context.Background(), newSink(t, dir), msg(key, raw)); err != nil {
				t.Fatal(err)
			}
		}
		n := files(t, dir, "new")
		if len(n) != 1 {
			t.Fatalf("new/ = %q, want one file", n)
		}
		if !strings.Contains(n[0], `.Ka\057b\072c\056d\054e.`) {
			t.Errorf("name %q does not carry the sanitised key", n[0])
		}
	})

	t.Run("long key", func(t *testing.T) {
		dir := t.TempDir()
		key := strings.Repeat("x", 300)
		for range 2 {
			if err := deliver(context.Background(), newSink(t, dir), msg(key, raw)); err != nil {
				t.Fatal(err)
			}
		}
		n := files(t, dir, "new")
		if len(n) != 1 || len(n[0]) > 200 {
			t.Fatalf("new/ = %q, want one file with a short name", n)
		}
	})
}

func TestNoKey(t *testing.T) {
	dir := t.TempDir()
	if err := deliver(context.Background(), newSink(t, dir), msg("", []byte("x"))); err == nil {
		t.Fatal("Deliver without a key succeeded")
	}
	assertEmpty(t, dir, "new", "tmp")
}

func TestNewCreatesDirs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "Maildir")
	newSink(t, dir)
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a 0700 directory", sub, fi.Mode())
		}
	}
	// An existing Maildir is fine.
	newSink(t, dir)
}

func TestNewOnFile(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{file, filepath.Join(file, "Maildir")} {
		_, err := New(dir, nil)
		if err == nil {
			t.Fatalf("New(%s) succeeded", dir)
		}
		if !strings.Contains(err.Error(), "not a directory") || !strings.Contains(err.Error(), file) {
			t.Errorf("New(%s): unclear error %q", dir, err)
		}
	}
	// cur/ being a file.
	md := filepath.Join(base, "md")
	if err := os.MkdirAll(md, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(md, "cur"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(md, nil); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("New with cur/ a file: %v", err)
	}
}

func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: permission bits are not enforced")
	}
	dir := t.TempDir()
	s := newSink(t, dir)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Chmod(tmp, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(tmp, 0o700) })
	err := deliver(context.Background(), s, msg("k", []byte("x\r\n")))
	if err == nil || !strings.Contains(err.Error(), "permission denied") || sinks.Classify(err) != sinks.OutcomeUnavailable {
		t.Fatalf("Deliver into unwritable tmp/: %v (%s), want unavailable", err, sinks.Classify(err))
	}
	if _, err := New(filepath.Join(tmp, "sub"), nil); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("New under unwritable dir: %v", err)
	}
}

// mountTmpfs mounts a tmpfs of the given size on a new directory; it
// skips the test when mounting is not permitted, unless CI=true.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		reason := fmt.Sprintf("cannot mount a tmpfs (needs root): %v: %s", err, bytes.TrimSpace(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(reason)
		}
		t.Skip(reason)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func remountRO(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput()
	if err != nil {
		reason := fmt.Sprintf("cannot remount read-only: %v: %s", err, bytes.TrimSpace(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(reason)
		}
		t.Skip(reason)
	}
}

func TestDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "64k")
	dir := filepath.Join(mnt, "Maildir")
	s := newSink(t, dir)
	line := []byte(strings.Repeat("x", 62) + "\r\n")
	raw := bytes.Repeat(line, (1<<20)/len(line))
	err := deliver(context.Background(), s, msg("big", raw))
	if err == nil {
		t.Fatal("delivering 1 MiB into a 64 KiB file system succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not say disk full and name the maildir", err)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("error %q does not wrap ENOSPC", err)
	}
	if sinks.Classify(err) != sinks.OutcomeTemporary {
		t.Errorf("disk full is %s; it must be temporary (retried as space frees up)", sinks.Classify(err))
	}
	assertEmpty(t, dir, "tmp", "new", "cur")

	// Once there is room again, a small message goes through.
	if err := deliver(context.Background(), s, msg("small", []byte("x\r\n"))); err != nil {
		t.Fatalf("small message after disk full: %v", err)
	}
}

func TestReadOnly(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "Maildir")
	s := newSink(t, dir)
	remountRO(t, mnt)

	err := deliver(context.Background(), s, msg("k", []byte("Subject: x\r\n\r\n")))
	if err == nil {
		t.Fatal("Deliver on a read-only file system succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "read-only file system") || !strings.Contains(err.Error(), dir) {
		t.Errorf("unclear error %q", err)
	}
	if sinks.Classify(err) != sinks.OutcomeUnavailable {
		t.Errorf("read-only file system is %s, want unavailable (not the message's fault, no retry helps)", sinks.Classify(err))
	}
	assertEmpty(t, dir, "tmp", "new")

	_, err = New(filepath.Join(mnt, "Other"), nil)
	if err == nil || !strings.Contains(err.Error(), "read-only file system") {
		t.Errorf("New on a read-only file system: %v", err)
	}
}

// cancelReader cancels a context once it has been read from.
type cancelReader struct {
	r      io.ReaderAt
	cancel context.CancelFunc
}

func (c *cancelReader) ReadAt(b []byte, off int64) (int, error) {
	c.cancel()
	return c.r.ReadAt(b, off)
}

func TestCancel(t *testing.T) {
	raw := bytes.Repeat([]byte("line\r\n"), 100000) // several chunks

	t.Run("before", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := deliver(ctx, newSink(t, dir), msg("k", raw))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Deliver with cancelled context: %v", err)
		}
		assertEmpty(t, dir, "tmp", "new")
	})

	t.Run("during", func(t *testing.T) {
		dir := t.TempDir()
		s := newSink(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		m := msg("k", raw)
		m.Raw = &cancelReader{r: bytes.NewReader(raw), cancel: cancel}
		err := deliver(ctx, s, m)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Deliver cancelled midway: %v", err)
		}
		assertEmpty(t, dir, "tmp", "new")
		// The key is not taken: a later attempt stores the message.
		if err := deliver(context.Background(), s, msg("k", raw)); err != nil {
			t.Fatal(err)
		}
		if n := files(t, dir, "new"); len(n) != 1 {
			t.Fatalf("new/ = %q", n)
		}
	})
}

// TestTruncatedSpool: the spool holds less than the message size.
func TestTruncatedSpool(t *testing.T) {
	dir := t.TempDir()
	m := msg("k", []byte("abc\r\n"))
	m.Size = 100
	err := deliver(context.Background(), newSink(t, dir), m)
	if err == nil || sinks.Classify(err) != sinks.OutcomeTemporary {
		t.Fatalf("Deliver of a truncated spool: %v (%s)", err, sinks.Classify(err))
	}
	assertEmpty(t, dir, "tmp", "new")
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir)
	const workers, per = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*per*2)
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				raw := fmt.Appendf(nil, "Subject: %d/%d\r\n\r\nbody\r\n", w, i)
				if err := deliver(context.Background(), s, msg(fmt.Sprintf("acct%d-%d", w, i), raw)); err != nil {
					errs <- err
				}
				// Every worker also delivers one shared key.
				if i == per/2 {
					if err := deliver(context.Background(), s, msg("shared", []byte("shared\r\n"))); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	names := files(t, dir, "new")
	shared := 0
	for _, n := range names {
		if strings.Contains(n, ".Kshared.") {
			shared++
		}
	}
	if got := len(names) - shared; got != workers*per {
		t.Errorf("%d distinct messages stored, want %d", got, workers*per)
	}
	if shared != 1 {
		t.Errorf("shared key stored %d times", shared)
	}
	assertEmpty(t, dir, "tmp")
}

// TestOtherProcess: a second sink (another process) whose key set was
// loaded before the first stored the message must not replace that file;
// the link fails with EEXIST and the message counts as held.
func TestOtherProcess(t *testing.T) {
	dir := t.TempDir()
	clock := func() time.Time { return time.Unix(1700000000, 0) }
	a, b := newSink(t, dir), newSink(t, dir)
	a.now, b.now = clock, clock
	var logbuf bytes.Buffer
	b.logger = slog.New(slog.NewTextHandler(&logbuf, nil))
	if err := deliver(context.Background(), b, msg("other", []byte("o\r\n"))); err != nil {
		t.Fatal(err) // b has now loaded its key set
	}
	if err := deliver(context.Background(), a, msg("k", []byte("first\r\n"))); err != nil {
		t.Fatal(err)
	}
	if err := deliver(context.Background(), b, msg("k", []byte("first\r\n"))); err != nil {
		t.Fatal(err)
	}
	if n := files(t, dir, "new"); len(n) != 2 {
		t.Fatalf("new/ = %q, want two files", n)
	}
	assertEmpty(t, dir, "tmp")
	if !strings.Contains(logbuf.String(), "message already in maildir, not stored again") {
		t.Errorf("repeat not logged: %s", logbuf.String())
	}
}

func TestLinkNoClobber(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.WriteFile(src, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := linkNoClobber(src, dst); !errors.Is(err, os.ErrExist) {
		t.Fatalf("linkNoClobber onto an existing file: %v", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old" {
		t.Errorf("existing file replaced: %q", b)
	}
}

// A message is in new/ only after Flush, and only if its file was
// synced: a write that has not reached the disk is never where a mail
// reader (or a repeat's check) would take it as stored.
func TestFlush(t *testing.T) {
	if runtime.GOOS == "linux" {
		t.Run("unnamed", func(t *testing.T) { testFlush(t, true) })
	}
	t.Run("named", func(t *testing.T) { testFlush(t, false) })
}

func testFlush(t *testing.T, unnamed bool) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "Maildir")
	s := newSink(t, dir)
	if unnamed && !s.unnamed {
		t.Fatal("files without a name (O_TMPFILE) cannot be created and linked in this Maildir")
	}
	s.unnamed = unnamed
	// The test messages are "Subject: <key>...": the hook reads which
	// message it syncs and checks that message is not yet in new/.
	var mu sync.Mutex
	var synced []string
	s.sync = func(f *os.File) error {
		head := make([]byte, 10)
		if _, err := f.ReadAt(head, 0); err != nil {
			t.Errorf("reading the file to be synced: %v", err)
		}
		key := strings.Fields(string(head))[1]
		for _, n := range files(t, dir, "new") {
			if strings.Contains(n, ".K"+key+".") {
				t.Errorf("message %s is in new/ (%s) before its file was synced", key, n)
			}
		}
		mu.Lock()
		synced = append(synced, key)
		mu.Unlock()
		return f.Sync()
	}
	for _, k := range []string{"a", "b"} {
		if err := s.Deliver(ctx, msg(k, []byte("Subject: "+k+"\r\n\r\nx\r\n"))); err != nil {
			t.Fatal(err)
		}
	}
	if n := files(t, dir, "new"); len(n) != 0 {
		t.Fatalf("new/ = %q before Flush, want empty", n)
	}
	// Unnamed files leave nothing in tmp/ should the process die now.
	if n := files(t, dir, "tmp"); unnamed && len(n) != 0 || !unnamed && len(n) != 2 {
		t.Fatalf("tmp/ = %q before Flush", n)
	}
	if err := s.Flush(ctx, []string{"a", "b"}); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if n := files(t, dir, "new"); len(n) != 2 || len(synced) != 2 {
		t.Fatalf("after Flush: new/ = %q, %d files synced; want 2 and 2", n, len(synced))
	}
	assertEmpty(t, dir, "tmp")

	// Nothing to flush: new/ is not opened (its absence goes unseen).
	moved := dir + ".moved"
	if err := os.Rename(filepath.Join(dir, "new"), moved); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx, nil); err != nil {
		t.Errorf("Flush with nothing new: %v", err)
	}
	if err := os.Rename(moved, filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}

	// A file that cannot be synced never reaches new/; the error says
	// why, a later Flush of the key says it was not stored, and the
	// next delivery of the key writes it again.
	s.sync = func(*os.File) error { return syscall.EIO }
	if err := s.Deliver(ctx, msg("c", []byte("Subject: c\r\n\r\nx\r\n"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx, []string{"c"}); err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("Flush of a file that cannot be synced: %v", err)
	}
	if n := files(t, dir, "new"); len(n) != 2 {
		t.Errorf("new/ = %q after a failed sync, want the first two only", n)
	}
	assertEmpty(t, dir, "tmp")
	if err := s.Flush(ctx, []string{"c"}); err == nil || !strings.Contains(err.Error(), "not stored") {
		t.Errorf("Flush again of the failed key: %v, want an error", err)
	}
	s.sync = (*os.File).Sync
	if err := deliver(ctx, s, msg("c", []byte("Subject: c\r\n\r\nx\r\n"))); err != nil {
		t.Fatalf("delivering the key again: %v", err)
	}
	if n := files(t, dir, "new"); len(n) != 3 {
		t.Errorf("new/ = %q, want three", n)
	}

	// new/ gone when the files are linked: an error (the Maildir must
	// be repaired), nothing counted as stored.
	if err := s.Deliver(ctx, msg("d", []byte("Subject: d\r\n\r\nx\r\n"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "new"), moved); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx, []string{"d"}); sinks.Classify(err) != sinks.OutcomeUnavailable {
		t.Errorf("Flush with new/ gone: %v, want the sink unavailable", err)
	}
}

// The same key handed over twice before a Flush is written once; a
// Flush of it from each caller, at the same time, both succeed once the
// file is in new/.
func TestFlushSameKeyTwice(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newSink(t, dir)
	release := make(chan struct{})
	s.sync = func(f *os.File) error { <-release; return f.Sync() }
	for range 2 {
		if err := s.Deliver(ctx, msg("k", []byte("x\r\n"))); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	n := len(s.pending)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d files written for two deliveries of one key, want one", n)
	}
	errs := make(chan error, 2)
	go func() { errs <- s.Flush(ctx, []string{"k"}) }()
	go func() { errs <- s.Flush(ctx, []string{"k"}) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Flush: %v", err)
		}
	}
	if n := files(t, dir, "new"); len(n) != 1 {
		t.Errorf("new/ = %q, want one file", n)
	}
}
