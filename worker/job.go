// Package worker runs pophook's fetch jobs: one per account, on a cron
// schedule, each logging in over POP3, fetching what the ledger has not
// seen delivered, handing it to the account's sinks, recording the outcome
// and only then deleting (docs/design.md).
//
// The files follow a run: login.go (dial, log in, audit), plan.go (a pure
// function from listing and ledger to what to do), deliver.go (fetch,
// spool, hand to the sinks, record), wrapup.go (DELE, QUIT, prune). The
// worker takes typed accounts and sinks and never reads the environment.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

const (
	// pruneGrace is how long a ledger entry outlives its message on the
	// server, so a server's bad day (an empty listing) re-sends nothing.
	pruneGrace = 14 * 24 * time.Hour

	// After a rejection a message is offered again after rejectRetryMin,
	// doubling up to rejectRetryMax.
	rejectRetryMin = time.Hour
	rejectRetryMax = 24 * time.Hour

	// A refused login backs off from loginBackoffMin, doubling up to
	// loginBackoffMax when the server said the credentials are wrong, and
	// up to vagueBackoffMax when it gave no reason (a wrong password, or
	// a mailbox it could not open, which fixes itself more often).
	loginBackoffMin = time.Minute
	loginBackoffMax = time.Hour
	vagueBackoffMax = 10 * time.Minute

	// wrapUpTimeout bounds DELE and QUIT after a job was told to stop.
	wrapUpTimeout = 30 * time.Second

	// maxSessions bounds the sessions of one run: a session that ends for
	// a reason a new one gets past (broken pipelining, an oversized
	// message that closed the connection) is followed by another.
	maxSessions = 3
)

// Job fetches one account. Its fields are set once; Run may be called
// again and again but never concurrently (the scheduler sees to that).
type Job struct {
	Account *Account
	// Sinks holds every sink named in Account.Sinks.
	Sinks map[string]sinks.Sink
	// SinkConfig fingerprints each sink's configuration (see
	// state.Ledger.Fingerprint); a rejection recorded under another
	// fingerprint is offered again. Optional.
	SinkConfig map[string]string
	Ledger     *state.Ledger
	SpoolDir   string
	Logger     *slog.Logger
	Now        func() time.Time // nil: time.Now
	// Trace, if set, receives the redacted POP3 exchange.
	Trace io.Writer
	// OnEvent, if set, is told of deliveries, problems and the end of
	// every run, from the run's goroutine.
	OnEvent func(Event)

	mu        sync.Mutex // held by a run
	lastLogin string     // what the last login audit said; see audit

	statusMu sync.Mutex
	status   Status
}

// Status returns the job's state; it does not wait for a run.
func (j *Job) Status() Status {
	j.statusMu.Lock()
	defer j.statusMu.Unlock()
	return j.status
}

// Run performs one pass over the account. Cancelling ctx asks it to stop
// early: it finishes the message in hand, sends DELE only for what is
// delivered and recorded, and QUITs. The error is nil when the session ran
// to its end, even if some messages failed (see Result.Problems), and when
// the run was skipped (see Result.Skipped).
func (j *Job) Run(ctx context.Context) (Result, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := &run{Job: j, stop: ctx, log: j.logger()}
	// Network I/O and sink calls are not cut short by a stop request; each
	// has its own bounds. Only a second signal (process exit) cuts them.
	r.ctx = context.WithoutCancel(ctx)
	r.res.Account = j.Account.Name
	r.res.Started = j.now()
	j.setStatus(func(s *Status) { s.Account, s.Running, s.RunStarted = j.Account.Name, true, r.res.Started })

	err := r.run()

	r.res.Duration = j.now().Sub(r.res.Started)
	r.res.LoginFailures = r.meta.Login.Failures
	res := r.res
	j.setStatus(func(s *Status) { s.Running, s.Last, s.LastErr = false, &res, err })
	j.emit(Event{Kind: EventRunDone, Result: &res, Err: err})
	return res, err
}

