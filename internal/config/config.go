// Package config reads pophook's configuration from the environment
// (DESIGN.md section 2): global settings, the accounts listed in
// POPHOOK_ACCOUNTS and the sinks listed in POPHOOK_SINKS.
//
// Load reports every problem at once, one line per problem naming the
// variable, so an operator fixes a deployment in one round instead of one
// restart per typo. Secrets never appear in those lines, nor in anything
// printed or logged from a Config.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pophook/pophook/internal/shard"
	"github.com/pophook/pophook/sinks/webhook"
)

// Config is the whole configuration.
type Config struct {
	DataDir     string      // POPHOOK_DATA_DIR: ledger.db and the spool
	LogLevel    slog.Level  // POPHOOK_LOG_LEVEL
	LogFormat   string      // POPHOOK_LOG_FORMAT: text or json
	HTTPAddr    string      // POPHOOK_HTTP_ADDR: host:port, "" disables the endpoints
	Concurrency int         // POPHOOK_CONCURRENCY: accounts fetched at the same time
	Shard       shard.Shard // POPHOOK_SHARD: the accounts this instance owns
	Accounts    []Account   // in POPHOOK_ACCOUNTS order
	Sinks       map[string]*Sink
}

// Account is one POP3 mailbox, from the variables POPHOOK_ACCOUNT_<NAME>_*.
type Account struct {
	Name           string // as listed in POPHOOK_ACCOUNTS: a-z, 0-9, _
	Host           string
	Port           int
	TLS            string // TLSImplicit, TLSStartTLS or TLSNone
	AllowInsecure  bool
	TLSCAFile      string // extra CA bundle, checked to hold a PEM certificate
	TLSSkipVerify  bool
	Username       string
	Password       Secret // for Auth "xoauth2", the bearer token
	Auth           string // auto, user, plain, login or xoauth2
	Schedule       string // valid for cron.ParseStandard
	Sinks          []string
	Keep           Keep
	SkipExisting   bool
	MaxMessageSize int64 // bytes
	// Provider names the preset HOST, PORT, TLS, AUTH and OAuth2
	// endpoints came from, where the variables did not say.
	Provider string
	// OAuth2 is set for AUTH=xoauth2 with a client: pophook gets and
	// refreshes the access tokens itself. Without it, an xoauth2
	// account's Password is the bearer token.
	OAuth2 *OAuth2
}

// OAuth2 is how an account gets its access tokens.
type OAuth2 struct {
	TokenURL      string
	AuthURL       string // for pophook oauth login's browser flow; "" when unknown
	DeviceAuthURL string // for pophook oauth login's device flow; "" when unknown
	ClientID      string
	ClientSecret  Secret   // unset for public clients
	RefreshToken  Secret   // unset: the client credentials grant (Microsoft app-only)
	Scopes        []string // space- or comma-separated in the variable
	Tenant        string   // Microsoft
}

// Keep says when a message that every sink has taken is deleted from the
// server (worker.Keep applies it). The zero value deletes it at once.
type Keep struct {
	Forever bool          // never delete
	After   time.Duration // if > 0, delete only once first seen longer ago than this
}

// String gives the value as it would be configured: false, true or a duration.
func (k Keep) String() string {
	switch {
	case k.Forever:
		return "true"
	case k.After > 0:
		return k.After.String()
	}
	return "false"
}

// TLS modes of accounts and SMTP sinks.
const (
	TLSImplicit = "implicit"
	TLSStartTLS = "starttls"
	TLSNone     = "none"
)

// Sink is one destination, from the variables POPHOOK_SINK_<NAME>_*. Only
// the fields of its Type are filled.
type Sink struct {
	Name string
	Type string // SinkWebhook, SinkMaildir or SinkSMTP

	// webhook
	URL    string // absolute http(s) URL; may carry user:password
	Format string // json, raw or form
	Secret Secret // "whsec_" + base64, or unset
	// Headers holds the extra headers as "Name: value" lines (see
	// webhook.ParseHeaders); read again at every delivery, like Secret.
	Headers Secret
	Timeout time.Duration
	// Budget bounds one delivery, retries included; then the message
	// waits for the next run.
	Budget time.Duration
	// InlineLimit: attachments up to this size carry their content in the
	// json payload (0: none do); IncludeRaw adds the whole message, base64.
	InlineLimit int64
	IncludeRaw  bool
	// FormField names the file field of the form format; FormFields are
	// extra fields sent before it, in order (Request Tracker: queue, action).
	FormField    string
	FormFilename string // "": the message part has no file name (Request Tracker)
	FormFields   [][2]string
	// AcceptHTML: a 2xx HTML page counts as a delivery (json, raw).
	AcceptHTML bool

	// maildir
	Path string

	// smtp (Timeout and Budget as for webhooks)
	Host          string
	Port          int
	TLS           string
	AllowInsecure bool
	TLSCAFile     string
	Username      string
	Password      Secret
	From          string   // envelope sender; "" means the account's Username (see Sender)
	To            []string // envelope recipients
}

