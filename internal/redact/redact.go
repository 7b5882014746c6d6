// Package redact cuts secrets out of text that came from elsewhere: a
// server that quotes the credential it refused, a webhook receiver that
// echoes a header. pophook never writes a secret itself; this is for what
// others send back, before it reaches a log line, an error or the ledger.
package redact

import (
	"encoding/base64"
	"slices"
	"strings"
)

// Mark stands in for a secret.
const Mark = "xxxxx"

// MinLength is the shortest value scrubbed: shorter ones would garble
// ordinary text and protect little.
const MinLength = 4

// Wire returns the values together with the forms mail protocols carry
// them in (base64, padded and not), which is what a server would echo.
func Wire(values ...string) []string {
	out := make([]string, 0, 3*len(values))
	for _, v := range values {
		if v == "" {
			continue
		}
		out = append(out, v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawStdEncoding.EncodeToString([]byte(v)))
	}
	return out
}

// Scrub replaces every occurrence of the values in text with Mark, longest
// value first, so that a secret containing another is replaced whole.
func Scrub(text string, values ...string) string {
	if len(values) == 0 || text == "" {
		return text
	}
	sorted := slices.Clone(values)
	slices.SortFunc(sorted, func(a, b string) int { return len(b) - len(a) })
	for _, v := range sorted {
		if len(v) >= MinLength {
			text = strings.ReplaceAll(text, v, Mark)
		}
	}
	return text
}
