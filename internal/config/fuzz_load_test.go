package config

// Hostile and broken input, configuration (issue #13 point 4):
//
//   - FuzzLoad: a random environment, made of pophook's own variable names,
//     names one or two edits away from them and arbitrary POPHOOK_ names,
//     with values valid, nearly valid and arbitrary: Load never panics,
//     returns either a Config or a *Problems, every problem line and every
//     warning names a POPHOOK_ variable, and no secret shows in them. A
//     Config it accepts holds together.
//   - FuzzEnvFile: a value written to a .env line as the README's rule says
//     (see ruleValue) reads the same, after
//     pophook's own handling, under a POSIX shell (/bin/sh, run for real),
//     docker --env-file, compose's env_file and systemd's EnvironmentFile=
//     (the last three as TestEnvFileMeansTheSameToEveryLoader models them),
//     and Load makes the same of it under each.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pophook/pophook/sinks/webhook"
)

// fuzzAccounts and fuzzSinks name what the generated environments use.
var (
	fuzzAccounts = []string{"support", "billing"}
	fuzzSinks    = map[string]string{"helpdesk": SinkWebhook, "archive": SinkMaildir, "relay": SinkSMTP}
)

// fuzzKnown lists the variables of fuzzAccounts and fuzzSinks.
var fuzzKnown = sync.OnceValue(func() []string { return Variables(fuzzAccounts, fuzzSinks) })

// fuzzValues are values close to what each kind of variable takes: valid
// ones, and the mistakes people make.
var fuzzValues = []string{
	"", " ", "0", "1", "-1", "65535", "65536", "99999999999999999999", "9223372036854775807",
	"true", "false", "yes", "no", "TRUE", "maybe",
	"implicit", "starttls", "none", "STARTTLS", "tls",
	"auto", "user", "plain", "login", "xoauth2", "cram-md5",
	"debug", "info", "warn", "error", "text", "json",
	"@every 1m", "'@every 1m'", "@every 0.5s", "@every", "@every 1\nm", "* * * * *", "@daily", "61 * * * *", "@every -1s",
	"64MiB", "1GiB", "10MB", "0B", "8EiB", "9223372036854775807GiB", "1 KiB", "30d", "720h", "-1h", "106751d", "999999999999999d",
	"https://helpdesk.example.com/hooks/mail", "http://127.0.0.1:8080/x", "ftp://a.example/", "https://u:p4ssw0rd-Q9@h.example/",
	"https://u:p4ss%zz@h.example/", "https://[::1", "//no-scheme", "https://h.example/a?b=1&c=2",
	"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwIf2Ot1vRE/w=", "whsec_", "whsec_***", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	`Authorization: Bearer tok-Q7\nX-Tenant: a`, "Content-Type: x", "X Bad: y", "X-Ctl: a\x01b", "no colon",
	`queue=General\naction=correspond`, "queue", "=x", `a"b=c`,
	"support@example.com", "a@b.example, c@d.example", "Name <a@example.com>", "<bad", "not an address",
	"pop.example.com", "pop.example.com:995", "pop3://pop.example.com", "pop example", "127.0.0.1", "::1",
	"gmail", "outlook", "office365", "qq", "163", "hotmail", "gmial", "icloud",
	"common", "contoso.onmicrosoft.com", "a/b", "0/3", "2/3", "3/3", "1/0", "x/y",
	":8080", "127.0.0.1:0", "127.0.0.1:99999", "localhost", "[::1]:80",
	"support", "support,billing", "support,support", "Support", "a,,b", ",", "sup port", "helpdesk,archive,relay", "helpdesk,nope",
	"webhook", "maildir", "smtp", "Webhook", "imap", "raw", "form",
	"\"quoted\"", "'single'", "'", "\"", "''", "\x7f", "\xff\xfe", "é", "\u2028",
}

// fuzzFiles are the files a _FILE variable may name: never a device or a
// fifo, which Load would block on.
type fuzzFiles []string

