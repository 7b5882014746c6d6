package discover

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pophook/pophook/worker/pop3"
)

// Preset is a mail provider's POP3 settings, as the provider documents
// them: what POPHOOK_ACCOUNT_<A>_PROVIDER fills in where the account's own
// variables do not say.
type Preset struct {
	Name string // what PROVIDER takes: lower case, no spaces
	Host string
	Port int
	TLS  pop3.TLSMode
	// Auth is pop3.MechAuto for providers that take a password (mostly an
	// app password or authorisation code), pop3.MechXOAUTH2 for those that
	// take nothing but OAuth2.
	Auth pop3.Mechanism
	// OAuth is the provider's OAuth2 endpoints, nil when pophook knows
	// none. With Auth auto it is an alternative to the password.
	OAuth *OAuth
	// Domains are the mail domains the provider serves, for ByDomain. An
	// entry starting with "." matches every subdomain
	// (".onmicrosoft.com").
	Domains []string
	// Notes are a sentence or two for the README: what to switch on in the
	// provider's settings and what to log in with.
	Notes string
}

// OAuth is a provider's OAuth2 endpoints. URLs may hold TenantPlaceholder
// (Microsoft Entra); ForTenant fills it in.
type OAuth struct {
	AuthURL       string // authorization code flow; "" if not offered
	TokenURL      string
	DeviceAuthURL string // device authorization grant (RFC 8628); "" if the provider does not allow it for mail
	// Scopes are what a user grants (delegated access, a refresh token).
	Scopes []string
	// AppScopes are what an app asks for with its own credentials (the
	// client credentials grant, no user); nil if the provider has no
	// such access to mailboxes.
	AppScopes []string
	// Tenant is what TenantPlaceholder becomes when no tenant is given;
	// "" when the URLs hold no placeholder.
	Tenant string
}

// TenantPlaceholder stands for the Microsoft Entra tenant in OAuth URLs.
const TenantPlaceholder = "{tenant}"

// ForTenant returns o with TenantPlaceholder in its URLs replaced by
// tenant, or by o.Tenant when tenant is "". A tenant is a directory ID, a
// domain, or one of common, organizations and consumers; anything that
// could change the URL's path or host is refused.
func (o OAuth) ForTenant(tenant string) (OAuth, error) {
	o.Scopes = slices.Clone(o.Scopes)
	o.AppScopes = slices.Clone(o.AppScopes)
	if !strings.Contains(o.AuthURL+o.TokenURL+o.DeviceAuthURL, TenantPlaceholder) {
		if tenant != "" {
			return OAuth{}, fmt.Errorf("tenant %q: this provider has no tenants", tenant)
		}
		return o, nil
	}
	if tenant == "" {
		tenant = o.Tenant
	}
	if !validTenant(tenant) {
		return OAuth{}, fmt.Errorf("tenant %q: want a directory ID (a GUID), a domain, or common, organizations or consumers", tenant)
	}
	o.Tenant = tenant
	o.AuthURL = strings.ReplaceAll(o.AuthURL, TenantPlaceholder, tenant)
	o.TokenURL = strings.ReplaceAll(o.TokenURL, TenantPlaceholder, tenant)
	o.DeviceAuthURL = strings.ReplaceAll(o.DeviceAuthURL, TenantPlaceholder, tenant)
	return o, nil
}

