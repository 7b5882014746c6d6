package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

const redacted = "<redacted>"

// Secret holds a credential (password, bearer token, signing secret) so that
// it cannot leak by accident: every way of printing, logging or marshalling
// it gives "<redacted>" (or "" when it is empty). Only Reveal gives the
// value.
//
// A secret read from a NAME_FILE variable keeps the file's path, not its
// content, and reads the file again on every Reveal: tokens that a sidecar
// rotates (OAuth bearer tokens, Kubernetes secrets) are picked up without
// a restart.
type Secret struct {
	value string
	file  string
}

// NewSecret returns a Secret holding value (for tests and callers that
// build a configuration themselves).
func NewSecret(value string) Secret { return Secret{value: value} }

// SecretFile returns a Secret whose value is read from path on every Reveal.
func SecretFile(path string) Secret { return Secret{file: path} }

// IsSet reports whether the secret was given at all.
func (s Secret) IsSet() bool { return s.value != "" || s.file != "" }

// Reveal returns the value. For a secret from a file it reads the file now,
// trimming trailing CR and LF (editors and `echo` add them); an empty file
// is an error, since sending an empty password would only earn an
// authentication failure and a back-off.
func (s Secret) Reveal() (string, error) {
	if s.file == "" {
		return s.value, nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return "", err
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", errors.New("secret file " + s.file + " is empty")
	}
	return v, nil
}

// String gives "<redacted>", or "" when the secret is not set.
func (s Secret) String() string {
	if !s.IsSet() {
		return ""
	}
	return redacted
}

// GoString makes %#v redact too.
func (s Secret) GoString() string { return s.String() }

// Format makes every fmt verb redact, not only %v and %s: without it %d or
// %x on a Secret would print its unexported fields.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprint(f, strconv.Quote(s.String()))
		return
	}
	fmt.Fprint(f, s.String())
}

// LogValue makes slog redact.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON makes encoding/json (and slog's JSON handler) redact. It
// writes the marker itself: json.Marshal would escape its angle brackets.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }
