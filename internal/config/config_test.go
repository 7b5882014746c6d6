package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// clearEnv unsets every POPHOOK_ variable of the real environment for the
// duration of the test (t.Setenv restores them afterwards).
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "POPHOOK_") {
			unsetEnv(t, name)
		}
	}
}

// unsetEnv removes name for the duration of the test: unlike an empty
// value, an unset variable makes envconfig look for the bare suffix.
func unsetEnv(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "")
	os.Unsetenv(name)
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// validEnv is a complete configuration: one account delivering to one sink
// of each type.
func validEnv(t *testing.T) map[string]string {
	return map[string]string{
		"POPHOOK_ACCOUNTS":                 "support",
		"POPHOOK_SINKS":                    "helpdesk,archive,relay",
		"POPHOOK_ACCOUNT_SUPPORT_HOST":     "pop.example.com",
		"POPHOOK_ACCOUNT_SUPPORT_USERNAME": "support@example.com",
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "pop-password",
		"POPHOOK_ACCOUNT_SUPPORT_SINKS":    "helpdesk,archive,relay",
		"POPHOOK_SINK_HELPDESK_TYPE":       "webhook",
		"POPHOOK_SINK_HELPDESK_URL":        "https://helpdesk.example.com/hooks/mail",
		"POPHOOK_SINK_ARCHIVE_TYPE":        "maildir",
		"POPHOOK_SINK_ARCHIVE_PATH":        t.TempDir(),
		"POPHOOK_SINK_RELAY_TYPE":          "smtp",
		"POPHOOK_SINK_RELAY_HOST":          "smtp.example.com",
		"POPHOOK_SINK_RELAY_TO":            "tickets@example.com",
	}
}

// setup clears the environment and sets validEnv with overrides applied.
func setup(t *testing.T, overrides map[string]string) {
	t.Helper()
	clearEnv(t)
	setEnv(t, validEnv(t))
	setEnv(t, overrides)
}

func mustLoad(t *testing.T) (*Config, []string) {
	t.Helper()
	cfg, warnings, err := Load()
	if err != nil {
		t.Fatalf("Load: unexpected problems:\n%v", err)
	}
	return cfg, warnings
}

// loadProblems loads and returns the problem lines, failing if there are none.
func loadProblems(t *testing.T) []string {
	t.Helper()
	cfg, _, err := Load()
	if err == nil {
		t.Fatal("Load succeeded, want problems")
	}
	if cfg != nil {
		t.Error("Load returned a Config along with problems")
	}
	var p *Problems
	if !errors.As(err, &p) {
		t.Fatalf("error is %T, want *Problems", err)
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, []string(*p)) {
		t.Errorf("Error() = %q, want the problems one per line", err.Error())
	}
	return *p
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	setup(t, map[string]string{
		"POPHOOK_LOG_LEVEL":            "", // present but empty counts as unset
		"POPHOOK_ACCOUNT_SUPPORT_KEEP": "",
	})
	cfg, warnings := mustLoad(t)
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("DataDir", cfg.DataDir, "/var/lib/pophook")
	check("LogLevel", cfg.LogLevel, slog.LevelInfo)
	check("LogFormat", cfg.LogFormat, "text")
	check("HTTPAddr", cfg.HTTPAddr, "127.0.0.1:8080")
	check("Concurrency", cfg.Concurrency, 4)

	if len(cfg.Accounts) != 1 {
		t.Fatalf("Accounts = %v", cfg.Accounts)
	}
	a := cfg.Accounts[0]
	check("Name", a.Name, "support")
	check("Port", a.Port, 995)
	check("TLS", a.TLS, "implicit")
	check("AllowInsecure", a.AllowInsecure, false)
	check("TLSSkipVerify", a.TLSSkipVerify, false)
	check("Auth", a.Auth, "auto")
	check("Schedule", a.Schedule, "@every 1m")
	check("Sinks", a.Sinks, []string{"helpdesk", "archive", "relay"})
	check("Keep", a.Keep, Keep{})
	check("SkipExisting", a.SkipExisting, false)
	check("MaxMessageSize", a.MaxMessageSize, 64<<20)
	if pw, err := a.Password.Reveal(); pw != "pop-password" || err != nil {
		t.Errorf("Password.Reveal() = %q, %v", pw, err)
	}

	if len(cfg.Sinks) != 3 {
		t.Fatalf("Sinks = %v", cfg.Sinks)
	}
	h := cfg.Sinks["helpdesk"]
	check("helpdesk Name", h.Name, "helpdesk")
	check("helpdesk Type", h.Type, "webhook")
	check("helpdesk Format", h.Format, "json")
	check("helpdesk Timeout", h.Timeout, 30*time.Second)
	check("helpdesk Secret set", h.Secret.IsSet(), false)
	check("helpdesk Headers set", h.Headers.IsSet(), false)
	check("archive Type", cfg.Sinks["archive"].Type, "maildir")
	r := cfg.Sinks["relay"]
	check("relay Port", r.Port, 587)
	check("relay TLS", r.TLS, "starttls")
	check("relay From", r.From, "")
	check("relay Sender", r.Sender(&a), "support@example.com")
	check("relay To", r.To, []string{"tickets@example.com"})
}

func TestPortDefaultsFollowTLS(t *testing.T) {
	setup(t, map[string]string{
		"POPHOOK_ACCOUNT_SUPPORT_TLS": "STARTTLS", // case does not matter
		"POPHOOK_SINK_RELAY_TLS":      "implicit",
	})
	cfg, _ := mustLoad(t)
	if got := cfg.Accounts[0].Port; got != 110 {
		t.Errorf("account port with starttls = %d, want 110", got)
	}
	if got := cfg.Accounts[0].TLS; got != TLSStartTLS {
		t.Errorf("account TLS = %q, want starttls", got)
	}
	if got := cfg.Sinks["relay"].Port; got != 465 {
		t.Errorf("smtp port with implicit TLS = %d, want 465", got)
	}
}

