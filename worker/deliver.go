package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// sizeSlack is how far, beyond one octet per line, a message as sent may
// differ from the size LIST gave before it is suspect. Servers that count
// LF line endings differ by the line count, and a few add or drop a
// header; a server that substitutes a notice for the message differs by
// far more.
const sizeSlack = 512

var (
	errStop      = errors.New("stop requested")
	errSinksDown = errors.New("every sink of the account failed")
)

// The fetcher reads ahead of delivery, into spool files, by at most
// readAheadMessages messages and readAheadBytes octets (a single larger
// message is still fetched, alone): enough that the connection keeps
// flowing while a sink works, bounded so that a slow sink costs disk, not
// memory, and never much of either. 40 is more than a commit batch
// (commitMessages), so the connection keeps flowing while a batch is
// flushed and committed. Variables for the tests.
var (
	readAheadMessages = 40
	readAheadBytes    = int64(64 << 20)
)

// fetched is one message the fetcher has read: spooled, or refused by the
// server (err, the -ERR to its RETR).
type fetched struct {
	p      *Pending
	spool  *os.File
	size   int64
	lines  int64
	digest string
	err    error
}

// errQuit ends the fetcher when delivery stops early; errDrainCut closes
// the connection when reading what was already requested takes too long.
var (
	errQuit     = errors.New("delivery stopped")
	errDrainCut = errors.New("stopped: the connection was closed rather than read to its end")
)

// After delivery stopped early, the replies already under way are read to
// their end (so the session can DELE and QUIT) when they hold at most
// drainMax octets by LIST, and for drainGrace at most; otherwise the
// connection is closed at once. Variables for the tests.
var (
	drainMax   = int64(1 << 20)
	drainGrace = 5 * time.Second
)