// validTenant accepts letters, digits, '-' and '.', as GUIDs and domains
// are written: nothing that could leave the URL's path segment.
func validTenant(t string) bool {
	if t == "" || len(t) > 253 || strings.HasPrefix(t, ".") || strings.Contains(t, "..") {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

var (
	google = &OAuth{
		AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL: "https://oauth2.googleapis.com/token",
		// Google's device flow (https://oauth2.googleapis.com/device/code)
		// only grants a short list of scopes, and https://mail.google.com/
		// is not among them: a refresh token comes from the authorization
		// code flow.
		Scopes: []string{"https://mail.google.com/"},
	}
	microsoft = func(tenant string, appScopes []string) *OAuth {
		return &OAuth{
			AuthURL:       "https://login.microsoftonline.com/" + TenantPlaceholder + "/oauth2/v2.0/authorize",
			TokenURL:      "https://login.microsoftonline.com/" + TenantPlaceholder + "/oauth2/v2.0/token",
			DeviceAuthURL: "https://login.microsoftonline.com/" + TenantPlaceholder + "/oauth2/v2.0/devicecode",
			Scopes:        []string{"https://outlook.office.com/POP.AccessAsUser.All", "offline_access"},
			AppScopes:     appScopes,
			Tenant:        tenant,
		}
	}
)

// presets is the table. Where two presets share a host, the one listed
// first is what a server found at that host is reported as (office365
// before outlook: a custom domain at Microsoft is Microsoft 365).
var presets = []Preset{
	{
		Name: "gmail", Host: "pop.gmail.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto, OAuth: google,
		Domains: []string{"gmail.com", "googlemail.com"},
		Notes: "Turn POP on in Gmail's settings (Forwarding and POP/IMAP) and log in with an app password (it needs 2-Step Verification) or OAuth2 (AUTH=xoauth2). " +
			"Gmail offers each message to POP once and then does what its own \"When messages are accessed with POP\" setting says (keep, mark read, archive or delete), whatever KEEP says; " +
			"USERNAME=recent:you@gmail.com offers the last 30 days again, including what other POP clients took (set it from the start: a new USERNAME is a new mailbox to pophook).",
	},
	{
		Name: "office365", Host: "outlook.office365.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechXOAUTH2,
		OAuth:   microsoft("organizations", []string{"https://outlook.office365.com/.default"}),
		Domains: []string{".onmicrosoft.com"},
		Notes: "Exchange Online takes only OAuth2 for POP: register an app in Microsoft Entra, set OAUTH2_TENANT to your tenant's ID or domain and OAUTH2_CLIENT_ID, " +
			"then either a refresh token (delegated, POP.AccessAsUser.All) or OAUTH2_CLIENT_SECRET (app-only: also register the app's service principal in Exchange and give it the mailbox). " +
			"POP must be enabled for the mailbox (Set-CASMailbox -PopEnabled $true).",
	},
	{
		Name: "outlook", Host: "outlook.office365.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechXOAUTH2,
		OAuth: microsoft("consumers", nil),
		Domains: []string{
			"outlook.com", "hotmail.com", "live.com", "msn.com", "windowslive.com",
			"outlook.de", "outlook.fr", "outlook.es", "outlook.it", "outlook.jp", "outlook.com.br", "outlook.com.au",
			"hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "hotmail.ca", "hotmail.com.br", "hotmail.co.jp",
			"live.co.uk", "live.fr", "live.de", "live.it", "live.nl", "live.ca", "live.com.au", "live.cn",
		},
		Notes: "Outlook.com, Hotmail and Live accounts no longer take a password from mail apps, only OAuth2: register an app in Microsoft Entra that allows personal accounts and give OAUTH2_CLIENT_ID and a refresh token. " +
			"Turn POP on in Outlook.com's settings (Mail, Forwarding and IMAP), and let apps delete messages there, or deleted mail is only moved to a POP folder.",
	},
	{
		Name: "yahoo", Host: "pop.mail.yahoo.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"yahoo.com", "ymail.com", "rocketmail.com", "myyahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.it", "yahoo.es",
			"yahoo.se", "yahoo.ca", "yahoo.co.in", "yahoo.co.nz", "yahoo.com.au", "yahoo.com.ar", "yahoo.com.br", "yahoo.com.mx"},
		Notes: "Generate an app password in Yahoo's account security settings and use it as PASSWORD; the account password is refused. (Yahoo Japan, yahoo.co.jp, is a different service.)",
	},
	{
		Name: "aol", Host: "pop.aol.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"aol.com", "aim.com"},
		Notes:   "Generate an app password in AOL's account security settings and use it as PASSWORD.",
	},
	{
		Name: "qq", Host: "pop.qq.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"qq.com", "foxmail.com", "vip.qq.com"},
		Notes:   "Turn on the POP3/SMTP service in QQ Mail's settings (Account) and use the authorisation code (授权码) it then issues as PASSWORD, not the QQ password.",
	},
	{
		Name: "exmail", Host: "pop.exmail.qq.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Notes: "Tencent Exmail (企业邮箱, WeCom mail) on your own domain: turn POP on in the mailbox settings; with secure login on, log in with a client-specific password (客户端专用密码).",
	},
	{
		Name: "163", Host: "pop.163.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"163.com"},
		Notes:   "Turn on POP3/SMTP in the NetEase mail settings and use the authorisation code (授权码) it issues as PASSWORD; the web login password is refused.",
	},
	{
		Name: "126", Host: "pop.126.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"126.com"},
		Notes:   "As 163: turn on POP3/SMTP in the settings and use the authorisation code (授权码) as PASSWORD.",
	},
	{
		Name: "yeah", Host: "pop.yeah.net", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"yeah.net"},
		Notes:   "As 163: turn on POP3/SMTP in the settings and use the authorisation code (授权码) as PASSWORD.",
	},
	{
		Name: "sina", Host: "pop.sina.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"sina.com"},
		Notes:   "Turn on the POP3/SMTP service in Sina Mail's settings and log in with the authorisation code it issues, if it issues one. sina.cn addresses use HOST=pop.sina.cn.",
	},
	{
		Name: "sohu", Host: "pop3.sohu.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"sohu.com"},
		Notes:   "Turn on POP3/SMTP in Sohu Mail's settings first.",
	},
	{
		Name: "aliyun", Host: "pop3.aliyun.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"aliyun.com"},
		Notes:   "Aliyun personal mail (@aliyun.com): POP3 is on by default; log in with the mail password. Alibaba enterprise mail on your own domain uses HOST=pop.qiye.aliyun.com.",
	},
	{
		Name: "fastmail", Host: "pop.fastmail.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"fastmail.com", "fastmail.fm"},
		Notes:   "Create an app password with mail (IMAP/POP/SMTP) access in Fastmail's settings (Privacy & Security) and use it as PASSWORD.",
	},
	{
		Name: "gmx", Host: "pop.gmx.net", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"gmx.net", "gmx.de", "gmx.at", "gmx.ch"},
		Notes:   "Allow POP3 and IMAP access once in the GMX mail settings. gmx.com (the international service) uses HOST=pop.gmx.com.",
	},
	{
		Name: "webde", Host: "pop3.web.de", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"web.de"},
		Notes:   "Allow POP3 and IMAP access once in the WEB.DE mail settings.",
	},
	{
		Name: "yandex", Host: "pop.yandex.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"yandex.com", "yandex.ru", "ya.ru", "yandex.by", "yandex.kz", "yandex.ua"},
		Notes:   "Allow access by mail clients (POP3) in Yandex Mail's settings and log in with an app password.",
	},
	{
		Name: "mailru", Host: "pop.mail.ru", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"mail.ru", "inbox.ru", "list.ru", "bk.ru"},
		Notes:   "Create a password for external applications in Mail.ru's security settings and use it as PASSWORD.",
	},
	{
		Name: "zoho", Host: "pop.zoho.com", Port: 995, TLS: pop3.TLSImplicit, Auth: pop3.MechAuto,
		Domains: []string{"zoho.com", "zohomail.com"},
		Notes: "Enable POP access in Zoho Mail's settings; with two-factor authentication use an application-specific password. " +
			"Organisation accounts use HOST=poppro.zoho.com, accounts in other data centres pop.zoho.eu, pop.zoho.in and so on.",
	},
}