func TestValuesParsed(t *testing.T) {
	headers := writeFile(t, "# tokens\nAuthorization: Bearer abc\r\n\nX-Tenant: support\nx-tenant: second\n")
	setup(t, map[string]string{
		"POPHOOK_LOG_LEVEL":                        "DEBUG",
		"POPHOOK_LOG_FORMAT":                       "json",
		"POPHOOK_HTTP_ADDR":                        ":9090",
		"POPHOOK_CONCURRENCY":                      "1000",
		"POPHOOK_ACCOUNTS":                         " support , billing ,",
		"POPHOOK_ACCOUNT_SUPPORT_PORT":             "1995",
		"POPHOOK_ACCOUNT_SUPPORT_TLS":              "none",
		"POPHOOK_ACCOUNT_SUPPORT_ALLOW_INSECURE":   "Yes",
		"POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY":  "1",
		"POPHOOK_ACCOUNT_SUPPORT_AUTH":             "XOAUTH2",
		"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE":         "*/5 * * * *",
		"POPHOOK_ACCOUNT_SUPPORT_KEEP":             "30d",
		"POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTING":    "TRUE",
		"POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE": "10MB",
		"POPHOOK_ACCOUNT_BILLING_HOST":             "10.0.0.1",
		"POPHOOK_ACCOUNT_BILLING_USERNAME":         "billing@example.com",
		"POPHOOK_ACCOUNT_BILLING_PASSWORD":         "x",
		"POPHOOK_ACCOUNT_BILLING_SINKS":            "archive",
		"POPHOOK_ACCOUNT_BILLING_SCHEDULE":         "@hourly",
		"POPHOOK_SINK_HELPDESK_FORMAT":             "form",
		"POPHOOK_SINK_HELPDESK_TIMEOUT":            "1m30s",
		"POPHOOK_SINK_HELPDESK_SECRET":             "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"POPHOOK_SINK_HELPDESK_HEADERS_FILE":       headers,
		"POPHOOK_SINK_RELAY_USERNAME":              "relay",
		"POPHOOK_SINK_RELAY_PASSWORD":              "relay-pw",
		"POPHOOK_SINK_RELAY_FROM":                  "Pophook <pophook@example.com>",
		"POPHOOK_SINK_RELAY_TO":                    "a@example.com, \"Tickets, Inc\" <b@example.com>",
	})
	cfg, _ := mustLoad(t)
	if cfg.LogLevel != slog.LevelDebug || cfg.LogFormat != "json" || cfg.HTTPAddr != ":9090" || cfg.Concurrency != 1000 {
		t.Errorf("globals: %+v", cfg)
	}
	if len(cfg.Accounts) != 2 || cfg.Accounts[0].Name != "support" || cfg.Accounts[1].Name != "billing" {
		t.Fatalf("accounts not in POPHOOK_ACCOUNTS order: %+v", cfg.Accounts)
	}
	a := cfg.Accounts[0]
	want := Account{
		Name: "support", Host: "pop.example.com", Port: 1995, TLS: "none", AllowInsecure: true,
		TLSSkipVerify: true, Username: "support@example.com", Password: a.Password, Auth: "xoauth2",
		Schedule: "*/5 * * * *", Sinks: []string{"helpdesk", "archive", "relay"},
		Keep: Keep{After: 720 * time.Hour}, SkipExisting: true, MaxMessageSize: 10_000_000,
	}
	if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", want) {
		t.Errorf("account\n got %+v\nwant %+v", a, want)
	}
	h := cfg.Sinks["helpdesk"]
	if h.Format != "form" || h.Timeout != 90*time.Second || !h.Secret.IsSet() {
		t.Errorf("helpdesk: %+v", h)
	}
	hv, err := h.HeaderValues()
	if err != nil {
		t.Fatal(err)
	}
	if got := hv.Values("X-Tenant"); !slices.Equal(got, []string{"support", "second"}) {
		t.Errorf("X-Tenant = %q", got)
	}
	if got := hv.Get("Authorization"); got != "Bearer abc" {
		t.Errorf("Authorization = %q", got)
	}
	r := cfg.Sinks["relay"]
	if r.From != "pophook@example.com" || r.Sender(&a) != "pophook@example.com" {
		t.Errorf("relay From = %q", r.From)
	}
	if !slices.Equal(r.To, []string{"a@example.com", "b@example.com"}) {
		t.Errorf("relay To = %q", r.To)
	}
}

func TestHeadersWithLiteralNewline(t *testing.T) {
	setup(t, map[string]string{
		"POPHOOK_SINK_HELPDESK_HEADERS": `Authorization: Bearer abc\nX-Tenant: support`,
	})
	cfg, _ := mustLoad(t)
	h, err := cfg.Sinks["helpdesk"].HeaderValues()
	if err != nil || h.Get("Authorization") != "Bearer abc" || h.Get("X-Tenant") != "support" || len(h) != 2 {
		t.Errorf("Headers = %v", h)
	}
}

func TestHTTPAddrEmptyDisables(t *testing.T) {
	setup(t, map[string]string{"POPHOOK_HTTP_ADDR": ""})
	cfg, _ := mustLoad(t)
	if cfg.HTTPAddr != "" {
		t.Errorf("HTTPAddr = %q, want empty (disabled)", cfg.HTTPAddr)
	}
}

// envconfig falls back to the bare suffix (HOST, PATH, ...) when the
// prefixed variable is unset; that must never happen.
func TestBareSuffixNeverRead(t *testing.T) {
	setup(t, nil)
	for _, name := range []string{"POPHOOK_ACCOUNT_SUPPORT_HOST", "POPHOOK_SINK_ARCHIVE_PATH"} {
		unsetEnv(t, name)
	}
	t.Setenv("HOST", "evil.example.com")
	t.Setenv("PATH", os.Getenv("PATH")+":/usr/local/bin")
	got := loadProblems(t)
	want := []string{
		"POPHOOK_SINK_ARCHIVE_PATH: required",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems\n got %q\nwant %q", got, want)
	}
	// An empty HOST stays empty (it is looked up from the address at the
	// first run), never the shell's HOST.
	t.Setenv("POPHOOK_SINK_ARCHIVE_PATH", t.TempDir())
	if cfg, _ := mustLoad(t); cfg.Accounts[0].Host != "" {
		t.Errorf("HOST = %q, read from the bare HOST", cfg.Accounts[0].Host)
	}

	// Nor do bare names replace defaults.
	setup(t, nil)
	t.Setenv("DATA_DIR", "/evil")
	t.Setenv("SCHEDULE", "@every 1s")
	t.Setenv("TIMEOUT", "1s")
	cfg, _ := mustLoad(t)
	if cfg.DataDir != "/var/lib/pophook" || cfg.Accounts[0].Schedule != "@every 1m" || cfg.Sinks["helpdesk"].Timeout != 30*time.Second {
		t.Errorf("a bare variable was read: %+v", cfg)
	}
}

