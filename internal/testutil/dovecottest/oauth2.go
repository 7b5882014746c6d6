//go:build unix

package dovecottest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// OAuth2Options configure Dovecot's oauth2 passdb (Options.OAuth2).
//
// Start adds "xoauth2" and "oauthbearer" to the SASL mechanisms and puts an
// oauth2 passdb, limited to those two mechanisms, before the passwd-file
// one. The passdb sends the token from every XOAUTH2 or OAUTHBEARER login
// to IntrospectionURL and accepts it when the JSON object answered has
// ActiveAttribute equal to ActiveValue and UsernameAttribute equal to the
// user logging in (compared in lower case). A refused or unverifiable
// token fails the login there; it never reaches the passwd-file passdb.
// Nothing is cached (auth_cache_size is 0), so every login asks the
// endpoint and a revoked token fails at once. use_grant_password is off:
// passwords are never sent to the endpoint.
//
// StartIntrospection serves such an endpoint; Introspection.OAuth2Options
// returns matching options.
//
// What Dovecot 2.3.19 sends (introspection_mode):
//
//   - "post" (the default here): POST IntrospectionURL with
//     "Content-Type: application/x-www-form-urlencoded" and the body
//     "token=T&client_id=&client_secret=" (T form-escaped), as RFC 7662
//     asks;
//   - "get": GET IntrospectionURL+T+"&client_id=&client_secret=" (T
//     escaped), so the URL must end in "?token=" or the like;
//   - "auth": GET IntrospectionURL with "Authorization: Bearer T" (a
//     userinfo endpoint).
//
// with "User-Agent: dovecot-oauth2-passdb/2.3.19.1" and no credentials of
// its own. Dovecot wants status 200 and a JSON object, which it checks as
// above; {"active":false} is a refused token. Any other status (a 401
// too), a body that is not JSON or no answer within Timeout is an internal
// failure.
//
// What the POP3 client sees:
//
//   - accepted: "+OK Logged in." about 10ms after the response;
//   - refused (inactive, or another user's token): at once a challenge,
//     for XOAUTH2 "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="
//     (base64 of {"status":"401","schemes":"bearer","scope":"mail"}), for
//     OAUTHBEARER "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0="
//     ({"status":"invalid_token"}); only after the client answers it (an
//     empty line, or "AQ==" for OAUTHBEARER; anything will do) comes
//     "-ERR [AUTH] Authentication failed.", about 0.5s later (Dovecot
//     batches failures every 0.5s even with auth_failure_delay = 0). A
//     client that does not answer waits until Dovecot's login timeout;
//   - internal failure: "-ERR [SYS/TEMP] Temporary authentication
//     failure. [HOST:TIME]" with no challenge.
type OAuth2Options struct {
	// IntrospectionURL is where Dovecot checks tokens; required. Use
	// http://127.0.0.1:PORT (as httptest gives), not a host name: a name
	// needs Dovecot's dns-client. https needs Config lines such as
	// "tls_ca_cert_file = ...".
	IntrospectionURL string

	// IntrospectionMode is "post" (default), "get" or "auth"; see above.
	IntrospectionMode string

	// UsernameAttribute names the JSON field holding the user; default
	// "username" (RFC 7662). Dovecot's own default is "email".
	UsernameAttribute string

	// ActiveAttribute and ActiveValue: a token is refused when the
	// attribute is present with another value; default "active" and
	// "true" (a JSON true is compared as "true"). An answer without the
	// attribute is accepted. ActiveAttribute "-" disables the check.
	ActiveAttribute string
	ActiveValue     string

	// Timeout bounds each request to the endpoint; default 5s. A timeout
	// is an internal failure ("-ERR [SYS/TEMP]").
	Timeout time.Duration

	// Config holds further lines for the oauth2 passdb's configuration
	// file ("key = value"; given again, a key overrides the generated
	// one), e.g. "scope = mail", "send_auth_headers = yes" or "debug = yes"
	// (with auth_debug = yes in ExtraConfig, Dovecot logs each request).
	Config string
}

func (o *OAuth2Options) check() error {
	u, err := url.Parse(o.IntrospectionURL)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("IntrospectionURL %q is not an http(s) URL", o.IntrospectionURL)
	}
	if strings.ContainsAny(o.IntrospectionURL, " \t\r\n#\"") {
		return fmt.Errorf("IntrospectionURL %q cannot be written into Dovecot's config", o.IntrospectionURL)
	}
	switch o.IntrospectionMode {
	case "", "post", "auth":
	case "get":
		if !strings.HasSuffix(o.IntrospectionURL, "=") {
			return fmt.Errorf("IntrospectionURL %q: in get mode Dovecot appends the token and \"&client_id=...\", so end it with \"?token=\"", o.IntrospectionURL)
		}
	default:
		return fmt.Errorf("IntrospectionMode %q: want post, get or auth", o.IntrospectionMode)
	}
	for _, v := range []string{o.UsernameAttribute, o.ActiveAttribute, o.ActiveValue} {
		if strings.ContainsAny(v, " \t\r\n#\"") {
			return fmt.Errorf("%q cannot be written into Dovecot's config", v)
		}
	}
	if o.Timeout < 0 {
		return errors.New("negative Timeout")
	}
	return nil
}