// NoPOP is a provider that offers no POP3 at all: PROVIDER refuses its
// name and discovery stops at its domains instead of guessing.
type NoPOP struct {
	Name    string
	Domains []string
	Reason  string // a sentence for the error and the README
}

var noPOP = []NoPOP{
	{Name: "icloud", Domains: []string{"icloud.com", "me.com", "mac.com"},
		Reason: "iCloud Mail offers IMAP only, no POP3, so pophook cannot fetch from it; forward the mail to a mailbox it can fetch from."},
	{Name: "proton", Domains: []string{"proton.me", "protonmail.com", "protonmail.ch", "pm.me"},
		Reason: "Proton Mail offers no POP3 (Proton Mail Bridge speaks IMAP and SMTP only); forward the mail to a mailbox pophook can fetch from."},
	{Name: "tuta", Domains: []string{"tuta.com", "tutanota.com", "tutanota.de", "tutamail.com", "tuta.io", "keemail.me"},
		Reason: "Tuta (Tutanota) offers neither POP3 nor IMAP; forward the mail to a mailbox pophook can fetch from."},
}

// ErrNoPOP is wrapped by the errors for providers that offer no POP3.
var ErrNoPOP = errors.New("the provider offers no POP3")

// noPOPError wraps ErrNoPOP with the provider's reason.
type noPOPError struct{ p NoPOP }

