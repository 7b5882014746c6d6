package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/discover"
	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/faultrow"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// Issue 13, point 6: security checks. Secrets planted everywhere and
// searched for in every output; TLS verification and its minimum version;
// the HTTP listener's default address; file modes; file names that never
// come from a message.

// ftCert makes a self-signed certificate for 127.0.0.1 and localhost that
// is its own CA, and writes it as PEM to dir/name.
func ftCert(t *testing.T, dir, name string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "pophook faults " + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

func ftRandom(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ftSecretForms gives s and the base64 of s as it appears inside any longer
// base64 text (basic auth, SASL PLAIN, XOAUTH2, a JSON "raw" field): for
// each of the three alignments, the characters that depend on s alone, in
// the standard and the URL alphabet.
func ftSecretForms(s string) []string {
	forms := []string{s}
	for off := range 3 {
		pad := strings.Repeat("\x00", off)
		total := off + len(s)
		from, to := (off+2)/3*4, total/3*4
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			if core := enc.EncodeToString([]byte(pad + s)); to-from >= 8 {
				forms = append(forms, core[from:to])
			}
		}
	}
	slices.Sort(forms)
	return slices.Compact(forms)
}

// ftLeaks lists every planted secret (in any of its forms) found in any
// output.
func ftLeaks(outputs map[string][]byte, secrets map[string]string) []string {
	var found []string
	for _, name := range sortedKeys(outputs) {
		for _, what := range sortedKeys(secrets) {
			for _, form := range ftSecretForms(secrets[what]) {
				if i := bytes.Index(outputs[name], []byte(form)); i >= 0 {
					lo, hi := max(0, i-80), min(len(outputs[name]), i+len(form)+40)
					found = append(found, fmt.Sprintf("%s holds %s (as %q): ...%q...", name, what, form, outputs[name][lo:hi]))
					break
				}
			}
		}
	}
	return found
}

// ftRelay is an SMTP relay (go-smtp) over implicit TLS that wants AUTH
// PLAIN and refuses it with 535 until accept is set.
type ftRelay struct {
	addr     string
	password string
	echo     bool // quote the AUTH PLAIN response in the refusal
	accept   atomic.Bool
	mu       sync.Mutex
	auths    []string // passwords tried
	got      int
}

func startFTRelay(t *testing.T, cert tls.Certificate, password string) *ftRelay {
	r := &ftRelay{password: password}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) { return &ftRelaySession{r: r}, nil }))
	srv.Domain = "relay.test"
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.TLSConfig = cfg
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

type ftRelaySession struct {
	r    *ftRelay
	auth bool
}

func (s *ftRelaySession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *ftRelaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pw string) error {
		s.r.mu.Lock()
		s.r.auths = append(s.r.auths, pw)
		s.r.mu.Unlock()
		if user != "relay" || pw != s.r.password || !s.r.accept.Load() {
			msg := "Authentication credentials invalid for relay"
			if s.r.echo {
				msg += " (got " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pw)) + ")"
			}
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: msg}
		}
		s.auth = true
		return nil
	}), nil
}
func (s *ftRelaySession) Mail(string, *gosmtp.MailOptions) error {
	if !s.auth {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	return nil
}
func (s *ftRelaySession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (s *ftRelaySession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.r.mu.Lock()
	s.r.got++
	s.r.mu.Unlock()
	return nil
}
func (s *ftRelaySession) Reset()        {}
func (s *ftRelaySession) Logout() error { return nil }

// ftFreeAddr is a loopback address with a port free a moment ago.
func ftFreeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func ftAccountEnv(name string, kv ...string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, "POPHOOK_ACCOUNT_"+strings.ToUpper(name)+"_"+kv[i]+"="+kv[i+1])
	}
	return out
}

func ftSinkEnv(name string, kv ...string) []string {
	var out []string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, "POPHOOK_SINK_"+strings.ToUpper(name)+"_"+kv[i]+"="+kv[i+1])
	}
	return out
}