func newFuzzFiles(t testing.TB) fuzzFiles {
	dir := t.TempDir()
	files := fuzzFiles{filepath.Join(dir, "missing")}
	for i, content := range []string{"", "\n", "file-secret-Q5\n", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwIf2Ot1vRE/w=",
		"Authorization: Bearer file-token-Q6\n", "\x00\xff garbage", testPEM} {
		p := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return append(files, dir) // a directory
}

// testPEM is a certificate (pop3test's kind), for TLS_CA_FILE.
const testPEM = `-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIQIRi6zePL6mKjOipn+dNuaTAKBggqhkjOPQQDAjASMRAw
DgYDVQQKEwdBY21lIENvMB4XDTE3MTAyMDE5NDMwNloXDTE4MTAyMDE5NDMwNlow
EjEQMA4GA1UEChMHQWNtZSBDbzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABD0d
7VNhbWvZLWPuj/RtHFjvtJBEwOkhbN/BnnE8rnZR8+sbwnc/KhCk3FhnpHZnQz7B
5aETbbIgmuvewdjvSBSjYzBhMA4GA1UdDwEB/wQEAwICpDATBgNVHSUEDDAKBggr
BgEFBQcDATAPBgNVHRMBAf8EBTADAQH/MCkGA1UdEQQiMCCCDmxvY2FsaG9zdDo1
NDUzgg4xMjcuMC4wLjE6NTQ1MzAKBggqhkjOPQQDAgNIADBFAiEA2zpJEPQyz6/l
Wf86aX6PepsntZv2GYlA5UpabfT2EZICICpJ5h/iI+i341gBmLiAFQOyTDT+/wQc
6MF9+Yw1Yy0t
-----END CERTIFICATE-----
`

// fuzzGen turns fuzz bytes into choices.
type fuzzGen struct{ b []byte }

func (g *fuzzGen) more() bool { return len(g.b) > 0 }

func (g *fuzzGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *fuzzGen) pick(n int) int { return int(g.byte()) % n }

// str takes a length byte and that many bytes.
func (g *fuzzGen) str() string {
	n := min(int(g.byte()%48), len(g.b))
	s := string(g.b[:n])
	g.b = g.b[n:]
	return s
}

// name returns one of pophook's names, or one a few edits from it.
func (g *fuzzGen) name(known []string) string {
	name := []byte(known[g.pick(len(known))])
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789 -.a"
	for range g.pick(4) {
		i := g.pick(len(name) + 1)
		switch g.pick(6) {
		case 0: // delete
			if i < len(name) {
				name = slices.Delete(name, i, i+1)
			}
		case 1: // insert
			name = slices.Insert(name, i, alphabet[g.pick(len(alphabet))])
		case 2: // replace
			if i < len(name) {
				name[i] = alphabet[g.pick(len(alphabet))]
			}
		case 3: // swap
			if i+1 < len(name) {
				name[i], name[i+1] = name[i+1], name[i]
			}
		case 4: // cut the tail
			name = name[:i]
		case 5: // lower case
			name = []byte(strings.ToLower(string(name)))
		}
	}
	return string(name)
}

func (g *fuzzGen) value(name string, files fuzzFiles) string {
	if strings.HasSuffix(name, "_FILE") && g.byte()%4 != 0 {
		return files[g.pick(len(files))]
	}
	var v string
	switch g.pick(4) {
	case 0, 1:
		v = fuzzValues[g.pick(len(fuzzValues))]
	case 2:
		v = g.str()
	case 3:
		v = fuzzValues[g.pick(len(fuzzValues))] + g.str()
	}
	switch g.pick(8) {
	case 0:
		v = "'" + v + "'"
	case 1:
		v = `"` + v + `"`
	}
	return v
}

// fuzzEnv builds an environment from fuzz bytes: one of a few starting
// points, then a run of edits.
func fuzzEnv(data []byte, files fuzzFiles) map[string]string {
	g := &fuzzGen{b: data}
	known := fuzzKnown()
	env := map[string]string{}
	switch g.pick(3) {
	case 0: // a complete configuration
		for k, v := range map[string]string{
			"POPHOOK_ACCOUNTS": "support", "POPHOOK_SINKS": "helpdesk,archive,relay",
			"POPHOOK_ACCOUNT_SUPPORT_HOST": "pop.example.com", "POPHOOK_ACCOUNT_SUPPORT_USERNAME": "support@example.com",
			"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "pop-password-Q1", "POPHOOK_ACCOUNT_SUPPORT_SINKS": "helpdesk,archive,relay",
			"POPHOOK_SINK_HELPDESK_TYPE": "webhook", "POPHOOK_SINK_HELPDESK_URL": "https://helpdesk.example.com/hooks/mail",
			"POPHOOK_SINK_ARCHIVE_TYPE": "maildir", "POPHOOK_SINK_ARCHIVE_PATH": "/var/mail/archive",
			"POPHOOK_SINK_RELAY_TYPE": "smtp", "POPHOOK_SINK_RELAY_HOST": "smtp.example.com", "POPHOOK_SINK_RELAY_TO": "tickets@example.com",
		} {
			env[k] = v
		}
	case 1: // two accounts on presets, OAuth2
		for k, v := range map[string]string{
			"POPHOOK_ACCOUNTS": "support,billing", "POPHOOK_SINKS": "archive",
			"POPHOOK_ACCOUNT_SUPPORT_PROVIDER": "gmail", "POPHOOK_ACCOUNT_SUPPORT_USERNAME": "a@gmail.com",
			"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "client", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "refresh-token-Q8",
			"POPHOOK_ACCOUNT_SUPPORT_SINKS": "archive", "POPHOOK_ACCOUNT_BILLING_USERNAME": "billing@example.org",
			"POPHOOK_ACCOUNT_BILLING_PASSWORD": "billing-pass-Q0", "POPHOOK_ACCOUNT_BILLING_SINKS": "archive",
			"POPHOOK_SINK_ARCHIVE_TYPE": "maildir", "POPHOOK_SINK_ARCHIVE_PATH": "/var/mail/archive",
		} {
			env[k] = v
		}
	}
	for i := 0; g.more() && i < 48; i++ {
		switch g.pick(6) {
		case 0, 1, 2: // a variable pophook reads
			name := known[g.pick(len(known))]
			env[name] = g.value(name, files)
		case 3: // a name a few edits away
			name := g.name(known)
			env[name] = g.value(name, files)
		case 4: // any POPHOOK_ name
			name := "POPHOOK_" + g.str()
			env[name] = g.value(name, files)
		case 5: // unset
			if len(env) > 0 {
				keys := slices.Sorted(maps.Keys(env))
				delete(env, keys[g.pick(len(keys))])
			}
		}
	}
	// What an environment cannot hold: '=' or NUL in a name, NUL in a value.
	out := map[string]string{}
	for k, v := range env {
		k = strings.NewReplacer("=", "", "\x00", "").Replace(k)
		if k != "" {
			out[k] = strings.ReplaceAll(v, "\x00", "")
		}
	}
	return out
}

// secretName reports whether a variable holds a secret by its name (a
// misspelt PASWORD too).
func secretName(name string) bool {
	n := strings.ToUpper(name)
	return !strings.HasSuffix(n, "_FILE") && (strings.Contains(n, "PASS") || strings.Contains(n, "SECRET") ||
		strings.Contains(n, "TOKEN") || strings.Contains(n, "PASWORD"))
}

var lineName = regexp.MustCompile(`^(POPHOOK_[A-Z0-9_]+)[:=]`)

// namesVariable reports whether a problem or warning line starts with the
// name of a variable: one that is set (quoted, %q, if it holds anything
// but A-Z, a-z, 0-9 and _), or one pophook reads for some account or sink.
func namesVariable(line string, env map[string]string) bool {
	for name := range env {
		if strings.HasPrefix(line, name+": ") || strings.HasPrefix(line, name+"=") || strings.HasPrefix(line, strconv.Quote(name)+": ") {
			return true
		}
	}
	m := lineName.FindStringSubmatch(line)
	if m == nil {
		return false
	}
	name := m[1]
	for _, s := range suffixes(globalEnv{}) {
		if name == envPrefix+"_"+s {
			return true
		}
	}
	for _, s := range suffixes(accountEnv{}) {
		if strings.HasPrefix(name, envPrefix+"_ACCOUNT_") && strings.HasSuffix(name, "_"+s) {
			return true
		}
	}
	for _, s := range sinkSuffixes("") {
		if strings.HasPrefix(name, envPrefix+"_SINK_") && strings.HasSuffix(name, "_"+s) {
			return true
		}
	}
	return false
}

// FuzzLoad: whatever the environment, Load answers with a Config or with
// one line per problem, each naming its variable, and never with a secret.
func FuzzLoad(f *testing.F) {
	files := newFuzzFiles(f)
	f.Add([]byte{0})
	f.Add([]byte{1})
	f.Add([]byte{2, 4, 8, 'A', 'C', 'O', 'U', 'N', 'T', 'S', 'x', 2})
	f.Add([]byte{0, 0, 60, 0, 33, 1, 22, 3, 50, 9, 3, 3, 17, 0, 2, 7, 4, 6, 'H', 'O', 'S', 'T', 'X', 'Y', 1, 1})
	f.Add([]byte("\x00\x03\x07\x02\x01\x00\x00\x09\x04\x02\x10\x11\x05\x00\x03\x05\x01\x00\x04\x07\x22\x33\x44\x55"))
	f.Add([]byte("\x01\x00\x40\x01\x00\x00\x41\x02\x03\x00\x3c\x02\x02\x05\x05\x05"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env := fuzzEnv(data, files)
		clearEnv(t)
		setEnv(t, env)
		cfg, warnings, err := Load()
		checkLoad(t, env, cfg, warnings, err)
	})
}

// TestProblemLinesNameVariables holds the environments FuzzLoad found
// whose problems break the one-line-per-problem promise, written out.
func TestProblemLinesNameVariables(t *testing.T) {
	for _, env := range []map[string]string{
		// cron's error quotes the schedule as written, line break and all.
		{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "@every 1\nm"},
		{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "@daily\nx"},
		{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "@daily\rx\u2028y\xff"},
		// The name itself holds a line break (a warning), or is a
		// misspelling with one (a problem).
		{"POPHOOK_\n": "x"},
		{"POPHOOK_ACCOUNT_SUPPORT_KEEP\r\n": "true"},
		// os's errors give the path as it is.
		{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE": "/nonexistent/a\nb"},
		{"POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE": "/nonexistent/\x1b[2Jc"},
	} {
		setup(t, env)
		all := validEnv(t)
		maps.Copy(all, env)
		cfg, warnings, err := Load()
		checkLoad(t, all, cfg, warnings, err)
	}
}

func checkLoad(t *testing.T, env map[string]string, cfg *Config, warnings []string, err error) {
	t.Helper()
	if (cfg == nil) == (err == nil) {
		t.Fatalf("Load returned Config %v with error %v", cfg != nil, err)
	}
	var text string
	if err != nil {
		var p *Problems
		if !errors.As(err, &p) {
			t.Fatalf("error is %T, want *Problems: %v", err, err)
		}
		if len(*p) == 0 || err.Error() != strings.Join(*p, "\n") {
			t.Fatalf("Error() is not the problems one per line: %q", err.Error())
		}
		text = err.Error()
	}
	for _, line := range strings.Split(text, "\n") {
		if text != "" && !namesVariable(line, env) {
			t.Errorf("problem line does not name a POPHOOK_ variable: %q\nenvironment %q", line, env)
		}
		if !printable(line) {
			t.Errorf("problem line holds a control character: %q", line)
		}
	}
	for _, w := range warnings {
		for _, line := range strings.Split(w, "\n") {
			if !namesVariable(line, env) {
				t.Errorf("warning line does not name a POPHOOK_ variable: %q\nenvironment %q", line, env)
			}
			if !printable(line) {
				t.Errorf("warning line holds a control character: %q", line)
			}
		}
	}
	checkNoSecrets(t, env, text+"\n"+strings.Join(warnings, "\n"))
	if cfg != nil {
		checkConfig(t, cfg)
	}
}

// printable reports whether s is UTF-8 text without control characters
// or other runes that are not printable (a carriage return, U+2028,
// terminal escapes).
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) })
}

