package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The parse helpers turn one raw value into its typed form. Their errors
// describe the value without naming the variable (the caller prefixes it)
// and quote the value only where it is never a secret.

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func parseLogLevel(s string) (slog.Level, error) {
	if l, ok := logLevels[strings.ToLower(s)]; ok {
		return l, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		return true, nil
	case "false", "0", "no":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true/false, yes/no, 1/0)", s)
}

// parseEnum returns s in lower case if it is one of allowed.
func parseEnum(s string, allowed ...string) (string, error) {
	l := strings.ToLower(s)
	for _, a := range allowed {
		if l == a {
			return l, nil
		}
	}
	return "", fmt.Errorf("%q is not one of %s", s, strings.Join(allowed, ", "))
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return n, nil
}

func parseIntRange(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q is not a whole number from %d to %d", s, lo, hi)
	}
	return n, nil
}

// parsePositiveDuration accepts Go durations ("30s", "1m30s") above zero.
func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration (e.g. 30s, 2m)", s)
	}
	return d, nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1000, "mb": 1000 * 1000, "gb": 1000 * 1000 * 1000,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
}

var sizePattern = regexp.MustCompile(`^([0-9]+)\s*([a-zA-Z]*)$`)

// parseSize accepts a whole number of bytes with an optional unit: KB, MB,
// GB are powers of 1000 and KiB, MiB, GiB powers of 1024, as everywhere
// else; case does not matter.
func parseSize(s string) (int64, error) {
	bad := fmt.Errorf("%q is not a size above zero (e.g. 1048576, 10MB, 64MiB, 1GiB)", s)
	m := sizePattern.FindStringSubmatch(s)
	if m == nil {
		return 0, bad
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	n, err := strconv.ParseInt(m[1], 10, 64)
	if !ok || err != nil || n <= 0 || n > math.MaxInt64/unit {
		return 0, bad
	}
	return n * unit, nil
}

var daysPattern = regexp.MustCompile(`^([0-9]+)d$`)

// parseKeep accepts a boolean or a retention: a Go duration or whole days
// ("30d"), since nobody wants to write 720h.
func parseKeep(s string) (Keep, error) {
	if b, err := parseBool(s); err == nil {
		return Keep{Forever: b}, nil
	}
	bad := fmt.Errorf("%q is not false, true or a duration (e.g. 720h, 30d)", s)
	var d time.Duration
	if m := daysPattern.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > int64(math.MaxInt64/(24*time.Hour)) {
			return Keep{}, bad
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return Keep{}, bad
		}
	}
	return Keep{After: d}, nil
}

var namePattern = regexp.MustCompile(`^[a-z0-9_]+$`)

// parseNames splits a comma-separated list of account or sink names. Empty
// items (a trailing comma) are ignored; bad and repeated names are errors.
func parseNames(s string) ([]string, []error) {
	var names []string
	var errs []error
	seen := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
		case !namePattern.MatchString(n):
			errs = append(errs, fmt.Errorf("%q is not a valid name (lower-case a-z, 0-9, _)", n))
		case seen[n]:
			errs = append(errs, fmt.Errorf("%q is listed twice", n))
		default:
			seen[n] = true
			names = append(names, n)
		}
	}
	return names, errs
}

// checkHost rejects what people commonly put where a bare host name
// belongs: a URL or host:port.
func checkHost(s string) error {
	if strings.Contains(s, "/") || strings.ContainsAny(s, " \t") {
		return fmt.Errorf("%q is not a host name (no scheme, path or spaces)", s)
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return fmt.Errorf("%q is not a host name (give the port in its own variable)", s)
	}
	return nil
}

// checkListenAddr accepts host:port with a numeric port; port 0 picks a
// free port (tests, the demo).
func checkListenAddr(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = errors.New("port out of range")
		}
	}
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:8080, :8080)", s)
	}
	return nil
}

// redactURL returns s with any password replaced, for messages about a
// valid URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return redacted
	}
	return u.Redacted()
}

// parseAddresses parses a comma-separated list of mail addresses, with or
// without display names, and returns the bare addresses (what SMTP's
// envelope needs).
func parseAddresses(s string) ([]string, error) {
	list, err := mail.ParseAddressList(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a list of mail addresses: %v", s, err)
	}
	addrs := make([]string, len(list))
	for i, a := range list {
		addrs[i] = a.Address
	}
	return addrs, nil
}

func parseAddress(s string) (string, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a mail address: %v", s, err)
	}
	return a.Address, nil
}
