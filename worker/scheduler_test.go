package worker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// gauge is a sink that counts deliveries in progress across every job
// using it, and remembers the most seen at once.
type gauge struct {
	now, most, total atomic.Int64
	hold             time.Duration
}

func (g *gauge) Deliver(ctx context.Context, m *sinks.Message) error {
	n := g.now.Add(1)
	defer g.now.Add(-1)
	for {
		most := g.most.Load()
		if n <= most || g.most.CompareAndSwap(most, n) {
			break
		}
	}
	g.total.Add(1)
	time.Sleep(g.hold)
	return nil
}

func schedulerJobs(t *testing.T, accounts int, sink sinks.Sink, schedule string) []*Job {
	t.Helper()
	var jobs []*Job
	for i := range accounts {
		s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
		t.Cleanup(s.Close)
		var msgs []pop3test.Message
		for k := range 3 {
			msgs = append(msgs, pop3test.Message{Data: []byte(fmt.Sprintf("Subject: %d-%d\n\nbody\n", i, k))})
		}
		s.SetMailbox("alice", msgs)
		acct := fakeAccount(s)
		acct.Name = fmt.Sprintf("acct%d", i)
		acct.Schedule = schedule
		e := newEnv(t, acct, map[string]sinks.Sink{"g": sink})
		e.job.Now = nil
		jobs = append(jobs, e.job)
	}
	return jobs
}

func TestOnceRespectsConcurrency(t *testing.T) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			g := &gauge{hold: 20 * time.Millisecond}
			s := &Scheduler{Jobs: schedulerJobs(t, 4, g, "@every 1h"), Concurrency: limit}
			for _, o := range s.Once(context.Background()) {
				if o.Err != nil || o.Result.Delivered != 3 {
					t.Fatalf("%s: %+v %v", o.Job.Account.Name, o.Result, o.Err)
				}
			}
			if most := g.most.Load(); most > int64(limit) {
				t.Errorf("%d accounts delivering at once, limit %d", most, limit)
			}
			if g.total.Load() != 12 {
				t.Errorf("%d deliveries, want 12", g.total.Load())
			}
		})
	}
}

func TestRunSchedulesAndStops(t *testing.T) {
	g := &gauge{}
	jobs := schedulerJobs(t, 2, g, "@every 1s")
	var mu sync.Mutex
	runs := map[string]int{}
	for _, j := range jobs {
		j.OnEvent = func(e Event) {
			if e.Kind != EventRunDone {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			runs[e.Account]++
			if e.Err != nil {
				t.Errorf("%s: %v", e.Account, e.Err)
			}
		}
	}
	s := &Scheduler{Jobs: jobs, Concurrency: 2}
	ranTwice := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, j := range jobs {
			if runs[j.Account.Name] < 2 {
				return false
			}
		}
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	// Each job runs at start and then on every tick: wait for a second
	// run of each (a liveness check, generous for a loaded machine).
	for deadline := time.Now().Add(30 * time.Second); len(s.NextRuns()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("NextRuns empty while Run runs")
		}
	}
	for name, next := range s.NextRuns() {
		if next.IsZero() || next.After(time.Now().Add(2*time.Second)) {
			t.Errorf("%s: next run %s, want within a second (@every 1s)", name, next)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); !ranTwice(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("jobs on @every 1s did not run twice in 30s: %v", runs)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancellation")
	}
	if g.total.Load() != 6 {
		t.Errorf("%d deliveries, want each of the 6 messages once", g.total.Load())
	}
	if s.NextRuns() != nil {
		t.Error("NextRuns after Run returned")
	}
}

// A tick during a run is not lost: the job runs again as soon as the run
// ends. Several ticks during one run make one more run, not several.
func TestTickGate(t *testing.T) {
	var g tickGate
	if !g.enter() {
		t.Fatal("an idle job did not start")
	}
	for i := 0; i < 2; i++ {
		if g.enter() {
			t.Fatalf("a running job started again on tick %d", i+1)
		}
	}
	if !g.leave() {
		t.Fatal("the ticks during the run were lost")
	}
	if g.enter() {
		t.Fatal("started while the repeat runs")
	}
	if !g.leave() {
		t.Fatal("the tick during the repeat was lost")
	}
	if g.leave() {
		t.Fatal("ran again with no tick")
	}
	if !g.enter() {
		t.Fatal("an idle job did not start after its runs")
	}
	g.enter()
	g.abandon()
	if !g.enter() {
		t.Fatal("a stopped run left the gate closed")
	}
}

// The start delay is at most a tenth of the interval, and at most the
// limit: on @every 10s a message waits at most 11 s.
func TestJitterBound(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for spec, want := range map[string]time.Duration{
		"@every 10s":  time.Second,
		"@every 1m":   5 * time.Second,
		"*/5 * * * *": 5 * time.Second,
		"@every 2s":   200 * time.Millisecond,
		"@hourly":     5 * time.Second,
	} {
		sched, err := cron.ParseStandard(spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := jitterBound(sched, 5*time.Second, now); got != want {
			t.Errorf("%s: jitter up to %s, want %s", spec, got, want)
		}
	}
}