// checkNoSecrets looks for the values of secret variables (and URL
// passwords) in out. A value that shows is run again, replaced by a
// marker, to tell a leak from a coincidence (a password "required").
func checkNoSecrets(t *testing.T, env map[string]string, out string) {
	t.Helper()
	for name, v := range env {
		var secret string
		switch {
		case secretName(name):
			secret = Unquote(v)
		case strings.HasSuffix(name, "_URL"):
			if u, err := url.Parse(Unquote(v)); err == nil && u.User != nil {
				secret, _ = u.User.Password()
			}
		}
		if len(secret) < 6 || !strings.Contains(out, secret) {
			continue
		}
		marker := "MARKER" + strings.Repeat("Q", len(secret))
		again := maps.Clone(env)
		again[name] = strings.ReplaceAll(v, secret, marker)
		clearEnv(t)
		setEnv(t, again)
		_, warnings, err := Load()
		text := strings.Join(warnings, "\n")
		if err != nil {
			text += "\n" + err.Error()
		}
		if strings.Contains(text, marker) {
			t.Errorf("the value of %s shows in a problem or warning:\n%s", name, out)
		}
	}
}

// checkConfig checks that an accepted configuration holds together.
func checkConfig(t *testing.T, cfg *Config) {
	t.Helper()
	if len(cfg.Accounts) == 0 || cfg.Concurrency < 1 || cfg.Concurrency > 1000 {
		t.Errorf("accepted %d accounts, concurrency %d", len(cfg.Accounts), cfg.Concurrency)
	}
	for _, a := range cfg.Accounts {
		if !namePattern.MatchString(a.Name) || a.Port < 1 || a.Port > 65535 || a.MaxMessageSize <= 0 || a.Username == "" ||
			!slices.Contains([]string{TLSImplicit, TLSStartTLS, TLSNone}, a.TLS) || (a.TLS == TLSNone && !a.AllowInsecure) {
			t.Errorf("accepted account %+v", a)
		}
		if err := checkSchedule(a.Schedule); err != nil {
			t.Errorf("account %s: accepted schedule: %v", a.Name, err)
		}
		if len(a.Sinks) == 0 {
			t.Errorf("account %s: accepted without sinks", a.Name)
		}
		for _, s := range a.Sinks {
			if cfg.Sinks[s] == nil {
				t.Errorf("account %s: sink %q not configured", a.Name, s)
			}
		}
		if !a.Password.IsSet() && a.OAuth2 == nil {
			t.Errorf("account %s: accepted without a credential", a.Name)
		}
	}
	for name, s := range cfg.Sinks {
		switch s.Type {
		case SinkWebhook:
			if _, err := webhook.ParseURL(s.URL); err != nil || s.Timeout <= 0 || s.Budget <= 0 || s.InlineLimit < 0 {
				t.Errorf("sink %s: accepted %+v (%v)", name, s, err)
			}
		case SinkMaildir:
			if s.Path == "" {
				t.Errorf("sink %s: accepted without a path", name)
			}
		case SinkSMTP:
			if s.Host == "" || len(s.To) == 0 || s.Port < 1 || s.Port > 65535 || s.Timeout <= 0 {
				t.Errorf("sink %s: accepted %+v", name, s)
			}
		default:
			t.Errorf("sink %s: accepted type %q", name, s.Type)
		}
	}
}

