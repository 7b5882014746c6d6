package web

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pophook/pophook/worker"
)

// fixedNow is the clock of every test in this package.
var fixedNow = time.Date(2026, 12, 3, 12, 15, 0, 0, time.UTC)

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

// The hostile strings a server or a receiver could send.
const (
	hostileUIDL  = `UID7'$(reboot)`
	hostileError = `HTTP 400 Bad Request: <html><body><script>alert("pwned")</script><img src=x onerror=alert(1)></body></html>`
)

// realistic is a daemon's state as the status page and the Chromium test
// see it: support fetched fine, billing is backing off after refused
// logins, sales is running after a failed run; two messages were
// rejected, one with a UIDL a shell would trip over.
func realistic() Options {
	now := fixedNow
	statuses := []worker.Status{
		{
			Account:    "support",
			RunStarted: now.Add(-2*time.Minute - 10*time.Second),
			Last: &worker.Result{
				Account: "support", Started: now.Add(-2*time.Minute - 10*time.Second), Duration: 1420 * time.Millisecond,
				Listed: 12, Delivered: 3, Deleted: 3,
			},
		},
		{
			Account:    "billing",
			RunStarted: now.Add(-time.Minute),
			Last: &worker.Result{
				Account: "billing", Started: now.Add(-time.Minute), Duration: 3 * time.Millisecond,
				Skipped:       worker.SkipAuthBackoff,
				SkipDetail:    "refused 3 times, last: -ERR [AUTH] Authentication failed.; change the credential to try at once",
				NextAttempt:   now.Add(25 * time.Minute),
				LoginFailures: 3,
			},
		},
		{
			Account:    "sales",
			Running:    true,
			RunStarted: now.Add(-20 * time.Second),
			Last: &worker.Result{
				Account: "sales", Started: now.Add(-5 * time.Minute), Duration: 30 * time.Second,
				Listed: 4,
				Problems: []worker.Problem{{
					Kind: worker.ProblemSinkFailed, Sink: "helpdesk",
					Err: errors.New("Post: dial tcp 198.51.100.4:443: i/o timeout"),
				}},
			},
			LastErr: errors.New("account sales: RETR 3: read tcp 192.0.2.10:40122->203.0.113.7:995: i/o timeout"),
		},
	}
	return Options{
		Version:  "v1.4.0",
		Accounts: func() []worker.Status { return statuses },
		NextRuns: func() map[string]time.Time {
			return map[string]time.Time{
				"support": now.Add(50 * time.Second),
				"billing": now.Add(time.Minute),
				"sales":   now.Add(4*time.Minute + 40*time.Second),
			}
		},
		Rejected: func() ([]Rejected, error) {
			return []Rejected{
				{Account: "support", UIDL: "000001a4f3e2", Sink: "helpdesk",
					LastError:   `HTTP 422 Unprocessable Entity: {"error":"invalid payload"}`,
					NextAttempt: now.Add(58 * time.Minute)},
				{Account: "sales", UIDL: hostileUIDL, Sink: "helpdesk",
					LastError:   hostileError,
					NextAttempt: now.Add(23 * time.Hour)},
			}, nil
		},
		Ready:    func() error { return nil },
		Gatherer: prometheus.NewRegistry(),
		Now:      clockAt(now),
	}
}
