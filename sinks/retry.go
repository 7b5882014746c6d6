package sinks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Defaults of Retry.
const (
	DefaultRetryMin = 500 * time.Millisecond
	DefaultRetryMax = 10 * time.Second
	DefaultBudget   = 45 * time.Second
)

// Retry is the policy every sink applies within one delivery: the wait
// before retry n (n = 1, 2, ...) is Min·2ⁿ⁻¹ capped at Max, with ±25%
// jitter so that accounts sharing a receiver do not retry in step, never
// shorter than what the receiver asked for (Retry-After, an SMTP 421's
// advice), and never past Budget, which bounds the whole delivery so that
// a dead sink costs a run a bounded time. The zero value uses the
// defaults above.
type Retry struct {
	Min, Max time.Duration
	Budget   time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Min <= 0 {
		r.Min = DefaultRetryMin
	}
	if r.Max <= 0 {
		r.Max = DefaultRetryMax
	}
	if r.Budget <= 0 {
		r.Budget = DefaultBudget
	}
	return r
}

// BudgetOrDefault is the budget in force.
func (r Retry) BudgetOrDefault() time.Duration { return r.withDefaults().Budget }

// Backoff is the wait after the n-th failed attempt, before any
// Retry-After is applied.
func (r Retry) Backoff(n int) time.Duration {
	r = r.withDefaults()
	d := min(r.Max, r.Min<<min(max(n, 1)-1, 16))
	if d/2 <= 0 {
		return d
	}
	return d*3/4 + rand.N(d/2)
}

// Next decides, after the n-th failed attempt with left of the budget
// remaining, how long to wait before the next one. retryAfter is what the
// receiver asked for (hasRetryAfter false when it said nothing). When the
// wait would not fit in what is left, it returns an error that says why;
// retrying then would only overrun the budget.
func (r Retry) Next(n int, retryAfter time.Duration, hasRetryAfter bool, left time.Duration) (time.Duration, error) {
	r = r.withDefaults()
	if hasRetryAfter && retryAfter > left {
		return 0, fmt.Errorf("the receiver asked to retry after %s, beyond the %s left of the delivery budget",
			retryAfter.Round(time.Second), max(0, left).Round(100*time.Millisecond))
	}
	wait := max(r.Backoff(n), retryAfter)
	if wait >= left {
		return 0, fmt.Errorf("the delivery budget of %s would run out before the next attempt", r.Budget)
	}
	return wait, nil
}

// RetryAfterError is implemented by errors that carry the receiver's
// advice on when to try again.
type RetryAfterError interface {
	error
	RetryAfter() time.Duration
}

// Do runs attempt until it succeeds, fails with a rejection or
// unavailability (returned at once, as they are), or the budget is spent.
// Each attempt gets a context bounded by what is left of the budget. The
// final error of a temporary failure names the attempts made and wraps
// the last failure. onRetry, if not nil, is called before each wait (for
// a debug log).
func (r Retry) Do(ctx context.Context, attempt func(ctx context.Context) error, onRetry func(n int, err error, wait time.Duration)) error {
	r = r.withDefaults()
	start := time.Now()
	bctx, cancel := context.WithTimeout(ctx, r.Budget)
	defer cancel()
	deadline, _ := bctx.Deadline()
	var answered error // the last failure not caused by the budget running out
	for n := 1; ; n++ {
		err := attempt(bctx)
		if Classify(err) != OutcomeTemporary {
			return err
		}
		if bctx.Err() != nil && ctx.Err() == nil && answered != nil {
			// The attempt ran into the end of the budget (a dial or a
			// read cut short). The receiver's own last answer says more
			// about why delivery failed than "i/o timeout" does.
			return &GaveUp{Reason: fmt.Sprintf("the delivery budget of %s is spent", r.Budget), Attempts: n, Elapsed: time.Since(start), Last: answered}
		}
		answered = err
		if ctx.Err() != nil {
			return fmt.Errorf("delivery cancelled after %d attempt(s): %w", n, errors.Join(ctx.Err(), err))
		}
		var ra RetryAfterError
		advice, hasAdvice := time.Duration(0), errors.As(err, &ra)
		if hasAdvice {
			advice = ra.RetryAfter()
		}
		wait, stop := r.Next(n, advice, hasAdvice, time.Until(deadline))
		if stop == nil && bctx.Err() != nil {
			stop = fmt.Errorf("the delivery budget of %s is spent", r.Budget)
		}
		if stop != nil {
			return &GaveUp{Reason: stop.Error(), Attempts: n, Elapsed: time.Since(start), Last: err}
		}
		if onRetry != nil {
			onRetry(n, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-bctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("delivery cancelled after %d attempt(s): %w", n, errors.Join(ctx.Err(), err))
			}
			return &GaveUp{Reason: fmt.Sprintf("the delivery budget of %s is spent", r.Budget), Attempts: n, Elapsed: time.Since(start), Last: err}
		}
	}
}

// GaveUp is a temporary failure after retries: why the sink stopped
// trying, how often it tried and the last failure (the last one the
// receiver caused, when the final attempt was only cut off by the budget).
type GaveUp struct {
	Reason   string
	Attempts int
	Elapsed  time.Duration
	Last     error
}

func (e *GaveUp) Error() string {
	return fmt.Sprintf("%s; %d attempt(s) in %s, the last: %v", e.Reason, e.Attempts, e.Elapsed.Round(10*time.Millisecond), e.Last)
}

func (e *GaveUp) Unwrap() error { return e.Last }
