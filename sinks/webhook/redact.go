package webhook

import (
	"io"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/pophook/pophook/internal/redact"
)

const (
	snippetMax  = 200     // bytes of a response body quoted in an error
	snippetRead = 4 << 10 // bytes read to find them
	redacted    = redact.Mark
)

// redactURL shows u without its password and query values, either of
// which may be a credential.
func redactURL(u *url.URL) string {
	r := *u
	if _, ok := r.User.Password(); ok {
		r.User = url.UserPassword(r.User.Username(), redacted)
	}
	if r.RawQuery != "" {
		q := r.Query()
		for k, vs := range q {
			for i := range vs {
				vs[i] = redacted
			}
			q[k] = vs
		}
		r.RawQuery = q.Encode()
	}
	r.Fragment, r.RawFragment = "", ""
	return r.String()
}

// scrubber holds the secret values a delivery uses (URL password, signing
// secret, header values).
type scrubber []string

// snippet returns the start of a response body for an error message:
// valid UTF-8, control characters and runs of white space turned into
// single spaces, any of the secrets the endpoint echoed replaced, at most
// snippetMax bytes.
func (s scrubber) snippet(body io.Reader) string {
	buf, _ := io.ReadAll(io.LimitReader(body, snippetRead))
	if len(buf) == snippetRead {
		// Do not let the cut split a character into U+FFFD.
		for i := 0; i < utf8.UTFMax-1 && len(buf) > 0; i++ {
			if r, size := utf8.DecodeLastRune(buf); r != utf8.RuneError || size != 1 {
				break
			}
			buf = buf[:len(buf)-1]
		}
	}
	return truncate(s.scrub(clean(string(buf))), snippetMax)
}

// clean makes text safe to quote in a one-line message.
func clean(text string) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	text = strings.Map(func(r rune) rune {
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, text)
	return strings.Join(strings.Fields(text), " ")
}

// scrub replaces the secrets wherever text holds them.
func (s scrubber) scrub(text string) string { return redact.Scrub(text, s...) }

// truncate cuts text to at most n bytes on a character boundary, marking
// the cut with "…".
func truncate(text string, n int) string {
	if len(text) <= n {
		return text
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + "…"
}

// isToken reports whether s is an HTTP token (RFC 9110), the syntax of a
// header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c <= ' ' || c == 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// isCTL: control characters other than horizontal tab.
func isCTL(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }

func containsFold(list []string, s string) bool {
	for _, l := range list {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}