func (j *Job) setStatus(f func(*Status)) {
	j.statusMu.Lock()
	f(&j.status)
	j.statusMu.Unlock()
}

func (j *Job) emit(e Event) {
	if j.OnEvent == nil {
		return
	}
	e.Account = j.Account.Name
	if e.At.IsZero() {
		e.At = j.now()
	}
	j.OnEvent(e)
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

// raiseFloor moves up the latest time the ledger has recorded for the
// account (see PlanInput.Floor).
func (r *run) raiseFloor(t time.Time) {
	if t.After(r.floor) {
		r.floor = t
	}
}

// run is the state of one pass.
type run struct {
	*Job
	ctx       context.Context // for I/O: never cancelled by a stop request
	stop      context.Context // cancelled when the job should wrap up
	log       *slog.Logger
	ledger    *state.Account
	meta      state.AccountMeta
	secret    string
	credFP    string // fingerprint of the credential in use
	refreshed bool   // a refused token was replaced once in this run
	res       Result
	listed    map[string]bool // ledger ids of the session's listing, as the plan matched them
	// cut holds the ids of messages whose RETR the connection broke in
	// this run: later sessions of the run leave them for the next run, so
	// that one message the server (or the path to it) always cuts does not
	// hold up the rest of the mailbox.
	cut map[string]bool
	// unsaved are results not yet committed (see commit).
	unsaved unsaved
	// floor is the latest time the ledger has recorded for the account.
	floor time.Time

	// per session
	aborted bool // fetch closed the connection (see drainGrace)
	c       *pop3.Client
	down    map[string]error // sinks that failed in this run
	dele    []*Pending       // delivered, to be deleted
	spools  spoolPool        // files holding fetched messages; see fetch
	// metaUnsaved: meta has changes for the next commit to store.
	metaUnsaved bool
	// known is every ledger entry of the account as read for the plan
	// (when the listing was large enough to read them all), so that the
	// prune need not read them again.
	known map[string]*state.Entry
}

var (
	// errAgain ends a session that a new one gets past.
	errAgain = errors.New("new session needed")
	// errSkip ends a run that was skipped (Result.Skipped says why).
	errSkip = errors.New("run skipped")
)

func (r *run) run() error {
	a := r.Account
	r.ledger = r.Ledger.Account(a.LedgerID())
	var err error
	if r.meta, err = r.ledger.Meta(); err != nil {
		return fmt.Errorf("account %s: ledger: %w", a.Name, err)
	}
	if a.Credential == nil {
		return fmt.Errorf("account %s: no credential", a.Name)
	}
	// A credential that changes by itself (OAuth2) is fingerprinted by its
	// configuration, and before its secret is fetched: a back-off must
	// spare the token endpoint too.
	if fp, ok := a.Credential.(fingerprinter); ok {
		r.credFP = r.Ledger.Fingerprint(a.Host, a.Username, string(a.mechanism()), fp.Fingerprint())
		if r.waiting() {
			return nil
		}
	}
	if r.secret, err = a.Credential.Secret(r.ctx); err != nil {
		if errors.Is(err, ErrCredentialRefused) {
			return r.loginFailed(err)
		}
		return fmt.Errorf("account %s: reading the credential: %w", a.Name, err)
	}
	if r.credFP == "" {
		r.credFP = r.Ledger.Fingerprint(a.Host, a.Username, string(a.mechanism()), r.secret)
		if r.waiting() {
			return nil
		}
	}
	r.spools.dir = r.SpoolDir
	defer r.spools.remove()
	defer func() {
		// The batch is recorded either way; this only keeps it through
		// a damaged meta page (see state.Account.PutBatch).
		if err := r.Ledger.Settle(); err != nil {
			r.log.Warn("ledger: could not write the transaction that follows a batch", "err", err)
		}
	}()
	for n := 1; ; n++ {
		err := r.session()
		switch {
		case errors.Is(err, errSkip):
			return nil
		case errors.Is(err, errAgain) && n < maxSessions:
			if wait := r.meta.Login.NotBefore; r.now().Before(wait) {
				r.log.Info("the server asks for a delay between logins; the rest waits for the next run", "next_attempt", wait.Format(time.RFC3339))
				return nil
			}
			r.log.Info("starting a new session for the rest of the mailbox")
			continue
		case errors.Is(err, errAgain):
			return fmt.Errorf("account %s: gave up after %d sessions in one run", a.Name, n)
		}
		return err
	}
}

// waiting skips the run while a login back-off or the server's login delay
// lasts. A changed credential ends a back-off at once.
func (r *run) waiting() bool {
	l := r.meta.Login
	if !r.now().Before(l.NotBefore) {
		return false
	}
	// A wait longer than it was ever set for means the clock went back
	// since: end it rather than wait out the jump (a year, perhaps).
	longest := l.Wait
	if longest <= 0 {
		longest = loginBackoffMax
	}
	if l.NotBefore.Sub(r.now()) > longest {
		r.log.Warn("the clock went back since the last login wait was set; not waiting", "not_before", l.NotBefore.Format(time.RFC3339))
		return false
	}
	if l.Failures > 0 && l.Credential != r.credFP {
		r.log.Info("the credential changed since the last refused login; trying now")
		return false
	}
	r.res.Skipped, r.res.NextAttempt, r.res.SkipDetail = SkipLoginDelay, l.NotBefore, l.Reason
	if l.Failures > 0 {
		r.res.Skipped = SkipAuthBackoff
		r.res.SkipDetail = fmt.Sprintf("refused %d times, last: %s; change the credential to try at once", l.Failures, l.Reason)
	}
	return true
}

// session is one POP3 session: log in, list, plan, fetch and deliver,
// delete, quit, prune. State that can cost mail changes only after a
// complete listing from this very session.
func (r *run) session() error {
	a := r.Account
	c, info, err := Dial(r.ctx, a, r.secret, DialOptions{DisablePipelining: r.meta.NoPipelining, Trace: r.Trace})
	if inv, ok := a.Credential.(invalidator); ok && errors.Is(err, pop3.ErrAuth) && !r.refreshed {
		// A token the server refused gets one fresh successor before the
		// refusal counts (it may have been revoked or expired early).
		r.refreshed = true
		inv.Invalidate()
		if r.secret, err = a.Credential.Secret(r.ctx); err != nil {
			if errors.Is(err, ErrCredentialRefused) {
				return r.loginFailed(err)
			}
			return fmt.Errorf("account %s: reading the credential: %w", a.Name, err)
		}
		r.log.Info("the server refused the access token; trying once more with a fresh one")
		return errAgain
	}
	if err != nil {
		return r.loginFailed(err)
	}
	r.c = c
	defer c.Close()
	if err := r.loggedIn(info); err != nil {
		return err
	}

	// An idle mark (see idle.go) is read, with the version of the entries
	// it rests on, before anything else of the ledger.
	mark, version, err := r.ledger.Idle()
	if err != nil {
		return fmt.Errorf("account %s: ledger: %w", a.Name, err)
	}
	// The ledger is read while the server lists: for a large mailbox both
	// take a while, and the plan needs both. With an idle mark, the
	// listing is likely to need no more, and the read waits for it.
	var early *entriesAhead
	if mark.Digest == nil {
		early = r.readAhead()
	}
	defer func() { early.cancel() }()
	list, err := c.Listing(r.ctx, mark.Listed)
	switch {
	case errors.Is(err, pop3.ErrPipeliningBroken):
		r.log.Warn("server advertises PIPELINING but drops pipelined commands; using lock-step from now on", "err", err)
		r.meta.NoPipelining = true
		if err := r.ledger.SetMeta(r.meta); err != nil {
			return fmt.Errorf("account %s: ledger: %w", a.Name, err)
		}
		return errAgain
	case errors.Is(err, pop3.ErrNoUIDL):
		r.quit()
		return fmt.Errorf("account %s: the server does not support UIDL, so pophook cannot tell which messages it has delivered: %w", a.Name, err)
	case err != nil:
		return fmt.Errorf("account %s: listing the mailbox: %w", a.Name, err)
	}
	r.res.Listed = len(list)
	var digest []byte
	if len(list) > idleAbove {
		digest = r.idleDigest(list)
		if idleHolds(mark, digest, r.now()) {
			r.res.Unchanged = true
			r.log.Debug("the listing is the one the last poll found nothing to do for; nothing read or planned",
				"messages", len(list), "until", mark.Until.Format(time.RFC3339))
			r.quit()
			return nil
		}
	}
	if early == nil {
		early = r.readAhead()
	}

	plan, err := r.plan(list, early)
	if err != nil {
		r.quit()
		return err
	}
	r.dele = plan.Delete
	if len(r.cut) > 0 {
		plan.Fetch = slices.DeleteFunc(plan.Fetch, func(p *Pending) bool { return r.cut[p.Entry.ID()] })
	}
	if len(plan.Fetch) > 0 {
		var size int64
		for _, p := range plan.Fetch {
			size += p.Info.Size
		}
		r.emit(Event{Kind: EventPlanned, Count: len(plan.Fetch), Size: size})
	}
	r.aborted = false
	fetchErr := r.fetch(plan.Fetch)
	// What was delivered is on record before anything is deleted, and
	// before a new session plans from the ledger.
	if err := r.commit(); err != nil {
		r.quit()
		return fmt.Errorf("account %s: %w", a.Name, err)
	}
	if r.metaUnsaved {
		if err := r.ledger.SetMeta(r.meta); err != nil {
			r.quit()
			return fmt.Errorf("account %s: ledger: %w", a.Name, err)
		}
		r.metaUnsaved = false
	}
	if errors.Is(fetchErr, errAgain) {
		return errAgain
	}
	if !r.aborted {
		if err := r.deleteAndQuit(); err != nil && fetchErr == nil {
			fetchErr = err
		}
	}
	if err := r.prune(list); err != nil && fetchErr == nil {
		fetchErr = err
	}
	if digest != nil && fetchErr == nil && !r.aborted {
		now := r.now()
		if until, ok := r.idleUntil(list, plan, r.known, now); ok {
			stored, err := r.ledger.SetIdleMark(state.IdleMark{Digest: digest, Since: now, Until: until, Listed: len(list)}, version)
			if err != nil {
				r.log.Warn("ledger: could not record that the poll found nothing to do", "err", err)
			} else if stored {
				r.log.Debug("nothing to do: the same listing will not be planned again", "until", until.Format(time.RFC3339))
			}
		}
	}
	return fetchErr
}

// loggedIn audits the login, ends a back-off and records the server's
// login delay.
func (r *run) loggedIn(info LoginInfo) error {
	r.audit(info)
	l := state.LoginState{}
	if info.LoginDelay > 0 {
		l = state.LoginState{NotBefore: r.now().Add(info.LoginDelay), Wait: info.LoginDelay, Reason: fmt.Sprintf("LOGIN-DELAY %s", info.LoginDelay)}
	}
	if l == r.meta.Login {
		return nil
	}
	r.meta.Login = l
	if err := r.ledger.SetMeta(r.meta); err != nil {
		return fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	return nil
}

// audit records what a login was protected by: TLS version, cipher suite
// and the server's certificate. At info level when that changes (the first
// login, a new certificate), at debug level otherwise, so the log shows
// every change without repeating itself every minute.
func (r *run) audit(info LoginInfo) {
	attrs := info.auditAttrs(r.Account.Username)
	if seen := info.String(); seen != r.lastLogin {
		r.lastLogin = seen
		r.log.Info("logged in", attrs...)
		return
	}
	r.log.Debug("logged in", attrs...)
}

// loginFailed turns a failed connect or login into the run's outcome:
// mailbox in use or login delay skip the run quietly; a refused login
// backs off, longer when the server said the credentials are wrong; a
// mechanism the server does not offer backs off like a wrong password,
// since only a configuration change can help; anything else is an error
// for the next tick to retry.
func (r *run) loginFailed(err error) error {
	a := r.Account
	now := r.now()
	var pe *pop3.Error
	errors.As(err, &pe)
	switch {
	case errors.Is(err, pop3.ErrInUse):
		r.res.Skipped, r.res.SkipDetail = SkipInUse, pe.Error()
		return errSkip
	case errors.Is(err, pop3.ErrLoginDelay):
		r.res.Skipped, r.res.SkipDetail = SkipLoginDelay, pe.Error()
		r.res.NextAttempt = r.meta.Login.NotBefore
		return errSkip
	case errors.Is(err, pop3.ErrAuth), errors.Is(err, pop3.ErrMechanism), errors.Is(err, ErrCredentialRefused):
		r.res.LoginRefused = true
		r.res.NextAttempt = time.Time{} // set below
		vague := pe != nil && pe.Vague
		l := r.meta.Login
		if l.Credential != r.credFP {
			l.Failures = 0
		}
		l.Failures++
		ceiling := loginBackoffMax
		if vague {
			ceiling = vagueBackoffMax
		}
		wait := min(ceiling, loginBackoffMin<<min(l.Failures-1, 10))
		l.NotBefore, l.Wait, l.Credential, l.Reason = now.Add(wait), wait, r.credFP, err.Error()
		r.meta.Login = l
		r.res.NextAttempt = l.NotBefore
		if err := r.ledger.SetMeta(r.meta); err != nil {
			r.log.Error("could not record the login back-off", "err", err)
		}
		var what string
		switch {
		case errors.Is(err, ErrCredentialRefused):
			what = "the credential was refused before the login"
		case errors.Is(err, pop3.ErrMechanism):
			what = "the authentication mechanism is not one the server offers: change AUTH"
		case vague:
			what = "the server refused the login without saying why: a wrong user name or password, or a mailbox it cannot open"
		default:
			what = "authentication failed: check the user name and password"
		}
		r.log.Error(what+"; backing off", "err", err, "failures", l.Failures, "next_attempt", l.NotBefore.Format(time.RFC3339))
		return fmt.Errorf("account %s: %s (refused %d time(s); next attempt at %s): %w",
			a.Name, what, l.Failures, l.NotBefore.Format(time.RFC3339), err)
	}
	return fmt.Errorf("account %s: %w", a.Name, err)
}

// plan loads the ledger's view of the listing, plans, and commits what
// the plan records before anything is fetched.
func (r *run) plan(list []pop3.MessageInfo, early *entriesAhead) (Plan, error) {
	a := r.Account
	ids, occ, listed := listingIDs(list)
	var entries map[string]*state.Entry
	var err error
	if len(ids) > readAheadAbove {
		entries, err = early.wait()
		r.known = entries
	} else {
		early.cancel()
		r.known = nil
		entries, err = r.ledger.GetListed(ids, listed)
	}
	if err != nil {
		return Plan{}, fmt.Errorf("account %s: ledger: %w", a.Name, err)
	}
	if reused := Reused(list, ids, occ, entries); len(reused) > 0 {
		families, err := r.ledger.Family(reused)
		if err != nil {
			return Plan{}, fmt.Errorf("account %s: ledger: %w", a.Name, err)
		}
		ids, occ = MatchIDs(list, ids, occ, families)
		for _, fam := range families {
			for _, e := range fam {
				entries[e.ID()] = e
			}
		}
		listed = make(map[string]bool, len(ids))
		for _, id := range ids {
			listed[id] = true
		}
	}
	r.listed = listed
	if sizesNeeded(list, ids, entries, a.Sinks, !r.meta.Initialized.IsZero()) {
		if err := r.c.AddSizes(r.ctx, list); err != nil {
			return Plan{}, fmt.Errorf("account %s: listing the mailbox: %w", a.Name, err)
		}
	}
	r.raiseFloor(r.meta.Initialized)
	for _, e := range entries {
		r.raiseFloor(e.FirstSeen)
		r.raiseFloor(e.MissingSince)
		r.raiseFloor(e.DeletedAt)
		for _, st := range e.Sinks {
			r.raiseFloor(st.DeliveredAt)
		}
	}
	p := MakePlan(PlanInput{
		Listing: list, Entries: entries, IDs: ids, Occurrences: occ, Initialized: !r.meta.Initialized.IsZero(),
		Sinks: a.Sinks, SinkConfig: r.SinkConfig, SkipExisting: a.SkipExisting,
		MaxMessageSize: a.MaxMessageSize, Keep: a.Keep, Now: r.now(), Floor: r.floor,
	})
	if p.Initialize {
		r.meta.Initialized = r.now()
	}
	var err2 error
	switch {
	case p.Initialize && len(p.Record) == 0 && !a.SkipExisting:
		// A first listing with nothing else to record: that it happened
		// goes with the first batch of results (commit), one transaction
		// fewer for a new account. A crash before then only makes the
		// next listing a first one too.
		r.metaUnsaved = true
	case p.Initialize:
		err2 = r.ledger.PutMeta(r.meta, p.Record...)
		if err2 == nil && a.SkipExisting {
			r.log.Info("SKIP_EXISTING: recorded the messages already on the server without sending them", "messages", len(p.Record))
		}
	case len(p.Record) > 0:
		err2 = r.ledger.Put(p.Record...)
	}
	if err2 != nil {
		return Plan{}, fmt.Errorf("account %s: ledger: %w", a.Name, err2)
	}
	for s := range p.Reoffered {
		r.log.Info("the sink's configuration changed since it rejected messages; offering them again", "sink", s)
	}
	for _, pr := range p.Problems {
		r.problem(pr)
	}
	return p, nil
}

// sizesNeeded reports whether the plan needs the messages' sizes (one
// LIST): for a first listing, a message the ledger does not know or
// knows as deleted, and a message not yet delivered everywhere. An idle
// poll of a mailbox whose messages are all delivered and kept needs
// none, and the server is spared listing them all a second time.
func sizesNeeded(list []pop3.MessageInfo, ids []string, entries map[string]*state.Entry, sinks []string, initialized bool) bool {
	if !initialized {
		return true
	}
	for i := range list {
		if !settled(entries[ids[i]], sinks) {
			return true
		}
	}
	return false
}

// settled reports whether the ledger's entry says a listed message needs
// nothing more: delivered to every sink (or skipped by SKIP_EXISTING),
// and not a deleted message whose id the server now lists again.
func settled(e *state.Entry, sinks []string) bool {
	return e != nil && e.DeletedAt.IsZero() && (e.Skipped || e.Delivered(sinks))
}

// readAheadAbove is the listing size above which the plan uses the
// entries read while the server listed, rather than look up each id.
const readAheadAbove = 1000

// entriesAhead reads all of an account's ledger entries in the background.
type entriesAhead struct {
	stop    atomic.Bool
	done    chan struct{}
	entries map[string]*state.Entry
	err     error
}

func (r *run) readAhead() *entriesAhead {
	e := &entriesAhead{done: make(chan struct{})}
	go func() {
		defer close(e.done)
		e.entries, e.err = r.ledger.All(&e.stop)
	}()
	return e
}

// wait returns every entry of the account.
func (e *entriesAhead) wait() (map[string]*state.Entry, error) {
	<-e.done
	return e.entries, e.err
}

// cancel stops the read, for a listing small enough to look up id by id,
// and waits for it to end: a read transaction left open would hold back
// the ledger's writers. A nil e was never started.
func (e *entriesAhead) cancel() {
	if e == nil {
		return
	}
	e.stop.Store(true)
	<-e.done
}

// problem records a problem in the result and reports it.
func (r *run) problem(p Problem) {
	for _, have := range r.res.Problems {
		if have.Kind == p.Kind && have.UIDL == p.UIDL && have.Sink == p.Sink {
			return // a later session of the same run found it again
		}
	}
	r.res.Problems = append(r.res.Problems, p)
	r.emit(Event{Kind: EventProblem, Problem: p})
}
