package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/oauth"
	"github.com/pophook/pophook/state"
)

const oauthUsage = `usage: pophook oauth login [--provider microsoft|google] [--listen ADDR] ACCOUNT
  signs ACCOUNT (AUTH=xoauth2 with OAUTH2_CLIENT_ID set) in once and keeps
  the refresh token in the data dir, where pophook finds it from then on.
  microsoft: the device-code flow; open the address it prints on any
    device, enter the code, sign in as the mailbox.
  google: the browser flow (Google gives mail access to no device code);
    open the address it prints in a browser on this machine, or forward
    the port it listens on (--listen, default a free port on 127.0.0.1).
  --provider defaults to the provider of the account's token endpoint`

// Scopes asked for at login when the account names none: POP access that
// may be refreshed.
var loginScopes = map[string][]string{
	"microsoft": {"https://outlook.office.com/POP.AccessAsUser.All", "offline_access"},
	"google":    {"https://mail.google.com/"},
}

// loginTimeout is how long a login waits for the user to sign in.
const loginTimeout = 15 * time.Minute

// oauthCommand is `pophook oauth login`.
func oauthCommand(ctx context.Context, cfg *config.Config, args []string, stdout io.Writer, lookup lookupFunc) error {
	var provider, listen, name string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "login" && i == 0:
		case (a == "--provider" || a == "--listen") && i+1 < len(args):
			if a == "--provider" {
				provider = args[i+1]
			} else {
				listen = args[i+1]
			}
			i++
		case strings.HasPrefix(a, "--provider="):
			provider = strings.TrimPrefix(a, "--provider=")
		case strings.HasPrefix(a, "--listen="):
			listen = strings.TrimPrefix(a, "--listen=")
		case !strings.HasPrefix(a, "-") && name == "" && i > 0:
			name = a
		default:
			return &exitError{code: 2, err: errors.New(oauthUsage)}
		}
	}
	if len(args) == 0 || args[0] != "login" || name == "" {
		return &exitError{code: 2, err: errors.New(oauthUsage)}
	}
	i := slices.IndexFunc(cfg.Accounts, func(a config.Account) bool { return a.Name == name })
	if i < 0 {
		return &exitError{code: 2, err: fmt.Errorf("oauth login: no account %q in POPHOOK_ACCOUNTS", name)}
	}
	acct := &cfg.Accounts[i]
	o := acct.OAuth2
	if o == nil {
		return &exitError{code: 2, err: fmt.Errorf("oauth login: account %s has no OAUTH2_CLIENT_ID (and AUTH=xoauth2)", name)}
	}
	if provider == "" {
		provider = providerOf(o.TokenURL)
	}
	if provider != "microsoft" && provider != "google" {
		return &exitError{code: 2, err: fmt.Errorf("oauth login: say which provider: --provider microsoft or --provider google\n%s", oauthUsage)}
	}
	if listen != "" && provider != "google" {
		return &exitError{code: 2, err: errors.New("oauth login: --listen is for the google browser flow")}
	}
	conf := &oauth2.Config{ClientID: o.ClientID, Scopes: o.Scopes, Endpoint: oauth2.Endpoint{
		AuthURL: o.AuthURL, TokenURL: o.TokenURL, DeviceAuthURL: o.DeviceAuthURL, AuthStyle: oauth2.AuthStyleInParams}}
	if len(conf.Scopes) == 0 {
		conf.Scopes = loginScopes[provider]
	}
	if secret, err := o.ClientSecret.Reveal(); err == nil && o.ClientSecret.IsSet() {
		conf.ClientSecret = secret
	}
	ctx, cancel := context.WithTimeout(ctx, loginTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
	var tok *oauth2.Token
	var err error
	switch provider {
	case "google":
		if conf.Endpoint.AuthURL == "" {
			conf.Endpoint.AuthURL = "https://accounts.google.com/o/oauth2/v2/auth"
		}
		if conf.Endpoint.TokenURL == "" {
			conf.Endpoint.TokenURL = "https://oauth2.googleapis.com/token"
		}
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		tok, err = browserLogin(ctx, conf, listen, acct, stdout)
	case "microsoft":
		if conf.Endpoint.TokenURL == "" {
			conf.Endpoint.TokenURL = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
		}
		if conf.Endpoint.DeviceAuthURL == "" {
			conf.Endpoint.DeviceAuthURL = strings.TrimSuffix(conf.Endpoint.TokenURL, "/token") + "/devicecode"
		}
		tok, err = deviceLogin(ctx, conf, acct, stdout)
	}
	if err != nil {
		return fmt.Errorf("oauth login: %w", err)
	}
	if tok.RefreshToken == "" {
		return fmt.Errorf("oauth login: %s signed in but gave no refresh token; check that the scopes allow one (%s)", provider, strings.Join(conf.Scopes, " "))
	}
	configured, _ := o.RefreshToken.Reveal()
	host := acct.Host
	if host == "" {
		// The token is kept under the mailbox's name, server included, so
		// an account without HOST needs its server now; the lookup is kept
		// as the first run would keep it.
		d, _, err := serverFor(ctx, cfg.DataDir, acct, lookup, true, slog.New(slog.DiscardHandler))
		if err != nil {
			return fmt.Errorf("oauth login: %w", err)
		}
		host = d.Host
	}
	path := tokenPath(cfg.DataDir, state.AccountID(host, acct.Username))
	if err := oauth.Keep(path, configured, tok, time.Now()); err != nil {
		return fmt.Errorf("oauth login: %w", err)
	}
	fmt.Fprintf(stdout, "Signed in. The refresh token is kept in %s (0600); pophook uses it from now on.\nRun pophook check %s to try it.\n", path, name)
	return nil
}

