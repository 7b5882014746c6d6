// Package maildir is the sink that stores each message as one file in a
// Maildir (cur/, new/, tmp/), with LF line endings, the Unix convention
// that Dovecot, mpop and every MDA follow.
//
// A message is written to tmp/, fsynced, and hard-linked into new/ (never
// renamed onto an existing name); new/ is fsynced by Flush, once for all
// the messages linked since the last one, which the worker calls before
// it records them as delivered (see sinks.Flusher). The file name
// carries the message's idempotency key in its unique part,
//
//	<unixsec>.K<key>.<host>,S=<size>
//
// so that a repeat after a crash (the same key handed over again) is
// recognised and skipped, even after a mail reader has moved the file to
// cur/ and appended its flags (":2,S").
package maildir

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pophook/pophook/internal/atomicfile"
	"github.com/pophook/pophook/sinks"
)

const (
	chunkSize = 128 << 10 // bytes read from the spool at a time
	// maxToken is the longest key kept verbatim in a file name; a longer
	// one is replaced by "~" and its SHA-256 so names stay under the
	// 255-byte limit of common file systems.
	maxToken = 100
	maxHost  = 64
)

var (
	_ sinks.Sink    = (*Sink)(nil)
	_ sinks.Flusher = (*Sink)(nil)
)

// Sink delivers into a Maildir (cur/, new/, tmp/).
type Sink struct {
	dir    string
	host   string // sanitised host name for the third part of file names
	logger *slog.Logger
	now    func() time.Time

	mu sync.Mutex
	// keys holds the key tokens of the files in new/ and cur/; nil until
	// the first Deliver loads it.
	keys map[string]struct{}
	// inflight holds the key tokens being delivered right now; the channel
	// is closed when that delivery ends.
	inflight map[string]chan struct{}

	// linked counts the files linked into new/; synced is the count new/
	// was last fsynced at (under syncMu). A Flush that finds synced at or
	// past the count it needs knows an fsync that began after its links
	// has completed.
	linked atomic.Uint64
	syncMu sync.Mutex
	synced uint64
}

