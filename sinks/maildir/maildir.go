// Package maildir is the sink that stores each message as one file in a
// Maildir (cur/, new/, tmp/), with LF line endings, the Unix convention
// that Dovecot, mpop and every MDA follow.
//
// Deliver writes a message to a file in tmp/ and leaves it there; Flush,
// which the worker calls before it records a batch as delivered
// (sinks.Flusher), fsyncs the batch's files together, links each into
// new/ (never renamed onto an existing name) and fsyncs new/ once. A file
// is in new/ only once its content is on disk, so a crash leaves nothing
// half-written where a mail reader looks; and a batch costs about one
// journal commit rather than one per message. On Linux the files in tmp/
// have no name until they are linked into new/ (O_TMPFILE), so a crash
// leaves nothing in tmp/ either, and a few are created ahead of need:
// creating a file is the dearest step on some file systems. The file
// name carries the message's idempotency key in its unique part,
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
	sync   func(*os.File) error // (*os.File).Sync; tests make it fail

	// unnamed: files in tmp/ are created without a name (O_TMPFILE),
	// which New found to work here. spares holds a few created ahead;
	// filling is set while a goroutine refills it.
	unnamed bool
	spares  chan *os.File
	filling atomic.Bool
	closed  atomic.Bool    // no more refills
	filler  sync.WaitGroup // the refill goroutine, for Close

	mu sync.Mutex
	// keys holds the key tokens of the files in new/ and cur/; nil until
	// the first Deliver loads it.
	keys map[string]struct{}
	// inflight holds the key tokens being delivered right now; the channel
	// is closed when that delivery ends.
	inflight map[string]chan struct{}
	// pending holds the messages written to tmp/ and not yet flushed,
	// by key token.
	pending map[string]*pendingFile
}

// pendingFile is a message written to tmp/, waiting for Flush.
type pendingFile struct {
	f    *os.File // still open: Flush fsyncs it
	tmp  string   // its path in tmp/, "" for an unnamed file
	name string   // its name in new/
	// key, account and uidl are the message's, for the log.
	key, account, uidl string
	// flushing is set (under Sink.mu) by the Flush that took it; done is
	// closed when that Flush is over, err then says how it ended.
	flushing bool
	linked   bool // it is in new/, though new/ may not be synced
	done     chan struct{}
	err      error
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
		sync:     (*os.File).Sync,
		unnamed:  probeUnnamed(filepath.Join(dir, "tmp")),
		spares:   make(chan *os.File, spareFiles),
		inflight: make(map[string]chan struct{}),
		pending:  make(map[string]*pendingFile),
	}, nil
}

// spareFiles is how many unnamed files are created ahead of need.
const spareFiles = 4

// probeUnnamed reports whether a file without a name can be created in
// tmp and then linked: not every kernel, file system or container allows
// it.
func probeUnnamed(tmp string) bool {
	f, err := openUnnamed(tmp)
	if err != nil {
		return false
	}
	defer f.Close()
	name := filepath.Join(tmp, fmt.Sprintf("%d.P%d_probe", time.Now().UnixNano(), os.Getpid()))
	if err := linkUnnamed(f, name); err != nil {
		return false
	}
	os.Remove(name)
	return true
}

// create returns a new file in tmp/ and its name there ("" for an
// unnamed file).
func (s *Sink) create(tok string) (*os.File, string, error) {
	tmpDir := filepath.Join(s.dir, "tmp")
	if !s.unnamed {
		f, err := os.CreateTemp(tmpDir, fmt.Sprintf("%d.K%s_P%d_*.%s", s.now().Unix(), tok, os.Getpid(), s.host))
		if err != nil {
			return nil, "", err
		}
		return f, f.Name(), nil
	}
	select {
	case f := <-s.spares:
		s.refill(tmpDir)
		return f, "", nil
	default:
	}
	s.refill(tmpDir)
	f, err := openUnnamed(tmpDir)
	return f, "", err
}

// refill creates spare files in the background until there are
// spareFiles of them. It stops at the first error: the next create
// meets the same error and reports it.
func (s *Sink) refill(tmpDir string) {
	if s.closed.Load() || !s.filling.CompareAndSwap(false, true) {
		return
	}
	s.filler.Go(func() {
		defer s.filling.Store(false)
		for len(s.spares) < cap(s.spares) && !s.closed.Load() {
			f, err := openUnnamed(tmpDir)
			if err != nil {
				return
			}
			select {
			case s.spares <- f:
			default:
				f.Close()
				return
			}
		}
	})
}

