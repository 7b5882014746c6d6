package worker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
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

// fetch retrieves the messages (pipelined) in server order and delivers
// each as it arrives. It returns errAgain when an oversized message closed
// the connection: the rest of the mailbox moves in a new session.
func (r *run) fetch(work []*Pending) error {
	if len(work) == 0 {
		return nil
	}
	nums := make([]int, len(work))
	byNum := make(map[int]*Pending, len(work))
	for i, p := range work {
		nums[i] = p.Info.Num
		byNum[p.Info.Num] = p
	}
	var inHand *Pending
	err := r.c.RetrEach(r.ctx, nums, func(num int, body io.Reader, err error) error {
		p := byNum[num]
		inHand = p
		if err != nil {
			r.problem(Problem{Kind: ProblemRetr, UIDL: p.Info.UID, Err: err})
			return nil
		}
		return r.handle(p, body)
	})
	switch {
	case errors.Is(err, errStop):
		r.log.Info("stopping: the remaining messages wait for the next run")
		return nil
	case errors.Is(err, errSinksDown):
		r.log.Warn("every sink failed; the remaining messages wait for the next run")
		return nil
	case errors.Is(err, pop3.ErrMessageTooLarge) && inHand != nil:
		return r.tooLarge(inHand, err)
	case err != nil:
		return fmt.Errorf("account %s: %w", r.Account.Name, err)
	}
	return nil
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

// handle spools one message, delivers it to the sinks still missing it
// and commits each result to the ledger as soon as it is known.
func (r *run) handle(p *Pending, body io.Reader) error {
	if r.stop.Err() != nil {
		return errStop
	}
	if len(r.down) == len(r.Account.Sinks) {
		return errSinksDown
	}
	spool, size, lines, digest, err := r.spool(body)
	if err != nil {
		return err
	}

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
		// Commit before anything else happens: this is what makes a
		// crash repeat at most the delivery in flight.
		if err := r.ledger.Put(e); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		log.Debug("recorded")
	}
	if e.Delivered(r.Account.Sinks) {
		r.res.Delivered++
		r.emit(Event{Kind: EventDelivered, UIDL: e.UIDL, Key: e.Key, Size: size})
		if e.Suspect == "" && r.Account.Keep.ShouldDelete(e.FirstSeen, r.now()) {
			r.dele = append(r.dele, p)
		}
	}
	return nil
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

// spool streams the body into the run's private spool file, measuring,
// counting lines and hashing on the way. One file serves the whole run,
// rewritten for each message once every sink is done with the previous
// one: creating and removing a file per message costs more than the copy.
func (r *run) spool(body io.Reader) (f *os.File, size, lines int64, digest string, err error) {
	if r.spoolFile == nil {
		f, err := os.CreateTemp(r.SpoolDir, "msg-*")
		if err != nil {
			return nil, 0, 0, "", fmt.Errorf("spool: %w", err)
		}
		r.spoolFile = f
	}
	f = r.spoolFile
	h := sha256.New()
	lc := &lineCounter{}
	_, err = f.Seek(0, io.SeekStart)
	if err == nil {
		size, err = io.Copy(io.MultiWriter(f, h, lc), body)
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		return nil, 0, 0, "", fmt.Errorf("spool %s: %w", f.Name(), err)
	}
	return f, size, lc.n, hex.EncodeToString(h.Sum(nil)), nil
}

// removeSpool deletes the run's spool file.
func (r *run) removeSpool() {
	if r.spoolFile != nil {
		r.spoolFile.Close()
		os.Remove(r.spoolFile.Name())
		r.spoolFile = nil
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
