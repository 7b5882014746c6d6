package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/pophook/pophook/sinks"
)

// delivery is one Deliver call: the request, and the retry policy's state.
// The policy is sinks.Retry; checkRetry applies it after each attempt and
// verdict (verdict.go) says what the final answer means; retryablehttp
// only performs the loop.
type delivery struct {
	*Sink
	creds    *creds
	msg      *sinks.Message
	ctx      context.Context // the budget
	parent   context.Context // the caller's
	start    time.Time
	deadline time.Time
	body     io.ReaderAt // staged body or spool
	size     int64

	attempts int
	last     error         // the last failure: *StatusError or a transport error
	wait     time.Duration // decided by checkRetry, handed out by backoff
	giveUp   string        // why checkRetry stopped early; "" if it did not
	// untrusted is set when the TLS certificate was refused: retrying
	// cannot help, the sink is unavailable until trust is fixed.
	untrusted bool
}

// errGiveUp tells retryablehttp to stop; run reports why.
var errGiveUp = errors.New("giving up")

func (d *delivery) run(contentType string) error {
	req, err := d.request(contentType)
	if err != nil {
		return err
	}
	c := &retryablehttp.Client{
		HTTPClient: d.client,
		// The budget (d.ctx) bounds the attempts, not a count.
		RetryMax:     math.MaxInt32,
		CheckRetry:   d.checkRetry,
		Backoff:      func(time.Duration, time.Duration, int, *http.Response) time.Duration { return d.wait },
		PrepareRetry: d.resign,
		ErrorHandler: func(resp *http.Response, err error, _ int) (*http.Response, error) {
			if resp != nil {
				drainClose(resp.Body)
			}
			if err == nil {
				err = errGiveUp
			}
			return nil, err
		},
		// No Logger: retryablehttp would log the URL with its query.
	}
	resp, err := c.Do(req)
	if err != nil {
		return d.failed(err)
	}
	defer drainClose(resp.Body)
	return d.verdict(resp)
}

// retryableStatus: the endpoint may take the message later.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return code >= 500 && code < 600
}

// checkRetry decides, after each attempt, whether to try again and after
// how long. Success, a redirect and a rejection end the loop with the
// response, for run to judge. A retryable answer or network error is
// retried when the wait (backoff, or Retry-After if longer) still fits in
// the budget; otherwise the policy gives up now rather than sleep past it.
func (d *delivery) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	d.attempts++
	if err != nil {
		if ctx.Err() != nil {
			// The budget (or a stop) cut this attempt short: what the
			// receiver answered before says more than "deadline exceeded".
			if d.last == nil {
				d.last = d.transportError(err)
			}
			return false, ctx.Err()
		}
		d.last = d.transportError(err)
		if isCertError(err) {
			// Retrying cannot help; the operator must fix trust.
			d.giveUp = "the server's TLS certificate was not accepted"
			d.untrusted = true
			return false, errGiveUp
		}
		return d.retry(0, false)
	}
	if !retryableStatus(resp.StatusCode) {
		return false, nil
	}
	d.last = d.statusError(resp)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	ra, ok := retryAfter(resp.Header, d.now())
	return d.retry(ra, ok)
}

func (d *delivery) retry(retryAfter time.Duration, hasRetryAfter bool) (bool, error) {
	wait, err := d.Sink.retry.Next(d.attempts, retryAfter, hasRetryAfter, d.deadline.Sub(d.now()))
	if err != nil {
		d.giveUp = err.Error()
		return false, errGiveUp
	}
	d.wait = wait
	if d.onRetry != nil {
		d.onRetry()
	}
	d.log.Debug("webhook request failed; retrying", "key", d.msg.Key, "attempt", d.attempts,
		"err", d.last.Error(), "retry_in", wait.Round(time.Millisecond).String())
	return true, nil
}

