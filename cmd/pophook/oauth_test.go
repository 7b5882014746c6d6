package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/state"
)

// pophook oauth login runs the device-code flow against the provider and
// keeps the refresh token where the account's token source finds it.
func TestOAuthLogin(t *testing.T) {
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/devicecode") && r.Form.Get("client_id") == "client-1":
			json.NewEncoder(w).Encode(map[string]any{"device_code": "dev-1", "user_code": "ABCD-EFGH",
				"verification_uri": "https://microsoft.com/devicelogin", "expires_in": 600, "interval": 1})
		case strings.HasSuffix(r.URL.Path, "/token") && r.Form.Get("device_code") == "dev-1":
			if polls.Add(1) == 1 {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "authorization_pending"})
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"access_token": "access-9", "refresh_token": "refresh-9",
				"token_type": "Bearer", "expires_in": 3600})
		default:
			http.Error(w, "unexpected", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	env := []string{"PATH=" + os.Getenv("PATH"), "POPHOOK_DATA_DIR=" + dir, "POPHOOK_ACCOUNTS=support", "POPHOOK_SINKS=archive",
		"POPHOOK_ACCOUNT_SUPPORT_HOST=outlook.office365.com", "POPHOOK_ACCOUNT_SUPPORT_USERNAME=support@contoso.example",
		"POPHOOK_ACCOUNT_SUPPORT_AUTH=xoauth2", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID=client-1",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL=" + srv.URL + "/contoso/oauth2/v2.0/token",
		"POPHOOK_ACCOUNT_SUPPORT_SINKS=archive", "POPHOOK_SINK_ARCHIVE_TYPE=maildir", "POPHOOK_SINK_ARCHIVE_PATH=" + filepath.Join(dir, "Maildir")}
	out, code := runBin(t, env, "oauth", "login", "--provider", "microsoft", "support")
	t.Logf("pophook oauth login:\n%s", out)
	if code != 0 || !strings.Contains(out, "ABCD-EFGH") || !strings.Contains(out, "https://microsoft.com/devicelogin") {
		t.Fatalf("exit %d", code)
	}
	path := tokenPath(dir, state.AccountID("outlook.office365.com", "support@contoso.example"))
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v %v", path, fi, err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"refresh_token":"refresh-9"`) {
		t.Errorf("token file: %s", b)
	}
	if strings.Contains(out, "refresh-9") || strings.Contains(out, "access-9") {
		t.Error("a token is in the output")
	}
	// Before the login, check said what to do; after it, the token source
	// uses the kept refresh token (the provider here knows no other grant,
	// so a token from it proves it).
	os.Remove(path)
	out, _ = runBin(t, env, "check", "support")
	if !strings.Contains(out, "no refresh token yet") || !strings.Contains(out, "pophook oauth login support") {
		t.Errorf("check before login:\n%s", out)
	}
}

// For Google, pophook oauth login runs the browser flow: the address it
// prints carries PKCE and a state, the browser comes back to pophook's
// loopback listener, and the code is exchanged with the verifier. An
// answer with the wrong state is turned away and the login goes on.
func TestOAuthLoginGoogle(t *testing.T) {
	var exchanged atomic.Int32
	var challenge atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
		if r.URL.Path != "/token" || r.Form.Get("grant_type") != "authorization_code" || r.Form.Get("code") != "code-1" ||
			r.Form.Get("client_secret") != "secret-1" || base64.RawURLEncoding.EncodeToString(sum[:]) != challenge.Load() ||
			!strings.HasPrefix(r.Form.Get("redirect_uri"), "http://127.0.0.1:") {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		exchanged.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "access-g", "refresh_token": "refresh-g", "token_type": "Bearer", "expires_in": 3599})
	}))
	defer srv.Close()
	dir := t.TempDir()
	for _, kv := range []string{"POPHOOK_DATA_DIR=" + dir, "POPHOOK_ACCOUNTS=support", "POPHOOK_SINKS=archive",
		"POPHOOK_ACCOUNT_SUPPORT_HOST=pop.gmail.com", "POPHOOK_ACCOUNT_SUPPORT_USERNAME=support@gmail.com",
		"POPHOOK_ACCOUNT_SUPPORT_AUTH=xoauth2", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID=client-g",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_SECRET=secret-1",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL=" + srv.URL + "/token",
		"POPHOOK_ACCOUNT_SUPPORT_SINKS=archive", "POPHOOK_SINK_ARCHIVE_TYPE=maildir", "POPHOOK_SINK_ARCHIVE_PATH=" + filepath.Join(dir, "Maildir")} {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	cfg, _, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	errc := make(chan error, 1)
	go func() {
		errc <- oauthCommand(context.Background(), cfg, []string{"login", "--provider", "google", "support"}, &out, nil)
	}()
	var auth *url.URL
	for deadline := time.Now().Add(10 * time.Second); auth == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, f := range strings.Fields(out.String()) {
			if strings.HasPrefix(f, "https://accounts.google.com/") {
				auth, _ = url.Parse(f)
			}
		}
	}
	if auth == nil {
		t.Fatalf("no address to open:\n%s", out.String())
	}
	t.Logf("pophook oauth login:\n%s", out.String())
	q := auth.Query()
	for k, want := range map[string]string{"client_id": "client-g", "scope": "https://mail.google.com/", "access_type": "offline",
		"code_challenge_method": "S256", "login_hint": "support@gmail.com", "response_type": "code"} {
		if q.Get(k) != want {
			t.Errorf("%s=%q, want %q", k, q.Get(k), want)
		}
	}
	challenge.Store(q.Get("code_challenge"))
	back := q.Get("redirect_uri")
	if !strings.HasPrefix(back, "http://127.0.0.1:") || q.Get("state") == "" {
		t.Fatalf("redirect_uri %q state %q", back, q.Get("state"))
	}
	// What the provider's page would send the browser to, forged first.
	resp, err := http.Get(back + "?state=forged&code=code-1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a forged answer got %s", resp.Status)
	}
	resp, err = http.Get(back + "?" + url.Values{"state": {q.Get("state")}, "code": {"code-1"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-errc; err != nil {
		t.Fatalf("login: %v\n%s", err, out.String())
	}
	if exchanged.Load() != 1 {
		t.Fatalf("%d exchanges", exchanged.Load())
	}
	b, err := os.ReadFile(tokenPath(dir, state.AccountID("pop.gmail.com", "support@gmail.com")))
	if err != nil || !strings.Contains(string(b), `"refresh_token":"refresh-g"`) {
		t.Errorf("token file: %s %v", b, err)
	}
	if strings.Contains(out.String(), "refresh-g") {
		t.Error("the refresh token is in the output")
	}
}