func TestProblems(t *testing.T) {
	garbage := writeFile(t, "not a certificate\n")
	empty := writeFile(t, "\n")
	tests := []struct {
		set     map[string]string
		varName string // the variable the problem must name
		want    string // part of the problem line
	}{
		{map[string]string{"POPHOOK_LOG_LEVEL": "verbose"}, "POPHOOK_LOG_LEVEL", `"verbose" is not one of debug, info, warn, error`},
		{map[string]string{"POPHOOK_LOG_FORMAT": "xml"}, "POPHOOK_LOG_FORMAT", `"xml" is not one of text, json`},
		{map[string]string{"POPHOOK_HTTP_ADDR": "8080"}, "POPHOOK_HTTP_ADDR", "is not host:port"},
		{map[string]string{"POPHOOK_HTTP_ADDR": "localhost:http"}, "POPHOOK_HTTP_ADDR", "is not host:port"},
		{map[string]string{"POPHOOK_CONCURRENCY": "0"}, "POPHOOK_CONCURRENCY", `"0" is not a whole number from 1 to 1000`},
		{map[string]string{"POPHOOK_CONCURRENCY": "1001"}, "POPHOOK_CONCURRENCY", "from 1 to 1000"},
		{map[string]string{"POPHOOK_CONCURRENCY": "four"}, "POPHOOK_CONCURRENCY", "from 1 to 1000"},
		{map[string]string{"POPHOOK_ACCOUNTS": ""}, "POPHOOK_ACCOUNTS", "required"},
		{map[string]string{"POPHOOK_ACCOUNTS": " , "}, "POPHOOK_ACCOUNTS", "required"},
		{map[string]string{"POPHOOK_ACCOUNTS": "Support"}, "POPHOOK_ACCOUNTS", `"Support" is not a valid name`},
		{map[string]string{"POPHOOK_ACCOUNTS": "support,sup-port"}, "POPHOOK_ACCOUNTS", `"sup-port" is not a valid name`},
		{map[string]string{"POPHOOK_ACCOUNTS": "support,support"}, "POPHOOK_ACCOUNTS", `"support" is listed twice`},
		{map[string]string{"POPHOOK_SINKS": "helpdesk,archive,relay,archive"}, "POPHOOK_SINKS", `"archive" is listed twice`},

		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_HOST": "", "POPHOOK_ACCOUNT_SUPPORT_USERNAME": "support", "POPHOOK_SINK_RELAY_FROM": "pophook@example.com"},
			"POPHOOK_ACCOUNT_SUPPORT_HOST", "required, or a USERNAME that is a mail address"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_HOST": "pop.example.com:995"}, "POPHOOK_ACCOUNT_SUPPORT_HOST", "give the port in its own variable"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_HOST": "pops://pop.example.com"}, "POPHOOK_ACCOUNT_SUPPORT_HOST", "is not a host name"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PORT": "99999"}, "POPHOOK_ACCOUNT_SUPPORT_PORT", `"99999" is not a port number (1-65535)`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PORT": "pop3s"}, "POPHOOK_ACCOUNT_SUPPORT_PORT", "is not a port number"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_TLS": "ssl"}, "POPHOOK_ACCOUNT_SUPPORT_TLS", `"ssl" is not one of implicit, starttls, none`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_TLS": "none"}, "POPHOOK_ACCOUNT_SUPPORT_TLS", "set POPHOOK_ACCOUNT_SUPPORT_ALLOW_INSECURE=true"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_ALLOW_INSECURE": "maybe"}, "POPHOOK_ACCOUNT_SUPPORT_ALLOW_INSECURE", `"maybe" is not a boolean`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE": "/nonexistent/ca.pem"}, "POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE", "no such file"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE": garbage}, "POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE", "holds no PEM certificate"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY": "2"}, "POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY", "is not a boolean"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_USERNAME": ""}, "POPHOOK_ACCOUNT_SUPPORT_USERNAME", "required"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": ""}, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD", "required (or POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE)"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE": empty}, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD", "set only one of"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE": "/nonexistent/pw"}, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE", "no such file"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE": empty}, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE", "is empty"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_AUTH": "cram-md5"}, "POPHOOK_ACCOUNT_SUPPORT_AUTH", `"cram-md5" is not one of auto, user, plain, login, xoauth2`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "every minute"}, "POPHOOK_ACCOUNT_SUPPORT_SCHEDULE", "is not a cron schedule"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "* * *"}, "POPHOOK_ACCOUNT_SUPPORT_SCHEDULE", "is not a cron schedule"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "@every 30d"}, "POPHOOK_ACCOUNT_SUPPORT_SCHEDULE", "is not a cron schedule"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "@every 100ms"}, "POPHOOK_ACCOUNT_SUPPORT_SCHEDULE", "at least 1s"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SINKS": ""}, "POPHOOK_ACCOUNT_SUPPORT_SINKS", "required"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SINKS": "helpdesk,nowhere"}, "POPHOOK_ACCOUNT_SUPPORT_SINKS", `"nowhere" is not listed in POPHOOK_SINKS`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SINKS": "helpdesk,archive,relay,helpdesk"}, "POPHOOK_ACCOUNT_SUPPORT_SINKS", `"helpdesk" is listed twice`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_KEEP": "sometimes"}, "POPHOOK_ACCOUNT_SUPPORT_KEEP", `"sometimes" is not false, true or a duration`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTING": "y"}, "POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTING", "is not a boolean"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE": "0"}, "POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE", `"0" is not a size above zero`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE": "10XB"}, "POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE", "is not a size"},

		{map[string]string{"POPHOOK_SINK_HELPDESK_TYPE": ""}, "POPHOOK_SINK_HELPDESK_TYPE", "required: webhook, maildir, smtp"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_TYPE": "ftp"}, "POPHOOK_SINK_HELPDESK_TYPE", `"ftp" is not one of webhook, maildir, smtp`},
		{map[string]string{"POPHOOK_SINK_HELPDESK_URL": ""}, "POPHOOK_SINK_HELPDESK_URL", "required"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_URL": "ftp://files.example.com/in"}, "POPHOOK_SINK_HELPDESK_URL", "is not an absolute http or https URL"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_URL": "/hooks/mail"}, "POPHOOK_SINK_HELPDESK_URL", "is not an absolute http or https URL"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_URL": "http://bad host/"}, "POPHOOK_SINK_HELPDESK_URL", "not a valid URL"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_FORMAT": "xml"}, "POPHOOK_SINK_HELPDESK_FORMAT", `"xml" is not one of json, raw, form`},
		{map[string]string{"POPHOOK_SINK_HELPDESK_SECRET": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "POPHOOK_SINK_HELPDESK_SECRET", `must start with "whsec_"`},
		{map[string]string{"POPHOOK_SINK_HELPDESK_SECRET": "whsec_not base64!"}, "POPHOOK_SINK_HELPDESK_SECRET", "followed by base64"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_SECRET_FILE": writeFile(t, "whsec_\n")}, "POPHOOK_SINK_HELPDESK_SECRET_FILE", "followed by base64"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_SECRET_FILE": "/nonexistent/secret"}, "POPHOOK_SINK_HELPDESK_SECRET_FILE", "no such file"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_HEADERS": "Authorization Bearer abc"}, "POPHOOK_SINK_HELPDESK_HEADERS", `line 1: not a "Name: value" header`},
		{map[string]string{"POPHOOK_SINK_HELPDESK_HEADERS": `X-Ok: 1\nX Bad: 2`}, "POPHOOK_SINK_HELPDESK_HEADERS", `line 2: "X Bad" is not a header name`},
		{map[string]string{"POPHOOK_SINK_HELPDESK_HEADERS": "content-type: text/plain"}, "POPHOOK_SINK_HELPDESK_HEADERS", "Content-Type is set by pophook itself"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_HEADERS_FILE": writeFile(t, "X-Ok: 1\nnonsense\n")}, "POPHOOK_SINK_HELPDESK_HEADERS_FILE", "line 2"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_HEADERS": "X: 1", "POPHOOK_SINK_HELPDESK_HEADERS_FILE": empty}, "POPHOOK_SINK_HELPDESK_HEADERS", "set only one of"},
		{map[string]string{"POPHOOK_SINK_HELPDESK_TIMEOUT": "0s"}, "POPHOOK_SINK_HELPDESK_TIMEOUT", `"0s" is not a positive duration`},
		{map[string]string{"POPHOOK_SINK_HELPDESK_TIMEOUT": "soon"}, "POPHOOK_SINK_HELPDESK_TIMEOUT", "is not a positive duration"},

		{map[string]string{"POPHOOK_SINK_ARCHIVE_PATH": ""}, "POPHOOK_SINK_ARCHIVE_PATH", "required"},

		{map[string]string{"POPHOOK_SINK_RELAY_HOST": ""}, "POPHOOK_SINK_RELAY_HOST", "required"},
		{map[string]string{"POPHOOK_SINK_RELAY_PORT": "0"}, "POPHOOK_SINK_RELAY_PORT", "is not a port number"},
		{map[string]string{"POPHOOK_SINK_RELAY_TLS": "tls"}, "POPHOOK_SINK_RELAY_TLS", "is not one of implicit, starttls, none"},
		{map[string]string{"POPHOOK_SINK_RELAY_TLS": "none"}, "POPHOOK_SINK_RELAY_TLS", "set POPHOOK_SINK_RELAY_ALLOW_INSECURE=true"},
		{map[string]string{"POPHOOK_SINK_RELAY_ALLOW_INSECURE": "sure"}, "POPHOOK_SINK_RELAY_ALLOW_INSECURE", "is not a boolean"},
		{map[string]string{"POPHOOK_SINK_RELAY_USERNAME": "relay"}, "POPHOOK_SINK_RELAY_PASSWORD", "required with POPHOOK_SINK_RELAY_USERNAME"},
		{map[string]string{"POPHOOK_SINK_RELAY_PASSWORD": "pw"}, "POPHOOK_SINK_RELAY_USERNAME", "required with a password"},
		{map[string]string{"POPHOOK_SINK_RELAY_USERNAME": "relay", "POPHOOK_SINK_RELAY_PASSWORD_FILE": "/nonexistent/pw"}, "POPHOOK_SINK_RELAY_PASSWORD_FILE", "no such file"},
		{map[string]string{"POPHOOK_SINK_RELAY_FROM": "pophook"}, "POPHOOK_SINK_RELAY_FROM", `"pophook" is not a mail address`},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_USERNAME": "support"}, "POPHOOK_SINK_RELAY_FROM", `required: account "support" uses this sink and its USERNAME "support" is not a mail address`},
		{map[string]string{"POPHOOK_SINK_RELAY_TO": ""}, "POPHOOK_SINK_RELAY_TO", "required"},
		{map[string]string{"POPHOOK_SINK_RELAY_TO": "a@example.com, tickets"}, "POPHOOK_SINK_RELAY_TO", "is not a list of mail addresses"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.set), func(t *testing.T) {
			setup(t, tt.set)
			problems := loadProblems(t)
			found := false
			for _, line := range problems {
				// Every line names exactly the variable at fault.
				if !strings.HasPrefix(line, tt.varName+": ") {
					t.Errorf("unexpected problem %q", line)
				}
				found = found || strings.Contains(line, tt.want)
			}
			if !found {
				t.Errorf("problems %q\nwant one for %s containing %q", problems, tt.varName, tt.want)
			}
		})
	}
}