func (e noPOPError) Error() string { return e.p.Name + ": " + e.p.Reason }
func (e noPOPError) Unwrap() error { return ErrNoPOP }

// Presets returns every preset, sorted by name.
func Presets() []Preset {
	out := make([]Preset, len(presets))
	for i, p := range presets {
		out[i] = p.clone()
	}
	slices.SortFunc(out, func(a, b Preset) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NoPOPProviders returns the providers known to offer no POP3, sorted by
// name.
func NoPOPProviders() []NoPOP {
	out := make([]NoPOP, len(noPOP))
	for i, p := range noPOP {
		out[i] = NoPOP{Name: p.Name, Domains: slices.Clone(p.Domains), Reason: p.Reason}
	}
	slices.SortFunc(out, func(a, b NoPOP) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Lookup returns the preset with that name (any case).
func Lookup(name string) (Preset, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for _, p := range presets {
		if p.Name == name {
			return p.clone(), true
		}
	}
	return Preset{}, false
}

// Resolve is Lookup with the error PROVIDER reports: for a provider
// without POP3, why; for an unknown name, the close one it probably meant
// (or, for a mail domain, the preset serving it) and the list of names.
func Resolve(name string) (Preset, error) {
	if p, ok := Lookup(name); ok {
		return p, nil
	}
	key := strings.ToLower(strings.TrimSpace(name))
	for _, n := range noPOP {
		if n.Name == key {
			return Preset{}, noPOPError{n}
		}
	}
	// A mail domain, or its first label ("hotmail"), names its provider.
	for _, d := range []string{key, key + ".com"} {
		if p, ok := ByDomain(d); ok {
			return Preset{}, fmt.Errorf("unknown provider %q: %s is served by %q, the name PROVIDER takes", name, d, p.Name)
		}
		if n, ok := noPOPByDomain(d); ok {
			return Preset{}, noPOPError{n}
		}
	}
	names := make([]string, 0, len(presets))
	for _, p := range presets {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if c := closest(key, names); c != "" {
		return Preset{}, fmt.Errorf("unknown provider %q: did you mean %q? (known: %s)", name, c, strings.Join(names, ", "))
	}
	return Preset{}, fmt.Errorf("unknown provider %q (known: %s)", name, strings.Join(names, ", "))
}

// ByDomain returns the preset of the provider serving the mail domain
// (any case, a final dot ignored).
func ByDomain(domain string) (Preset, bool) {
	domain = normalizeDomain(domain)
	for _, p := range presets {
		if domainIn(domain, p.Domains) {
			return p.clone(), true
		}
	}
	return Preset{}, false
}

// noPOPByDomain returns the provider without POP3 serving domain.
func noPOPByDomain(domain string) (NoPOP, bool) {
	domain = normalizeDomain(domain)
	for _, n := range noPOP {
		if domainIn(domain, n.Domains) {
			return n, true
		}
	}
	return NoPOP{}, false
}

// byHost returns the first preset whose server is host.
func byHost(host string) (Preset, bool) {
	host = normalizeDomain(host)
	for _, p := range presets {
		if p.Host == host {
			return p.clone(), true
		}
	}
	return Preset{}, false
}

func domainIn(domain string, domains []string) bool {
	if domain == "" {
		return false
	}
	for _, d := range domains {
		if d == domain || strings.HasPrefix(d, ".") && strings.HasSuffix(domain, d) {
			return true
		}
	}
	return false
}

func normalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

func (p Preset) clone() Preset {
	p.Domains = slices.Clone(p.Domains)
	if p.OAuth != nil {
		o := *p.OAuth
		o.Scopes = slices.Clone(o.Scopes)
		o.AppScopes = slices.Clone(o.AppScopes)
		p.OAuth = &o
	}
	return p
}

// closest returns the candidate within two edits of name, if any.
func closest(name string, candidates []string) string {
	best, bestDist := "", min(3, len(name))
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
