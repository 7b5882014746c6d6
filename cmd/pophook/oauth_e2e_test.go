package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/state"
)

// rotatingProvider is a token endpoint whose refresh tokens work once and
// whose access tokens live a minute (so every run refreshes); the tokens
// it issues are the ones Dovecot's introspection endpoint accepts.
type rotatingProvider struct {
	mu    sync.Mutex
	valid map[string]bool
	n     int
	in    *dovecottest.Introspection
	log   []string
}

func (p *rotatingProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.ParseForm()
	rt := r.Form.Get("refresh_token")
	w.Header().Set("Content-Type", "application/json")
	if r.Form.Get("grant_type") != "refresh_token" || !p.valid[rt] {
		p.log = append(p.log, "refused "+rt)
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "AADSTS70000: The refresh token was already used."})
		return
	}
	delete(p.valid, rt)
	p.n++
	access, next := fmt.Sprintf("access-%d", p.n), fmt.Sprintf("refresh-%d", p.n)
	p.valid[next] = true
	p.in.SetToken(access, "alice")
	p.log = append(p.log, fmt.Sprintf("%s -> %s, %s", rt, access, next))
	json.NewEncoder(w).Encode(map[string]any{"access_token": access, "refresh_token": next, "token_type": "Bearer", "expires_in": 60})
}

// TestOAuthAgainstDovecot: pophook check and two once runs for an XOAUTH2
// account against Dovecot's oauth2 passdb. Each run refreshes (the access
// token has expired), the provider rotates the refresh token, and the
// second run logs in only because the first kept the rotated one.
func TestOAuthAgainstDovecot(t *testing.T) {
	in := dovecottest.StartIntrospection(t, nil)
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post")})
	p := &rotatingProvider{valid: map[string]bool{"refresh-0": true}, in: in}
	tokens := httptest.NewServer(p)
	defer tokens.Close()
	d.Deliver(t, "alice", []byte("Subject: first\n\nbody\n"))
	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=", "POPHOOK_ACCOUNT_SUPPORT_AUTH=xoauth2",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID=client-1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL="+tokens.URL+"/token",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN=refresh-0")

	out, code := runBin(t, env, "check", "support")
	t.Logf("pophook check (XOAUTH2):\n%s", out)
	if code != 0 || !strings.Contains(out, "login       ok (xoauth2)") || !strings.Contains(out, "mailbox     1 message(s)") {
		t.Fatalf("check: exit %d", code)
	}
	for run := 1; run <= 2; run++ {
		if run == 2 {
			d.Deliver(t, "alice", []byte("Subject: second\n\nbody\n"))
		}
		out, code := runBin(t, env, "once")
		if code != 0 || d.Count(t, "alice") != 0 {
			t.Fatalf("once %d: exit %d, %d on the server:\n%s", run, code, d.Count(t, "alice"), out)
		}
	}
	p.mu.Lock()
	t.Logf("token endpoint: %q", p.log)
	if p.n != 3 || strings.Contains(strings.Join(p.log, " "), "refused") {
		t.Errorf("token requests %q: want three refreshes (check, once, once), each with the token the last one rotated", p.log)
	}
	p.mu.Unlock()
	kept, _ := os.ReadFile(tokenPath(filepath.Join(dir, "data"), state.AccountID(d.Host, "alice")))
	if !strings.Contains(string(kept), `"refresh_token":"refresh-3"`) {
		t.Errorf("kept tokens: %s", kept)
	}
}