// Sender returns the envelope sender for a message of account a: FROM, or
// else the account's user name, which Load has checked to be an address.
// Sending as the mailbox the mail came from keeps SPF intact.
func (s *Sink) Sender(a *Account) string {
	if s.From != "" {
		return s.From
	}
	return a.Username
}

// sinkFields has Sink's fields but none of its methods, so that the
// methods below can print a redacted copy without calling themselves.
type sinkFields Sink

// redacted returns a copy whose URL password is replaced; Secret fields
// redact themselves.
func (s Sink) redacted() sinkFields {
	r := sinkFields(s)
	if r.URL != "" {
		r.URL = redactURL(r.URL)
	}
	return r
}

// HeaderValues reads and parses the extra headers now.
func (s *Sink) HeaderValues() (http.Header, error) {
	if !s.Headers.IsSet() {
		return nil, nil
	}
	text, err := s.Headers.Reveal()
	if err != nil {
		return nil, err
	}
	h, errs := webhook.ParseHeaders(text)
	return h, errors.Join(errs...)
}

// String prints a Sink (%v, %+v, %s) without its URL password or header
// values. (Sink cannot implement fmt.Formatter: it has a field Format.)
func (s Sink) String() string { return fmt.Sprintf("%+v", s.redacted()) }

// GoString makes %#v redact too.
func (s Sink) GoString() string { return fmt.Sprintf("%#v", s.redacted()) }

// LogValue logs a Sink redacted.
func (s Sink) LogValue() slog.Value { return slog.AnyValue(s.redacted()) }

// MarshalJSON marshals a Sink redacted (slog's JSON handler marshals the
// sinks inside a Config this way).
func (s Sink) MarshalJSON() ([]byte, error) { return json.Marshal(s.redacted()) }

// Problems lists everything wrong with a configuration, one line each,
// each line starting with the variable's name (see problemLine: whatever
// a name or a value holds, a line never breaks in two).
type Problems []string

func (p *Problems) Error() string { return strings.Join(*p, "\n") }

func (p *Problems) add(name string, err error) { *p = append(*p, problemLine(name, err.Error())) }

func (p *Problems) addf(name, format string, args ...any) {
	*p = append(*p, problemLine(name, fmt.Sprintf(format, args...)))
}

// problemLine makes "NAME: text" for a problem or warning, always one
// line that starts with the variable's name: an odd name (any character
// other than A-Z, a-z, 0-9 and _) is quoted, and whatever in text is not
// printable (a line break in a value a parser's error repeats as it was
// written) is escaped as in a Go string.
func problemLine(name, text string) string {
	return displayName(name) + ": " + escapeText(text)
}

// displayName gives name as it is, or quoted (%q) if it holds anything
// other than A-Z, a-z, 0-9 and _.
func displayName(name string) string {
	odd := strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_')
	})
	if name == "" || odd {
		return strconv.Quote(name)
	}
	return name
}

// escapeText escapes, as strconv.Quote would, every rune of s that is not
// printable and every byte that is not UTF-8, leaving the rest (and any
// quotes) as they are.
func escapeText(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == utf8.RuneError || !unicode.IsPrint(r) }) {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case unicode.IsPrint(r):
			b.WriteString(s[:size])
		default:
			q := strconv.QuoteRune(r) // '\n', '\x01', '\u2028'
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[size:]
	}
	return b.String()
}

func (p *Problems) required(name string) { p.addf(name, "required") }

// conv parses raw and records a problem for name if it fails.
func conv[T any](p *Problems, name, raw string, parse func(string) (T, error)) T {
	v, err := parse(raw)
	if err != nil {
		p.add(name, err)
	}
	return v
}

func enum(allowed ...string) func(string) (string, error) {
	return func(s string) (string, error) { return parseEnum(s, allowed...) }
}

