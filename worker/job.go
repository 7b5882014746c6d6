// Package worker runs pophook's fetch jobs: one per account, on a cron
// schedule, each logging in over POP3, fetching what the ledger has not
// seen delivered, handing it to the account's sinks, recording the outcome
// and only then deleting (DESIGN.md section 1).
package worker

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// Sink takes one message. It returns nil once the message is safely in its
// hands, an error marked with sinks.Permanent when it will never take this
// message, and any other error when it may take it later. A sink owns its
// retry policy and must return within a bounded time.
type Sink interface {
	Deliver(ctx context.Context, m *sinks.Message) error
}

const (
	// pruneGrace is how long a ledger entry outlives its message on the
	// server, so a server's bad day (an empty listing) re-sends nothing.
	pruneGrace = 14 * 24 * time.Hour

	// After a permanent rejection a message is offered again after
	// rejectRetryMin, doubling up to rejectRetryMax.
	rejectRetryMin = time.Hour
	rejectRetryMax = 24 * time.Hour

	// Wrong credentials back off from authBackoffMin, doubling up to
	// authBackoffMax, so a wrong password never hammers a server.
	authBackoffMin = time.Minute
	authBackoffMax = time.Hour

	// wrapUpTimeout bounds DELE and QUIT after a job was told to stop.
	wrapUpTimeout = 30 * time.Second
)

// Job fetches one account. Its fields are set once; Run may be called
// again and again but never concurrently (the scheduler sees to that).
type Job struct {
	Account  config.Account
	Sinks    map[string]Sink // by name; must hold every name in Account.Sinks
	Ledger   *state.Ledger
	SpoolDir string
	Logger   *slog.Logger
	Now      func() time.Time // nil: time.Now
	// Trace, if set, receives the redacted POP3 exchange.
	Trace io.Writer

	mu           sync.Mutex
	notBefore    time.Time // auth backoff or LOGIN-DELAY
	authFailures int
	noPipelining bool   // the server broke pipelining once: lock-step from now on
	lastLogin    string // what the last login audit said; see auditLogin
}

// Result is what one run did.
type Result struct {
	Listed    int
	Delivered int // messages newly delivered to all their sinks
	Deleted   int // deletions confirmed by QUIT
	// Problems are per-message failures (rejected, too large, a sink
	// down), one line each, naming account and message.
	Problems []string
	// Skipped says why the run did nothing (mailbox in use, login delay,
	// auth backoff); empty when it ran.
	Skipped string
}

// Run performs one pass over the account. Cancelling ctx asks it to stop
// early: it finishes the message in hand, sends DELE only for what is
// delivered and recorded, and QUITs. The error is nil when the session ran
// to its end, even if some messages failed (see Result.Problems).
func (j *Job) Run(ctx context.Context) (Result, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := &run{Job: j, stop: ctx, log: j.logger()}
	// Network I/O and sink calls are not cut short by a stop request; each
	// has its own bounds. Only a second signal (process exit) cuts them.
	r.ctx = context.WithoutCancel(ctx)
	err := r.run()
	return r.res, err
}

func (j *Job) logger() *slog.Logger {
	l := j.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("account", j.Account.Name)
}

func (j *Job) now() time.Time {
	if j.Now != nil {
		return j.Now()
	}
	return time.Now()
}

// run is the state of one pass.
type run struct {
	*Job
	ctx    context.Context // for I/O: never cancelled by a stop request
	stop   context.Context // cancelled when the job should wrap up
	log    *slog.Logger
	c      *pop3.Client
	ledger *state.Account
	res    Result

	down      map[string]error // sinks that failed temporarily in this run
	dele      []*pending       // delivered, to be deleted
	spoolFile *os.File         // holds the message in hand; see spool
}

// pending is a listed message the run acts on.
type pending struct {
	info  pop3.MessageInfo
	entry *state.Entry
	sinks []string // sinks still to deliver to in this run
}

func (r *run) run() error {
	now := r.now()
	if now.Before(r.notBefore) {
		r.res.Skipped = fmt.Sprintf("waiting until %s (%s)", r.notBefore.Format(time.RFC3339), r.waitReason())
		return nil
	}
	r.ledger = r.Ledger.Account(state.AccountID(r.Account.Host, r.Account.Username))
	if err := r.connect(); err != nil {
		return r.loginFailed(err)
	}
	// r.c may be replaced by a redial (see scan): close whichever is last.
	defer func() { r.c.Close() }()

	list, err := r.scan()
	if err != nil {
		return err
	}
	r.res.Listed = len(list)
	work, err := r.plan(list)
	if err != nil {
		r.quit()
		return err
	}
	fetchErr := r.fetch(work)
	r.removeSpool()
	if err := r.deleteAndQuit(); err != nil && fetchErr == nil {
		fetchErr = err
	}
	if err := r.prune(list); err != nil && fetchErr == nil {
		fetchErr = err
	}
	return fetchErr
}

