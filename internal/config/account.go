package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/pophook/pophook/internal/discover"
	"github.com/pophook/pophook/worker/pop3"
)

// vars builds variable names from a prefix such as POPHOOK_ACCOUNT_SUPPORT.
type vars string

func (v vars) name(suffix string) string { return string(v) + "_" + suffix }

// loadAccount reads and checks the variables of account name. sinks are
// the names listed in POPHOOK_SINKS.
func loadAccount(name string, sinks []string, p *Problems, ca caFiles) Account {
	v := vars(accountPrefix(name))
	var e accountEnv
	read(string(v), &e)
	a := Account{
		Name:           name,
		Host:           e.Host,
		TLS:            conv(p, v.name("TLS"), e.TLS, enum(TLSImplicit, TLSStartTLS, TLSNone)),
		AllowInsecure:  conv(p, v.name("ALLOW_INSECURE"), e.AllowInsecure, parseBool),
		TLSCAFile:      e.TlsCaFile,
		TLSSkipVerify:  conv(p, v.name("TLS_SKIP_VERIFY"), e.TLSSkipVerify, parseBool),
		Username:       e.Username,
		Auth:           conv(p, v.name("AUTH"), e.Auth, enum("auto", "user", "plain", "login", "xoauth2")),
		Schedule:       e.Schedule,
		Keep:           conv(p, v.name("KEEP"), e.Keep, parseKeep),
		SkipExisting:   conv(p, v.name("SKIP_EXISTING"), e.SkipExisting, parseBool),
		MaxMessageSize: conv(p, v.name("MAX_MESSAGE_SIZE"), e.MaxMessageSize, parseSize),
	}
	a.Provider = e.Provider
	var preset *discover.Preset
	if e.Provider != "" {
		if pr, err := discover.Resolve(e.Provider); err != nil {
			p.add(v.name("PROVIDER"), err)
		} else {
			preset = &pr
			a.Provider = pr.Name
		}
	}
	if preset != nil {
		// The preset fills in what the variables leave unset.
		if a.Host == "" {
			a.Host = preset.Host
		}
		if !isSet(v, "TLS") {
			a.TLS = preset.TLS.String()
		}
		if !isSet(v, "AUTH") && preset.Auth == pop3.MechXOAUTH2 {
			a.Auth = "xoauth2"
		}
		if !isSet(v, "AUTH") && e.Oauth2ClientId != "" && preset.OAuth != nil {
			a.Auth = "xoauth2" // a client id says how this account logs in
		}
		if e.Port == "" && a.TLS == preset.TLS.String() {
			e.Port = strconv.Itoa(preset.Port)
		}
	}
	if a.Host == "" && e.Username != "" {
		// HOST is found at the first run (see discover); the address's
		// domain must be one it can be found from.
		if _, err := discover.Domain(e.Username); err != nil {
			p.addf(v.name("HOST"), "required, or a USERNAME that is a mail address, so the server can be looked up")
		} else if a.TLSSkipVerify {
			p.addf(v.name("HOST"), "required with %s=true: pophook looks a server up only with verified TLS", v.name("TLS_SKIP_VERIFY"))
		}
		checkServer(p, v, "discover.invalid", a.TLS, a.AllowInsecure)
	} else {
		checkServer(p, v, a.Host, a.TLS, a.AllowInsecure)
	}
	a.Port = portOrDefault(p, v, e.Port, a.TLS, 995, 110)
	if a.TLSCAFile != "" {
		if err := ca.check(a.TLSCAFile); err != nil {
			p.add(v.name("TLS_CA_FILE"), err)
		}
	}
	if a.Username == "" {
		p.required(v.name("USERNAME"))
	}
	a.OAuth2 = loadOAuth2(p, v, &e, a.Auth, preset)
	a.Password, _ = loadSecret(p, v, "PASSWORD", e.Password, e.PasswordFile, a.OAuth2 == nil)
	if a.OAuth2 != nil && a.Password.IsSet() {
		p.addf(v.name("PASSWORD"), "not used with %s: pophook gets the access tokens itself; remove one", v.name("OAUTH2_CLIENT_ID"))
	}
	if err := checkSchedule(a.Schedule); err != nil {
		p.add(v.name("SCHEDULE"), err)
	}
	a.Sinks = accountSinks(p, v.name("SINKS"), e.Sinks, sinks)
	return a
}

