package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pophook/pophook/worker"
)

// provider is a token endpoint that rotates refresh tokens: each is good
// for one use, as Microsoft and Google may do, and can be revoked.
type provider struct {
	mu       sync.Mutex
	valid    map[string]bool // refresh tokens that still work
	n        int
	requests int
	grants   []string
	expires  time.Duration
	down     bool
}

func newProvider(t *testing.T, first string) (*provider, *httptest.Server) {
	p := &provider{valid: map[string]bool{first: true}, expires: time.Hour}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

func (p *provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if p.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	r.ParseForm()
	p.grants = append(p.grants, r.Form.Get("grant_type"))
	w.Header().Set("Content-Type", "application/json")
	refuse := func(code, desc string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if r.Form.Get("client_id") != "client-1" {
		refuse("invalid_client", "AADSTS700016: Application not found")
		return
	}
	p.n++
	reply := map[string]any{"access_token": fmt.Sprintf("access-%d", p.n), "token_type": "Bearer", "expires_in": int(p.expires.Seconds())}
	switch r.Form.Get("grant_type") {
	case "refresh_token":
		rt := r.Form.Get("refresh_token")
		if !p.valid[rt] {
			refuse("invalid_grant", "AADSTS70008: The refresh token has expired or is invalid due to sign-in frequency checks.")
			return
		}
		delete(p.valid, rt) // used: rotated
		next := fmt.Sprintf("refresh-%d", p.n)
		p.valid[next] = true
		reply["refresh_token"] = next
	case "client_credentials":
		if r.Form.Get("client_secret") != "app-secret" {
			refuse("invalid_client", "AADSTS7000215: Invalid client secret provided.")
			return
		}
	}
	json.NewEncoder(w).Encode(reply)
}

func fixed(s string) func() (string, error) { return func() (string, error) { return s, nil } }

// Rotation across processes: each refresh token works once, and the
// rotated one is kept in the data dir, so a new process (months later)
// still logs in; the access token is reused until shortly before it
// expires.
func TestRefreshRotationAndReuse(t *testing.T) {
	p, srv := newProvider(t, "refresh-0")
	store := filepath.Join(t.TempDir(), "oauth", "support.json")
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	newSource := func() *Source {
		return New(Config{Account: "support", TokenURL: srv.URL, ClientID: "client-1", RefreshToken: fixed("refresh-0"),
			StorePath: store, Now: func() time.Time { return now }})
	}
	ctx := context.Background()
	tok, err := newSource().Secret(ctx)
	if err != nil || tok != "access-1" {
		t.Fatalf("first token %q, %v", tok, err)
	}
	fi, err := os.Stat(store)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	// A new process half an hour later reuses the access token.
	now = now.Add(30 * time.Minute)
	if tok, err := newSource().Secret(ctx); err != nil || tok != "access-1" || p.requests != 1 {
		t.Fatalf("reuse: %q, %v, %d requests", tok, err, p.requests)
	}
	// Past expiry, a new process refreshes with the rotated token (the
	// configured refresh-0 was used up and would be refused).
	now = now.Add(time.Hour)
	if tok, err := newSource().Secret(ctx); err != nil || tok != "access-2" {
		t.Fatalf("after expiry: %q, %v", tok, err)
	}
	b, _ := os.ReadFile(store)
	if !strings.Contains(string(b), `"refresh_token":"refresh-2"`) {
		t.Errorf("rotated refresh token not kept: %s", b)
	}
	// Invalidate: the server refused the token; the next Secret is new.
	s := newSource()
	s.Secret(ctx)
	s.Invalidate()
	if tok, err := s.Secret(ctx); err != nil || tok != "access-3" {
		t.Errorf("after Invalidate: %q, %v", tok, err)
	}
}

// A revoked refresh token is an authentication failure that says what to
// do and shows no token; a new configured token wins over the kept one.
func TestRevokedAndReplaced(t *testing.T) {
	p, srv := newProvider(t, "refresh-0")
	store := filepath.Join(t.TempDir(), "support.json")
	src := func(rt string) *Source {
		return New(Config{Account: "support", TokenURL: srv.URL, ClientID: "client-1", RefreshToken: fixed(rt),
			StorePath: store, Hint: "pophook oauth login support"})
	}
	if _, err := src("refresh-0").Secret(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.valid = map[string]bool{"refresh-new": true} // revoked everything; the operator got a new one
	p.mu.Unlock()
	s := src("refresh-0")
	s.Invalidate()
	_, err := s.Secret(context.Background())
	if !errors.Is(err, worker.ErrCredentialRefused) || !strings.Contains(err.Error(), "revoked or has expired") ||
		!strings.Contains(err.Error(), "pophook oauth login support") {
		t.Fatalf("revoked: %v", err)
	}
	for _, secret := range []string{"refresh-0", "refresh-1", "access-1"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %s: %v", secret, err)
		}
	}
	// The operator configures the new token: it replaces the kept one.
	if tok, err := src("refresh-new").Secret(context.Background()); err != nil || tok == "" {
		t.Errorf("with a new configured token: %q, %v", tok, err)
	}
}

// Microsoft's app-only access: client credentials, no refresh token.
func TestClientCredentials(t *testing.T) {
	p, srv := newProvider(t, "unused")
	s := New(Config{Account: "shared", TokenURL: srv.URL, ClientID: "client-1", ClientSecret: fixed("app-secret"),
		Scopes: []string{"https://outlook.office365.com/.default"}})
	if tok, err := s.Secret(context.Background()); err != nil || tok != "access-1" || p.grants[0] != "client_credentials" {
		t.Fatalf("client credentials: %q, %v, grants %v", tok, err, p.grants)
	}
	wrong := New(Config{Account: "shared", TokenURL: srv.URL, ClientID: "client-1", ClientSecret: fixed("wrong")})
	if _, err := wrong.Secret(context.Background()); !errors.Is(err, worker.ErrCredentialRefused) || strings.Contains(err.Error(), "wrong") && strings.Contains(err.Error(), "secret=wrong") {
		t.Errorf("wrong secret: %v", err)
	}
	unknownApp := New(Config{Account: "shared", TokenURL: srv.URL, ClientID: "nobody", ClientSecret: fixed("x")})
	if _, err := unknownApp.Secret(context.Background()); !errors.Is(err, worker.ErrCredentialRefused) || !strings.Contains(err.Error(), "OAUTH2_CLIENT_ID") {
		t.Errorf("unknown client: %v", err)
	}
}

// An endpoint that is down is temporary, not a refusal.
func TestEndpointDown(t *testing.T) {
	p, srv := newProvider(t, "refresh-0")
	p.down = true
	_, err := New(Config{Account: "support", TokenURL: srv.URL, ClientID: "client-1", RefreshToken: fixed("refresh-0")}).Secret(context.Background())
	if err == nil || errors.Is(err, worker.ErrCredentialRefused) {
		t.Errorf("endpoint down: %v", err)
	}
	srv.Close()
	_, err = New(Config{Account: "support", TokenURL: srv.URL, ClientID: "client-1", RefreshToken: fixed("refresh-0")}).Secret(context.Background())
	if err == nil || errors.Is(err, worker.ErrCredentialRefused) || !strings.Contains(err.Error(), "cannot be reached") {
		t.Errorf("endpoint gone: %v", err)
	}
}

// The fingerprint follows the configuration, not the hourly access token.
func TestFingerprint(t *testing.T) {
	a := New(Config{TokenURL: "https://t", ClientID: "c", RefreshToken: fixed("r1")})
	b := New(Config{TokenURL: "https://t", ClientID: "c", RefreshToken: fixed("r2")})
	if a.Fingerprint() == b.Fingerprint() || a.Fingerprint() != New(Config{TokenURL: "https://t", ClientID: "c", RefreshToken: fixed("r1")}).Fingerprint() {
		t.Error("fingerprints do not follow the configured refresh token")
	}
	if strings.Contains(a.Fingerprint(), "r1") {
		t.Error("the fingerprint shows the refresh token")
	}
}