// config returns the oauth2 passdb's configuration file.
func (o *OAuth2Options) config() string {
	mode := or(o.IntrospectionMode, "post")
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# Written by github.com/pophook/pophook/internal/testutil/dovecottest for one test.")
	w("introspection_url = %s", o.IntrospectionURL)
	w("introspection_mode = %s", mode)
	w("username_attribute = %s", or(o.UsernameAttribute, "username"))
	if o.ActiveAttribute != "-" {
		w("active_attribute = %s", or(o.ActiveAttribute, "active"))
		w("active_value = %s", or(o.ActiveValue, "true"))
	}
	w("use_grant_password = no")
	w("timeout_msecs = %d", timeout.Milliseconds())
	if o.Config != "" {
		w("# OAuth2Options.Config")
		w("%s", o.Config)
	}
	return b.String()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// withOAuth2Mechanisms adds xoauth2 and oauthbearer unless present.
func withOAuth2Mechanisms(mechs []string) []string {
	out := slices.Clone(mechs)
	for _, m := range []string{"xoauth2", "oauthbearer"} {
		if !slices.ContainsFunc(out, func(s string) bool { return strings.EqualFold(s, m) }) {
			out = append(out, m)
		}
	}
	return out
}

// Introspection is an OAuth2 token introspection endpoint (RFC 7662) for
// Options.OAuth2, on an httptest server stopped in t.Cleanup.
//
// It takes the token from the form field "token" of a POST body or a GET
// query, or from "Authorization: Bearer T": whatever the mode. For a known
// token it answers
// {"active":true,"username":USER,"scope":"mail","token_type":"Bearer"}, for
// an unknown or revoked one {"active":false}, both with status 200.
type Introspection struct {
	URL string // http://127.0.0.1:PORT/introspect

	mu       sync.Mutex
	tokens   map[string]string // token -> user
	status   int
	delay    time.Duration
	requests []IntrospectionRequest
}

// IntrospectionRequest is one request the endpoint received.
type IntrospectionRequest struct {
	Time   time.Time
	Method string
	URI    string // path and query as sent
	Header http.Header
	Body   string
	Token  string // the token found in the request; "" when none
	Status int    // status answered
	Answer string // body answered
	Active bool   // whether the token was accepted
}

// StartIntrospection starts an introspection endpoint that accepts the
// given tokens (token -> user name). Users who are to read mail must also
// be in Options.Users (their password does not matter for XOAUTH2).
func StartIntrospection(t testing.TB, tokens map[string]string) *Introspection {
	t.Helper()
	in := &Introspection{tokens: make(map[string]string, len(tokens))}
	for tok, u := range tokens {
		in.tokens[tok] = u
	}
	srv := httptest.NewServer(http.HandlerFunc(in.serve))
	t.Cleanup(srv.Close)
	in.URL = srv.URL + "/introspect"
	return in
}

// OAuth2Options returns options pointing Dovecot at the endpoint in mode
// ("post", "get", "auth"; "" is "post").
func (in *Introspection) OAuth2Options(mode string) *OAuth2Options {
	u := in.URL
	if mode == "get" {
		u += "?token="
	}
	return &OAuth2Options{IntrospectionURL: u, IntrospectionMode: mode}
}

// SetToken makes token valid for user.
func (in *Introspection) SetToken(token, user string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.tokens[token] = user
}

// Revoke makes token invalid: it is answered {"active":false}.
func (in *Introspection) Revoke(token string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.tokens, token)
}

// Fail makes the endpoint answer every request with status (and a JSON
// error body) until called with 0; Dovecot takes that for an internal
// failure.
func (in *Introspection) Fail(status int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.status = status
}

// Delay makes the endpoint wait d before answering.
func (in *Introspection) Delay(d time.Duration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.delay = d
}

// Requests returns the requests received so far.
func (in *Introspection) Requests() []IntrospectionRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.requests)
}

func (in *Introspection) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	rec := IntrospectionRequest{
		Time:   time.Now(),
		Method: r.Method,
		URI:    r.URL.RequestURI(),
		Header: r.Header.Clone(),
		Body:   string(body),
	}
	rec.Token = introspectedToken(r, body)

	in.mu.Lock()
	user, known := in.tokens[rec.Token]
	status, delay := in.status, in.delay
	in.mu.Unlock()

	var answer any
	switch {
	case status != 0:
		answer = map[string]string{"error": "server_error"}
	case known && rec.Token != "":
		status = http.StatusOK
		rec.Active = true
		answer = map[string]any{"active": true, "username": user, "scope": "mail", "token_type": "Bearer"}
	default:
		status = http.StatusOK
		answer = map[string]any{"active": false}
	}
	data, _ := json.Marshal(answer)
	rec.Status, rec.Answer = status, string(data)

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
	}
	in.mu.Lock()
	in.requests = append(in.requests, rec)
	in.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

// introspectedToken finds the token in a request in any of Dovecot's
// introspection modes.
func introspectedToken(r *http.Request, body []byte) string {
	if r.Method == http.MethodPost {
		if v, err := url.ParseQuery(string(body)); err == nil && v.Get("token") != "" {
			return v.Get("token")
		}
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return tok
	}
	return ""
}
