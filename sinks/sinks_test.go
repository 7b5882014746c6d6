package sinks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	base := errors.New("boom")
	cases := []struct {
		err  error
		want Outcome
	}{
		{nil, OutcomeDelivered},
		{base, OutcomeTemporary},
		{Reject(base), OutcomeRejected},
		{Unavailable(base), OutcomeUnavailable},
		{fmt.Errorf("wrapped: %w", Reject(base)), OutcomeRejected},
		{Unavailable(fmt.Errorf("x: %w", Reject(base))), OutcomeUnavailable}, // outermost wins
		{&GaveUp{Reason: "budget", Attempts: 3, Last: base}, OutcomeTemporary},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
	if Reject(nil) != nil || Unavailable(nil) != nil {
		t.Error("marking nil must stay nil")
	}
	if !errors.Is(Reject(base), base) {
		t.Error("a marked error must unwrap to its cause")
	}
}

func TestBackoff(t *testing.T) {
	r := Retry{}
	for n := 1; n < 80; n++ {
		base := min(DefaultRetryMax, DefaultRetryMin<<min(n-1, 16))
		for range 50 {
			d := r.Backoff(n)
			if d < base*3/4 || d >= base*5/4 {
				t.Fatalf("Backoff(%d) = %s, want within 25%% of %s", n, d, base)
			}
		}
	}
}

func TestNext(t *testing.T) {
	r := Retry{Min: 100 * time.Millisecond, Max: time.Second, Budget: 10 * time.Second}
	if w, err := r.Next(1, 0, false, 5*time.Second); err != nil || w < 75*time.Millisecond || w >= 125*time.Millisecond {
		t.Errorf("Next(1) = %s, %v", w, err)
	}
	if w, err := r.Next(1, 2*time.Second, true, 5*time.Second); err != nil || w != 2*time.Second {
		t.Errorf("Retry-After 2s: Next = %s, %v; want exactly the advice", w, err)
	}
	if _, err := r.Next(1, 6*time.Second, true, 5*time.Second); err == nil || !strings.Contains(err.Error(), "asked to retry after 6s") {
		t.Errorf("Retry-After beyond the budget: %v", err)
	}
	if _, err := r.Next(20, 0, false, 500*time.Millisecond); err == nil || !strings.Contains(err.Error(), "budget of 10s") {
		t.Errorf("a wait past the budget: %v", err)
	}
}

type adviceErr struct{ after time.Duration }

func (e adviceErr) Error() string             { return "421 try later" }
func (e adviceErr) RetryAfter() time.Duration { return e.after }

func TestDo(t *testing.T) {
	fast := Retry{Min: time.Millisecond, Max: 2 * time.Millisecond, Budget: 2 * time.Second}
	t.Run("temporary then success", func(t *testing.T) {
		n := 0
		retried := 0
		err := fast.Do(context.Background(), func(ctx context.Context) error {
			if n++; n < 3 {
				return errors.New("flaky")
			}
			return nil
		}, func(int, error, time.Duration) { retried++ })
		if err != nil || n != 3 || retried != 2 {
			t.Errorf("err %v after %d attempts, %d retries", err, n, retried)
		}
	})
	t.Run("rejection and unavailability end at once", func(t *testing.T) {
		for _, mark := range []func(error) error{Reject, Unavailable} {
			n := 0
			want := mark(errors.New("no"))
			err := fast.Do(context.Background(), func(ctx context.Context) error { n++; return want }, nil)
			if err != want || n != 1 {
				t.Errorf("err %v after %d attempts", err, n)
			}
		}
	})
	t.Run("budget", func(t *testing.T) {
		// The budget leaves room for a retry even after a long pause on a
		// loaded machine; the run lasts about the budget.
		r := Retry{Min: 20 * time.Millisecond, Max: 20 * time.Millisecond, Budget: 2 * time.Second}
		start := time.Now()
		n := 0
		err := r.Do(context.Background(), func(ctx context.Context) error {
			n++
			if _, ok := ctx.Deadline(); !ok {
				t.Error("the attempt's context has no deadline")
			}
			return errors.New("down")
		}, nil)
		var g *GaveUp
		if !errors.As(err, &g) || Classify(err) != OutcomeTemporary || g.Attempts != n || n < 2 {
			t.Fatalf("err %v (%d attempts)", err, n)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("took %s with a budget of %s", el, r.Budget)
		}
		if !strings.Contains(err.Error(), "the last: down") {
			t.Errorf("the error does not name the last failure: %v", err)
		}
	})
	// An attempt cut off by the end of the budget does not hide what the
	// receiver said before.
	t.Run("budget ends mid-attempt", func(t *testing.T) {
		r := Retry{Min: 10 * time.Millisecond, Max: 10 * time.Millisecond, Budget: 100 * time.Millisecond}
		n := 0
		err := r.Do(context.Background(), func(ctx context.Context) error {
			if n++; n == 1 {
				return errors.New("451 queue busy")
			}
			<-ctx.Done() // a dial that hangs until the budget ends
			return fmt.Errorf("dial: i/o timeout: %w", ctx.Err())
		}, nil)
		if !strings.Contains(fmt.Sprint(err), "the last: 451 queue busy") || Classify(err) != OutcomeTemporary {
			t.Errorf("err %v after %d attempts", err, n)
		}
	})
	t.Run("advice beyond the budget gives up at once", func(t *testing.T) {
		n := 0
		err := fast.Do(context.Background(), func(ctx context.Context) error { n++; return adviceErr{time.Hour} }, nil)
		if n != 1 || err == nil || !strings.Contains(err.Error(), "asked to retry after 1h") {
			t.Errorf("err %v after %d attempts", err, n)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := fast.Do(ctx, func(context.Context) error { cancel(); return errors.New("down") }, nil)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
	})
}