// New returns a sink for dir; it creates dir and its cur/new/tmp (0700)
// if missing and fails with a clear error if it cannot (e.g. a path
// component is a file, permission denied). logger may be nil.
func New(dir string, logger *slog.Logger) (*Sink, error) {
	if dir == "" {
		return nil, errors.New("maildir: no directory given")
	}
	dir = filepath.Clean(dir)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{dir, filepath.Join(dir, "cur"), filepath.Join(dir, "new"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("maildir %s: cannot create directory %s%s: %w", dir, d, hint(err), err)
		}
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("maildir %s: %s%s: %w", dir, d, hint(err), err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("maildir %s: %s is not a directory", dir, d)
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Sink{
		dir:      dir,
		host:     sanitizeHost(host),
		logger:   logger,
		now:      time.Now,
		inflight: make(map[string]chan struct{}),
	}, nil
}

// Deliver stores m in new/ atomically: write to tmp/, fsync the file,
// link into new/; the message is durable once Flush returns. It returns
// nil when the message is stored or when a message with the same
// idempotency key (m.Key) is already in new/ or cur/ (a repeat after a
// crash), which is logged and skipped.
//
// No error is a rejection: the message is never at fault. A read-only
// file system, a permission problem or a directory that vanished make the
// sink unavailable (sinks.Unavailable) until the operator fixes them; a
// full disk and anything else is temporary. The message stays on the
// server either way. A full disk is reported as "disk full".
func (s *Sink) Deliver(ctx context.Context, m *sinks.Message) error {
	if m == nil || m.Key == "" {
		return fmt.Errorf("maildir %s: message has no idempotency key", s.dir)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("maildir %s: delivery cancelled: %w", s.dir, err)
	}
	tok := keyToken(m.Key)
	held, release, err := s.claim(ctx, tok)
	if err != nil {
		return err
	}
	if held {
		s.skipped(m)
		return nil
	}
	defer release()

	name, size, err := s.store(ctx, m, tok)
	if err != nil {
		if unfixable(err) {
			return sinks.Unavailable(err)
		}
		return err
	}
	s.mu.Lock()
	if s.keys != nil {
		s.keys[tok] = struct{}{}
	}
	s.mu.Unlock()
	if name == "" {
		s.skipped(m)
		return nil
	}
	s.logger.Debug("message stored in maildir", "key", m.Key, "account", m.Account,
		"uidl", m.UIDL, "file", filepath.Join(s.dir, "new", name), "size", size)
	return nil
}

func (s *Sink) skipped(m *sinks.Message) {
	s.logger.Info("message already in maildir, not stored again", "key", m.Key,
		"account", m.Account, "uidl", m.UIDL, "maildir", s.dir)
}

// claim reports whether a message with key token tok is already held. If
// not, it marks tok as in flight and returns the function that clears the
// mark; a second delivery of the same key waits for the first to end.
func (s *Sink) claim(ctx context.Context, tok string) (held bool, release func(), err error) {
	for {
		s.mu.Lock()
		if ch, busy := s.inflight[tok]; busy {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return false, nil, fmt.Errorf("maildir %s: delivery cancelled: %w", s.dir, ctx.Err())
			}
		}
		if s.keys == nil {
			if err := s.loadLocked(); err != nil {
				s.mu.Unlock()
				return false, nil, err
			}
		}
		if _, ok := s.keys[tok]; ok {
			// A hit is rare (only a repeat). Confirm it against the
			// directories, so a message removed from the Maildir since
			// the set was loaded is stored again rather than lost.
			if err := s.loadLocked(); err != nil {
				s.mu.Unlock()
				return false, nil, err
			}
			if _, ok := s.keys[tok]; ok {
				s.mu.Unlock()
				return true, nil, nil
			}
		}
		ch := make(chan struct{})
		s.inflight[tok] = ch
		s.mu.Unlock()
		return false, func() {
			s.mu.Lock()
			delete(s.inflight, tok)
			s.mu.Unlock()
			close(ch)
		}, nil
	}
}

// loadLocked (re)reads the key tokens of the files in new/ and cur/.
func (s *Sink) loadLocked() error {
	keys := make(map[string]struct{})
	for _, sub := range []string{"new", "cur"} {
		d := filepath.Join(s.dir, sub)
		f, err := os.Open(d)
		if err != nil {
			return fmt.Errorf("maildir %s: reading %s%s: %w", s.dir, d, hint(err), err)
		}
		for {
			names, err := f.Readdirnames(1024)
			for _, n := range names {
				if tok, ok := tokenOf(n); ok {
					keys[tok] = struct{}{}
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("maildir %s: reading %s%s: %w", s.dir, d, hint(err), err)
			}
		}
		f.Close()
	}
	s.keys = keys
	return nil
}

// tokenOf returns the key token of a file name "<time>.K<token>.<host>...".
func tokenOf(name string) (string, bool) {
	i := strings.IndexByte(name, '.')
	if i < 0 {
		return "", false
	}
	rest := name[i+1:]
	if !strings.HasPrefix(rest, "K") {
		return "", false
	}
	j := strings.IndexByte(rest, '.')
	if j < 2 {
		return "", false
	}
	return rest[1:j], true
}

// store writes m into tmp/ and links it into new/. It returns the name in
// new/ and the stored size, or "" when a file of that very name was
// already there (another process delivered the same key).
func (s *Sink) store(ctx context.Context, m *sinks.Message, tok string) (name string, size int64, err error) {
	tmpDir := filepath.Join(s.dir, "tmp")
	newDir := filepath.Join(s.dir, "new")
	f, err := os.CreateTemp(tmpDir, fmt.Sprintf("%d.K%s_P%d_*.%s", s.now().Unix(), tok, os.Getpid(), s.host))
	if err != nil {
		return "", 0, fmt.Errorf("maildir %s: creating file in %s%s: %w", s.dir, tmpDir, hint(err), err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.logger.Warn("cannot remove temporary maildir file", "file", tmp, "error", rerr)
		}
	}()

	read, size, err := copyLF(ctx, f, m.Reader())
	if err != nil {
		var we *writeError
		switch {
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return "", 0, fmt.Errorf("maildir %s: delivery cancelled: %w", s.dir, err)
		case errors.As(err, &we):
			return "", 0, fmt.Errorf("maildir %s: writing %s%s: %w", s.dir, tmp, hint(we.err), we.err)
		default:
			return "", 0, fmt.Errorf("maildir %s: reading message from spool: %w", s.dir, err)
		}
	}
	if read != m.Size {
		return "", 0, fmt.Errorf("maildir %s: spool holds %d bytes, message size is %d", s.dir, read, m.Size)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("maildir %s: syncing %s%s: %w", s.dir, tmp, hint(err), err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", 0, fmt.Errorf("maildir %s: closing %s%s: %w", s.dir, tmp, hint(err), err)
	}
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("maildir %s: delivery cancelled: %w", s.dir, err)
	}

	name = fmt.Sprintf("%d.K%s.%s,S=%d", s.now().Unix(), tok, s.host, size)
	dst := filepath.Join(newDir, name)
	if err := linkNoClobber(tmp, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", size, nil
		}
		return "", 0, fmt.Errorf("maildir %s: moving message into %s%s: %w", s.dir, newDir, hint(err), err)
	}
	s.linked.Add(1)
	return name, size, nil
}

// Flush makes the messages linked into new/ so far durable: one fsync of
// new/ for all of them.
func (s *Sink) Flush(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	target := s.linked.Load()
	if s.synced >= target {
		return nil
	}
	newDir := filepath.Join(s.dir, "new")
	if err := atomicfile.SyncDir(newDir); err != nil {
		err = fmt.Errorf("maildir %s: syncing %s%s: %w", s.dir, newDir, hint(err), err)
		if unfixable(err) {
			return sinks.Unavailable(err)
		}
		return err
	}
	s.synced = target
	return nil
}

// linkNoClobber makes dst a name of src, failing with an error matching
// os.ErrExist if dst exists. Where the file system has no hard links it
// falls back to check-then-rename.
func linkNoClobber(src, dst string) error {
	err := os.Link(src, dst)
	if err == nil || errors.Is(err, os.ErrExist) {
		return err
	}
	if !errors.Is(err, errors.ErrUnsupported) && !errors.Is(err, syscall.EPERM) {
		return err
	}
	if _, serr := os.Lstat(dst); serr == nil {
		return &os.LinkError{Op: "link", Old: src, New: dst, Err: os.ErrExist}
	} else if !errors.Is(serr, os.ErrNotExist) {
		return serr
	}
	return os.Rename(src, dst)
}

// hint names the cause of a file system error in words an operator
// acts on; it returns "" when the error needs no explanation.
func hint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ": disk full (no space left or quota exceeded)"
	case errors.Is(err, syscall.EROFS):
		return ": read-only file system"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return ": permission denied"
	case errors.Is(err, syscall.ENOTDIR):
		return ": a path component is not a directory"
	case errors.Is(err, os.ErrNotExist):
		return ": does not exist"
	}
	return ""
}