func TestEmptySinksList(t *testing.T) {
	setup(t, map[string]string{"POPHOOK_SINKS": ""})
	problems := loadProblems(t)
	want := []string{
		`POPHOOK_ACCOUNT_SUPPORT_SINKS: "helpdesk" is not listed in POPHOOK_SINKS`,
		`POPHOOK_ACCOUNT_SUPPORT_SINKS: "archive" is not listed in POPHOOK_SINKS`,
		`POPHOOK_ACCOUNT_SUPPORT_SINKS: "relay" is not listed in POPHOOK_SINKS`,
	}
	if !slices.Equal(problems, want) {
		t.Errorf("problems\n got %q\nwant %q", problems, want)
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	setup(t, map[string]string{
		"POPHOOK_SINK_RELAY_TO":                    "",
		"POPHOOK_CONCURRENCY":                      "0",
		"POPHOOK_ACCOUNT_SUPPORT_PORT":             "99999",
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD":         "",
		"POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE": "lots",
		"POPHOOK_ACCOUNT_SUPPORT_HOST":             "bad host",
		"POPHOOK_SINK_HELPDESK_FORMAT":             "xml",
		"POPHOOK_SINK_ARCHIVE_PATH":                "",
	})
	got := loadProblems(t)
	// In the order of Variables: globals, accounts, sinks by name.
	want := []string{
		`POPHOOK_CONCURRENCY: "0" is not a whole number from 1 to 1000`,
		`POPHOOK_ACCOUNT_SUPPORT_HOST: "bad host" is not a host name (no scheme, path or spaces)`,
		`POPHOOK_ACCOUNT_SUPPORT_PORT: "99999" is not a port number (1-65535)`,
		`POPHOOK_ACCOUNT_SUPPORT_PASSWORD: required (or POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE)`,
		`POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE: "lots" is not a size above zero (e.g. 1048576, 10MB, 64MiB, 1GiB)`,
		`POPHOOK_SINK_ARCHIVE_PATH: required`,
		`POPHOOK_SINK_HELPDESK_FORMAT: "xml" is not one of json, raw, form`,
		`POPHOOK_SINK_RELAY_TO: required: the envelope recipients, comma separated`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems\n got %q\nwant %q", got, want)
	}
}

func TestKeep(t *testing.T) {
	tests := []struct {
		in   string
		want Keep
		ok   bool
	}{
		{"false", Keep{}, true},
		{"No", Keep{}, true},
		{"0", Keep{}, true},
		{"true", Keep{Forever: true}, true},
		{"YES", Keep{Forever: true}, true},
		{"1", Keep{Forever: true}, true},
		{"720h", Keep{After: 720 * time.Hour}, true},
		{"30d", Keep{After: 30 * 24 * time.Hour}, true},
		{"90m", Keep{After: 90 * time.Minute}, true},
		{"garbage", Keep{}, false},
		{"-1h", Keep{}, false},
		{"1.5d", Keep{}, false},
		{"30 d", Keep{}, false},
		{"99999999999d", Keep{}, false},
	}
	for _, tt := range tests {
		got, err := parseKeep(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseKeep(%q) = %+v, %v; want %+v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // 0: invalid
	}{
		{"1048576", 1 << 20},
		{"10MB", 10_000_000},
		{"64MiB", 64 << 20},
		{"64mib", 64 << 20},
		{"1GiB", 1 << 30},
		{"2gb", 2_000_000_000},
		{"512KiB", 512 << 10},
		{"512kb", 512_000},
		{"100B", 100},
		{"64 MiB", 64 << 20},
		{"0", 0},
		{"0MiB", 0},
		{"-1", 0},
		{"1.5GiB", 0},
		{"10XB", 0},
		{"MiB", 0},
		{"", 0},
		{"99999999999GiB", 0},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.want == 0 && err == nil || tt.want != 0 && (err != nil || got != tt.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestBool(t *testing.T) {
	for _, s := range []string{"true", "TRUE", "True", "1", "yes", "Yes"} {
		if b, err := parseBool(s); !b || err != nil {
			t.Errorf("parseBool(%q) = %v, %v", s, b, err)
		}
	}
	for _, s := range []string{"false", "FALSE", "0", "no", "NO"} {
		if b, err := parseBool(s); b || err != nil {
			t.Errorf("parseBool(%q) = %v, %v", s, b, err)
		}
	}
	for _, s := range []string{"", "y", "n", "on", "off", "2", "truthy"} {
		if _, err := parseBool(s); err == nil {
			t.Errorf("parseBool(%q) succeeded", s)
		}
	}
}

func TestSecretFileRotation(t *testing.T) {
	pw := writeFile(t, "first\n")
	token := writeFile(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
	setup(t, map[string]string{
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD":      "",
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE": pw,
		"POPHOOK_SINK_HELPDESK_SECRET_FILE":     token,
	})
	cfg, _ := mustLoad(t)
	secret := cfg.Accounts[0].Password
	reveal := func(want string) {
		t.Helper()
		if got, err := secret.Reveal(); got != want || err != nil {
			t.Errorf("Reveal() = %q, %v; want %q", got, err, want)
		}
	}
	reveal("first")
	if err := os.WriteFile(pw, []byte("second\r\n\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reveal("second") // re-read, CR and LF trimmed
	if err := os.WriteFile(pw, []byte("  spaced  "), 0o600); err != nil {
		t.Fatal(err)
	}
	reveal("  spaced  ") // only line ends are trimmed
	if err := os.WriteFile(pw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secret.Reveal(); err == nil {
		t.Error("Reveal of an empty file succeeded")
	}
	os.Remove(pw)
	if _, err := secret.Reveal(); err == nil {
		t.Error("Reveal of a missing file succeeded")
	}
	if got, _ := cfg.Sinks["helpdesk"].Secret.Reveal(); got != "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" {
		t.Errorf("webhook secret = %q", got)
	}
}

func TestSecretFormatting(t *testing.T) {
	s := NewSecret("hunter2")
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10v"} {
		out := fmt.Sprintf(format, s)
		if strings.Contains(out, "hunter2") || !strings.Contains(out, redacted) {
			t.Errorf("Sprintf(%q, secret) = %q", format, out)
		}
	}
	if j, _ := s.MarshalJSON(); string(j) != `"<redacted>"` {
		t.Errorf("MarshalJSON = %s", j)
	}
	var decoded struct{ P string }
	j, _ := json.Marshal(struct{ P Secret }{s})
	if err := json.Unmarshal(j, &decoded); err != nil || decoded.P != redacted {
		t.Errorf("json.Marshal = %s", j)
	}
	var empty Secret
	if empty.IsSet() || empty.String() != "" || fmt.Sprintf("%v|%#v", empty, empty) != "|" {
		t.Errorf("empty secret prints %v|%#v", empty, empty)
	}
	if got, err := empty.Reveal(); got != "" || err != nil {
		t.Errorf("empty Reveal() = %q, %v", got, err)
	}
	if !SecretFile("/x").IsSet() || SecretFile("/x").String() != redacted {
		t.Error("SecretFile not set or not redacted")
	}
}

// The secrets of leakEnv: none may appear anywhere but through Reveal.
var leaks = []string{"pop-pass-Q1", "webhook-urlpass-Q2", "bearer-token-Q3", "relay-pass-Q4",
	"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}

func leakEnv() map[string]string {
	return map[string]string{
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "pop-pass-Q1",
		"POPHOOK_SINK_HELPDESK_URL":        "https://hook:webhook-urlpass-Q2@helpdesk.example.com/hooks/mail",
		"POPHOOK_SINK_HELPDESK_HEADERS":    `Authorization: Bearer bearer-token-Q3\nX-Tenant: bearer-token-Q3`,
		"POPHOOK_SINK_HELPDESK_SECRET":     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"POPHOOK_SINK_RELAY_USERNAME":      "relay",
		"POPHOOK_SINK_RELAY_PASSWORD":      "relay-pass-Q4",
	}
}

func assertNoLeak(t *testing.T, what, out string) {
	t.Helper()
	for _, secret := range leaks {
		if strings.Contains(out, secret) {
			t.Errorf("%s leaks %q:\n%s", what, secret, out)
		}
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	setup(t, leakEnv())
	cfg, _ := mustLoad(t)
	sink := cfg.Sinks["helpdesk"]
	account := cfg.Accounts[0]

	// The values are there, for those who ask.
	if pw, _ := account.Password.Reveal(); pw != "pop-pass-Q1" {
		t.Fatalf("password = %q", pw)
	}
	if hv, _ := sink.HeaderValues(); hv.Get("Authorization") != "Bearer bearer-token-Q3" || !strings.Contains(sink.URL, "webhook-urlpass-Q2") {
		t.Fatalf("sink = %#v", hv)
	}

	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		for name, value := range map[string]any{
			"Config": cfg, "*Config": *cfg, "Account": account, "*Sink": sink, "Sink": *sink,
			"Sinks": cfg.Sinks, "Accounts": cfg.Accounts,
		} {
			out := fmt.Sprintf(format, value)
			assertNoLeak(t, fmt.Sprintf("Sprintf(%q, %s)", format, name), out)
			if name == "Sink" && !strings.Contains(out, "xxxxx@helpdesk.example.com") {
				t.Errorf("Sprintf(%q, Sink) lost the redacted URL: %s", format, out)
			}
		}
	}

	if j, err := json.Marshal(cfg); err != nil {
		t.Error(err)
	} else {
		assertNoLeak(t, "json.Marshal(cfg)", string(j))
	}

	for _, handler := range []string{"json", "text"} {
		var buf bytes.Buffer
		var log *slog.Logger
		if handler == "json" {
			log = slog.New(slog.NewJSONHandler(&buf, nil))
		} else {
			log = slog.New(slog.NewTextHandler(&buf, nil))
		}
		log.Info("loaded", "config", cfg, "account", account, "sink", sink, "sinkValue", *sink,
			"password", account.Password)
		assertNoLeak(t, "slog "+handler, buf.String())
		if !strings.Contains(buf.String(), redacted) {
			t.Errorf("slog %s output has no %s: %s", handler, redacted, buf.String())
		}
	}
}

func TestSecretsNeverInProblems(t *testing.T) {
	env := leakEnv()
	// Make every secret-bearing value wrong, and the URL unparseable in
	// a way whose error would quote part of the password.
	env["POPHOOK_SINK_HELPDESK_URL"] = "https://hook:webhook-urlpass-Q2%zz@helpdesk.example.com/"
	env["POPHOOK_SINK_HELPDESK_HEADERS"] = `Authorization bearer-token-Q3\nX Bad: bearer-token-Q3\nContent-Type: bearer-token-Q3\nX-Ctl: bearer-token-Q3` + "\x01"
	env["POPHOOK_SINK_HELPDESK_SECRET"] = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	env["POPHOOK_SINK_RELAY_USERNAME"] = ""
	env["POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE"] = "/nonexistent"
	setup(t, env)
	problems := loadProblems(t)
	assertNoLeak(t, "problems", strings.Join(problems, "\n"))
	if len(problems) < 6 {
		t.Errorf("expected a problem for each bad value, got %q", problems)
	}

	// A valid URL with a password in a wrong scheme is shown redacted.
	env = leakEnv()
	env["POPHOOK_SINK_HELPDESK_URL"] = "ftp://hook:webhook-urlpass-Q2@helpdesk.example.com/"
	setup(t, env)
	problems = loadProblems(t)
	assertNoLeak(t, "problems", strings.Join(problems, "\n"))
	if !strings.Contains(strings.Join(problems, "\n"), "hook:xxxxx@helpdesk.example.com") {
		t.Errorf("problems %q do not show the redacted URL", problems)
	}
}

// A misspelt variable can cost mail (a default stays in force), so it
// stops start-up with a suggestion; variables of accounts or sinks that
// are not listed and names nowhere near a known one are only warned about.
func TestUnknownVariables(t *testing.T) {
	setup(t, map[string]string{
		"POPHOOK_ACOUNTS":                      "support",
		"POPHOOK_XYZZY":                        "1",
		"POPHOOK_ACCOUNT_SUPPORT_PASWORD":      "secret-in-typo",
		"POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTNG": "true",
		"POPHOOK_ACCOUNT_SUPPORT_FOLDER":       "INBOX",
		"POPHOOK_ACCOUNT_SUPORT_KEEP":          "true",
		"POPHOOK_ACCOUNT_BILLING_HOST":         "pop.example.com",
		"POPHOOK_ACCOUNT_BILLING_TLS_CA_FILE":  "/x",
		"POPHOOK_SINK_OLD_TYPE":                "maildir",
		"POPHOOK_SINK_HELPDESK_PATH":           "/srv/mail",
		"POPHOOK_SINK_HELPDESK_SECRETFILE":     "/x",
		"POPHOOK_SINK_RELAY_URL":               "https://x",
		"POPHOOK_SINKS":                        "helpdesk,archive,relay,spare",
		"POPHOOK_SINK_SPARE_TYPE":              "maildir",
		"POPHOOK_SINK_SPARE_PATH":              "/srv/spare",
	})
	cfg, warnings, err := Load()
	if err == nil || cfg != nil {
		t.Fatal("Load accepted misspelt variables")
	}
	var p *Problems
	errors.As(err, &p)
	wantProblems := []string{
		"POPHOOK_ACCOUNT_SUPORT_KEEP: not a pophook variable; did you mean POPHOOK_ACCOUNT_SUPPORT_KEEP?",
		"POPHOOK_ACCOUNT_SUPPORT_FOLDER: not a variable of account support",
		"POPHOOK_ACCOUNT_SUPPORT_PASWORD: not a variable of account support; did you mean POPHOOK_ACCOUNT_SUPPORT_PASSWORD?",
		"POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTNG: not a variable of account support; did you mean POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTING?",
		"POPHOOK_ACOUNTS: not a pophook variable; did you mean POPHOOK_ACCOUNTS?",
		"POPHOOK_SINK_HELPDESK_PATH: not used by a webhook sink",
		"POPHOOK_SINK_HELPDESK_SECRETFILE: not a variable of sink helpdesk; did you mean POPHOOK_SINK_HELPDESK_SECRET_FILE?",
		"POPHOOK_SINK_RELAY_URL: not used by a smtp sink",
	}
	got := slices.Clone(*p)
	slices.Sort(got)
	if !slices.Equal(got, wantProblems) {
		t.Errorf("problems\n got %q\nwant %q", got, wantProblems)
	}
	wantWarnings := []string{
		`POPHOOK_SINKS: sink "spare" is not used by any account`,
		`POPHOOK_ACCOUNT_BILLING_HOST: account "billing" is not listed in POPHOOK_ACCOUNTS, so this is not used`,
		`POPHOOK_ACCOUNT_BILLING_TLS_CA_FILE: account "billing" is not listed in POPHOOK_ACCOUNTS, so this is not used`,
		`POPHOOK_SINK_OLD_TYPE: sink "old" is not listed in POPHOOK_SINKS, so this is not used`,
		"POPHOOK_XYZZY: not a pophook variable, ignored",
	}
	if !slices.Equal(warnings, wantWarnings) {
		t.Errorf("warnings\n got %q\nwant %q", warnings, wantWarnings)
	}
	all := strings.Join(append(got, warnings...), "\n")
	assertNoLeak(t, "problems and warnings", all)
	if strings.Contains(all, "secret-in-typo") || strings.Contains(all, "INBOX") {
		t.Error("a problem shows a value")
	}
}

func TestWarningsAlongsideProblems(t *testing.T) {
	setup(t, map[string]string{"POPHOOK_ACCOUNTS": "", "POPHOOK_CONCURRENCY": "x", "POPHOOK_SINK_GONE_TYPE": "maildir"})
	_, warnings, err := Load()
	if err == nil {
		t.Fatal("no problems")
	}
	if len(warnings) == 0 || !strings.Contains(warnings[len(warnings)-1], "is not listed in POPHOOK_SINKS") {
		t.Errorf("warnings = %q", warnings)
	}
}

func TestVariables(t *testing.T) {
	all := Variables([]string{"support"}, map[string]string{"x": ""})
	for _, name := range []string{
		"POPHOOK_DATA_DIR", "POPHOOK_ACCOUNTS", "POPHOOK_SINKS",
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD_FILE", "POPHOOK_ACCOUNT_SUPPORT_MAX_MESSAGE_SIZE",
		"POPHOOK_SINK_X_TYPE", "POPHOOK_SINK_X_URL", "POPHOOK_SINK_X_SECRET_FILE", "POPHOOK_SINK_X_HEADERS_FILE",
		"POPHOOK_SINK_X_PATH", "POPHOOK_SINK_X_HOST", "POPHOOK_SINK_X_PASSWORD_FILE", "POPHOOK_SINK_X_TO",
	} {
		if !slices.Contains(all, name) {
			t.Errorf("Variables lacks %s", name)
		}
	}
	seen := map[string]bool{}
	for _, name := range all {
		if seen[name] {
			t.Errorf("Variables lists %s twice", name)
		}
		seen[name] = true
	}
	maildir := Variables(nil, map[string]string{"a": "maildir"})
	if want := []string{"POPHOOK_DATA_DIR", "POPHOOK_LOG_LEVEL", "POPHOOK_LOG_FORMAT", "POPHOOK_HTTP_ADDR",
		"POPHOOK_CONCURRENCY", "POPHOOK_ACCOUNTS", "POPHOOK_SINKS", "POPHOOK_SHARD", "POPHOOK_SINK_A_TYPE", "POPHOOK_SINK_A_PATH"}; !slices.Equal(maildir, want) {
		t.Errorf("Variables for a maildir sink = %q", maildir)
	}
	webhook := Variables(nil, map[string]string{"a": "webhook"})
	if slices.Contains(webhook, "POPHOOK_SINK_A_PATH") || !slices.Contains(webhook, "POPHOOK_SINK_A_HEADERS") {
		t.Errorf("Variables for a webhook sink = %q", webhook)
	}
}

// repoRoot walks up from the package directory to the directory of go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the package")
		}
		dir = parent
	}
}

var (
	assignment  = regexp.MustCompile(`^#?\s*(POPHOOK_[A-Z0-9_]+)=(.*)$`)
	anyVariable = regexp.MustCompile(`POPHOOK_[A-Z0-9_]*[A-Z0-9]`)
)

// The example must list every variable and nothing else, and its active
// lines must form a valid configuration.
func TestEnvExample(t *testing.T) {
	path := filepath.Join(repoRoot(t), ".env.example")
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	known := Variables([]string{"support"}, map[string]string{"helpdesk": "webhook", "archive": "maildir", "relay": "smtp"})

	assigned := map[string]bool{}
	active := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(content))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := assignment.FindStringSubmatch(line); m != nil {
			if assigned[m[1]] {
				t.Errorf(".env.example:%d: %s assigned twice", n, m[1])
			}
			assigned[m[1]] = true
			if !strings.HasPrefix(line, "#") {
				active[m[1]] = m[2]
			}
		} else if line != "" && !strings.HasPrefix(line, "#") {
			t.Errorf(".env.example:%d: neither KEY=value nor a comment: %q", n, line)
		}
		for _, name := range anyVariable.FindAllString(line, -1) {
			if !slices.Contains(known, name) {
				t.Errorf(".env.example:%d: %s is not a variable pophook reads", n, name)
			}
		}
	}
	for _, name := range known {
		if !assigned[name] {
			t.Errorf(".env.example lacks %s", name)
		}
	}

	clearEnv(t)
	setEnv(t, active)
	cfg, warnings, err := Load()
	if err != nil {
		t.Fatalf(".env.example does not load:\n%v", err)
	}
	if len(warnings) > 0 {
		t.Errorf(".env.example gives warnings: %q", warnings)
	}
	// The smtp relay is shown but commented out until its sink exists.
	if len(cfg.Accounts) != 1 || len(cfg.Sinks) != 2 {
		t.Errorf(".env.example loads as %+v", cfg)
	}
}

func TestWebhookPayloadAndFormSettings(t *testing.T) {
	setup(t, nil)
	cfg, _ := mustLoad(t)
	h := cfg.Sinks["helpdesk"]
	if h.InlineLimit != 10<<20 || h.IncludeRaw || h.FormField != "message" || len(h.FormFields) != 0 {
		t.Errorf("defaults: limit %d raw %v field %q fields %v", h.InlineLimit, h.IncludeRaw, h.FormField, h.FormFields)
	}

	setup(t, map[string]string{
		"POPHOOK_SINK_HELPDESK_INLINE_LIMIT": "2MiB",
		"POPHOOK_SINK_HELPDESK_INCLUDE_RAW":  "true",
		"POPHOOK_SINK_HELPDESK_FORM_FIELD":   "mail",
		"POPHOOK_SINK_HELPDESK_FORM_FIELDS":  `queue=General\naction = correspond`,
	})
	cfg, _ = mustLoad(t)
	h = cfg.Sinks["helpdesk"]
	want := [][2]string{{"queue", "General"}, {"action", "correspond"}}
	if h.InlineLimit != 2<<20 || !h.IncludeRaw || h.FormField != "mail" || fmt.Sprint(h.FormFields) != fmt.Sprint(want) {
		t.Errorf("parsed: limit %d raw %v field %q fields %v", h.InlineLimit, h.IncludeRaw, h.FormField, h.FormFields)
	}

	setup(t, map[string]string{"POPHOOK_SINK_HELPDESK_INLINE_LIMIT": "0"})
	if cfg, _ = mustLoad(t); cfg.Sinks["helpdesk"].InlineLimit != 0 {
		t.Errorf("INLINE_LIMIT=0 gave %d", cfg.Sinks["helpdesk"].InlineLimit)
	}

	for name, value := range map[string]string{
		"POPHOOK_SINK_HELPDESK_INLINE_LIMIT": "lots",
		"POPHOOK_SINK_HELPDESK_INCLUDE_RAW":  "maybe",
		"POPHOOK_SINK_HELPDESK_FORM_FIELD":   `a"b`,
		"POPHOOK_SINK_HELPDESK_FORM_FIELDS":  "queue",
	} {
		setup(t, map[string]string{name: value})
		problems := loadProblems(t)
		if len(problems) != 1 || !strings.HasPrefix(problems[0], name+":") {
			t.Errorf("%s=%q: problems %v", name, value, problems)
		}
	}
}

func TestKeepString(t *testing.T) {
	for keep, want := range map[Keep]string{{}: "false", {Forever: true}: "true", {After: 720 * time.Hour}: "720h0m0s"} {
		if got := keep.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", keep, got, want)
		}
	}
}

// Skipping certificate checks is warned about at every start.
func TestSkipVerifyWarns(t *testing.T) {
	setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY": "true"})
	_, warnings := mustLoad(t)
	if !slices.ContainsFunc(warnings, func(w string) bool {
		return strings.HasPrefix(w, "POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY=true: the server's certificate is not checked")
	}) {
		t.Errorf("warnings %q", warnings)
	}
}

// The same .env file must mean the same to a POSIX shell (set -a; . .env),
// docker run --env-file, compose's env_file and systemd's EnvironmentFile=.
// The shell is run for real; the other three follow their documented
// rules (docker: the value verbatim; compose and systemd: single quotes
// literal, double quotes with escapes; unquoted, a backslash escapes the
// next character in systemd). After pophook's own handling (one pair of
// quotes removed; a literal \n in HEADERS and FORM_FIELDS is a line
// break), every variable of .env.example must come out the same.
func TestEnvFileMeansTheSameToEveryLoader(t *testing.T) {
	content, err := os.ReadFile(filepath.Join(repoRoot(t), ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	values := map[string]string{} // as written
	for _, line := range strings.Split(string(content), "\n") {
		if m := assignment.FindStringSubmatch(line); m != nil {
			lines = append(lines, m[1]+"="+m[2])
			values[m[1]] = m[2]
		}
	}
	file := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `set -a; . "$1"; exec env -0`, "sh", file)
	cmd.Env = []string{}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sourcing .env.example in sh: %v", err)
	}
	shell := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			shell[k] = v
		}
	}
	norm := func(v string) string { return strings.ReplaceAll(Unquote(v), `\n`, "\n") }
	for key, raw := range values {
		got := map[string]string{
			"docker --env-file": norm(raw),
			"sh":                norm(shell[key]),
			"compose env_file":  norm(composeValue(raw)),
			"systemd":           norm(systemdValue(raw)),
		}
		for loader, v := range got {
			if v != got["docker --env-file"] {
				t.Errorf("%s: %s reads %q, docker --env-file %q", key, loader, v, got["docker --env-file"])
			}
		}
	}
}

// composeValue follows compose's env_file rules for one value.
func composeValue(v string) string {
	switch {
	case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
		return v[1 : len(v)-1]
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		r := strings.NewReplacer(`\n`, "\n", `\\`, `\`, `\"`, `"`)
		return r.Replace(v[1 : len(v)-1])
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// systemdValue follows systemd's EnvironmentFile= rules for one value.
func systemdValue(v string) string {
	v = strings.TrimLeft(v, " \t")
	switch {
	case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
		return v[1 : len(v)-1]
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		var b strings.Builder
		in := v[1 : len(v)-1]
		for i := 0; i < len(in); i++ {
			if in[i] == '\\' && i+1 < len(in) && strings.IndexByte("\"\\`$", in[i+1]) >= 0 {
				i++
			}
			b.WriteByte(in[i])
		}
		return b.String()
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return strings.TrimRight(b.String(), " \t")
}

func TestUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`'@every 1m'`: "@every 1m", `"a b"`: "a b", `'`: `'`, `''`: "", `'a"`: `'a"`, `a'b'`: `a'b'`, `"'x'"`: `'x'`, "plain": "plain",
	} {
		if got := Unquote(in); got != want {
			t.Errorf("Unquote(%q) = %q, want %q", in, got, want)
		}
	}
	// A quoted schedule loads as the schedule.
	setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE": "'@every 10s'", "POPHOOK_SINK_HELPDESK_FORM_FIELDS": `'queue=General\naction=correspond'`})
	cfg, _ := mustLoad(t)
	if cfg.Accounts[0].Schedule != "@every 10s" {
		t.Errorf("schedule %q", cfg.Accounts[0].Schedule)
	}
}

