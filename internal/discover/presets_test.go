package discover

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pophook/pophook/worker/pop3"
)

var namePattern = regexp.MustCompile(`^[a-z0-9]+$`)

// The table is consistent: names are what PROVIDER can take, every mail
// domain belongs to one provider, OAuth endpoints are https.
func TestPresetsTable(t *testing.T) {
	list := Presets()
	if len(list) != len(presets) || !slices.IsSortedFunc(list, func(a, b Preset) int { return strings.Compare(a.Name, b.Name) }) {
		t.Fatalf("Presets() not the whole table sorted: %d of %d", len(list), len(presets))
	}
	names := map[string]bool{}
	domains := map[string]string{}
	addDomain := func(owner, d string) {
		if d != normalizeDomain(d) || (!strings.HasPrefix(d, ".") && !validDomain(d)) {
			t.Errorf("%s: domain %q not a lower-case domain", owner, d)
		}
		if prev, dup := domains[d]; dup {
			t.Errorf("domain %q in both %s and %s", d, prev, owner)
		}
		domains[d] = owner
	}
	for _, p := range list {
		if !namePattern.MatchString(p.Name) || names[p.Name] {
			t.Errorf("name %q: want unique, lower case letters and digits", p.Name)
		}
		names[p.Name] = true
		if !validDomain(p.Host) || p.Port != 995 || p.TLS != pop3.TLSImplicit {
			t.Errorf("%s: %s:%d %s, want a host on 995 with implicit TLS", p.Name, p.Host, p.Port, p.TLS)
		}
		if p.Auth != pop3.MechAuto && p.Auth != pop3.MechXOAUTH2 {
			t.Errorf("%s: auth %q", p.Name, p.Auth)
		}
		if p.Auth == pop3.MechXOAUTH2 && (p.OAuth == nil || p.OAuth.TokenURL == "") {
			t.Errorf("%s: xoauth2 without a token endpoint", p.Name)
		}
		if strings.TrimSpace(p.Notes) == "" || strings.Contains(p.Notes, "|") || strings.Contains(p.Notes, "\n") {
			t.Errorf("%s: notes must be one README table cell: %q", p.Name, p.Notes)
		}
		if o := p.OAuth; o != nil {
			if len(o.Scopes) == 0 {
				t.Errorf("%s: OAuth without scopes", p.Name)
			}
			for _, u := range []string{o.AuthURL, o.TokenURL, o.DeviceAuthURL} {
				if u == "" {
					continue
				}
				pu, err := url.Parse(strings.ReplaceAll(u, TenantPlaceholder, "common"))
				if err != nil || pu.Scheme != "https" || pu.Host == "" {
					t.Errorf("%s: OAuth URL %q not https", p.Name, u)
				}
			}
		}
		for _, d := range p.Domains {
			addDomain(p.Name, d)
		}
	}
	for _, n := range NoPOPProviders() {
		if !namePattern.MatchString(n.Name) || names[n.Name] {
			t.Errorf("no-POP name %q clashes or is malformed", n.Name)
		}
		names[n.Name] = true
		for _, d := range n.Domains {
			addDomain(n.Name, d)
		}
	}
	// The names the issue asks for.
	for _, want := range []string{"gmail", "outlook", "office365", "yahoo", "qq", "163", "126", "yeah", "sina", "sohu", "aliyun"} {
		if _, ok := Lookup(want); !ok {
			t.Errorf("no preset %q", want)
		}
	}
}

func TestLookup(t *testing.T) {
	p, ok := Lookup(" Gmail ")
	if !ok || p.Name != "gmail" || p.Host != "pop.gmail.com" || p.OAuth == nil {
		t.Fatalf("Lookup(Gmail) = %+v, %v", p, ok)
	}
	// Callers get copies: changing one changes nothing else.
	p.Domains[0] = "evil.example"
	p.OAuth.Scopes[0] = "x"
	p.OAuth.TokenURL = "x"
	again, _ := Lookup("gmail")
	if again.Domains[0] != "gmail.com" || again.OAuth.Scopes[0] != "https://mail.google.com/" || again.OAuth.TokenURL == "x" {
		t.Errorf("the table changed through a copy: %+v", again)
	}
	if _, ok := Lookup("icloud"); ok {
		t.Error("icloud has no POP and no preset")
	}
	if _, ok := Lookup(""); ok {
		t.Error("empty name found")
	}
}

func TestResolve(t *testing.T) {
	if p, err := Resolve("OUTLOOK"); err != nil || p.Name != "outlook" || p.Auth != pop3.MechXOAUTH2 {
		t.Errorf("Resolve(OUTLOOK) = %+v, %v", p, err)
	}
	for name, want := range map[string]string{
		"icloud":      "iCloud Mail offers IMAP only",
		"me.com":      "iCloud Mail offers IMAP only",
		"proton":      "no POP3",
		"gmial":       `did you mean "gmail"`,
		"yahooo":      `did you mean "yahoo"`,
		"hotmail":     `hotmail.com is served by "outlook"`,
		"foxmail.com": `foxmail.com is served by "qq"`,
		"x":           "known: 126, 163, aliyun",
		"nosuchmail":  "known: 126, 163, aliyun",
	} {
		_, err := Resolve(name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(%q) = %v, want an error containing %q", name, err, want)
		}
	}
	if _, err := Resolve("icloud"); !errors.Is(err, ErrNoPOP) {
		t.Errorf("Resolve(icloud) = %v, want ErrNoPOP", err)
	}
}