// envFileVars are the variables FuzzEnvFile writes a value to, in a
// configuration that is otherwise complete.
var envFileVars = []string{
	"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE", "POPHOOK_SINK_HELPDESK_URL", "POPHOOK_SINK_HELPDESK_FORM_FIELDS",
	"POPHOOK_SINK_HELPDESK_HEADERS", "POPHOOK_SINK_ARCHIVE_PATH", "POPHOOK_ACCOUNT_SUPPORT_USERNAME",
	"POPHOOK_ACCOUNT_SUPPORT_PASSWORD", "POPHOOK_ACCOUNT_SUPPORT_KEEP", "POPHOOK_ACCOUNT_SUPPORT_HOST",
	"POPHOOK_SINK_HELPDESK_FORM_FILENAME", "POPHOOK_HTTP_ADDR", "POPHOOK_DATA_DIR",
}

// ruleValue writes v on a .env line as the README's rule says: a value
// made only of A-Z, a-z, 0-9 and @%+=:,./_- is written as it is, any
// other in single quotes. ok is false where the rule says no line will
// do (give a secret as NAME_FILE): a value that holds a single quote, a
// control character (a tab, a line break) or bytes that are not UTF-8, or
// that starts and ends with a double quote. Nothing else: README.md's
// paragraph on the .env file states exactly this.
func ruleValue(v string) (written string, ok bool) {
	if strings.Contains(v, "'") || strings.ContainsFunc(v, unicode.IsControl) || !utf8.ValidString(v) ||
		strings.HasPrefix(v, `"`) && strings.HasSuffix(v, `"`) {
		return "", false
	}
	if !strings.ContainsFunc(v, needsQuotes) {
		return v, true
	}
	return "'" + v + "'", true
}

