// Package oauth gives XOAUTH2 accounts their access tokens: from a refresh
// token (delegated access, Gmail and Microsoft 365 alike) or from the
// client credentials grant (Microsoft's app-only access to a mailbox).
//
// A refresh token that the provider rotates is written to the data dir
// (0600, atomically) and preferred over the configured one from then on,
// so pophook still logs in months later; the access token is kept there
// too and reused across runs until shortly before it expires. A token
// that the provider refuses (revoked, consent missing, wrong tenant) is
// worker.ErrCredentialRefused: an authentication failure with a message
// saying what to do, backed off like a wrong password. No token appears
// in any error.
package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/pophook/pophook/internal/atomicfile"
	"github.com/pophook/pophook/internal/redact"
	"github.com/pophook/pophook/worker"
)

// reuseMargin: an access token is refreshed this long before it expires,
// so it does not run out between being handed over and the login.
const reuseMargin = time.Minute

// Config says how to get tokens for one account.
type Config struct {
	Account  string // for messages
	TokenURL string
	ClientID string
	// ClientSecret and RefreshToken are read when needed; nil when not
	// configured. Without a refresh token the client credentials grant is
	// used (it needs the client secret).
	ClientSecret func() (string, error)
	RefreshToken func() (string, error)
	Scopes       []string
	// StorePath is the file that keeps the rotated refresh token and the
	// current access token; "" keeps nothing (every process refreshes).
	StorePath string
	// HTTPClient reaches the token endpoint; nil uses a client with a
	// 30 s timeout.
	HTTPClient *http.Client
	// Hint is what to tell the operator when the provider refuses the
	// refresh token (the command that gets a new one).
	Hint string
	Now  func() time.Time
}

// Source is a worker.Credential that returns access tokens.
type Source struct {
	c Config

	mu          sync.Mutex
	loaded      bool
	stored      stored
	invalidated bool
}

// stored is the token file.
type stored struct {
	// From fingerprints the configured refresh token the stored one
	// descends from: a new configured token (after a revocation) wins
	// over what rotation left here.
	From         string    `json:"from,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	AccessToken  string    `json:"access_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

var (
	_ worker.Credential = (*Source)(nil)
)

// New returns a Source.
func New(c Config) *Source {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Source{c: c}
}

// Fingerprint identifies the configured credential (not the access token,
// which changes every hour), so a login back-off ends when the operator
// changes the client or the refresh token.
func (s *Source) Fingerprint() string {
	rt, _ := s.configured()
	return strings.Join([]string{"oauth2", s.c.TokenURL, s.c.ClientID, hash(rt)}, "\x00")
}

// Invalidate makes the next Secret get a new access token: the server
// refused the current one.
func (s *Source) Invalidate() {
	s.mu.Lock()
	s.invalidated = true
	s.mu.Unlock()
}

// Secret returns an access token valid for at least a minute.
func (s *Source) Secret(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.load(); err != nil {
		return "", err
	}
	now := s.c.Now()
	if !s.invalidated && s.stored.AccessToken != "" && now.Add(reuseMargin).Before(s.stored.Expiry) {
		return s.stored.AccessToken, nil
	}
	tok, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	s.invalidated = false
	// Counted on this source's clock from expires_in (the library counts
	// on the wall clock).
	switch {
	case tok.ExpiresIn > 0:
		s.stored.Expiry = now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	case !tok.Expiry.IsZero():
		s.stored.Expiry = tok.Expiry
	default:
		s.stored.Expiry = now.Add(time.Hour) // providers always say; assume the usual hour
	}
	s.stored.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		s.stored.RefreshToken = tok.RefreshToken // rotated, or the same
	}
	if err := s.save(); err != nil {
		// The token works now; only the next process would miss it.
		return tok.AccessToken, fmt.Errorf("OAuth2: keeping the tokens: %w", err)
	}
	return tok.AccessToken, nil
}

// configured reads the configured refresh token ("" when there is none).
func (s *Source) configured() (string, error) {
	if s.c.RefreshToken == nil {
		return "", nil
	}
	return s.c.RefreshToken()
}

// load reads the token file once, and drops what it holds when the
// configured refresh token has changed since.
func (s *Source) load() error {
	if s.loaded {
		return nil
	}
	rt, err := s.configured()
	if err != nil {
		return fmt.Errorf("OAuth2: reading the refresh token: %w", err)
	}
	if s.c.StorePath != "" {
		b, err := os.ReadFile(s.c.StorePath)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("OAuth2: reading the kept tokens: %w", err)
		default:
			if err := json.Unmarshal(b, &s.stored); err != nil {
				return fmt.Errorf("OAuth2: %s is not a token file (remove it to start again from the configured refresh token): %w", s.c.StorePath, err)
			}
		}
	}
	if s.stored.From != hash(rt) {
		s.stored = stored{From: hash(rt), RefreshToken: rt}
	}
	if s.stored.RefreshToken == "" {
		s.stored.RefreshToken = rt
	}
	s.loaded = true
	return nil
}

