package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/pophook/pophook/sinks"
)

var _ sinks.Checker = (*Sink)(nil)

// Check tests the endpoint for pophook check. Without ping it sends a GET,
// which any receiver answers somehow (a 405 is fine): the name resolves,
// the port is open, TLS is trusted. With ping and format json it POSTs a
// signed {"type":"ping"} event, judged exactly as a delivery is, so an
// auth proxy's login page or a refused credential shows here first.
// Formats raw and form get no ping: their receivers would take it for
// mail.
func (s *Sink) Check(ctx context.Context, ping bool) (string, error) {
	c, err := s.credentials()
	if err != nil {
		return "", sinks.Unavailable(err)
	}
	if ping && s.format == FormatJSON {
		return s.ping(ctx, c)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return "", fmt.Errorf("webhook %s: %w", s.shown, err)
	}
	req.Header.Set("User-Agent", s.userAgent)
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, whose query may hold a token
		}
		err = fmt.Errorf("webhook %s does not answer: %w", s.shown, err)
		if isCertError(err) {
			return "", sinks.Unavailable(err)
		}
		return "", err
	}
	drainClose(resp.Body)
	note := ""
	if ping {
		note = fmt.Sprintf("; no ping sent: a %s receiver would take it for mail", s.format)
	}
	return fmt.Sprintf("%s answers (HTTP %d to a GET%s)", s.shown, resp.StatusCode, note), nil
}

// ping delivers a signed ping event through the delivery path.
func (s *Sink) ping(ctx context.Context, c *creds) (string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	id := "ping_" + hex.EncodeToString(b)
	body := []byte(fmt.Sprintf(`{"type":"ping","timestamp":%q,"data":{"id":%q}}`, s.now().UTC().Format(time.RFC3339), id))
	m := &sinks.Message{Key: id, Size: int64(len(body)), Raw: bytes.NewReader(body)}
	bctx, cancel := context.WithTimeout(ctx, s.retry.BudgetOrDefault())
	defer cancel()
	d := &delivery{Sink: s, creds: c, msg: m, ctx: bctx, parent: ctx, start: s.now(), body: m.Raw, size: m.Size}
	d.deadline, _ = bctx.Deadline()
	if err := d.run("application/json"); err != nil {
		return "", err
	}
	signed := ""
	if c.key != nil {
		signed = "signed "
	}
	return fmt.Sprintf("%s took a %sping event", s.shown, signed), nil
}