// fetch retrieves the messages (pipelined) in server order and delivers
// them in that order. A goroutine reads the RETR replies into spool files
// while this one hands the previous messages to the sinks and records the
// outcome; only this goroutine touches the run's state. It returns
// errAgain when an oversized message closed the connection: the rest of
// the mailbox moves in a new session.
func (r *run) fetch(work []*Pending) error {
	if len(work) == 0 {
		return nil
	}
	nums := make([]int, len(work))
	index := make(map[int]int, len(work)) // message number -> index in work
	for i, p := range work {
		nums[i] = p.Info.Num
		index[p.Info.Num] = i
	}
	ready := make(chan fetched, readAheadMessages)
	quit := make(chan struct{})
	// When delivery stops early, the RETRs already sent are read to their
	// end so that the session can still DELE and QUIT, but for drainGrace
	// at most: the pipeline may hold many large messages.
	fctx, cut := context.WithCancelCause(r.ctx)
	defer cut(nil)
	win := newWindow(readAheadMessages, readAheadBytes)
	var (
		retrErr  error
		spoolErr error
		reading  atomic.Int64 // index in work of the RETR being read
		finished atomic.Int64 // RETRs read to their end and handed on: work[finished] is the one a failure cut
		window   atomic.Int64 // RETRs in flight at most
	)
	go func() {
		defer close(ready)
		retrErr = r.c.RetrEach(fctx, nums, func(num int, body io.Reader, err error) error {
			i := index[num]
			p := work[i]
			reading.Store(int64(i))
			window.Store(int64(r.c.Window()))
			it := fetched{p: p, err: err}
			if err == nil {
				if !win.acquire(p.Info.Size, quit) {
					return errQuit
				}
				if it.spool, err = r.spools.take(); err != nil {
					err = &spoolError{err}
				} else {
					it.size, it.lines, it.digest, err = spoolInto(it.spool, body)
				}
				if err != nil {
					r.spools.put(it.spool)
					win.release(p.Info.Size)
					if se := (*spoolError)(nil); errors.As(err, &se) {
						spoolErr = err
					}
					return err
				}
			}
			select {
			case ready <- it:
				finished.Add(1)
				return nil
			case <-quit:
				r.spools.put(it.spool)
				return errQuit
			}
		})
	}()

	var stopped error // why delivery stopped early
	var timer *time.Timer
	end := func(why error) {
		stopped = why
		close(quit)
		// Read what is still coming only when it is little: the session
		// can then DELE and QUIT now.
		i, w := int(reading.Load()), int(max(window.Load(), 1))
		var coming int64
		for _, p := range work[i:min(i+w, len(work))] {
			coming += p.Info.Size
		}
		grace := drainGrace
		if coming > drainMax {
			grace = 0
		}
		timer = time.AfterFunc(grace, func() { cut(errDrainCut) })
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// A stop is noticed while the fetcher is still reading, not only when
	// the next message is ready.
	stopping := r.stop.Done()
	// A batch of results is committed after commitDelay even when no
	// next message comes to close it (a large RETR, a slow server).
	var flush <-chan time.Time
	var flushTimer *time.Timer
	defer func() {
		if flushTimer != nil {
			flushTimer.Stop()
		}
	}()
	for in := ready; in != nil; {
		if flush == nil && len(r.unsaved.entries) > 0 {
			flushTimer = time.NewTimer(max(commitDelay-time.Since(r.unsaved.since), 0))
			flush = flushTimer.C
		}
		select {
		case <-flush:
			flush = nil
			if err := r.commit(); err != nil && stopped == nil {
				end(err)
			}
		case <-stopping:
			stopping = nil
			if stopped == nil {
				end(errStop)
			}
		case it, ok := <-in:
			if !ok {
				in = nil
				break
			}
			if stopped == nil {
				if err := r.deliverFetched(it); err != nil {
					end(err)
				}
			}
			if it.spool != nil {
				r.spools.put(it.spool)
				win.release(it.p.Info.Size)
			}
		}
	}
	if errors.Is(context.Cause(fctx), errDrainCut) {
		r.aborted = true
		r.log.Info("closed the connection rather than read the messages already requested to their end; " +
			"what was delivered is deleted at the next run")
	}
	switch {
	case errors.Is(stopped, errStop):
		r.log.Info("stopping: the remaining messages wait for the next run")
		return nil
	case errors.Is(stopped, errSinksDown):
		r.log.Warn("every sink failed; the remaining messages wait for the next run")
		return nil
	case stopped != nil:
		return fmt.Errorf("account %s: %w", r.Account.Name, stopped)
	case spoolErr != nil:
		return fmt.Errorf("account %s: %w", r.Account.Name, spoolErr)
	case retrErr != nil && int(finished.Load()) < len(work) && errors.Is(retrErr, pop3.ErrMessageTooLarge):
		return r.tooLarge(work[finished.Load()], retrErr)
	case retrErr != nil && int(finished.Load()) < len(work) && !errors.Is(retrErr, errQuit) &&
		context.Cause(fctx) == nil && r.ctx.Err() == nil:
		return r.retrCut(work[finished.Load()], retrErr)
	case retrErr != nil:
		return fmt.Errorf("account %s: %w", r.Account.Name, retrErr)
	}
	return nil
}

// retrCut handles a connection that broke while the server sent p (or
// was about to): p is left for the next run and a new session fetches the
// rest, and deletes what was delivered. Without this, a message that is
// cut at every attempt would stop every message after it for good.
func (r *run) retrCut(p *Pending, err error) error {
	if r.cut == nil {
		r.cut = map[string]bool{}
	}
	r.cut[p.Entry.ID()] = true
	r.problem(Problem{Kind: ProblemRetr, UIDL: p.Info.UID,
		Err: fmt.Errorf("the connection broke while the server sent it; it stays on the server for the next run: %w", err)})
	return errAgain
}

// deliverFetched handles one message the fetcher read.
func (r *run) deliverFetched(it fetched) error {
	if r.stop.Err() != nil {
		return errStop
	}
	if len(r.down) == len(r.Account.Sinks) {
		return errSinksDown
	}
	if it.err != nil {
		r.problem(Problem{Kind: ProblemRetr, UIDL: it.p.Info.UID, Err: it.err})
		return nil
	}
	return r.handle(it)
}

// tooLarge records a message whose RETR ran past MAX_MESSAGE_SIZE although
// LIST gave a smaller size, so that no later run fetches it again while
// the limit stands; the client closed the connection, so the rest of the
// mailbox needs a new session.
func (r *run) tooLarge(p *Pending, err error) error {
	e := p.Entry
	e.TooLarge, e.SizeLimit = true, r.Account.MaxMessageSize
	if perr := r.ledger.Put(e); perr != nil {
		return fmt.Errorf("account %s: ledger: %w", r.Account.Name, perr)
	}
	r.problem(Problem{Kind: ProblemTooLarge, UIDL: e.UIDL,
		Err: fmt.Errorf("the server lists %d octets but sent more than MAX_MESSAGE_SIZE (%d): %w", p.Info.Size, r.Account.MaxMessageSize, err)})
	return errAgain
}

// handle delivers one spooled message to the sinks still missing it and
// adds the results to the batch that commit writes to the ledger.
func (r *run) handle(it fetched) error {
	p, spool, size, lines, digest := it.p, it.spool, it.size, it.lines, it.digest
	e := p.Entry
	if e.SHA256 != "" && e.SHA256 != digest {
		// Same id, different content: a new message reusing the id of
		// one we only partly delivered. Every sink gets it.
		r.log.Warn("message content changed under the same UIDL; delivering it as a new message", "uidl", e.UIDL)
		*e = state.Entry{UIDL: e.UIDL, Occurrence: e.Occurrence, Generation: e.Generation + 1, FirstSeen: e.FirstSeen}
		p.Sinks = append([]string(nil), r.Account.Sinks...)
	}
	r.emit(Event{Kind: EventFetched, UIDL: p.Info.UID, Size: size})
	e.Size, e.SHA256 = size, digest
	if d := size - p.Info.Size; (d > lines+sizeSlack || -d > lines+sizeSlack) && e.Suspect == "" {
		e.Suspect = fmt.Sprintf("RETR gave %d octets, LIST said %d", size, p.Info.Size)
		r.log.Warn("the message the server sent is far from the size it listed; delivering it as sent and keeping it on the server",
			"uidl", e.UIDL, "listed", p.Info.Size, "fetched", size)
		r.problem(Problem{Kind: ProblemSizeMismatch, UIDL: e.UIDL, Err: errors.New(e.Suspect +
			" (a server may send a substitute, such as a notice, instead of the message)")})
	}
	e.Key = IdempotencyKey(r.Account.Host, r.Account.Username, e, size, digest)
	msg := &sinks.Message{
		Account: r.Account.Name, Mailbox: r.Account.Username, UIDL: e.UIDL,
		Key: e.Key, Size: size, SHA256: digest, Raw: spool,
	}
	for _, name := range p.Sinks {
		if r.down[name] != nil {
			continue
		}
		log := r.log.With("sink", name, "uidl", e.UIDL, "key", e.Key)
		log.Debug("delivering", "size", size)
		start := time.Now()
		err := r.Sinks[name].Deliver(r.ctx, msg)
		r.emit(Event{Kind: EventSinkDone, UIDL: e.UIDL, Key: e.Key, Size: size, Sink: name,
			Outcome: sinks.Classify(err), Took: time.Since(start)})
		r.record(e, name, err)
		r.unsaved.add(e, time.Now())
		if err == nil {
			r.unsaved.delivered(name, e)
		}
	}
	if e.Delivered(r.Account.Sinks) {
		r.res.Delivered++
		r.emit(Event{Kind: EventDelivered, UIDL: e.UIDL, Key: e.Key, Size: size})
		if e.Suspect == "" && r.Account.Keep.ShouldDelete(e.FirstSeen, r.now()) {
			r.unsaved.dele = append(r.unsaved.dele, p)
		}
	}
	if r.unsaved.due(time.Now()) {
		return r.commit()
	}
	return nil
}

// The results of a few deliveries are committed to the ledger together:
// a commit costs an fsync or two, as much as a small message takes to
// fetch. What a crash can repeat grows from the delivery in flight to the
// deliveries not yet committed: at most commitMessages messages, and a
// batch is closed after commitDelay even while the next RETR is read.
// Every repeat carries the key of the first delivery, and nothing is
// deleted before its batch is committed.
const (
	commitMessages = 32
	commitDelay    = time.Second
)

// unsaved holds the entries changed since the last commit, and the
// messages that are to be deleted once they are committed.
type unsaved struct {
	entries []*state.Entry
	dele    []*Pending
	since   time.Time // when the oldest change was made
	// bySink are the entries each sink took in this batch, for sinks
	// that must be flushed before the batch is recorded.
	bySink map[string][]*state.Entry
}

func (u *unsaved) delivered(sink string, e *state.Entry) {
	if u.bySink == nil {
		u.bySink = map[string][]*state.Entry{}
	}
	u.bySink[sink] = append(u.bySink[sink], e)
}

func (u *unsaved) add(e *state.Entry, now time.Time) {
	if len(u.entries) == 0 {
		u.since = now
	}
	u.entries = appendOnce(u.entries, e)
}

func (u *unsaved) due(now time.Time) bool {
	return len(u.entries) >= commitMessages || (len(u.entries) > 0 && now.Sub(u.since) >= commitDelay)
}

// commit writes the unsaved entries in one transaction and only then
// lets their messages be deleted.
func (r *run) commit() error {
	u := &r.unsaved
	if len(u.entries) == 0 {
		return nil
	}
	defer func() { *u = unsaved{} }()
	r.flush(u)
	var err error
	if r.metaUnsaved {
		err = r.ledger.PutBatchMeta(r.meta, u.entries...)
	} else {
		err = r.ledger.PutBatch(u.entries...)
	}
	if err != nil {
		// Not deleted, and offered again under the same keys: the same
		// as a crash at this point.
		return fmt.Errorf("ledger: %w", err)
	}
	r.metaUnsaved = false
	for _, e := range u.entries {
		r.log.Debug("recorded", "uidl", e.UIDL, "key", e.Key)
	}
	r.dele = append(r.dele, u.dele...)
	return nil
}

// flush makes durable what each sinks.Flusher took in the batch. A sink
// whose flush fails has not delivered those messages after all: they are
// recorded as failed for it (so not deleted) and the sink rests for the
// rest of the run, as after any failure.
func (r *run) flush(u *unsaved) {
	for _, name := range r.Account.Sinks {
		f, ok := r.Sinks[name].(sinks.Flusher)
		if !ok || len(u.bySink[name]) == 0 {
			continue
		}
		keys := make([]string, len(u.bySink[name]))
		for i, e := range u.bySink[name] {
			keys[i] = e.Key
		}
		err := f.Flush(r.ctx, keys)
		if err == nil {
			continue
		}
		err = fmt.Errorf("making the last %d deliveries durable: %w", len(u.bySink[name]), err)
		for _, e := range u.bySink[name] {
			wasDelivered := e.Delivered(r.Account.Sinks)
			e.Sink(name).DeliveredAt = time.Time{}
			r.record(e, name, err)
			if wasDelivered {
				r.res.Delivered--
			}
		}
		u.dele = slices.DeleteFunc(u.dele, func(p *Pending) bool { return !p.Entry.Delivered(r.Account.Sinks) })
	}
}

// record notes one sink's outcome in the entry.
func (r *run) record(e *state.Entry, name string, err error) {
	st := e.Sink(name)
	now := r.now()
	outcome := sinks.Classify(err)
	if outcome == sinks.OutcomeDelivered {
		st.DeliveredAt, st.LastError, st.Permanent, st.NextAttempt, st.Config = now, "", false, time.Time{}, ""
		return
	}
	st.Attempts++
	st.LastError = err.Error()
	if outcome == sinks.OutcomeRejected {
		st.Permanent = true
		st.NextAttempt = now.Add(min(rejectRetryMax, rejectRetryMin<<min(st.Attempts-1, 10)))
		st.Config = r.SinkConfig[name]
		r.problem(Problem{Kind: ProblemRejected, UIDL: e.UIDL, Sink: name,
			Err: fmt.Errorf("%w; next attempt %s", err, st.NextAttempt.Format(time.RFC3339))})
		return
	}
	if r.down == nil {
		r.down = map[string]error{}
	}
	r.down[name] = err
	kind := ProblemSinkFailed
	if outcome == sinks.OutcomeUnavailable {
		kind = ProblemSinkUnavailable
	}
	r.problem(Problem{Kind: kind, UIDL: e.UIDL, Sink: name, Err: err})
}

// spoolInto streams the body into f, measuring, counting lines and
// hashing on the way. A failure to write the spool file is a
// *spoolError; a failure to read the body (the connection, an oversized
// message) is returned as it came.
func spoolInto(f *os.File, body io.Reader) (size, lines int64, digest string, err error) {
	h := sha256.New()
	lc := &lineCounter{}
	fw := &spoolWriter{f: f}
	if _, err = f.Seek(0, io.SeekStart); err != nil {
		fw.err = err
	}
	if err == nil {
		buf := copyBuffers.Get().(*[]byte)
		size, err = io.CopyBuffer(io.MultiWriter(fw, h, lc), body, *buf)
		copyBuffers.Put(buf)
	}
	if err == nil {
		if err = f.Truncate(size); err != nil {
			fw.err = err
		}
	}
	if fw.err != nil {
		return 0, 0, "", &spoolError{fmt.Errorf("spool %s: %w", f.Name(), fw.err)}
	}
	if err != nil {
		return 0, 0, "", err
	}
	return size, lc.n, hex.EncodeToString(h.Sum(nil)), nil
}

// copyBuffers spares each message a fresh 32 KiB copy buffer.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// spoolWriter remembers a write error, to tell it from a read error.
type spoolWriter struct {
	f   *os.File
	err error
}

func (w *spoolWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// spoolError is a failure to write a spool file (a full disk).
type spoolError struct{ err error }

func (e *spoolError) Error() string { return e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

// spoolPool holds a run's spool files. A file is rewritten for message
// after message once every sink is done with it: creating and removing a
// file per message costs more than the copy.
type spoolPool struct {
	dir  string
	mu   sync.Mutex
	idle []*os.File
	all  []*os.File
}

func (s *spoolPool) take() (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.idle); n > 0 {
		f := s.idle[n-1]
		s.idle = s.idle[:n-1]
		return f, nil
	}
	f, err := os.CreateTemp(s.dir, "msg-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s.all = append(s.all, f)
	return f, nil
}

func (s *spoolPool) put(f *os.File) {
	if f == nil {
		return
	}
	s.mu.Lock()
	s.idle = append(s.idle, f)
	s.mu.Unlock()
}

// remove deletes every spool file of the run.
func (s *spoolPool) remove() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.all {
		f.Close()
		os.Remove(f.Name())
	}
	s.all, s.idle = nil, nil
}

// window bounds the read-ahead by count and octets; one message is
// always let through, however large. Only the fetcher acquires.
type window struct {
	maxN     int
	maxBytes int64
	mu       sync.Mutex
	n        int
	bytes    int64
	released chan struct{}
}

func newWindow(n int, bytes int64) *window {
	return &window{maxN: n, maxBytes: bytes, released: make(chan struct{}, 1)}
}

// acquire waits for room for a message of size octets; false when quit
// closes first.
func (w *window) acquire(size int64, quit <-chan struct{}) bool {
	for {
		w.mu.Lock()
		if w.n == 0 || (w.n < w.maxN && w.bytes+size <= w.maxBytes) {
			w.n++
			w.bytes += size
			w.mu.Unlock()
			return true
		}
		w.mu.Unlock()
		select {
		case <-w.released:
		case <-quit:
			return false
		}
	}
}

func (w *window) release(size int64) {
	w.mu.Lock()
	w.n--
	w.bytes -= size
	w.mu.Unlock()
	select {
	case w.released <- struct{}{}:
	default:
	}
}

type lineCounter struct{ n int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += int64(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

// IdempotencyKey is the stable key of one delivery: the same on every
// attempt, different for a different message, whatever the server reuses.
func IdempotencyKey(host, user string, e *state.Entry, size int64, digest string) string {
	h := sha256.New()
	fmt.Fprintf(h, "pophook/1\x00%s\x00%s\x00%d\x00%d\x00%d\x00%s", state.AccountID(host, user), e.UIDL, e.Occurrence, e.Generation, size, digest)
	return "ph1_" + hex.EncodeToString(h.Sum(nil))[:40]
}
