package webhook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The checks below are what New applies to its options. They are exported
// so that the configuration can run them at start-up and name the
// variable at fault, instead of keeping a second copy of the rules.

// ParseURL checks that raw is an absolute http or https URL. Its errors
// never quote the URL's password.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url's errors quote the offending part, which may be the
		// password: give the reason only when there is no userinfo.
		var ue *url.Error
		if !strings.Contains(raw, "@") && errors.As(err, &ue) {
			return nil, fmt.Errorf("not a valid URL: %v", ue.Err)
		}
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%s is not an absolute http or https URL", redactURL(u))
	}
	return u, nil
}

// SecretKey decodes a Standard Webhooks secret, "whsec_" followed by the
// base64 of the key. Its errors never quote the secret.
func SecretKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("not a Standard Webhooks secret (it must start with %q)", secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) == 0 {
		return nil, fmt.Errorf("not a Standard Webhooks secret (%q must be followed by base64)", secretPrefix)
	}
	return key, nil
}

// reservedHeaders are set by the sink itself; an extra header of the same
// name would break the request or its signature.
var reservedHeaders = []string{
	"Content-Type", "Content-Length", "Transfer-Encoding", "Host", "Idempotency-Key",
	"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
}

// CheckHeader reports why name: value cannot be sent as an extra header,
// or nil. Its errors never quote the value (a bearer token).
func CheckHeader(name, value string) error {
	canon := http.CanonicalHeaderKey(name)
	switch {
	case !isToken(name):
		return fmt.Errorf("%q is not a header name", name)
	case containsFold(reservedHeaders, name):
		return fmt.Errorf("%s is set by pophook itself", canon)
	case strings.ContainsFunc(value, isCTL):
		return fmt.Errorf("the value of %s holds control characters", canon)
	}
	return nil
}

// ParseHeaders reads extra headers given as "Name: value" lines, separated
// by newlines or by a literal `\n` (an env file cannot hold a newline).
// Blank lines and lines starting with # are skipped. Values are secrets
// (bearer tokens), so errors name the line and the header but never show
// a value.
func ParseHeaders(s string) (http.Header, []error) {
	h := http.Header{}
	var errs []error
	s = strings.ReplaceAll(s, `\n`, "\n")
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: not a \"Name: value\" header", i+1))
			continue
		}
		if err := CheckHeader(name, value); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", i+1, err))
			continue
		}
		h.Add(name, value)
	}
	return h, errs
}