// needsQuotes reports whether r is outside the characters the rule lets
// stand unquoted.
func needsQuotes(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
}

// safeForShell reports whether /bin/sh may be given the line. Outside
// quotes a shell operator starts a new command or a redirection; the
// shell runs with PATH naming an empty directory, so a bare word finds no
// program, but a word with a '/' (other than in an assignment) could name
// one, or a file to overwrite. The rule quotes every operator, so this
// only guards against a rule loosened by mistake.
func safeForShell(value, written string) bool {
	if written != value { // in single quotes
		return true
	}
	words := strings.FieldsFunc(written, func(r rune) bool { return strings.ContainsRune(";&|<>()`", r) })
	for i, w := range words {
		slash, eq := strings.IndexByte(w, '/'), strings.IndexByte(w, '=')
		if i > 0 && slash >= 0 && (eq < 0 || slash < eq) {
			return false
		}
	}
	return true
}

// TestExamplesFollowEnvFileRule: every value in .env.example (commented
// out or not) and in README.md's env examples is written exactly as
// ruleValue writes it, so the examples teach the rule FuzzEnvFile holds
// to.
func TestExamplesFollowEnvFileRule(t *testing.T) {
	root := repoRoot(t)
	check := func(where, key, raw string) {
		t.Helper()
		value := raw
		if len(raw) >= 2 && raw[0] == '\'' && raw[len(raw)-1] == '\'' {
			value = raw[1 : len(raw)-1]
		}
		if written, ok := ruleValue(value); !ok || written != raw {
			t.Errorf("%s: %s=%s: the README's rule writes the value %q as %q (ok %v)", where, key, raw, value, written, ok)
		}
	}
	example, err := os.ReadFile(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(example), "\n") {
		if m := assignment.FindStringSubmatch(line); m != nil {
			check(fmt.Sprintf(".env.example:%d", n+1), m[1], m[2])
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range regexp.MustCompile("(?s)```env\n(.*?)```").FindAllStringSubmatch(string(readme), -1) {
		for _, kv := range parseEnvBlock(t, b[1]) {
			check(fmt.Sprintf("README.md env example %d", i+1), kv[0], kv[1])
		}
	}
}

// FuzzEnvFile: a value that follows the README's quoting rule means the
// same to every loader.
func FuzzEnvFile(f *testing.F) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		f.Skip("no /bin/sh")
	}
	for _, v := range []string{"@every 1m", "https://helpdesk.example.com/hooks/mail", `queue=General\naction=correspond`,
		`Authorization: Bearer abc\nX-Tenant: 7`, "/var/mail/archive", "support@example.com", `pa$$ w\rd#1`, "30d",
		"pop.example.com", "message.eml", "", ":8080", "C:\\mail", "tab\there", "\u00a0nbsp", "é", "**", "x=y", "{a,b}",
		"a;b", "a&b", "a|b", "<a>", "(a)", "`a`", "~/x", "x=~/y", "a\"b", "\"a", "!x", "a'b", `"q"`, "-", "a%b+c,d@e"} {
		f.Add(uint8(len(v)), v)
	}
	tmp := f.TempDir()
	if err := os.Mkdir(filepath.Join(tmp, "empty"), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		written, ok := ruleValue(value)
		if !ok {
			t.Skip("the rule says no .env line will do: give the value as NAME_FILE")
		}
		if !safeForShell(value, written) {
			t.Fatalf("the rule leaves a shell operator outside quotes in %s; not given to a shell", written)
		}
		key := envFileVars[int(which)%len(envFileVars)]
		sh, status, err := shellValue(tmp, key, written)
		switch {
		case err != nil:
			t.Fatalf("%s=%s: /bin/sh cannot read the line (a syntax error): %v", key, written, err)
		case status != "0":
			t.Errorf("%s=%s: /bin/sh ran something else on the line too, which failed (status %s)", key, written, status)
		}
		read := map[string]string{
			"docker --env-file": written,
			"sh":                sh,
			"compose env_file":  composeValue(written),
			"systemd":           systemdValue(written),
		}
		mean := func(v string) string { // what pophook makes of a value
			v = Unquote(v)
			if strings.HasSuffix(key, "_HEADERS") || strings.HasSuffix(key, "_FORM_FIELDS") {
				v = strings.ReplaceAll(v, `\n`, "\n")
			}
			return v
		}
		want := mean(read["docker --env-file"])
		for loader, v := range read {
			if got := mean(v); got != want {
				t.Errorf("%s=%s (value %q): %s gives pophook %q, docker --env-file %q", key, written, value, loader, got, want)
			}
		}
		if t.Failed() {
			return
		}
		// And Load, which applies that handling, makes the same of it.
		base := map[string]string{
			"POPHOOK_ACCOUNTS": "support", "POPHOOK_SINKS": "helpdesk,archive",
			"POPHOOK_ACCOUNT_SUPPORT_HOST": "pop.example.com", "POPHOOK_ACCOUNT_SUPPORT_USERNAME": "support@example.com",
			"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "pop-password", "POPHOOK_ACCOUNT_SUPPORT_SINKS": "helpdesk,archive",
			"POPHOOK_SINK_HELPDESK_TYPE": "webhook", "POPHOOK_SINK_HELPDESK_URL": "https://helpdesk.example.com/hooks/mail",
			"POPHOOK_SINK_ARCHIVE_TYPE": "maildir", "POPHOOK_SINK_ARCHIVE_PATH": "/var/mail/archive",
		}
		type loaded struct {
			cfg      *Config
			warnings []string
			err      string
		}
		load := func(v string) loaded {
			clearEnv(t)
			setEnv(t, base)
			t.Setenv(key, v)
			cfg, warnings, err := Load()
			l := loaded{cfg: cfg, warnings: warnings}
			if err != nil {
				l.err = err.Error()
			}
			return l
		}
		docker, shell := load(written), load(sh)
		if !reflect.DeepEqual(docker, shell) {
			t.Errorf("%s=%s: Load differs under docker --env-file (%v %q) and sh (%v %q)", key, written, docker.cfg, docker.err, shell.cfg, shell.err)
		}
	})
}

// shellValue sources a one-line env file in /bin/sh as the README says
// (set -a; . ./.env) and returns the variable's value ("<unset>" when the
// line did not set it) and the exit status of sourcing the file. The
// shell runs in dir with a PATH where a stray command word finds nothing.
func shellValue(dir, key, written string) (value, status string, err error) {
	file := filepath.Join(dir, "env")
	if err := os.WriteFile(file, []byte(key+"="+written+"\n"), 0o600); err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `set -a; . "$1" 2>/dev/null; printf '%s\n%s' "$?" "${`+key+`-<unset>}"`, "sh", file)
	cmd.Dir = dir
	// PATH names an empty directory: unset, the shell would search its
	// default one.
	cmd.Env = []string{"HOME=/home/fuzz", "PATH=" + filepath.Join(dir, "empty")}
	out, err := cmd.Output()
	if err != nil {
		return "", "", err
	}
	status, value, _ = strings.Cut(string(out), "\n")
	return value, status, nil
}