// checkServer checks a server's HOST and that TLS=none was opted into,
// since it sends the credentials in clear text.
func checkServer(p *Problems, v vars, host, tls string, allowInsecure bool) {
	if host == "" {
		p.required(v.name("HOST"))
	} else if err := checkHost(host); err != nil {
		p.add(v.name("HOST"), err)
	}
	if tls == TLSNone && !allowInsecure {
		p.addf(v.name("TLS"), "none sends the password and the mail in clear text; set %s=true to allow it", v.name("ALLOW_INSECURE"))
	}
}

// portOrDefault parses PORT, or, when unset, picks the standard port for
// the TLS mode, so that changing TLS alone does the right thing.
func portOrDefault(p *Problems, v vars, raw, tls string, implicit, plain int) int {
	if raw != "" {
		return conv(p, v.name("PORT"), raw, parsePort)
	}
	if tls == TLSImplicit {
		return implicit
	}
	return plain
}

// loadSecret reads the secret SUFFIX from either SUFFIX or SUFFIX_FILE. For
// a file it checks now that the file can be read and is not empty (so a
// wrong mount fails at start-up, not at the first fetch) and returns the
// current content for further checks; the Secret itself re-reads the file.
func loadSecret(p *Problems, v vars, suffix, value, file string, required bool) (Secret, string) {
	name, fileName := v.name(suffix), v.name(suffix+"_FILE")
	switch {
	case value != "" && file != "":
		p.addf(name, "set only one of %s and %s", name, fileName)
	case value != "":
		return NewSecret(value), value
	case file != "":
		s := SecretFile(file)
		content, err := s.Reveal()
		if err != nil {
			p.add(fileName, err)
		}
		return s, content
	case required:
		p.addf(name, "required (or %s)", fileName)
	}
	return Secret{}, ""
}

// caFiles remembers, within one Load, what checkCAFile found for each
// path, so that the accounts and sinks that share a CA bundle read and
// parse it once.
type caFiles map[string]error

func (c caFiles) check(path string) error {
	if err, ok := c[path]; ok {
		return err
	}
	err := checkCAFile(path)
	c[path] = err
	return err
}

func checkCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// checkSchedule accepts what the scheduler accepts (cron.ParseStandard:
// five fields, descriptors such as @hourly, and @every DURATION), but
// rejects @every below a second, which cron would silently round up.
func checkSchedule(s string) error {
	if d, ok := strings.CutPrefix(s, "@every "); ok {
		if dur, err := time.ParseDuration(strings.TrimSpace(d)); err == nil && dur < time.Second {
			return fmt.Errorf("%q: @every needs a duration of at least 1s", s)
		}
	}
	if _, err := cron.ParseStandard(s); err != nil {
		return fmt.Errorf("%q is not a cron schedule or @every duration: %v", s, err)
	}
	return nil
}

// accountSinks parses an account's SINKS: at least one, each listed in
// POPHOOK_SINKS, none twice.
func accountSinks(p *Problems, name, raw string, listed []string) []string {
	sinks := namesList(p, name, raw)
	if strings.Trim(raw, ", \t") == "" {
		p.addf(name, "required: the sinks to deliver to, comma separated")
	}
	for _, s := range sinks {
		if !slices.Contains(listed, s) {
			p.addf(name, "%q is not listed in %s_SINKS", s, envPrefix)
		}
	}
	return sinks
}