func TestShard(t *testing.T) {
	setup(t, map[string]string{"POPHOOK_SHARD": "1/3"})
	cfg, _ := mustLoad(t)
	if cfg.Shard.Index != 1 || cfg.Shard.Count != 3 {
		t.Errorf("shard %v", cfg.Shard)
	}
	setup(t, map[string]string{"POPHOOK_SHARD": "3/3"})
	if p := loadProblems(t); len(p) != 1 || !strings.HasPrefix(p[0], "POPHOOK_SHARD: ") {
		t.Errorf("problems %q", p)
	}
}

// Every ```env example in README.md is a configuration that loads: a new
// user can copy one as it stands.
func TestREADMEExamples(t *testing.T) {
	content, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```env\n(.*?)```").FindAllStringSubmatch(string(content), -1)
	if len(blocks) < 2 {
		t.Fatalf("%d env examples in README.md, want at least 2", len(blocks))
	}
	// A block without POPHOOK_ACCOUNTS is a fragment: its lines take the
	// place of the first example's connection lines (HOST, USERNAME,
	// PASSWORD) for the same account, as the README says.
	base := parseEnvBlock(t, blocks[0][1])
	for i, b := range blocks {
		lines := parseEnvBlock(t, b[1])
		if !slices.ContainsFunc(lines, func(kv [2]string) bool { return kv[0] == "POPHOOK_ACCOUNTS" }) {
			var merged [][2]string
			for _, kv := range base {
				if !strings.HasSuffix(kv[0], "_HOST") && !strings.HasSuffix(kv[0], "_USERNAME") && !strings.Contains(kv[0], "_PASSWORD") {
					merged = append(merged, kv)
				}
			}
			lines = append(merged, lines...)
		}
		clearEnv(t)
		for _, kv := range lines {
			k, v := kv[0], kv[1]
			if strings.HasSuffix(k, "_FILE") {
				v = writeFile(t, "a-secret") // the example's path, made real
				if strings.Contains(k, "SECRET") {
					v = writeFile(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwIf2Ot1vRE/w=")
				}
			}
			t.Setenv(k, v)
		}
		if _, warnings, err := Load(); err != nil || len(warnings) > 0 {
			t.Errorf("README example %d does not load cleanly: %v %q", i+1, err, warnings)
		}
	}
}

func parseEnvBlock(t *testing.T, block string) [][2]string {
	t.Helper()
	var out [][2]string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%q is not KEY=value", line)
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

func TestOAuth2(t *testing.T) {
	base := map[string]string{"POPHOOK_ACCOUNT_SUPPORT_AUTH": "xoauth2", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD": ""}
	with := func(extra map[string]string) map[string]string {
		m := maps.Clone(base)
		maps.Copy(m, extra)
		return m
	}
	// Refresh-token flow with a tenant: no PASSWORD needed.
	setup(t, with(map[string]string{"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "c1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TENANT": "contoso.onmicrosoft.com",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "rt", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_SCOPES": "'a b,c'"}))
	cfg, _ := mustLoad(t)
	o := cfg.Accounts[0].OAuth2
	if o == nil || o.TokenURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token" || !slices.Equal(o.Scopes, []string{"a", "b", "c"}) {
		t.Fatalf("oauth2 %+v", o)
	}
	if rt, _ := o.RefreshToken.Reveal(); rt != "rt" || fmt.Sprintf("%+v", cfg.Accounts[0]) == "" {
		t.Error("refresh token")
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{with(map[string]string{"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "c1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL": "http://evil.example/t",
			"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "rt"}), "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL: must be an https URL"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "c1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "rt",
			"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL": "https://t/"}, "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID: is set, so POPHOOK_ACCOUNT_SUPPORT_AUTH must be xoauth2"},
		{map[string]string{"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "rt"}, "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN: needs POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID"},
		{with(map[string]string{"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "c1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TENANT": "x", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "rt",
			"POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "also"}), "POPHOOK_ACCOUNT_SUPPORT_PASSWORD: not used with"},
		{base, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD: required"}, // xoauth2 without a client: the password is the bearer token
	} {
		setup(t, tc.env)
		if p := loadProblems(t); !slices.ContainsFunc(p, func(l string) bool { return strings.HasPrefix(l, tc.want) }) {
			t.Errorf("%v: problems %q, want one starting %q", tc.env, p, tc.want)
		}
	}
}

// A provider preset fills in what the variables leave unset; what they
// set wins.
func TestProviderPreset(t *testing.T) {
	setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_HOST": "", "POPHOOK_ACCOUNT_SUPPORT_PROVIDER": "gmail"})
	cfg, _ := mustLoad(t)
	if a := cfg.Accounts[0]; a.Host != "pop.gmail.com" || a.Port != 995 || a.TLS != "implicit" || a.Auth != "auto" || a.Provider != "gmail" {
		t.Errorf("gmail: %+v", a)
	}
	setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_HOST": "", "POPHOOK_ACCOUNT_SUPPORT_PROVIDER": "gmail", "POPHOOK_ACCOUNT_SUPPORT_TLS": "starttls"})
	if cfg, _ := mustLoad(t); cfg.Accounts[0].Port != 110 || cfg.Accounts[0].TLS != "starttls" {
		t.Errorf("gmail with TLS=starttls: port %d", cfg.Accounts[0].Port)
	}
	// office365: OAuth2 only, the tenant fills the token URL, app-only
	// access gets the app scope.
	setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_HOST": "", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "", "POPHOOK_ACCOUNT_SUPPORT_PROVIDER": "office365",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "c1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TENANT": "contoso.onmicrosoft.com",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_SECRET": "s"})
	cfg, _ = mustLoad(t)
	a := cfg.Accounts[0]
	if a.Host != "outlook.office365.com" || a.Auth != "xoauth2" || a.OAuth2.TokenURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token" ||
		!slices.Equal(a.OAuth2.Scopes, []string{"https://outlook.office365.com/.default"}) {
		t.Errorf("office365: %+v %+v", a, a.OAuth2)
	}
	for env, want := range map[string]string{
		"icloud":  "POPHOOK_ACCOUNT_SUPPORT_PROVIDER: ",
		"gmial":   "POPHOOK_ACCOUNT_SUPPORT_PROVIDER: ",
		"unknown": "POPHOOK_ACCOUNT_SUPPORT_PROVIDER: ",
	} {
		setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PROVIDER": env})
		if p := loadProblems(t); !slices.ContainsFunc(p, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("PROVIDER=%s: problems %q", env, p)
		}
	}
	setup(t, map[string]string{"POPHOOK_ACCOUNT_SUPPORT_PROVIDER": "office365", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD": "",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID": "c1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TENANT": "evil.example/x?", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN": "r"})
	if p := loadProblems(t); !slices.ContainsFunc(p, func(l string) bool { return strings.HasPrefix(l, "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TENANT: ") }) {
		t.Errorf("a tenant that changes the URL: problems %q", p)
	}
}