// unfixable reports a file system error that no retry can get past: the
// Maildir must be repaired first.
func unfixable(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) ||
		errors.Is(err, syscall.ENOTDIR) || errors.Is(err, os.ErrNotExist)
}

// writeError marks an error of the destination, as opposed to the spool.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// chunkBuffers are copyLF's working buffers, pooled: a busy mailbox
// delivers thousands of small messages, and fresh buffers for each would
// be most of the garbage.
type chunkBuffers struct {
	in  [chunkSize]byte
	out [chunkSize + 1]byte
}

var chunkPool = sync.Pool{New: func() any { return new(chunkBuffers) }}

// copyLF copies src to dst, turning each CRLF into LF; a CR not followed
// by LF is kept. It checks ctx before each chunk and returns the bytes
// read and written. Errors writing dst come as *writeError.
func copyLF(ctx context.Context, dst io.Writer, src io.Reader) (read, written int64, err error) {
	bufs := chunkPool.Get().(*chunkBuffers)
	defer chunkPool.Put(bufs)
	buf, out := bufs.in[:], bufs.out[:0]
	pendingCR := false // the previous chunk ended in CR
	for {
		if err := ctx.Err(); err != nil {
			return read, written, err
		}
		n, rerr := src.Read(buf)
		read += int64(n)
		out = out[:0]
		if n > 0 {
			chunk := buf[:n]
			if pendingCR {
				if chunk[0] != '\n' {
					out = append(out, '\r')
				}
				pendingCR = false
			}
			for len(chunk) > 0 {
				i := bytes.IndexByte(chunk, '\r')
				if i < 0 {
					out = append(out, chunk...)
					break
				}
				out = append(out, chunk[:i]...)
				if i+1 == len(chunk) {
					pendingCR = true
					break
				}
				if chunk[i+1] != '\n' {
					out = append(out, '\r')
				}
				chunk = chunk[i+1:]
			}
		}
		if rerr == io.EOF && pendingCR {
			out = append(out, '\r')
			pendingCR = false
		}
		if len(out) > 0 {
			w, werr := dst.Write(out)
			written += int64(w)
			if werr != nil {
				return read, written, &writeError{werr}
			}
		}
		if rerr == io.EOF {
			return read, written, nil
		}
		if rerr != nil {
			return read, written, rerr
		}
	}
}

// keyToken turns an idempotency key into the unique part of a file name:
// bytes outside [A-Za-z0-9_+=@-] become "\ooo" (octal, so '/' is "\057"
// and ':' is "\072" as the Maildir convention has it; '.' and ',' are
// escaped too, they delimit the parts of the name). A token longer than
// maxToken is replaced by "~" and the hex SHA-256 of the key.
func keyToken(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '-', c == '+', c == '=', c == '@':
			b.WriteByte(c)
		default:
			b.WriteByte('\\')
			o := strconv.FormatUint(uint64(c), 8)
			b.WriteString(strings.Repeat("0", 3-len(o)) + o)
		}
	}
	if b.Len() > maxToken {
		sum := sha256.Sum256([]byte(key))
		return "~" + hex.EncodeToString(sum[:])
	}
	return b.String()
}

// sanitizeHost applies the Maildir convention to the host part: '/'
// becomes "\057" and ':' becomes "\072".
func sanitizeHost(h string) string {
	h = strings.ReplaceAll(h, "/", `\057`)
	h = strings.ReplaceAll(h, ":", `\072`)
	if len(h) > maxHost {
		h = h[:maxHost]
	}
	return h
}