func (r *run) waitReason() string {
	if r.authFailures > 0 {
		return fmt.Sprintf("authentication failed %d times", r.authFailures)
	}
	return "server asked for a delay between logins"
}

// loginFailed turns a failed connect or login into the run's outcome:
// mailbox in use or login delay skip the run quietly, wrong credentials
// back off, anything else is an error for the next tick to retry.
func (r *run) loginFailed(err error) error {
	now := r.now()
	switch {
	case errors.Is(err, pop3.ErrInUse):
		r.res.Skipped = "mailbox in use by another session"
		r.log.Info("mailbox in use, trying at the next tick", "err", err)
		return nil
	case errors.Is(err, pop3.ErrLoginDelay):
		r.res.Skipped = "server asked for a delay between logins"
		r.log.Info("login delay, trying at the next tick", "err", err)
		return nil
	case isAuthFailure(err):
		r.authFailures++
		wait := min(authBackoffMax, authBackoffMin<<min(r.authFailures-1, 10))
		r.notBefore = now.Add(wait)
		r.log.Error("authentication failed: check the username and password; backing off",
			"err", err, "failures", r.authFailures, "next_attempt", r.notBefore.Format(time.RFC3339))
		return fmt.Errorf("account %s: authentication failed (next attempt in %s): %w", r.Account.Name, wait, err)
	}
	return fmt.Errorf("account %s: %w", r.Account.Name, err)
}

// isAuthFailure: [AUTH], or a plain -ERR to the credentials themselves.
// Temporary codes ([SYS/TEMP], [IN-USE]) are not the password's fault.
func isAuthFailure(err error) bool {
	var pe *pop3.Error
	if !errors.As(err, &pe) || pe.Temporary() {
		return false
	}
	return pe.HasCode(pop3.CodeAuth) || pe.Command == "PASS" || pe.Command == "USER" || strings.HasPrefix(pe.Command, "AUTH")
}

// connect dials and logs in.
func (r *run) connect() error {
	a := r.Account
	opts, err := POP3Options(a)
	if err != nil {
		return err
	}
	opts.DisablePipelining = r.noPipelining
	opts.Trace = r.Trace
	secret, err := a.Password.Reveal()
	if err != nil {
		return err
	}
	addr := hostPort(a.Host, a.Port)
	c, err := pop3.Dial(r.ctx, addr, opts)
	if err != nil {
		return err
	}
	if err := c.Authenticate(r.ctx, pop3.Mechanism(a.Auth), a.Username, secret); err != nil {
		c.Close()
		return err
	}
	r.authFailures = 0
	r.auditLogin(c)
	// RFC 2449 LOGIN-DELAY: the server's minimum time between logins.
	if d := c.Capabilities()["LOGIN-DELAY"]; len(d) > 0 {
		if secs, err := strconv.Atoi(d[0]); err == nil && secs > 0 {
			r.notBefore = r.now().Add(time.Duration(secs) * time.Second)
		}
	}
	r.c = c
	return nil
}

