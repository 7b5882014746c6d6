package webhook

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/pophook/pophook/sinks"
)

// verdict says what the final answer to a delivery means. Only a 2xx can
// be a delivery, and not every 2xx is one: the message is deleted from the
// server on the strength of this answer, so anything that does not look
// like the receiver's own receipt is not taken for one.
func (d *delivery) verdict(resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		var err error
		switch {
		case d.format == FormatForm:
			err = d.mailGatewayVerdict(resp)
		case !d.acceptHTML:
			err = d.htmlVerdict(resp)
		}
		if err != nil {
			d.log.Debug("webhook answer is not a receipt; the message stays on the server", "key", d.msg.Key, "err", err)
			return err
		}
		if d.attempts > 1 {
			d.log.Debug("webhook delivered after retries", "key", d.msg.Key, "attempts", d.attempts)
		}
		return nil
	case code >= 300 && code < 400:
		return d.redirected(resp)
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusProxyAuthRequired:
		se := d.statusError(resp)
		err := fmt.Errorf("webhook %s refused pophook's credentials (%w); check %s; no message is sent to it until then",
			d.shown, se, d.variables("SECRET", "HEADERS", "URL"))
		d.log.Debug("webhook refused the credentials; the message stays on the server", "key", d.msg.Key, "err", err)
		return sinks.Unavailable(err)
	case code == http.StatusRequestEntityTooLarge:
		se := d.statusError(resp)
		err := fmt.Errorf("webhook %s refused a request body of %d bytes as too large (%w): raise the receiver's body limit "+
			"(nginx client_max_body_size, or the framework's upload limit; see docs/webhook.md)", d.shown, d.size, se)
		d.log.Debug("webhook rejected the message as too large", "key", d.msg.Key, "err", err)
		return sinks.Reject(err)
	default:
		se := d.statusError(resp)
		d.log.Debug("webhook rejected the message", "key", d.msg.Key, "err", se)
		return sinks.Reject(fmt.Errorf("webhook %s: message rejected: %w", d.shown, se))
	}
}

// variables names the sink's variables with the given suffixes, for
// messages that ask the operator to change one.
func (d *delivery) variables(suffixes ...string) string {
	prefix := "POPHOOK_SINK_<NAME>_"
	if d.name != "" {
		prefix = "POPHOOK_SINK_" + strings.ToUpper(d.name) + "_"
	}
	names := make([]string, len(suffixes))
	for i, s := range suffixes {
		names[i] = prefix + s
	}
	return strings.Join(names, ", ")
}

// mailGatewayVerdict reads the answer of a Request Tracker style mail
// gateway, which replies 200 whatever happened and says in the body what
// it did. As rt-mailgate does, only a body that starts with "ok" is a
// delivery; "not ok" means it will never take the message (a rejection,
// where rt-mailgate would drop the mail: pophook keeps it on the server);
// anything else, an auth proxy's login page included, is a temporary
// failure quoting the first line of the body.
func (d *delivery) mailGatewayVerdict(resp *http.Response) error {
	head, _ := io.ReadAll(io.LimitReader(resp.Body, snippetRead))
	first, _, _ := bytes.Cut(head, []byte("\n"))
	se := &StatusError{Code: resp.StatusCode, Body: truncate(d.creds.secrets.scrub(clean(string(first))), snippetMax)}
	switch {
	case bytes.HasPrefix(head, []byte("ok")):
		return nil
	case bytes.HasPrefix(head, []byte("not ok")):
		return sinks.Reject(fmt.Errorf("webhook %s: the mail gateway refused the message: %w", d.shown, se))
	case len(bytes.TrimSpace(head)) == 0:
		return fmt.Errorf("webhook %s: the mail gateway answered %w with an empty body, not \"ok\"", d.shown, se)
	}
	if isHTML(resp.Header, head) {
		return fmt.Errorf("webhook %s: the mail gateway answered %w with an HTML page%s, not \"ok\"; an auth proxy may be in front of it",
			d.shown, se, d.creds.secrets.title(head))
	}
	return fmt.Errorf("webhook %s: the mail gateway did not answer \"ok\": %w", d.shown, se)
}

// htmlVerdict refuses a 2xx whose body is an HTML page (json and raw): an
// auth proxy's login form or a captive portal answers 200 with one, and
// taking that for a receipt would delete mail nobody received. No message
// can get through until that is fixed, so the sink is unavailable.
func (d *delivery) htmlVerdict(resp *http.Response) error {
	head, _ := io.ReadAll(io.LimitReader(resp.Body, snippetRead))
	if !isHTML(resp.Header, head) {
		return nil
	}
	return sinks.Unavailable(fmt.Errorf("webhook %s answered HTTP %d with an HTML page%s, not a receipt: an auth proxy or captive portal "+
		"is probably in front of the receiver; if the receiver really answers HTML, set %s=true",
		d.shown, resp.StatusCode, d.creds.secrets.title(head), d.variables("ACCEPT_HTML")))
}

// isHTML: declared as HTML, or starting like an HTML document.
func isHTML(h http.Header, body []byte) bool {
	if mt, _, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil && (mt == "text/html" || mt == "application/xhtml+xml") {
		return true
	}
	body = bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), " \t\r\n")
	for _, p := range []string{"<!doctype html", "<html"} {
		if len(body) >= len(p) && strings.EqualFold(string(body[:len(p)]), p) {
			return true
		}
	}
	return false
}

var titleRE = regexp.MustCompile(`(?is)<title[^>]*>(.*?)</title>`)

// title gives ` ("Page title")` for an HTML head, or "".
func (s scrubber) title(head []byte) string {
	m := titleRE.FindSubmatch(head)
	if m == nil {
		return ""
	}
	t := truncate(s.scrub(clean(html.UnescapeString(string(m[1])))), 80)
	if t == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", t)
}