func TestByDomain(t *testing.T) {
	for domain, want := range map[string]string{
		"gmail.com":               "gmail",
		"GoogleMail.com.":         "gmail",
		"hotmail.co.uk":           "outlook",
		"foxmail.com":             "qq",
		"contoso.onmicrosoft.com": "office365",
		"yeah.net":                "yeah",
		"onmicrosoft.com":         "",
		"example.com":             "",
		"icloud.com":              "", // no POP: not a preset (Discover says why)
		"notgmail.com":            "",
		"":                        "",
	} {
		p, ok := ByDomain(domain)
		if p.Name != want || ok != (want != "") {
			t.Errorf("ByDomain(%q) = %q, %v; want %q", domain, p.Name, ok, want)
		}
	}
}

func TestForTenant(t *testing.T) {
	o365, _ := Lookup("office365")
	o, err := o365.OAuth.ForTenant("")
	if err != nil || o.TokenURL != "https://login.microsoftonline.com/organizations/oauth2/v2.0/token" || o.Tenant != "organizations" {
		t.Errorf("default tenant: %+v, %v", o, err)
	}
	o, err = o365.OAuth.ForTenant("contoso.onmicrosoft.com")
	if err != nil || o.TokenURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token" ||
		o.DeviceAuthURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode" ||
		o.AuthURL != "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize" {
		t.Errorf("tenant domain: %+v, %v", o, err)
	}
	if o, err := o365.OAuth.ForTenant("8eaef023-2b34-4da1-9baa-8bc8c9d6a490"); err != nil || !strings.Contains(o.TokenURL, "/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/") {
		t.Errorf("tenant GUID: %+v, %v", o, err)
	}
	for _, bad := range []string{"evil.example/x", "a?b", "a#b", "..", ".x", "a@b", "x y", "%2e%2e"} {
		if _, err := o365.OAuth.ForTenant(bad); err == nil {
			t.Errorf("tenant %q accepted", bad)
		}
	}
	outlook, _ := Lookup("outlook")
	if o, _ := outlook.OAuth.ForTenant(""); o.Tenant != "consumers" || o.AppScopes != nil {
		t.Errorf("outlook: %+v", o)
	}
	gmail, _ := Lookup("gmail")
	if o, err := gmail.OAuth.ForTenant(""); err != nil || o.TokenURL != "https://oauth2.googleapis.com/token" {
		t.Errorf("gmail: %+v, %v", o, err)
	}
	if _, err := gmail.OAuth.ForTenant("contoso"); err == nil {
		t.Error("gmail took a tenant")
	}
	// The copy's slices are its own.
	o, _ = o365.OAuth.ForTenant("")
	o.Scopes[0] = "x"
	if again, _ := Lookup("office365"); again.OAuth.Scopes[0] == "x" {
		t.Error("ForTenant shares the scopes")
	}
}

// providerTable is the README's provider table, from the presets.
func providerTable() string {
	var b strings.Builder
	b.WriteString("| `PROVIDER` | server | login | mail domains | notes |\n|---|---|---|---|---|\n")
	for _, p := range Presets() {
		login := "password"
		if p.Auth == pop3.MechXOAUTH2 {
			login = "OAuth2 only"
		} else if p.OAuth != nil {
			login = "password or OAuth2"
		}
		domains := "your own"
		if len(p.Domains) > 0 {
			shown := p.Domains
			if len(shown) > 4 {
				shown = shown[:4]
			}
			shown = slices.Clone(shown)
			for i, d := range shown {
				if strings.HasPrefix(d, ".") {
					shown[i] = "*" + d
				}
			}
			domains = strings.Join(shown, ", ")
			if len(p.Domains) > len(shown) {
				domains += " and " + strconv.Itoa(len(p.Domains)-len(shown)) + " more"
			}
		}
		b.WriteString("| `" + p.Name + "` | `" + p.Host + ":" + strconv.Itoa(p.Port) + "` " + p.TLS.String() +
			" | " + login + " | " + domains + " | " + p.Notes + " |\n")
	}
	for _, n := range NoPOPProviders() {
		b.WriteString("| (" + n.Name + ") | none | | " + strings.Join(n.Domains, ", ") + " | " + n.Reason + " |\n")
	}
	return b.String()
}

const (
	tableBegin = "<!-- discover:providers begin -->\n"
	tableEnd   = "<!-- discover:providers end -->"
)

// testdata/providers.md is the README's provider table as the presets
// make it; DISCOVER_UPDATE_TABLE=1 rewrites it. Once README.md carries the
// table between the markers, it must be the same.
func TestProviderTable(t *testing.T) {
	got := providerTable()
	golden := filepath.Join("testdata", "providers.md")
	if os.Getenv("DISCOVER_UPDATE_TABLE") != "" {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Errorf("%s is not the presets' table; run with DISCOVER_UPDATE_TABLE=1 and copy it into README.md. It would be:\n%s", golden, got)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), tableBegin)
	if !ok {
		t.Skipf("README.md has no provider table between %q and %q yet", strings.TrimSpace(tableBegin), tableEnd)
	}
	inREADME, _, ok := strings.Cut(rest, tableEnd)
	if !ok || inREADME != got {
		t.Errorf("README.md's provider table is not %s; copy it over", golden)
	}
}