// Every secret pophook is given, planted with recognisable values, is
// searched for (as is and in base64) in everything pophook writes for
// people and machines to read: the debug log with the POP3 trace, stdout
// and stderr of once, run, check, check --json, check --ping and the
// ledger commands (locally and through the daemon), /metrics, the status
// page, /healthz, /readyz, and the ledger file's bytes. The flow is real:
// logins over USER/PASS, SASL LOGIN and XOAUTH2 to Dovecot, a refused
// password, webhooks that refuse a run and echo the credentials they got
// in the refusal, an SMTP relay that refuses the password, then deliveries.
func TestSecuritySecretsNeverInOutputs(t *testing.T) {
	rnd := ftRandom(4)
	key := make([]byte, 24)
	rand.Read(key)
	secrets := map[string]string{
		"POP3 password":              "PopPw-" + rnd + "-alice-1",
		"POP3 password (wrong)":      "WrongPw-" + rnd + "-bob-22",
		"OAuth2 client secret":       "ClientSecret-" + rnd + "-333",
		"OAuth2 refresh token":       "RefreshTok-" + rnd + "-initial",
		"webhook secret":             "whsec_" + base64.StdEncoding.EncodeToString(key),
		"webhook secret key (b64)":   base64.StdEncoding.EncodeToString(key),
		"webhook secret key (raw)":   string(key),
		"webhook bearer token":       "HdrBearer-" + rnd + "-4444",
		"webhook API key header":     "ApiKey-" + rnd + "-55555",
		"webhook URL password":       "UrlPw-" + rnd + "-666666",
		"webhook URL query token":    "QueryTok-" + rnd + "-888",
		"SMTP relay password (file)": "RelayPw-" + rnd + "-7777777",
	}
	in := dovecottest.StartIntrospection(t, nil)
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post"),
		Users: map[string]string{"alice": secrets["POP3 password"], "bob": "bob-real-password", "carol": "carol-unused"}})
	prov, tokenURL := newFTProvider(t, in, "carol", "Tok"+rnd+"-", secrets["OAuth2 refresh token"])
	prov.secret = secrets["OAuth2 client secret"]

	// Two webhook endpoints that refuse with 401 while accept is off and
	// quote back the credentials they were sent, as a careless receiver
	// might; every Authorization they get is recorded.
	var accept atomic.Bool
	var hookMu sync.Mutex
	var hookAuth []string
	hookHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		hookMu.Lock()
		hookAuth = append(hookAuth, r.URL.Path+" "+r.Header.Get("Authorization")+" "+r.Header.Get("X-Api-Key"))
		hookMu.Unlock()
		if !accept.Load() {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, "denied: Authorization=%s X-Api-Key=%s", r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	hooks := httptest.NewServer(hookHandler)
	defer hooks.Close()
	// A third endpoint, authenticated by a token in its query, is down
	// (connection refused) until phase 2.
	hook3Addr := ftFreeAddr(t)
	dir := t.TempDir()
	relayCert, relayCA := ftCert(t, dir, "relay-ca.pem")
	relay := startFTRelay(t, relayCert, secrets["SMTP relay password (file)"])
	relayPwFile := filepath.Join(dir, "relay-password")
	os.WriteFile(relayPwFile, []byte(secrets["SMTP relay password (file)"]+"\n"), 0o600)
	relayHost, relayPort, _ := net.SplitHostPort(relay.addr)
	hooksURL := strings.TrimPrefix(hooks.URL, "http://")

	data := filepath.Join(dir, "data")
	env := []string{"PATH=" + os.Getenv("PATH"), "POPHOOK_DATA_DIR=" + data, "POPHOOK_HTTP_ADDR=", "POPHOOK_LOG_LEVEL=debug",
		"POPHOOK_ACCOUNTS=support,billing,oauth", "POPHOOK_SINKS=hook,hook2,hook3,archive,relay"}
	port := strconv.Itoa(d.TLSPort)
	env = append(env, ftAccountEnv("support", "HOST", d.Host, "PORT", port, "TLS_CA_FILE", d.CAFile, "USERNAME", "alice",
		"PASSWORD", secrets["POP3 password"], "AUTH", "user", "SINKS", "hook,hook2,hook3,archive")...)
	env = append(env, ftAccountEnv("billing", "HOST", d.Host, "PORT", port, "TLS_CA_FILE", d.CAFile, "USERNAME", "bob",
		"PASSWORD", secrets["POP3 password (wrong)"], "AUTH", "login", "SINKS", "archive")...)
	env = append(env, ftAccountEnv("oauth", "HOST", d.Host, "PORT", port, "TLS_CA_FILE", d.CAFile, "USERNAME", "carol",
		"AUTH", "xoauth2", "OAUTH2_CLIENT_ID", "client-1", "OAUTH2_CLIENT_SECRET", secrets["OAuth2 client secret"],
		"OAUTH2_REFRESH_TOKEN", secrets["OAuth2 refresh token"], "OAUTH2_TOKEN_URL", tokenURL, "SINKS", "relay")...)
	env = append(env, ftSinkEnv("hook", "TYPE", "webhook", "URL", hooks.URL+"/a", "SECRET", secrets["webhook secret"],
		"HEADERS", `Authorization: Bearer `+secrets["webhook bearer token"]+`\nX-Api-Key: `+secrets["webhook API key header"])...)
	env = append(env, ftSinkEnv("hook2", "TYPE", "webhook", "URL", "http://hookuser:"+secrets["webhook URL password"]+"@"+hooksURL+"/b")...)
	env = append(env, ftSinkEnv("hook3", "TYPE", "webhook", "URL", "http://"+hook3Addr+"/c?token="+secrets["webhook URL query token"], "BUDGET", "1s")...)
	env = append(env, ftSinkEnv("archive", "TYPE", "maildir", "PATH", filepath.Join(dir, "Maildir"))...)
	env = append(env, ftSinkEnv("relay", "TYPE", "smtp", "HOST", relayHost, "PORT", relayPort, "TLS", "implicit",
		"TLS_CA_FILE", relayCA, "USERNAME", "relay", "PASSWORD_FILE", relayPwFile, "FROM", "pophook@example.com", "TO", "desk@example.com")...)
	withEnv := func(extra ...string) []string { return ftMergeEnv(env, extra...) }

	outputs := map[string][]byte{}
	run := func(name string, env []string, args ...string) (string, string, int) {
		t.Helper()
		stdout, stderr, code := runBinOut(t, env, args...)
		outputs[name+" (stdout)"], outputs[name+" (stderr)"] = []byte(stdout), []byte(stderr)
		return stdout, stderr, code
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		d.Deliver(t, u, []byte("Subject: for "+u+"\nMessage-ID: <"+u+"-1@faults.test>\n\nbody\n"))
	}

	// Phase 1: the webhooks and the relay refuse; bob's password is wrong.
	chk, _, _ := run("check", env, "check")
	run("check --json", env, "check", "--json")
	run("check --ping", env, "check", "--ping")
	_, once1, code := run("once #1 (debug, text)", env, "once")
	if code != 1 {
		t.Errorf("once #1: exit %d, want 1", code)
	}
	for _, want := range []string{"PASS <redacted>", "account billing: authentication failed", "sink hook is unavailable",
		"sink hook2 is unavailable", "xxxxx@" + hooksURL, "sink hook3 failed", "token=xxxxx", "sink relay is unavailable", "535"} {
		if !strings.Contains(once1, want) {
			t.Errorf("once #1 should show %q (the failure whose message is searched):\n%s", want, once1)
		}
	}
	if !strings.Contains(chk, "refused") {
		t.Errorf("check should show bob's refused login:\n%s", chk)
	}
	// Phase 2: everything accepts (bob backs off); JSON logs.
	accept.Store(true)
	relay.accept.Store(true)
	ln3, err := net.Listen("tcp", hook3Addr)
	if err != nil {
		t.Fatal(err)
	}
	hook3 := &http.Server{Handler: hookHandler}
	go hook3.Serve(ln3)
	defer hook3.Close()
	if _, out, code := run("once #2 (debug, json)", withEnv("POPHOOK_LOG_FORMAT=json"), "once"); code != 1 || !strings.Contains(out, "backing off") {
		t.Errorf("once #2: exit %d, want 1 for bob's back-off only:\n%s", code, out)
	}
	if d.Count(t, "alice") != 0 || d.Count(t, "carol") != 0 {
		t.Fatalf("after once #2: %d of alice's and %d of carol's messages on the server", d.Count(t, "alice"), d.Count(t, "carol"))
	}
	// Phase 3: the daemon, with new mail and the receivers refusing again.
	accept.Store(false)
	relay.accept.Store(false)
	for _, u := range []string{"alice", "carol"} {
		d.Deliver(t, u, []byte("Subject: again for "+u+"\nMessage-ID: <"+u+"-2@faults.test>\n\nbody\n"))
	}
	httpAddr := ftFreeAddr(t)
	denv := withEnv("POPHOOK_HTTP_ADDR="+httpAddr, "POPHOOK_LOG_FORMAT=json")
	daemon := ftStartDaemon(t, denv)
	daemon.wait(t, 30*time.Second, "a run of every account", func(l string) bool {
		return strings.Count(l, `"msg":"fetch done"`) >= 2 && strings.Contains(l, `"msg":"fetch skipped"`)
	})
	for _, path := range []string{"/metrics", "/", "/healthz", "/readyz"} {
		outputs["GET "+path] = []byte(ftGet(t, "http://"+httpAddr+path))
	}
	if !strings.Contains(string(outputs["GET /"]), "billing") || !strings.Contains(string(outputs["GET /metrics"]), "pophook_auth_consecutive_failures") {
		t.Errorf("status page or metrics incomplete")
	}
	run("ledger list (daemon)", denv, "ledger", "list")
	run("ledger list --json (daemon)", denv, "ledger", "list", "--json")
	export, _, _ := run("ledger export (daemon)", denv, "ledger", "export")
	daemon.stop(t)
	outputs["run (debug, json)"] = []byte(daemon.log.String())
	// Phase 4: the ledger commands on the file.
	run("ledger list", env, "ledger", "list")
	run("ledger list --json", env, "ledger", "list", "--json")
	run("ledger export", env, "ledger", "export")
	shown := 0
	for _, line := range strings.Split(strings.TrimSpace(export), "\n") {
		var e struct {
			Account string      `json:"account"`
			Entry   state.Entry `json:"entry"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Account != "" && e.Entry.UIDL != "" {
			run("ledger show "+e.Account+" "+e.Entry.UIDL, env, "ledger", "show", e.Account, e.Entry.UIDL)
			shown++
		}
	}
	if shown < 3 {
		t.Errorf("ledger export gave %d records to show:\n%s", shown, export)
	}
	// Every file pophook keeps, except the OAuth2 token store whose job
	// is to hold the tokens (0600; see TestSecurityFileModes).
	filepath.WalkDir(data, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || filepath.Base(filepath.Dir(path)) == "oauth" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
		}
		rel, _ := filepath.Rel(dir, path)
		outputs["file "+rel] = b
		return nil
	})
	if outputs["file data/ledger.db"] == nil {
		t.Fatal("no ledger.db")
	}

	// The secrets were in use: the receivers got them, the relay was
	// offered the password, Dovecot checked the provider's tokens.
	hookMu.Lock()
	gotAuth := strings.Join(hookAuth, "\n")
	hookMu.Unlock()
	if !strings.Contains(gotAuth, "Bearer "+secrets["webhook bearer token"]) || !strings.Contains(gotAuth, "Basic ") {
		t.Errorf("the receivers did not get the credentials:\n%s", gotAuth)
	}
	relay.mu.Lock()
	if !slices.Contains(relay.auths, secrets["SMTP relay password (file)"]) || relay.got == 0 {
		t.Errorf("relay: passwords tried %d, messages %d", len(relay.auths), relay.got)
	}
	relay.mu.Unlock()
	prov.mu.Lock()
	for i, tok := range prov.issued {
		secrets[fmt.Sprintf("OAuth2 token issued #%d", i+1)] = tok
	}
	prov.mu.Unlock()
	if len(in.Requests()) == 0 {
		t.Error("Dovecot never checked a token")
	}

	if dump := os.Getenv("PHTEST_DUMP_OUTPUTS"); dump != "" {
		for name, b := range outputs {
			os.WriteFile(filepath.Join(dump, strings.NewReplacer("/", "_", " ", "_").Replace(name)), b, 0o600)
		}
	}
	found := ftLeaks(outputs, secrets)
	for _, f := range found {
		t.Error(f)
	}
	forms := 0
	for _, s := range secrets {
		forms += len(ftSecretForms(s))
	}
	t.Logf("searched %d outputs (%d bytes) for %d secrets in %d forms: %d found", len(outputs), ftTotalLen(outputs), len(secrets), forms, len(found))

	// Not a leak, but worth knowing: the ledger keeps a keyed SHA-256 of
	// the refused password with its key beside it, so whoever holds
	// ledger.db can test guesses of that password offline.
	if l, err := state.Open(data, 5*time.Second); err == nil {
		m, _ := l.Account(state.AccountID(d.Host, "bob")).Meta()
		if m.Login.Credential != "" && m.Login.Credential == l.Fingerprint(d.Host, "bob", "login", secrets["POP3 password (wrong)"]) {
			t.Logf("note: ledger.db alone verifies a guess of the refused password (LoginState.Credential = HMAC(ledger salt, host, user, mechanism, password))")
		}
		l.Close()
	}
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "secrets in outputs",
		Injection: "recognisable POP3 passwords, OAuth2 client secret, refresh and issued tokens, whsec_ secret, bearer and API-key headers, URL password, SMTP password; refused login, webhooks refusing with the credentials echoed, relay refusing AUTH",
		Rounds:    len(outputs), Messages: len(secrets),
		Result: fmt.Sprintf("0 found (%d outputs, %d KiB, each secret as is and in base64 at every alignment)", len(outputs), ftTotalLen(outputs)/1024)})
}

func ftTotalLen(m map[string][]byte) int {
	n := 0
	for _, b := range m {
		n += len(b)
	}
	return n
}

// ftMergeEnv is env with extra entries replacing those of the same
// name.
func ftMergeEnv(env []string, extra ...string) []string {
	out := slices.Clone(env)
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		out = slices.DeleteFunc(out, func(have string) bool { return strings.HasPrefix(have, k+"=") })
		out = append(out, e)
	}
	return out
}

// ftLoadConfig loads the configuration from env in this process.
func ftLoadConfig(t *testing.T, env []string) (*config.Config, []string, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "POPHOOK_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return config.Load()
}

// TLS verification is off only when TLS_SKIP_VERIFY says so. Spellings
// that are not a boolean stop start-up (exit 2, no connection); false,
// unset and empty verify, and a server with an untrusted certificate is
// then refused before any credential is sent. The SMTP and webhook sinks
// have no such switch: the variable is a configuration error there.
func TestSecurityTLSSkipVerifyOnlyWhenAsked(t *testing.T) {
	base := []string{"POPHOOK_DATA_DIR=" + t.TempDir(), "POPHOOK_ACCOUNTS=support", "POPHOOK_SINKS=archive",
		"POPHOOK_ACCOUNT_SUPPORT_HOST=127.0.0.1", "POPHOOK_ACCOUNT_SUPPORT_USERNAME=alice", "POPHOOK_ACCOUNT_SUPPORT_PASSWORD=x",
		"POPHOOK_ACCOUNT_SUPPORT_SINKS=archive", "POPHOOK_SINK_ARCHIVE_TYPE=maildir", "POPHOOK_SINK_ARCHIVE_PATH=" + t.TempDir()}
	on := []string{"true", "TRUE", "True", "1", "yes", "YES", "'true'", `"true"`}
	off := []string{"", "false", "FALSE", "0", "no", "No", "'false'"}
	wrong := []string{"ture", "tru", "treu", "flase", "fasle", "on", "off", "y", "n", "t", "f", "2", "-1", "01", "1.0", "0x1",
		"enabled", "disabled", "enable", "skip", "none", "null", "nil", "verify", " true", "true ", "yes please", "true\tfalse",
		"truefalse", "`true`", "'true", "true'", "ｔｒｕｅ", "trueˮ"}
	cases := 0
	check := func(v string, want string) {
		t.Helper()
		cases++
		cfg, warnings, err := ftLoadConfig(t, append(slices.Clone(base), "POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY="+v))
		switch want {
		case "error":
			if err == nil || !strings.Contains(err.Error(), "POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY") {
				t.Errorf("TLS_SKIP_VERIFY=%q: %v, want a configuration error naming the variable (skip %v)", v, err, err == nil && cfg.Accounts[0].TLSSkipVerify)
			}
			return
		case "on", "off":
			if err != nil {
				t.Errorf("TLS_SKIP_VERIFY=%q: %v", v, err)
				return
			}
		}
		w, err := wire(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		skip := w.accounts[0].TLSConfig.InsecureSkipVerify
		warned := slices.ContainsFunc(warnings, func(s string) bool { return strings.Contains(s, "TLS_SKIP_VERIFY=true") })
		if skip != (want == "on") || warned != (want == "on") || w.accounts[0].TLSConfig.MinVersion < tls.VersionTLS12 {
			t.Errorf("TLS_SKIP_VERIFY=%q: skip verify %v, warned %v, min version %x; want %s", v, skip, warned, w.accounts[0].TLSConfig.MinVersion, want)
		}
	}
	for _, v := range on {
		check(v, "on")
	}
	for _, v := range off {
		check(v, "off")
	}
	for _, v := range wrong {
		check(v, "error")
	}
	t.Logf("TLS_SKIP_VERIFY turns verification off for %q (case-insensitive, one pair of quotes removed); %d spellings that are not a boolean are errors", on, len(wrong))

	// As a process, against a server whose certificate is not trusted
	// (no TLS_CA_FILE): a misspelling never connects; false and unset
	// verify and refuse the certificate before USER/PASS.
	d := dovecottest.Start(t, dovecottest.Options{})
	p := ftStartProxy(t, d.TLSAddr())
	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), "POPHOOK_ACCOUNT_SUPPORT_HOST=127.0.0.1",
		"POPHOOK_ACCOUNT_SUPPORT_PORT="+p.port(), "POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE=")
	for _, v := range []string{"ture", "on", "flase"} {
		out, code := runBin(t, append(slices.Clone(env), "POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY="+v), "once")
		if code != 2 || !strings.Contains(out, "TLS_SKIP_VERIFY") {
			t.Errorf("TLS_SKIP_VERIFY=%q: exit %d:\n%s", v, code, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) || p.n.Load() != 0 {
		t.Errorf("a misspelt TLS_SKIP_VERIFY created the data dir (%v) or connected (%d)", err, p.n.Load())
	}
	for _, v := range []string{"", "false", "0"} {
		out, code := runBin(t, append(slices.Clone(env), "POPHOOK_ACCOUNT_SUPPORT_TLS_SKIP_VERIFY="+v), "check")
		if code != 1 || !strings.Contains(out, "not trusted") || strings.Contains(out, "login       ok") {
			t.Errorf("TLS_SKIP_VERIFY=%q against an untrusted certificate: exit %d:\n%s", v, code, out)
		}
	}
	if b, _ := os.ReadFile(d.LogFile); strings.Contains(string(b), "user=<alice>") {
		t.Errorf("a credential reached Dovecot through an unverified connection:\n%s", b)
	}
	// The sinks have no switch to turn verification off.
	for _, kv := range []string{"POPHOOK_SINK_ARCHIVE_TLS_SKIP_VERIFY=true", "POPHOOK_SINK_ARCHIVE_TLS_INSECURE=true"} {
		cases++
		if _, _, err := ftLoadConfig(t, append(slices.Clone(base), kv)); err == nil || !strings.Contains(err.Error(), strings.Split(kv, "=")[0]) {
			t.Errorf("%s: %v; want a configuration error naming it", kv, err)
		}
	}
	sinkBase := slices.DeleteFunc(slices.Clone(base), func(kv string) bool { return strings.HasPrefix(kv, "POPHOOK_SINK_ARCHIVE_") })
	for _, s := range []struct{ kv string }{
		{"TYPE=smtp HOST=127.0.0.1 TO=a@example.com FROM=b@example.com TLS_SKIP_VERIFY=true"},
		{"TYPE=smtp HOST=127.0.0.1 TO=a@example.com FROM=b@example.com INSECURE_SKIP_VERIFY=true"},
		{"TYPE=webhook URL=https://127.0.0.1/x TLS_SKIP_VERIFY=true"},
		{"TYPE=webhook URL=https://127.0.0.1/x INSECURE_SKIP_VERIFY=true"},
	} {
		cases++
		env := slices.Clone(sinkBase)
		fields := strings.Fields(s.kv)
		for _, f := range fields {
			env = append(env, "POPHOOK_SINK_ARCHIVE_"+f)
		}
		name := "POPHOOK_SINK_ARCHIVE_" + strings.Split(fields[len(fields)-1], "=")[0]
		_, _, err := ftLoadConfig(t, env)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v; want a configuration error naming %s", s.kv, err, name)
			continue
		}
		// Without the variable the same sink is valid: the error is the
		// variable's.
		if _, _, err := ftLoadConfig(t, env[:len(env)-1]); err != nil {
			t.Errorf("%s without the last variable: %v", s.kv, err)
		}
	}
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "TLS verification switched off by accident",
		Injection: fmt.Sprintf("TLS_SKIP_VERIFY set to %d spellings; SKIP_VERIFY-like variables on SMTP and webhook sinks; a server with an untrusted certificate", cases),
		Rounds:    cases + 6, Messages: 0,
		Result: fmt.Sprintf("off only for %s; %d non-boolean spellings and every sink variant are configuration errors (exit 2, nothing created, no connection); unset/false/0 refuse the untrusted certificate before any credential", strings.Join(on[:6], "/"), len(wrong))})
}

// A TLS 1.1-only server (crypto/tls with MaxVersion TLS 1.1) as the POP3
// server, the SMTP relay and the webhook: pophook check fails the
// handshake for all three, and the server completes none. A client
// allowing TLS 1.1 does complete it: the server is real.
func TestSecurityTLSMinimumVersion(t *testing.T) {
	dir := t.TempDir()
	cert, caFile := ftCert(t, dir, "ca.pem")
	type server struct {
		addr       string
		handshakes atomic.Int32
		errs       sync.Map
	}
	start := func() *server {
		s := &server{}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		s.addr = ln.Addr().String()
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					tc := tls.Server(c, cfg)
					tc.SetDeadline(time.Now().Add(10 * time.Second))
					if err := tc.Handshake(); err != nil {
						s.errs.Store(err.Error(), true)
						return
					}
					s.handshakes.Add(1)
				}()
			}
		}()
		return s
	}
	pop, smtpSrv, hook := start(), start(), start()
	// The control: TLS 1.1 works with this server for a client that
	// allows it.
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(pem)
	c, err := tls.Dial("tcp", pop.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err != nil {
		t.Fatalf("control: a TLS 1.1 client cannot reach the TLS 1.1 server: %v", err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS11 {
		t.Fatalf("control: negotiated %s", tls.VersionName(v))
	}
	c.Close()
	for pop.handshakes.Load() != 1 {
		time.Sleep(10 * time.Millisecond)
	}
	pop.handshakes.Store(0)

	popHost, popPort, _ := net.SplitHostPort(pop.addr)
	smtpHost, smtpPort, _ := net.SplitHostPort(smtpSrv.addr)
	env := []string{"PATH=" + os.Getenv("PATH"), "SSL_CERT_FILE=" + caFile, // the webhook trusts the system roots
		"POPHOOK_DATA_DIR=" + filepath.Join(dir, "data"), "POPHOOK_HTTP_ADDR=", "POPHOOK_ACCOUNTS=support", "POPHOOK_SINKS=relay,hook"}
	env = append(env, ftAccountEnv("support", "HOST", popHost, "PORT", popPort, "TLS_CA_FILE", caFile, "USERNAME", "alice",
		"PASSWORD", "Tls11-Password-1", "SINKS", "relay,hook")...)
	env = append(env, ftSinkEnv("relay", "TYPE", "smtp", "HOST", smtpHost, "PORT", smtpPort, "TLS", "implicit", "TLS_CA_FILE", caFile,
		"USERNAME", "relay", "PASSWORD", "Tls11-Password-2", "FROM", "a@example.com", "TO", "b@example.com")...)
	env = append(env, ftSinkEnv("hook", "TYPE", "webhook", "URL", "https://"+hook.addr+"/in")...)
	out, code := runBin(t, env, "check")
	t.Logf("pophook check against TLS 1.1-only servers (exit %d):\n%s", code, out)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "  error"):
			lines["pop3"] = l
		case strings.HasPrefix(l, "sink relay"):
			lines["smtp"] = l
		case strings.HasPrefix(l, "sink hook"):
			lines["webhook"] = l
		}
	}
	for _, what := range []string{"pop3", "smtp", "webhook"} {
		if !strings.Contains(lines[what], "protocol version") {
			t.Errorf("%s: %q, want the handshake refused for its protocol version", what, lines[what])
		}
	}
	for name, s := range map[string]*server{"pop3": pop, "smtp": smtpSrv, "webhook": hook} {
		var seen []string
		s.errs.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
		if s.handshakes.Load() != 0 {
			t.Errorf("%s: %d TLS 1.1 handshakes completed", name, s.handshakes.Load())
		}
		t.Logf("%s server saw: %v", name, seen)
	}
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "server offering only TLS 1.1",
		Injection: "crypto/tls servers with MaxVersion TLS 1.1 as POP3 server, SMTP relay and webhook (a TLS 1.1 client completes a handshake with them)",
		Rounds:    3, Messages: 0,
		Result: "pophook check: all three refused with \"protocol version not supported\"; 0 handshakes completed, no credential sent"})
}

// POPHOOK_HTTP_ADDR unset: the daemon listens on 127.0.0.1:8080, not on
// every interface. If the port is taken, the error names the address.
func TestSecurityHTTPListenerLoopbackByDefault(t *testing.T) {
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "POPHOOK_DATA_DIR=" + filepath.Join(dir, "data"), "POPHOOK_ACCOUNTS=support",
		"POPHOOK_SINKS=archive", "POPHOOK_SINK_ARCHIVE_TYPE=maildir", "POPHOOK_SINK_ARCHIVE_PATH=" + filepath.Join(dir, "Maildir")}
	env = append(env, ftAccountEnv("support", "HOST", "127.0.0.1", "PORT", "1", "USERNAME", "alice", "PASSWORD", "x",
		"SINKS", "archive", "SCHEDULE", "@every 1h")...)
	cfg, _, err := ftLoadConfig(t, env)
	if err != nil || cfg.HTTPAddr != "127.0.0.1:8080" {
		t.Fatalf("default POPHOOK_HTTP_ADDR %q (%v), want 127.0.0.1:8080", cfg.HTTPAddr, err)
	}
	daemon := ftStartDaemon(t, env)
	daemon.wait(t, 15*time.Second, "listener or exit", func(l string) bool {
		return strings.Contains(l, "HTTP endpoints listening") || strings.Contains(l, "POPHOOK_HTTP_ADDR")
	})
	log := daemon.log.String()
	var result string
	if strings.Contains(log, "HTTP endpoints listening") {
		if !strings.Contains(log, "addr=127.0.0.1:8080") {
			t.Errorf("listening elsewhere:\n%s", log)
		}
		if body := ftGet(t, "http://127.0.0.1:8080/healthz"); body != "ok\n" {
			t.Errorf("/healthz on 127.0.0.1:8080: %q", body)
		}
		// On a wildcard listener another loopback address would answer.
		if c, err := net.DialTimeout("tcp", "127.0.0.2:8080", 2*time.Second); err == nil {
			c.Close()
			t.Errorf("127.0.0.2:8080 answers: the listener is not bound to 127.0.0.1 only")
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("127.0.0.2:8080: %v", err)
		}
		result = "listens on 127.0.0.1:8080; 127.0.0.2:8080 refused"
	} else {
		// The port is taken on this machine: the error still shows the
		// address pophook tried.
		if !strings.Contains(log, "127.0.0.1:8080") {
			t.Errorf("the daemon stopped without naming 127.0.0.1:8080:\n%s", log)
		}
		result = "port 8080 taken here; the error names 127.0.0.1:8080"
		daemon.cmd.Wait()
	}
	daemon.stop(t)
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "HTTP listener address by default",
		Injection: "pophook run with POPHOOK_HTTP_ADDR unset", Rounds: 1, Result: result})
}

// ftUmask0 clears the umask for the test, so that a file's mode is what
// pophook asked for and nothing hides a mode too open.
func ftUmask0(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
}

// What pophook keeps in the data dir is private: ledger.db, the spool
// files (seen while a delivery is under way), control.token, the OAuth2
// token files and the servers looked up are 0600, and the directories
// pophook made for them 0700. Run in this process with the umask cleared.
func TestSecurityFileModes(t *testing.T) {
	ftUmask0(t)
	in := dovecottest.StartIntrospection(t, nil)
	const found = "alice@pophook.test"
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post"), Users: map[string]string{found: "alice-secret", "carol": "x"}})
	_, tokenURL := newFTProvider(t, in, "carol", "", "refresh-0")
	d.Deliver(t, found, []byte("Subject: x\n\nbody\n"))
	d.Deliver(t, "carol", []byte("Subject: y\n\nbody\n"))
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	spool := filepath.Join(data, "spool")
	var mu sync.Mutex
	spoolSeen := map[string]fs.FileMode{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		ents, _ := os.ReadDir(spool)
		mu.Lock()
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				spoolSeen[e.Name()] = fi.Mode()
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	env := []string{"POPHOOK_DATA_DIR=" + data, "POPHOOK_HTTP_ADDR=" + ftFreeAddr(t), "POPHOOK_ACCOUNTS=found,oauth", "POPHOOK_SINKS=hook,archive"}
	env = append(env, ftAccountEnv("found", "USERNAME", found, "PASSWORD", "alice-secret", "TLS_CA_FILE", d.CAFile, "SINKS", "hook,archive")...)
	env = append(env, ftAccountEnv("oauth", "HOST", d.Host, "PORT", strconv.Itoa(d.TLSPort), "TLS_CA_FILE", d.CAFile, "USERNAME", "carol",
		"AUTH", "xoauth2", "OAUTH2_CLIENT_ID", "client-1", "OAUTH2_REFRESH_TOKEN", "refresh-0", "OAUTH2_TOKEN_URL", tokenURL, "SINKS", "hook,archive")...)
	env = append(env, ftSinkEnv("hook", "TYPE", "webhook", "URL", hook.URL+"/in")...)
	env = append(env, ftSinkEnv("archive", "TYPE", "maildir", "PATH", filepath.Join(dir, "Maildir"))...)
	cfg, _, err := ftLoadConfig(t, env)
	if err != nil {
		t.Fatal(err)
	}
	w, err := wire(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w.discover = func(context.Context, *config.Account) (discover.Found, []discover.Step, error) {
		return discover.Found{Host: d.Host, Port: d.TLSPort, TLS: pop3.TLSImplicit, Via: "test"}, nil, nil
	}
	a, err := w.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.once(context.Background(), nil, io.Discard); err != nil {
		t.Fatalf("once: %v", err)
	}
	// The daemon writes control.token when it starts listening.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(data, controlTokenFile)); err == nil || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	a.close()

	want := map[string]fs.FileMode{
		".":                 0o700 | fs.ModeDir,
		"ledger.db":         0o600,
		"spool":             0o700 | fs.ModeDir,
		controlTokenFile:    0o600,
		"oauth":             0o700 | fs.ModeDir,
		"discovered":        0o700 | fs.ModeDir,
		"oauth/*.json":      0o600,
		"discovered/*.json": 0o600,
	}
	got := map[string]fs.FileMode{}
	checked := 0
	filepath.WalkDir(data, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := de.Info()
		rel, _ := filepath.Rel(data, path)
		key := rel
		if m, _ := filepath.Match("*/*.json", rel); m {
			key = filepath.Dir(rel) + "/*.json"
		}
		w, ok := want[key]
		switch {
		case !ok:
			t.Errorf("unexpected %s in the data dir (%s)", rel, fi.Mode())
		case fi.Mode() != w:
			t.Errorf("%s: mode %s, want %s", rel, fi.Mode(), w)
		}
		got[key] = fi.Mode()
		checked++
		return nil
	})
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("%s was not created", k)
		}
	}
	mu.Lock()
	if len(spoolSeen) == 0 {
		t.Error("no spool file seen during a delivery")
	}
	for name, mode := range spoolSeen {
		checked++
		if mode != 0o600 {
			t.Errorf("spool file %s: mode %s, want -rw-------", name, mode)
		}
	}
	t.Logf("data dir: %v; spool files during delivery: %v", got, spoolSeen)
	mu.Unlock()
	// The Maildir pophook made: directories 0700, messages 0600.
	filepath.WalkDir(filepath.Join(dir, "Maildir"), func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := de.Info()
		if w := map[bool]fs.FileMode{true: 0o700 | fs.ModeDir, false: 0o600}[de.IsDir()]; fi.Mode() != w {
			t.Errorf("%s: mode %s, want %s", path, fi.Mode(), w)
		}
		checked++
		return nil
	})
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "file modes of what pophook keeps",
		Injection: "once and run in-process with umask 0: a looked-up server, an OAuth2 account, a webhook (spool listed during delivery), a Maildir",
		Rounds:    checked, Messages: 2,
		Result: "ledger.db, spool files, control.token, oauth/*.json, discovered/*.json and Maildir files 0600; their directories 0700"})
}

// Maildir and spool file names never come from the message or the
// server: messages with hostile Message-IDs, subjects and attachment
// names (path traversal, "/", NUL bytes, 5000 characters) from Dovecot,
// and hostile UIDLs ("../../etc/x", "/", 70 characters of "../") from a
// second server, all delivered to a Maildir and a webhook.
func TestSecurityFileNamesIgnoreMessageContent(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	hostile := [][]byte{
		[]byte("Message-ID: <../../etc/x>\nSubject: ../../etc/passwd\n\nbody\n"),
		[]byte("Message-ID: /\nSubject: /\n\nbody\n"),
		[]byte("Message-ID: <a\x00/../b@x>\nSubject: nul\x00/../x\n\nbody\x00\n"),
		[]byte("Message-ID: <" + strings.Repeat("../", 1700) + "x>\nSubject: " + strings.Repeat("/..", 1000) + "\n\nbody\n"),
		[]byte("Message-ID: ../../../../tmp/x\nFrom: \"../../x\" <a@b>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b\n" +
			"Content-Type: application/octet-stream; name=\"../../../etc/cron.d/x\"\nContent-Disposition: attachment; filename=\"../../../etc/cron.d/x\"\n\nAAAA\n--b--\n"),
	}
	for _, m := range hostile {
		d.Deliver(t, "alice", m)
	}
	uidls := []string{"../../etc/x", "/", "..", ".", "a/b", strings.Repeat("../", 23) + "x"}
	ps := pop3test.NewTLSServer(pop3test.Options{})
	defer ps.Close()
	var msgs []pop3test.Message
	for i, u := range uidls {
		msgs = append(msgs, pop3test.Message{UID: u, Data: []byte(fmt.Sprintf("Message-ID: <%s>\nSubject: uidl %d\n\nbody\n", u, i))})
	}
	ps.SetMailbox("alice", msgs)
	dir := t.TempDir()
	psCA := filepath.Join(dir, "pop3test-ca.pem")
	os.WriteFile(psCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ps.Certificate().Raw}), 0o644)
	data, mdir := filepath.Join(dir, "data"), filepath.Join(dir, "Maildir")
	var mu sync.Mutex
	spoolNames := map[string]bool{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		ents, _ := os.ReadDir(filepath.Join(data, "spool"))
		mu.Lock()
		for _, e := range ents {
			spoolNames[e.Name()] = true
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	psHost, psPort, _ := net.SplitHostPort(ps.Addr)
	env := dovecotEnv(d, data, mdir, "POPHOOK_ACCOUNTS=support,uidls", "POPHOOK_SINKS=archive,hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=archive,hook")
	env = append(env, ftAccountEnv("uidls", "HOST", psHost, "PORT", psPort, "TLS_CA_FILE", psCA, "USERNAME", "alice", "PASSWORD", "secret", "SINKS", "archive,hook")...)
	env = append(env, ftSinkEnv("hook", "TYPE", "webhook", "URL", hook.URL+"/in")...)
	out, code := runBin(t, env, "once")
	if code != 0 {
		t.Fatalf("once: exit %d:\n%s", code, out)
	}
	total := len(hostile) + len(uidls)
	if n := ftMaildirCount(t, mdir); n != total {
		t.Errorf("%d messages in the Maildir, want %d", n, total)
	}
	maildirName := regexp.MustCompile(`^[0-9]+\.K[A-Za-z0-9_]+\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*,S=[0-9]+(:2,[A-Z]*)?$`)
	spoolName := regexp.MustCompile(`^(msg-[0-9]+|webhook-[0-9]+\.body)$`)
	names := 0
	bad := func(name string) bool {
		return strings.ContainsAny(name, "/\x00<>") || strings.Contains(name, "..") || len(name) > 255
	}
	// Everything under the test dir: only what belongs there, every name
	// of the expected shape.
	filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		parent := filepath.Base(filepath.Dir(path))
		switch {
		case path == dir || rel == "data" || rel == "Maildir" || rel == "pop3test-ca.pem":
		case strings.HasPrefix(rel, "data"+string(filepath.Separator)):
			if rel != filepath.Join("data", "ledger.db") && rel != filepath.Join("data", "spool") {
				t.Errorf("unexpected file in the data dir: %q", rel)
			}
		case strings.HasPrefix(rel, "Maildir"+string(filepath.Separator)) && de.IsDir():
			if !slices.Contains([]string{"new", "cur", "tmp"}, de.Name()) || parent != "Maildir" {
				t.Errorf("unexpected directory %q", rel)
			}
		case parent == "new" || parent == "cur":
			names++
			if !maildirName.MatchString(de.Name()) || bad(de.Name()) {
				t.Errorf("Maildir file name %q", de.Name())
			}
		default:
			t.Errorf("unexpected file %q", rel)
		}
		return nil
	})
	mu.Lock()
	if len(spoolNames) == 0 {
		t.Error("no spool file seen during a delivery")
	}
	for n := range spoolNames {
		names++
		if !spoolName.MatchString(n) || bad(n) {
			t.Errorf("spool file name %q", n)
		}
	}
	spool := slices.Sorted(maps.Keys(spoolNames))
	mu.Unlock()
	t.Logf("%d file names checked; spool names seen: %v", names, spool)
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "file names from hostile messages or UIDLs",
		Injection: "Message-ID/Subject/attachment names with ../, /, NUL and 5000 characters (Dovecot); UIDLs ../../etc/x, /, .., a/b, 70 characters (pop3test)",
		Rounds:    names, Messages: total,
		Result: "every Maildir name <time>.K<key>.<host>,S=<size>, every spool name msg-N or webhook-N.body; nothing written outside the Maildir and data dir"})
}

// A server that quotes the credential back in its refusal (a POP3 server
// echoing PASS or AUTH PLAIN, an SMTP relay echoing AUTH PLAIN, a token
// endpoint echoing the refresh token): the webhook sink scrubs such echoes
// from what it reports (see TestSecuritySecretsNeverInOutputs); the other
// paths must not print them either.
func TestSecurityEchoedCredentials(t *testing.T) {
	rnd := ftRandom(4)
	secrets := map[string]string{
		"POP3 password (USER/PASS)":  "EchoPass-" + rnd + "-1111",
		"POP3 password (AUTH PLAIN)": "EchoPlain-" + rnd + "-2222",
		"SMTP relay password":        "EchoRelay-" + rnd + "-3333",
		"OAuth2 refresh token":       "EchoRefresh-" + rnd + "-4444",
	}
	echo := func(user, line string) (string, bool) {
		if arg, ok := strings.CutPrefix(line, "PASS "); ok {
			return "-ERR [AUTH] invalid password " + arg + " for " + user + "\r\n", true
		}
		if arg, ok := strings.CutPrefix(line, "AUTH PLAIN "); ok {
			return "-ERR [AUTH] invalid credentials " + arg + "\r\n", true
		}
		return "", false
	}
	popUser := pop3test.NewTLSServer(pop3test.Options{Faults: pop3test.Faults{Hook: echo}})
	defer popUser.Close()
	popPlain := pop3test.NewTLSServer(pop3test.Options{NoUser: true, SASL: []string{"PLAIN"}, Faults: pop3test.Faults{Hook: echo}})
	defer popPlain.Close()
	dir := t.TempDir()
	relayCert, relayCA := ftCert(t, dir, "relay-ca.pem")
	relay := startFTRelay(t, relayCert, "the-relay-wants-another")
	relay.echo = true
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "refresh token " + r.Form.Get("refresh_token") + " is not valid"})
	}))
	defer tokens.Close()
	var popEnv []string
	for name, s := range map[string]*pop3test.Server{"user": popUser, "plain": popPlain} {
		ca := filepath.Join(dir, name+"-ca.pem")
		os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o644)
		h, p, _ := net.SplitHostPort(s.Addr)
		pw := map[string]string{"user": secrets["POP3 password (USER/PASS)"], "plain": secrets["POP3 password (AUTH PLAIN)"]}[name]
		// Each account its own user: the ledger knows a mailbox by host
		// and user.
		popEnv = append(popEnv, ftAccountEnv(name, "HOST", h, "PORT", p, "TLS_CA_FILE", ca, "USERNAME", name+"-user", "PASSWORD", pw,
			"AUTH", map[string]string{"user": "user", "plain": "plain"}[name], "SINKS", "archive")...)
	}
	h, p, _ := net.SplitHostPort(popUser.Addr)
	relayHost, relayPort, _ := net.SplitHostPort(relay.addr)
	env := []string{"PATH=" + os.Getenv("PATH"), "POPHOOK_DATA_DIR=" + filepath.Join(dir, "data"), "POPHOOK_HTTP_ADDR=", "POPHOOK_LOG_LEVEL=debug",
		"POPHOOK_ACCOUNTS=user,plain,relayed,oauth", "POPHOOK_SINKS=archive,relay"}
	env = append(env, popEnv...)
	// relayed: a mailbox with one message, for the relay to refuse.
	msgSrv := pop3test.NewTLSServer(pop3test.Options{})
	defer msgSrv.Close()
	msgSrv.SetMailbox("alice", []pop3test.Message{{UID: "m1", Data: []byte("Subject: x\n\nbody\n")}})
	msgCA := filepath.Join(dir, "msg-ca.pem")
	os.WriteFile(msgCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: msgSrv.Certificate().Raw}), 0o644)
	mh, mp, _ := net.SplitHostPort(msgSrv.Addr)
	env = append(env, ftAccountEnv("relayed", "HOST", mh, "PORT", mp, "TLS_CA_FILE", msgCA, "USERNAME", "alice", "PASSWORD", "secret", "SINKS", "relay")...)
	env = append(env, ftAccountEnv("oauth", "HOST", h, "PORT", p, "TLS_CA_FILE", filepath.Join(dir, "user-ca.pem"), "USERNAME", "carol",
		"AUTH", "xoauth2", "OAUTH2_CLIENT_ID", "client-1", "OAUTH2_REFRESH_TOKEN", secrets["OAuth2 refresh token"], "OAUTH2_TOKEN_URL", tokens.URL, "SINKS", "archive")...)
	env = append(env, ftSinkEnv("archive", "TYPE", "maildir", "PATH", filepath.Join(dir, "Maildir"))...)
	env = append(env, ftSinkEnv("relay", "TYPE", "smtp", "HOST", relayHost, "PORT", relayPort, "TLS", "implicit", "TLS_CA_FILE", relayCA,
		"USERNAME", "relay", "PASSWORD", secrets["SMTP relay password"], "FROM", "a@example.com", "TO", "b@example.com")...)
	outputs := map[string][]byte{}
	for _, args := range [][]string{{"check"}, {"once"}} {
		stdout, stderr, _ := runBinOut(t, env, args...)
		outputs[args[0]+" (stdout)"], outputs[args[0]+" (stderr)"] = []byte(stdout), []byte(stderr)
	}
	stdout, stderr, _ := runBinOut(t, env, "ledger", "export")
	outputs["ledger export (stdout)"], outputs["ledger export (stderr)"] = []byte(stdout), []byte(stderr)
	outputs["ledger.db"], _ = os.ReadFile(filepath.Join(dir, "data", "ledger.db"))
	// Each echo reached pophook: the refusals are in the output.
	for _, want := range []string{"account user: authentication failed", "account plain: authentication failed", "sink relay is unavailable",
		"account oauth: the credential was refused"} {
		if !strings.Contains(string(outputs["once (stderr)"]), want) {
			t.Errorf("once should report %q:\n%s", want, outputs["once (stderr)"])
		}
	}
	found := ftLeaks(outputs, secrets)
	for _, f := range found {
		t.Error(f)
	}
	t.Logf("searched %d outputs for %d echoed secrets: %d found", len(outputs), len(secrets), len(found))
	faultrow.Report(t, faultrow.Row{Area: "security", Fault: "a server quotes the credential back in its refusal",
		Injection: "pop3test echoing PASS and AUTH PLAIN in -ERR, an SMTP relay echoing AUTH PLAIN in 535, a token endpoint echoing the refresh token",
		Rounds:    len(outputs), Messages: len(secrets), Result: "0 found"})
}