// microsoftTokenURL is the token endpoint of a Microsoft Entra tenant.
func microsoftTokenURL(tenant string) string {
	return "https://login.microsoftonline.com/" + tenant + "/oauth2/v2.0/token"
}

// loadOAuth2 reads the OAUTH2_ variables: none set means none used (an
// xoauth2 account then takes PASSWORD as its bearer token).
func loadOAuth2(p *Problems, v vars, e *accountEnv, auth string, preset *discover.Preset) *OAuth2 {
	if e.Oauth2ClientId == "" {
		for suffix, val := range map[string]string{"OAUTH2_TOKEN_URL": e.Oauth2TokenUrl, "OAUTH2_REFRESH_TOKEN": e.Oauth2RefreshToken + e.Oauth2RefreshTokenFile,
			"OAUTH2_CLIENT_SECRET": e.Oauth2ClientSecret + e.Oauth2ClientSecretFile, "OAUTH2_SCOPES": e.Oauth2Scopes, "OAUTH2_TENANT": e.Oauth2Tenant} {
			if val != "" {
				p.addf(v.name(suffix), "needs %s", v.name("OAUTH2_CLIENT_ID"))
			}
		}
		return nil
	}
	if auth != "xoauth2" {
		p.addf(v.name("OAUTH2_CLIENT_ID"), "is set, so %s must be xoauth2", v.name("AUTH"))
	}
	o := &OAuth2{TokenURL: e.Oauth2TokenUrl, ClientID: e.Oauth2ClientId, Tenant: e.Oauth2Tenant, Scopes: splitScopes(e.Oauth2Scopes)}
	o.ClientSecret, _ = loadSecret(p, v, "OAUTH2_CLIENT_SECRET", e.Oauth2ClientSecret, e.Oauth2ClientSecretFile, false)
	o.RefreshToken, _ = loadSecret(p, v, "OAUTH2_REFRESH_TOKEN", e.Oauth2RefreshToken, e.Oauth2RefreshTokenFile, false)
	if preset != nil && preset.OAuth != nil {
		po, err := preset.OAuth.ForTenant(o.Tenant)
		if err != nil {
			p.add(v.name("OAUTH2_TENANT"), err)
		}
		if o.TokenURL == "" {
			o.TokenURL = po.TokenURL
		}
		o.AuthURL, o.DeviceAuthURL = po.AuthURL, po.DeviceAuthURL
		if len(o.Scopes) == 0 {
			o.Scopes = po.Scopes
			if !o.RefreshToken.IsSet() && o.ClientSecret.IsSet() && po.AppScopes != nil {
				o.Scopes = po.AppScopes
			}
		}
	}
	if o.TokenURL == "" && o.Tenant != "" {
		if !validTenant(o.Tenant) {
			p.addf(v.name("OAUTH2_TENANT"), "%q is not a tenant id or domain", o.Tenant)
		} else {
			o.TokenURL = microsoftTokenURL(o.Tenant)
		}
	}
	if o.TokenURL == "" {
		p.addf(v.name("OAUTH2_TOKEN_URL"), "required (or %s, or %s for Microsoft)", v.name("PROVIDER"), v.name("OAUTH2_TENANT"))
	}
	if o.TokenURL != "" {
		if u, err := url.Parse(o.TokenURL); err != nil || u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) || u.Host == "" {
			p.addf(v.name("OAUTH2_TOKEN_URL"), "must be an https URL")
		}
	}
	// Without a refresh token and a client secret the account waits for
	// pophook oauth login, which keeps the token in the data dir.
	return o
}

// isSet reports whether the variable prefix_SUFFIX has a value: presets
// fill in only what the operator left unset.
func isSet(v vars, suffix string) bool {
	return Unquote(os.Getenv(v.name(suffix))) != ""
}

// validTenant: a directory id or a domain, nothing that could change the
// token URL's path or host.
func validTenant(t string) bool {
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return t != ""
}

// splitScopes reads scopes separated by spaces or commas.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}