// retryAfter reads Retry-After, in seconds or as an HTTP date.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// failed turns retryablehttp's error into the delivery's: cancelled by the
// caller, or given up (budget spent, Retry-After beyond it, a TLS
// problem), naming the attempts and the last failure. An untrusted
// certificate makes the sink unavailable; the rest is temporary.
func (d *delivery) failed(err error) error {
	if perr := d.parent.Err(); perr != nil {
		d.log.Debug("webhook delivery cancelled", "key", d.msg.Key, "attempts", d.attempts)
		return fmt.Errorf("webhook %s: delivery cancelled after %d attempt(s): %w", d.shown, d.attempts, perr)
	}
	reason := d.giveUp
	if reason == "" {
		if d.ctx.Err() == nil && !errors.Is(err, errGiveUp) {
			// Not from an attempt: reading the body or signing it.
			return err
		}
		reason = fmt.Sprintf("the delivery budget of %s is spent", d.Sink.retry.BudgetOrDefault())
	}
	last := d.last
	if last == nil {
		last = err
	}
	e := fmt.Errorf("webhook %s: %s; %d attempt(s) in %s, the last: %w", d.shown, reason, d.attempts,
		d.now().Sub(d.start).Round(10*time.Millisecond), last)
	// Debug only: the job reports the failure once, as a problem of the run.
	d.log.Debug("webhook delivery failed; the message stays on the server", "key", d.msg.Key,
		"attempts", d.attempts, "err", e)
	if d.untrusted {
		return sinks.Unavailable(e)
	}
	return e
}

// redirected reports a 3xx. Redirects are not followed: a POST to an
// address nobody configured could carry the message and its credentials
// elsewhere. It is a configuration problem, not the message's fault: the
// sink is unavailable until the URL is fixed.
func (d *delivery) redirected(resp *http.Response) error {
	se := &StatusError{Code: resp.StatusCode}
	variable := "the sink's URL (POPHOOK_SINK_<NAME>_URL)"
	if d.name != "" {
		variable = "POPHOOK_SINK_" + strings.ToUpper(d.name) + "_URL"
	}
	var err error
	if loc := resp.Header.Get("Location"); loc != "" {
		se.Location = d.location(resp, loc)
		err = fmt.Errorf("webhook URL %s redirects to %s (%w); set %s to the final URL", d.shown, se.Location, se, variable)
	} else {
		err = fmt.Errorf("webhook URL %s answered %w without a Location; check %s", d.shown, se, variable)
	}
	d.log.Debug("webhook URL redirects; the message stays on the server", "key", d.msg.Key, "err", err)
	return sinks.Unavailable(err)
}

// location is the redirect target, absolute and redacted.
func (d *delivery) location(resp *http.Response, raw string) string {
	if u, err := resp.Location(); err == nil {
		return redactURL(u)
	}
	return truncate(d.creds.secrets.scrub(clean(raw)), snippetMax)
}

// StatusError is an HTTP answer the sink did not take as success.
type StatusError struct {
	Code     int
	Body     string // the start of the response body, sanitised
	Location string // of a redirect, redacted
}

func (e *StatusError) Error() string {
	s := strings.TrimSpace("HTTP " + strconv.Itoa(e.Code) + " " + http.StatusText(e.Code))
	if e.Body != "" {
		s += ": " + strconv.Quote(e.Body)
	}
	return s
}

func (d *delivery) statusError(resp *http.Response) *StatusError {
	return &StatusError{Code: resp.StatusCode, Body: d.creds.secrets.snippet(resp.Body)}
}

// transportError is err without the URL net/http wraps it in (its query
// may hold a token), with a word on timeouts.
func (d *delivery) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var te interface{ Timeout() bool }
	if d.ctx.Err() == nil && errors.As(err, &te) && te.Timeout() {
		return fmt.Errorf("no answer within the request timeout of %s: %w", d.timeout, err)
	}
	return err
}

func isCertError(err error) bool {
	var (
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// drainClose reads a little of what is left of a response, so the
// connection can be reused, and closes it.
func drainClose(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}
