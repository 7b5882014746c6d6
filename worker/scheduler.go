package worker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Outcome is one finished run of one job.
type Outcome struct {
	Job    *Job
	Result Result
	Err    error
}

// Scheduler runs jobs on their accounts' schedules, at most Concurrency
// at a time, never one job twice at once. What the runs did is reported
// by each job's OnEvent hook.
type Scheduler struct {
	Jobs        []*Job
	Concurrency int // accounts fetched at the same time; <1 means 1
	// Jitter is the longest random delay before a scheduled run, so that
	// accounts on one server spread out; each job's is also at most a
	// tenth of its schedule's interval, so a short schedule stays on time.
	Jitter time.Duration
	Logger *slog.Logger

	mu      sync.Mutex
	cron    *cron.Cron
	entries map[string]cron.EntryID // by account name, while Run runs
}

// NextRuns gives each account's next scheduled run while Run is running;
// nil otherwise.
func (s *Scheduler) NextRuns() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cron == nil {
		return nil
	}
	out := make(map[string]time.Time, len(s.entries))
	for name, id := range s.entries {
		out[name] = s.cron.Entry(id).Next
	}
	return out
}

func (s *Scheduler) slots() chan struct{} {
	return make(chan struct{}, max(1, s.Concurrency))
}

func (s *Scheduler) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Once runs every job once, up to Concurrency at a time, and returns the
// outcomes in job order. Cancelling ctx makes running jobs wrap up (see
// Job.Run) and jobs not yet started return ctx's error.
func (s *Scheduler) Once(ctx context.Context) []Outcome {
	out := make([]Outcome, len(s.Jobs))
	slots := s.slots()
	var wg sync.WaitGroup
	for i, j := range s.Jobs {
		wg.Go(func() {
			out[i] = s.runOne(ctx, slots, j)
		})
	}
	wg.Wait()
	return out
}

func (s *Scheduler) runOne(ctx context.Context, slots chan struct{}, j *Job) Outcome {
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	case <-ctx.Done():
		return Outcome{Job: j, Err: fmt.Errorf("account %s: not started: %w", j.Account.Name, ctx.Err())}
	}
	if ctx.Err() != nil {
		return Outcome{Job: j, Err: fmt.Errorf("account %s: not started: %w", j.Account.Name, ctx.Err())}
	}
	res, err := j.Run(ctx)
	return Outcome{Job: j, Result: res, Err: err}
}

// Run schedules the jobs until ctx is cancelled: each runs once at start
// and then on its SCHEDULE. On cancellation nothing new starts, running
// jobs wrap up (finish the message in hand, delete only what is recorded,
// QUIT), and Run returns when they have.
func (s *Scheduler) Run(ctx context.Context) error {
	c := cron.New(cron.WithLogger(cronLogger{s.logger()}))
	slots := s.slots()
	// running counts runs under way; once stopping is set no run starts,
	// so waiting on running cannot race with a late start.
	var (
		running  sync.WaitGroup
		gate     sync.Mutex
		stopping bool
	)
	enter := func() bool {
		gate.Lock()
		defer gate.Unlock()
		if stopping {
			return false
		}
		running.Add(1)
		return true
	}
	entries := map[string]cron.EntryID{}
	for _, j := range s.Jobs {
		sched, err := cron.ParseStandard(j.Account.Schedule)
		if err != nil {
			return fmt.Errorf("account %s: schedule %q: %w", j.Account.Name, j.Account.Schedule, err)
		}
		jitter := jitterBound(sched, s.Jitter, time.Now())
		var g tickGate // never the same job twice at once
		run := func() {
			if !enter() {
				return
			}
			defer running.Done()
			if !g.enter() {
				s.logger().Info("previous fetch still running; the next starts as soon as it ends", "account", j.Account.Name)
				return
			}
			wait := randomDelay(jitter)
			for {
				if !sleep(ctx, wait) {
					g.abandon()
					return
				}
				s.runOne(ctx, slots, j)
				if ctx.Err() != nil {
					g.abandon()
					return
				}
				if !g.leave() {
					return
				}
				wait = 0 // a tick that came while the run ran starts now
			}
		}
		entries[j.Account.Name] = c.Schedule(sched, cron.FuncJob(run))
		go run()
	}
	s.mu.Lock()
	s.cron, s.entries = c, entries
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cron, s.entries = nil, nil
		s.mu.Unlock()
	}()
	c.Start()
	<-ctx.Done()
	gate.Lock()
	stopping = true
	gate.Unlock()
	<-c.Stop().Done()
	running.Wait()
	return nil
}

// jitterBound is the longest start delay for a schedule: at most limit
// and at most a tenth of the interval between its next two runs.
func jitterBound(sched cron.Schedule, limit time.Duration, now time.Time) time.Duration {
	a := sched.Next(now)
	return max(0, min(limit, sched.Next(a).Sub(a)/10))
}

func randomDelay(bound time.Duration) time.Duration {
	if bound <= 0 {
		return 0
	}
	return rand.N(bound)
}

// tickGate keeps one job from running twice at once without losing a tick:
// a tick that comes while the job runs is remembered, once, and the job
// runs again as soon as it ends, rather than a whole interval later.
type tickGate struct {
	mu    sync.Mutex
	busy  bool
	again bool
}

// enter reports whether the caller should run the job now; if it is
// already running, the tick is remembered instead.
func (g *tickGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy {
		g.again = true
		return false
	}
	g.busy = true
	return true
}

// leave ends a run. It reports whether a tick came meanwhile; if so the
// caller still holds the gate and runs again.
func (g *tickGate) leave() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.again {
		g.again = false
		return true
	}
	g.busy = false
	return false
}

// abandon ends a run when the scheduler stops, forgetting any tick.
func (g *tickGate) abandon() {
	g.mu.Lock()
	g.busy, g.again = false, false
	g.mu.Unlock()
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// cronLogger sends robfig/cron's own messages to slog.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