// Close releases the spare files. Files written and not yet flushed are
// released too: without a Flush they were never delivered. The sink
// still works after Close, without spares; Close is not to be called
// while Deliver runs.
func (s *Sink) Close() error {
	s.closed.Store(true)
	s.filler.Wait() // nothing adds spares after this
	for len(s.spares) > 0 {
		(<-s.spares).Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, pf := range s.pending {
		if !pf.flushing {
			pf.f.Close()
			if pf.tmp != "" {
				s.remove(pf.tmp)
			}
			delete(s.pending, tok)
		}
	}
	return nil
}

// Deliver writes m to tmp/; Flush makes it durable and moves it into
// new/. It returns nil when the message is written, or when a message
// with the same idempotency key (m.Key) is already in new/ or cur/ (a
// repeat after a crash, logged and skipped) or waiting for Flush.
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

	pf, err := s.write(ctx, m, tok)
	if err != nil {
		if unfixable(err) {
			return sinks.Unavailable(err)
		}
		return err
	}
	s.mu.Lock()
	s.pending[tok] = pf
	s.mu.Unlock()
	s.logger.Debug("message written to maildir tmp/", "key", m.Key, "account", m.Account,
		"uidl", m.UIDL, "file", pf.f.Name())
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
		if pf := s.pending[tok]; pf != nil {
			// Written and waiting for a Flush, which the caller's
			// Flush of this key either does or waits for.
			s.mu.Unlock()
			return true, nil, nil
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

// write copies m into a new file in tmp/ and returns it open, not yet
// synced.
func (s *Sink) write(ctx context.Context, m *sinks.Message, tok string) (pf *pendingFile, err error) {
	tmpDir := filepath.Join(s.dir, "tmp")
	f, tmp, err := s.create(tok)
	if err != nil {
		return nil, fmt.Errorf("maildir %s: creating file in %s%s: %w", s.dir, tmpDir, hint(err), err)
	}
	defer func() {
		if err != nil {
			f.Close()
			if tmp != "" {
				s.remove(tmp)
			}
		}
	}()
	read, size, err := copyLF(ctx, f, m.Reader())
	if err != nil {
		var we *writeError
		switch {
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return nil, fmt.Errorf("maildir %s: delivery cancelled: %w", s.dir, err)
		case errors.As(err, &we):
			return nil, fmt.Errorf("maildir %s: writing %s%s: %w", s.dir, f.Name(), hint(we.err), we.err)
		default:
			return nil, fmt.Errorf("maildir %s: reading message from spool: %w", s.dir, err)
		}
	}
	if read != m.Size {
		return nil, fmt.Errorf("maildir %s: spool holds %d bytes, message size is %d", s.dir, read, m.Size)
	}
	startWriteback(f)
	return &pendingFile{
		f:       f,
		tmp:     tmp,
		name:    fmt.Sprintf("%d.K%s.%s,S=%d", s.now().Unix(), tok, s.host, size),
		key:     m.Key,
		account: m.Account,
		uidl:    m.UIDL,
		done:    make(chan struct{}),
	}, nil
}

func (s *Sink) remove(tmp string) {
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.logger.Warn("cannot remove temporary maildir file", "file", tmp, "error", err)
	}
}

// syncParallel bounds the fsyncs Flush has in flight at once. Issued
// together, the file systems Maildirs live on (ext4, XFS, btrfs) fold
// them into one or two journal commits; one after another, each costs
// its own.
const syncParallel = 16

// Flush makes the deliveries of keys durable: the files they wrote to
// tmp/ are fsynced together, linked into new/, and new/ is fsynced once.
// A key another Flush is already handling is waited for; a key that is
// neither waiting nor in the Maildir (its earlier Flush failed) is an
// error, so the caller records it as not delivered. The work is done
// even if ctx is done: it only ever makes mail safer.
func (s *Sink) Flush(ctx context.Context, keys []string) error {
	var mine, others []*pendingFile
	var missing []string
	repeat := false
	s.mu.Lock()
	for _, k := range keys {
		tok := keyToken(k)
		pf := s.pending[tok]
		switch {
		case pf == nil:
			if _, ok := s.keys[tok]; ok {
				repeat = true
			} else {
				missing = append(missing, k)
			}
		case pf.flushing:
			others = append(others, pf)
		default:
			pf.flushing = true
			mine = append(mine, pf)
		}
	}
	s.mu.Unlock()

	err := s.flushFiles(mine, repeat)
	for _, pf := range others {
		<-pf.done
		if pf.err != nil && err == nil {
			err = pf.err
		}
	}
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("maildir %s: %d message(s) not stored (key %s): their earlier write failed", s.dir, len(missing), missing[0])
	}
	if err != nil && unfixable(err) {
		return sinks.Unavailable(err)
	}
	return err
}

