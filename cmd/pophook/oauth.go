package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/oauth"
	"github.com/pophook/pophook/state"
)

const oauthUsage = `usage: pophook oauth login --provider microsoft|google ACCOUNT
  runs the OAuth2 device-code flow for ACCOUNT (AUTH=xoauth2 with OAUTH2_CLIENT_ID set):
  open the address it prints, enter the code, sign in as the mailbox; the
  refresh token is kept in the data dir and used from then on`

// Scopes asked for at login when the account names none: POP access that
// may be refreshed.
var loginScopes = map[string][]string{
	"microsoft": {"https://outlook.office365.com/POP.AccessAsUser.All", "offline_access"},
	"google":    {"https://mail.google.com/"},
}

// oauthCommand is `pophook oauth login`.
func oauthCommand(ctx context.Context, cfg *config.Config, args []string, stdout io.Writer) error {
	var provider, name string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "login" && i == 0:
		case a == "--provider" && i+1 < len(args):
			provider = args[i+1]
			i++
		case strings.HasPrefix(a, "--provider="):
			provider = strings.TrimPrefix(a, "--provider=")
		case !strings.HasPrefix(a, "-") && name == "" && i > 0:
			name = a
		default:
			return &exitError{code: 2, err: errors.New(oauthUsage)}
		}
	}
	if len(args) == 0 || args[0] != "login" || name == "" || (provider != "microsoft" && provider != "google") {
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
	conf := &oauth2.Config{ClientID: o.ClientID, Scopes: o.Scopes, Endpoint: oauth2.Endpoint{TokenURL: o.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	if len(conf.Scopes) == 0 {
		conf.Scopes = loginScopes[provider]
	}
	if secret, err := o.ClientSecret.Reveal(); err == nil && o.ClientSecret.IsSet() {
		conf.ClientSecret = secret
	}
	switch provider {
	case "google":
		conf.Endpoint.DeviceAuthURL = "https://oauth2.googleapis.com/device/code"
		if conf.Endpoint.TokenURL == "" {
			conf.Endpoint.TokenURL = "https://oauth2.googleapis.com/token"
		}
	case "microsoft":
		if conf.Endpoint.TokenURL == "" {
			conf.Endpoint.TokenURL = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
		}
		conf.Endpoint.DeviceAuthURL = strings.TrimSuffix(conf.Endpoint.TokenURL, "/token") + "/devicecode"
	}
	if o.DeviceAuthURL != "" {
		conf.Endpoint.DeviceAuthURL = o.DeviceAuthURL
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return fmt.Errorf("oauth login: asking %s for a device code: %w", provider, err)
	}
	where := da.VerificationURI
	fmt.Fprintf(stdout, "To let pophook read %s, open\n\n    %s\n\nand enter the code\n\n    %s\n\nthen sign in as %s. Waiting", name, where, da.UserCode, acct.Username)
	if !da.Expiry.IsZero() {
		fmt.Fprintf(stdout, " (until %s)", da.Expiry.Format(time.Kitchen))
	}
	fmt.Fprintln(stdout, "...")
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		return fmt.Errorf("oauth login: %w", err)
	}
	configured, _ := o.RefreshToken.Reveal()
	path := tokenPath(cfg.DataDir, state.AccountID(acct.Host, acct.Username))
	if err := oauth.Keep(path, configured, tok, time.Now()); err != nil {
		return fmt.Errorf("oauth login: %w", err)
	}
	fmt.Fprintf(stdout, "Signed in. The refresh token is kept in %s (0600); pophook uses it from now on.\nRun pophook check %s to try it.\n", path, name)
	return nil
}