// save writes the token file atomically and durably: a crash leaves the
// old one or the new one, never half of either, and a rotated refresh
// token, once saved, is not lost (the old one may no longer work).
func (s *Source) save() error {
	if s.c.StorePath == "" {
		return nil
	}
	b, err := json.Marshal(s.stored)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.c.StorePath, b, 0o600)
}

// fetch asks the token endpoint: the refresh token grant when there is a
// refresh token, else client credentials.
func (s *Source) fetch(ctx context.Context) (*oauth2.Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.c.HTTPClient)
	var secret string
	if s.c.ClientSecret != nil {
		var err error
		if secret, err = s.c.ClientSecret(); err != nil {
			return nil, fmt.Errorf("OAuth2: reading the client secret: %w", err)
		}
	}
	var tok *oauth2.Token
	var err error
	if s.stored.RefreshToken == "" && secret == "" {
		todo := "set OAUTH2_REFRESH_TOKEN, or OAUTH2_CLIENT_SECRET for app-only access"
		if s.c.Hint != "" {
			todo += ", or sign in once: " + strings.TrimSuffix(s.c.Hint, " gets a new one")
		}
		return nil, refused("OAuth2: no refresh token yet: " + todo)
	}
	if s.stored.RefreshToken != "" {
		conf := &oauth2.Config{ClientID: s.c.ClientID, ClientSecret: secret, Scopes: s.c.Scopes,
			Endpoint: oauth2.Endpoint{TokenURL: s.c.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
		tok, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: s.stored.RefreshToken}).Token()
	} else {
		conf := &clientcredentials.Config{ClientID: s.c.ClientID, ClientSecret: secret, TokenURL: s.c.TokenURL,
			Scopes: s.c.Scopes, AuthStyle: oauth2.AuthStyleInParams}
		tok, err = conf.Token(ctx)
	}
	if err != nil {
		return nil, s.explain(err, redact.Wire(s.stored.RefreshToken, secret)...)
	}
	if tok.AccessToken == "" {
		return nil, errors.New("OAuth2: the token endpoint answered without an access token")
	}
	return tok, nil
}

// explain turns a token endpoint's refusal into an authentication failure
// that says what to do; other errors (the network) stay temporary. The
// provider's own error text is kept, with any of the secrets sent (which
// a provider might quote) cut out.
func (s *Source) explain(err error, secrets ...string) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("OAuth2: the token endpoint cannot be reached: %s", redact.Scrub(stripURL(err).Error(), secrets...))
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	what := redact.Scrub(strings.TrimSpace(re.ErrorCode+": "+firstLine(re.ErrorDescription)), secrets...)
	if re.ErrorCode == "" {
		what = fmt.Sprintf("HTTP %d", status)
	}
	if status >= 500 || status == http.StatusTooManyRequests {
		return fmt.Errorf("OAuth2: the token endpoint failed (%s); trying again at the next run", what)
	}
	todo := "check OAUTH2_CLIENT_ID, OAUTH2_CLIENT_SECRET and OAUTH2_TOKEN_URL"
	switch d := re.ErrorDescription; {
	case re.ErrorCode == "invalid_grant" && strings.Contains(d, "AADSTS65001"), strings.Contains(d, "consent"):
		todo = "the app lacks consent for this mailbox: an administrator must grant it"
	case strings.Contains(d, "AADSTS90002"), strings.Contains(d, "AADSTS900023"), strings.Contains(d, "tenant"):
		todo = "check OAUTH2_TENANT"
	case re.ErrorCode == "invalid_grant":
		todo = "the refresh token was revoked or has expired: get a new one"
		if s.c.Hint != "" {
			todo += " (" + s.c.Hint + ")"
		}
	case re.ErrorCode == "invalid_scope":
		todo = "check OAUTH2_SCOPES"
	}
	return refused(fmt.Sprintf("OAuth2: the provider refused the token request (%s): %s", what, todo))
}

// refusal is a token request the provider turned down: to the worker an
// authentication failure (errors.Is worker.ErrCredentialRefused), shown
// with only the advice.
type refusal struct{ msg string }

func refused(msg string) error { return &refusal{msg} }

func (r *refusal) Error() string        { return r.msg }
func (r *refusal) Is(target error) bool { return target == worker.ErrCredentialRefused }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// stripURL keeps the token URL (which may carry a tenant, harmless, but
// also whatever else) out of transport errors.
func stripURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && strings.Contains(err.Error(), "://") {
		if inner := errors.Unwrap(err); inner != nil {
			return inner
		}
	}
	return err
}

func hash(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// Keep writes a refresh token (and its access token) obtained outside a
// Source, by pophook oauth login, to path, where the account's Source
// finds it. configured is the refresh token configured now, if any: the
// kept one is preferred until that changes.
func Keep(path, configured string, tok *oauth2.Token, now time.Time) error {
	if tok.RefreshToken == "" {
		return errors.New("the provider gave no refresh token (is offline_access among the scopes?)")
	}
	s := &Source{c: Config{StorePath: path}}
	s.stored = stored{From: hash(configured), RefreshToken: tok.RefreshToken, AccessToken: tok.AccessToken, Expiry: tok.Expiry}
	if tok.ExpiresIn > 0 {
		s.stored.Expiry = now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	return s.save()
}