// flushFiles syncs, links and (with new/) syncs the files; syncNew asks
// for new/ to be synced even when nothing is linked, for repeats whose
// file an earlier, failed Flush may have linked without syncing new/.
func (s *Sink) flushFiles(list []*pendingFile, syncNew bool) (err error) {
	if len(list) == 0 && !syncNew {
		return nil
	}
	newDir := filepath.Join(s.dir, "new")
	defer func() {
		s.mu.Lock()
		for _, pf := range list {
			if pf.err == nil && err != nil {
				pf.err = err
			}
			delete(s.pending, keyToken(pf.key))
			// A file in new/ counts even when syncing new/ failed: a
			// repeat then finds it, and its Flush syncs new/ again.
			if (pf.linked || pf.err == nil) && s.keys != nil {
				s.keys[keyToken(pf.key)] = struct{}{}
			}
		}
		s.mu.Unlock()
		for _, pf := range list {
			close(pf.done)
		}
	}()

	// Each file is synced, then linked into new/, a few at a time.
	var wg sync.WaitGroup
	next := make(chan *pendingFile)
	for range min(len(list), syncParallel) {
		wg.Go(func() {
			for pf := range next {
				s.place(pf, newDir)
			}
		})
	}
	for _, pf := range list {
		next <- pf
	}
	close(next)
	wg.Wait()
	linked := syncNew
	for _, pf := range list {
		linked = linked || pf.linked
		if pf.err != nil && err == nil {
			err = pf.err
		}
	}
	// The deferred pass gives the files that had no error of their own
	// the first one, this included.
	if linked {
		if serr := atomicfile.SyncDir(newDir); serr != nil && err == nil {
			err = fmt.Errorf("maildir %s: syncing %s%s: %w", s.dir, newDir, hint(serr), serr)
		}
	}
	return err
}

// place syncs pf's file and links it into newDir; pf.linked says whether
// it did, pf.err what failed.
func (s *Sink) place(pf *pendingFile, newDir string) {
	defer func() {
		if cerr := pf.f.Close(); cerr != nil && pf.err == nil && !pf.linked {
			pf.err = fmt.Errorf("maildir %s: closing %s%s: %w", s.dir, pf.f.Name(), hint(cerr), cerr)
		}
		if pf.tmp != "" {
			s.remove(pf.tmp)
		}
	}()
	if serr := s.sync(pf.f); serr != nil {
		pf.err = fmt.Errorf("maildir %s: syncing %s%s: %w", s.dir, pf.f.Name(), hint(serr), serr)
		return
	}
	dst := filepath.Join(newDir, pf.name)
	var lerr error
	if pf.tmp == "" {
		lerr = linkUnnamed(pf.f, dst)
	} else {
		lerr = linkNoClobber(pf.tmp, dst)
	}
	switch {
	case lerr == nil:
		pf.linked = true
		s.logger.Debug("message stored in maildir", "key", pf.key, "account", pf.account, "uidl", pf.uidl, "file", dst)
	case errors.Is(lerr, os.ErrExist):
		// Another process stored the same key under the same name in
		// the same second.
		s.logger.Info("message already in maildir, not stored again", "key", pf.key,
			"account", pf.account, "uidl", pf.uidl, "maildir", s.dir)
	default:
		pf.err = fmt.Errorf("maildir %s: moving message into %s%s: %w", s.dir, newDir, hint(lerr), lerr)
	}
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