// providerOf names the provider a token endpoint belongs to, or "".
func providerOf(tokenURL string) string {
	switch {
	case strings.HasPrefix(tokenURL, "https://login.microsoftonline.com/"):
		return "microsoft"
	case strings.HasPrefix(tokenURL, "https://oauth2.googleapis.com/"), strings.HasPrefix(tokenURL, "https://accounts.google.com/"):
		return "google"
	}
	return ""
}

// deviceLogin is the device authorization grant (RFC 8628): the user signs
// in on any device, so it works from a server without a browser.
func deviceLogin(ctx context.Context, conf *oauth2.Config, acct *config.Account, stdout io.Writer) (*oauth2.Token, error) {
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("asking for a device code: %w", err)
	}
	fmt.Fprintf(stdout, "To let pophook read %s, open\n\n    %s\n\nand enter the code\n\n    %s\n\nthen sign in as %s. Waiting", acct.Name, da.VerificationURI, da.UserCode, acct.Username)
	if !da.Expiry.IsZero() {
		fmt.Fprintf(stdout, " (until %s)", da.Expiry.Format(time.Kitchen))
	}
	fmt.Fprintln(stdout, "...")
	return conf.DeviceAccessToken(ctx, da)
}

// browserLogin is the authorization code flow with PKCE and a loopback
// redirect (RFC 8252), the flow Google allows installed apps for mail. The
// provider sends the browser back to a listener here with the code; the
// state parameter ties the answer to this login.
func browserLogin(ctx context.Context, conf *oauth2.Config, listen string, acct *config.Account, stdout io.Writer) (*oauth2.Token, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listening for the browser's return on %s: %w", listen, err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	conf.RedirectURL = "http://127.0.0.1:" + port + "/"
	b := make([]byte, 16)
	rand.Read(b)
	wantState := hex.EncodeToString(b)
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(wantState, oauth2.AccessTypeOffline, oauth2.S256ChallengeOption(verifier),
		// consent: a refresh token is only given when the user is asked.
		oauth2.SetAuthURLParam("prompt", "consent"), oauth2.SetAuthURLParam("login_hint", acct.Username))

	type result struct {
		code string
		err  error
	}
	done := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/" || q.Get("state") != wantState {
			http.Error(w, "pophook: this is not the answer to the login in progress", http.StatusBadRequest)
			return
		}
		var res result
		if e := q.Get("error"); e != "" {
			res.err = fmt.Errorf("the sign-in was refused: %s %s", e, q.Get("error_description"))
			fmt.Fprintln(w, "pophook: the sign-in was refused:", e)
		} else if res.code = q.Get("code"); res.code == "" {
			res.err = errors.New("the provider returned no code")
			http.Error(w, "pophook: no code in the answer", http.StatusBadRequest)
		} else {
			fmt.Fprintln(w, "pophook: signed in. You can close this tab.")
		}
		select {
		case done <- res:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()

	fmt.Fprintf(stdout, "To let pophook read %s, open this address in a browser on this machine and sign in as %s:\n\n    %s\n\n", acct.Name, acct.Username, authURL)
	fmt.Fprintf(stdout, "The browser comes back to %s. If it runs on another machine, forward the port first:\n\n    ssh -L %s:127.0.0.1:%s THIS-HOST\n\nWaiting...\n", conf.RedirectURL, port, port)
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("no sign-in within %s: %w", loginTimeout, ctx.Err())
	}
	if res.err != nil {
		return nil, res.err
	}
	return conf.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
}