// auditLogin records what a login was protected by: TLS version, cipher
// suite and the server's certificate. At info level when that changes
// (the first login, a new certificate), at debug level otherwise, so the
// log shows every change without repeating itself every minute.
func (r *run) auditLogin(c *pop3.Client) {
	attrs := []any{"server", hostPort(r.Account.Host, r.Account.Port), "user", r.Account.Username}
	st, ok := c.TLSConnectionState()
	if !ok {
		attrs = append(attrs, "tls", "none")
	} else {
		attrs = append(attrs, "tls", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
		if len(st.PeerCertificates) > 0 {
			cert := st.PeerCertificates[0]
			sum := sha256.Sum256(cert.Raw)
			attrs = append(attrs, "cert_subject", cert.Subject.String(), "cert_issuer", cert.Issuer.String(),
				"cert_expires", cert.NotAfter.UTC().Format(time.RFC3339), "cert_sha256", hex.EncodeToString(sum[:]))
		}
	}
	seen := fmt.Sprint(attrs...)
	if seen == r.lastLogin {
		r.log.Debug("logged in", attrs...)
		return
	}
	r.lastLogin = seen
	r.log.Info("logged in", attrs...)
}

// scan lists the mailbox. A server that advertises PIPELINING but drops
// pipelined commands is remembered and the session redone lock-step.
func (r *run) scan() ([]pop3.MessageInfo, error) {
	list, err := r.c.Scan(r.ctx)
	if errors.Is(err, pop3.ErrPipeliningBroken) {
		r.log.Warn("server advertises PIPELINING but drops pipelined commands; using lock-step", "err", err)
		r.noPipelining = true
		r.c.Close()
		if err := r.connect(); err != nil {
			return nil, r.loginFailed(err)
		}
		list, err = r.c.Scan(r.ctx)
	}
	var pe *pop3.Error
	if errors.As(err, &pe) && pe.Command == "UIDL" {
		r.c.Quit(r.ctx)
		return nil, fmt.Errorf("account %s: the server does not support UIDL, so pophook cannot tell which messages it has delivered: %w", r.Account.Name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("account %s: listing the mailbox: %w", r.Account.Name, err)
	}
	return list, nil
}

// plan decides, from the listing and the ledger, what to fetch and what
// only to delete again.
func (r *run) plan(list []pop3.MessageInfo) ([]*pending, error) {
	now := r.now()
	ids, occ := entryIDs(list)
	entries, err := r.ledger.Get(ids)
	if err != nil {
		return nil, fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	meta, err := r.ledger.Meta()
	if err != nil {
		return nil, fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	if meta.Initialized.IsZero() {
		if r.Account.SkipExisting {
			return nil, r.skipExisting(list, occ, now)
		}
		if err := r.ledger.SetMeta(state.AccountMeta{Initialized: now}); err != nil {
			return nil, fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
		}
	}

	var work []*pending
	var changed []*state.Entry
	for i, m := range list {
		e := entries[ids[i]]
		switch {
		case e == nil:
			e = &state.Entry{UIDL: m.UID, Occurrence: occ[i], FirstSeen: now, Size: m.Size}
		case !e.DeletedAt.IsZero():
			// Deleted, confirmed by QUIT, and listed again: a new
			// message under a reused id. Deliver it afresh.
			e = &state.Entry{UIDL: e.UIDL, Occurrence: e.Occurrence, Generation: e.Generation + 1, FirstSeen: now, Size: m.Size}
			changed = append(changed, e)
		}
		if e.Skipped {
			continue
		}
		if r.Account.MaxMessageSize > 0 && m.Size > r.Account.MaxMessageSize {
			if !e.TooLarge {
				e.TooLarge = true
				changed = append(changed, e)
			}
			r.problem(m, fmt.Sprintf("%d octets is over MAX_MESSAGE_SIZE (%d); left on the server", m.Size, r.Account.MaxMessageSize))
			continue
		}
		p := &pending{info: m, entry: e}
		if e.Delivered(r.Account.Sinks) {
			r.planDelete(p)
			continue
		}
		for _, s := range r.Account.Sinks {
			st := e.Sinks[s]
			switch {
			case st != nil && !st.DeliveredAt.IsZero():
			case st != nil && st.Permanent && now.Before(st.NextAttempt):
				r.problem(m, fmt.Sprintf("sink %s rejected it (%s); next attempt %s", s, st.LastError, st.NextAttempt.Format(time.RFC3339)))
			default:
				p.sinks = append(p.sinks, s)
			}
		}
		if len(p.sinks) > 0 {
			work = append(work, p)
		}
	}
	if len(changed) > 0 {
		if err := r.ledger.Put(changed...); err != nil {
			return nil, fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
		}
	}
	return work, nil
}

// entryIDs gives each listed message its ledger id: the UIDL, numbered
// when the server lists the same UIDL more than once, so that neither of
// two messages under one id is taken for the other.
func entryIDs(list []pop3.MessageInfo) (ids []string, occ []int) {
	ids, occ = make([]string, len(list)), make([]int, len(list))
	seen := map[string]int{}
	for i, m := range list {
		occ[i] = seen[m.UID]
		ids[i] = state.EntryID(m.UID, occ[i])
		seen[m.UID]++
	}
	return ids, occ
}

// skipExisting records every message present at the first run as seen,
// without sending or deleting any of them (SKIP_EXISTING).
func (r *run) skipExisting(list []pop3.MessageInfo, occ []int, now time.Time) error {
	entries := make([]*state.Entry, len(list))
	for i, m := range list {
		entries[i] = &state.Entry{UIDL: m.UID, Occurrence: occ[i], FirstSeen: now, Size: m.Size, Skipped: true}
	}
	if err := r.ledger.Put(entries...); err != nil {
		return fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	if err := r.ledger.SetMeta(state.AccountMeta{Initialized: now}); err != nil {
		return fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	r.log.Info("SKIP_EXISTING: recorded the messages already on the server without sending them", "messages", len(list))
	return nil
}

// planDelete queues a delivered message for DELE unless the account
// keeps mail (for ever, or until it is older than KEEP).
func (r *run) planDelete(p *pending) {
	if r.Account.Keep.ShouldDelete(p.entry.FirstSeen, r.now()) {
		r.dele = append(r.dele, p)
	}
}

func (r *run) problem(m pop3.MessageInfo, text string) {
	r.res.Problems = append(r.res.Problems, fmt.Sprintf("account %s, message %s: %s", r.Account.Name, m.UID, text))
}

var (
	errStop      = errors.New("stop requested")
	errSinksDown = errors.New("every sink of the account failed")
)

// fetch retrieves the messages (pipelined) in server order and delivers
// each as it arrives.
func (r *run) fetch(work []*pending) error {
	if len(work) == 0 {
		return nil
	}
	nums := make([]int, len(work))
	byNum := make(map[int]*pending, len(work))
	for i, p := range work {
		nums[i] = p.info.Num
		byNum[p.info.Num] = p
	}
	err := r.c.RetrEach(r.ctx, nums, func(num int, body io.Reader, err error) error {
		p := byNum[num]
		if err != nil {
			r.problem(p.info, "RETR failed: "+err.Error())
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
	case errors.Is(err, pop3.ErrMessageTooLarge):
		return fmt.Errorf("account %s: a message was larger than the server's LIST said and over MAX_MESSAGE_SIZE: %w", r.Account.Name, err)
	case err != nil:
		return fmt.Errorf("account %s: %w", r.Account.Name, err)
	}
	return nil
}

// handle spools one message, delivers it to the sinks still missing it
// and commits each result to the ledger as soon as it is known.
func (r *run) handle(p *pending, body io.Reader) error {
	if r.stop.Err() != nil {
		return errStop
	}
	if len(r.down) == len(r.Account.Sinks) {
		return errSinksDown
	}
	spool, size, digest, err := r.spool(body)
	if err != nil {
		return err
	}

	e := p.entry
	if e.SHA256 != "" && e.SHA256 != digest {
		// Same id, different content: a new message reusing the id of
		// one we only partly delivered. Every sink gets it.
		r.log.Warn("message content changed under the same UIDL; delivering it as a new message", "uidl", e.UIDL)
		*e = state.Entry{UIDL: e.UIDL, Occurrence: e.Occurrence, Generation: e.Generation + 1, FirstSeen: e.FirstSeen}
		p.sinks = append([]string(nil), r.Account.Sinks...)
	}
	e.Size, e.SHA256 = size, digest
	e.Key = IdempotencyKey(r.Account.Host, r.Account.Username, e, size, digest)
	msg := &sinks.Message{
		Account: r.Account.Name, Mailbox: r.Account.Username, UIDL: e.UIDL,
		Key: e.Key, Size: size, SHA256: digest, Raw: spool,
	}
	for _, name := range p.sinks {
		if r.down[name] != nil {
			continue
		}
		log := r.log.With("sink", name, "uidl", e.UIDL, "key", e.Key)
		log.Debug("delivering", "size", size)
		err := r.Sinks[name].Deliver(r.ctx, msg)
		st := e.Sink(name)
		now := r.now()
		if err == nil {
			st.DeliveredAt, st.LastError, st.Permanent, st.NextAttempt = now, "", false, time.Time{}
			log.Debug("delivered")
		} else {
			st.Attempts++
			st.LastError = err.Error()
			st.Permanent = sinks.Classify(err) == sinks.OutcomeRejected
			if st.Permanent {
				st.NextAttempt = now.Add(min(rejectRetryMax, rejectRetryMin<<min(st.Attempts-1, 10)))
				r.problem(p.info, fmt.Sprintf("sink %s rejected it permanently: %v", name, err))
				log.Warn("sink rejected the message permanently; it stays on the server", "err", err, "next_attempt", st.NextAttempt)
			} else {
				if r.down == nil {
					r.down = map[string]error{}
				}
				r.down[name] = err
				r.problem(p.info, fmt.Sprintf("sink %s failed: %v; it is not used again in this run", name, err))
				log.Warn("sink failed; its remaining messages wait for the next run", "err", err)
			}
		}
		// Commit before anything else happens: this is what makes a
		// crash repeat at most the delivery in flight.
		if err := r.ledger.Put(e); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		log.Debug("recorded")
	}
	if e.Delivered(r.Account.Sinks) {
		r.res.Delivered++
		r.log.Info("delivered", "uidl", e.UIDL, "key", e.Key, "size", size)
		r.planDelete(p)
	}
	return nil
}

// spool streams the body into the run's private spool file, measuring and
// hashing it on the way. One file serves the whole run, rewritten for each
// message once every sink is done with the previous one: creating and
// removing a file per message costs more than the copy.
func (r *run) spool(body io.Reader) (*os.File, int64, string, error) {
	if r.spoolFile == nil {
		f, err := os.CreateTemp(r.SpoolDir, "msg-*")
		if err != nil {
			return nil, 0, "", fmt.Errorf("spool: %w", err)
		}
		r.spoolFile = f
	}
	f := r.spoolFile
	h := sha256.New()
	_, err := f.Seek(0, io.SeekStart)
	var n int64
	if err == nil {
		n, err = io.Copy(io.MultiWriter(f, h), body)
	}
	if err == nil {
		err = f.Truncate(n)
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("spool %s: %w", f.Name(), err)
	}
	return f, n, hex.EncodeToString(h.Sum(nil)), nil
}

// removeSpool deletes the run's spool file.
func (r *run) removeSpool() {
	if r.spoolFile != nil {
		r.spoolFile.Close()
		os.Remove(r.spoolFile.Name())
		r.spoolFile = nil
	}
}

// deleteAndQuit sends DELE for every delivered message not kept, QUITs,
// and records the deletions once QUIT has confirmed them.
func (r *run) deleteAndQuit() error {
	ctx, cancel := context.WithTimeout(r.ctx, wrapUpTimeout)
	defer cancel()
	var nums []int
	for _, p := range r.dele {
		nums = append(nums, p.info.Num)
	}
	var errs []error
	if len(nums) > 0 {
		var err error
		errs, err = r.c.DeleMany(ctx, nums)
		if err != nil {
			return fmt.Errorf("account %s: DELE: %w", r.Account.Name, err)
		}
	}
	if err := r.c.Quit(ctx); err != nil {
		// Nothing was deleted; the ledger knows what to delete next time.
		return fmt.Errorf("account %s: QUIT (deletions not applied): %w", r.Account.Name, err)
	}
	now := r.now()
	var deleted []*state.Entry
	for i, p := range r.dele {
		if errs[i] != nil {
			r.log.Warn("DELE refused", "uidl", p.entry.UIDL, "err", errs[i])
			continue
		}
		p.entry.DeletedAt = now
		deleted = append(deleted, p.entry)
	}
	r.res.Deleted = len(deleted)
	if len(deleted) > 0 {
		if err := r.ledger.Put(deleted...); err != nil {
			// Harmless: the messages are gone, so they are not listed
			// again and the entries will be pruned.
			r.log.Warn("could not record deletions", "err", err)
		}
	}
	return nil
}

// quit ends a session that did nothing.
func (r *run) quit() {
	ctx, cancel := context.WithTimeout(r.ctx, wrapUpTimeout)
	defer cancel()
	r.c.Quit(ctx)
}

func (r *run) prune(list []pop3.MessageInfo) error {
	ids, _ := entryIDs(list)
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	n, err := r.ledger.Prune(listed, r.now(), pruneGrace)
	if err != nil {
		return fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	if n > 0 {
		r.log.Debug("pruned ledger entries of messages gone from the server", "entries", n)
	}
	return nil
}

// IdempotencyKey is the stable key of one delivery: the same on every
// attempt, different for a different message, whatever the server reuses.
func IdempotencyKey(host, user string, e *state.Entry, size int64, digest string) string {
	h := sha256.New()
	fmt.Fprintf(h, "pophook/1\x00%s\x00%s\x00%d\x00%d\x00%d\x00%s", state.AccountID(host, user), e.UIDL, e.Occurrence, e.Generation, size, digest)
	return "ph1_" + hex.EncodeToString(h.Sum(nil))[:40]
}

func hostPort(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}