// Load reads the configuration from the process environment. The error,
// when not nil, is a *Problems listing every problem found, and the Config
// is nil; a misspelt variable is one of them (see unknownVariables). The
// warnings (variables of accounts or sinks that are not listed, unused
// sinks) are returned either way.
func Load() (*Config, []string, error) {
	var p Problems
	cfg, accountNames, sinkNames := loadGlobal(&p)
	ca := caFiles{} // accounts and sinks often share one CA file
	for _, name := range sinkNames {
		cfg.Sinks[name] = loadSink(name, &p, ca)
	}
	for _, name := range accountNames {
		cfg.Accounts = append(cfg.Accounts, loadAccount(name, sinkNames, &p, ca))
	}
	checkSenders(cfg, &p)

	known := Variables(accountNames, sinkTypesOf(cfg.Sinks))
	warnings := append(unusedSinks(cfg, sinkNames), unknownVariables(&p, accountNames, cfg.Sinks, known)...)
	for _, a := range cfg.Accounts {
		if a.TLSSkipVerify {
			warnings = append(warnings, fmt.Sprintf("%s_TLS_SKIP_VERIFY=true: the server's certificate is not checked, so anyone on the path can read the password and the mail; use %s_TLS_CA_FILE instead",
				accountPrefix(a.Name), accountPrefix(a.Name)))
		}
	}
	if len(p) > 0 {
		sortProblems(p, known)
		return nil, warnings, &p
	}
	return cfg, warnings, nil
}

// loadGlobal reads the POPHOOK_ variables that are not per account or sink
// and returns the listed account and sink names.
func loadGlobal(p *Problems) (cfg *Config, accounts, sinks []string) {
	var e globalEnv
	read(envPrefix, &e)
	name := func(suffix string) string { return envPrefix + "_" + suffix }
	cfg = &Config{
		DataDir:     e.DataDir,
		LogLevel:    conv(p, name("LOG_LEVEL"), e.LogLevel, parseLogLevel),
		LogFormat:   conv(p, name("LOG_FORMAT"), e.LogFormat, enum("text", "json")),
		HTTPAddr:    e.HTTPAddr,
		Concurrency: conv(p, name("CONCURRENCY"), e.Concurrency, func(s string) (int, error) { return parseIntRange(s, 1, 1000) }),
		Sinks:       map[string]*Sink{},
	}
	if e.Shard != "" {
		cfg.Shard = conv(p, name("SHARD"), e.Shard, shard.Parse)
	}
	if e.HTTPAddr != "" {
		if err := checkListenAddr(e.HTTPAddr); err != nil {
			p.add(name("HTTP_ADDR"), err)
		}
	}
	accounts = namesList(p, name("ACCOUNTS"), e.Accounts)
	if strings.Trim(e.Accounts, ", \t") == "" {
		p.addf(name("ACCOUNTS"), "required: the names of the accounts to fetch, comma separated")
	}
	sinks = namesList(p, name("SINKS"), e.Sinks)
	return cfg, accounts, sinks
}

func namesList(p *Problems, name, raw string) []string {
	names, errs := parseNames(raw)
	for _, err := range errs {
		p.add(name, err)
	}
	return names
}

func sinkTypesOf(sinks map[string]*Sink) map[string]string {
	types := make(map[string]string, len(sinks))
	for name, s := range sinks {
		types[name] = s.Type
	}
	return types
}

// checkSenders checks that every SMTP sink without FROM has an address to
// default to: the user name of each account that uses it.
func checkSenders(cfg *Config, p *Problems) {
	for _, a := range cfg.Accounts {
		for _, name := range a.Sinks {
			s := cfg.Sinks[name]
			if s == nil || s.Type != SinkSMTP || s.From != "" || a.Username == "" || strings.Contains(a.Username, "@") {
				continue
			}
			p.addf(sinkPrefix(name)+"_FROM", "required: account %q uses this sink and its USERNAME %q is not a mail address to send from",
				a.Name, a.Username)
		}
	}
}

// unusedSinks warns about listed sinks that no account delivers to.
func unusedSinks(cfg *Config, sinkNames []string) []string {
	used := map[string]bool{}
	for _, a := range cfg.Accounts {
		for _, s := range a.Sinks {
			used[s] = true
		}
	}
	var warnings []string
	for _, s := range sinkNames {
		if !used[s] {
			warnings = append(warnings, fmt.Sprintf("%s_SINKS: sink %q is not used by any account", envPrefix, s))
		}
	}
	return warnings
}
