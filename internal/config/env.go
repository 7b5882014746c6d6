package config

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"text/template"

	"github.com/kelseyhightower/envconfig"
)

// The *Env structs name every variable Load reads. envconfig derives each
// name from the field (split_words: TlsCaFile is TLS_CA_FILE), looks it up
// under the struct's prefix and applies the default tag to a variable that
// is not set; the same fields list the known variables (Variables), so that
// list cannot drift from what Load reads. Every field is a string so that
// reading cannot fail: pophook converts and checks each value afterwards,
// where it can report every problem at once and name the variable.
//
// Names come from split_words rather than envconfig tags on purpose: a
// tagged field that is unset makes envconfig fall back to the bare name
// (PATH, HOST, USERNAME from the shell), which must never be read.

const envPrefix = "POPHOOK"

// globalEnv is read with the prefix POPHOOK.
type globalEnv struct {
	DataDir     string `split_words:"true" default:"/var/lib/pophook"`
	LogLevel    string `split_words:"true" default:"info"`
	LogFormat   string `split_words:"true" default:"text"`
	HTTPAddr    string `split_words:"true" default:"127.0.0.1:8080" empty:"keep"` // empty disables the endpoints
	Concurrency string `split_words:"true" default:"4"`
	Accounts    string `split_words:"true"`
	Sinks       string `split_words:"true"`
	Shard       string `split_words:"true"` // INDEX/COUNT; empty owns every account
}

// accountEnv is read with the prefix POPHOOK_ACCOUNT_<NAME>.
type accountEnv struct {
	Host           string `split_words:"true"`
	Port           string `split_words:"true"` // default depends on TLS
	TLS            string `split_words:"true" default:"implicit"`
	AllowInsecure  string `split_words:"true" default:"false"`
	TlsCaFile      string `split_words:"true"` // spelled so that split_words gives TLS_CA_FILE
	TLSSkipVerify  string `split_words:"true" default:"false"`
	Username       string `split_words:"true"`
	Password       string `split_words:"true"`
	PasswordFile   string `split_words:"true"`
	Auth           string `split_words:"true" default:"auto"`
	Schedule       string `split_words:"true" default:"@every 1m"`
	Sinks          string `split_words:"true"`
	Keep           string `split_words:"true" default:"false"`
	SkipExisting   string `split_words:"true" default:"false"`
	MaxMessageSize string `split_words:"true" default:"64MiB"`
	Provider       string `split_words:"true"`

	// OAuth2 for AUTH=xoauth2; the names are spelled so that split_words
	// gives OAUTH2_TOKEN_URL and so on.
	Oauth2TokenUrl         string `split_words:"true"`
	Oauth2ClientId         string `split_words:"true"`
	Oauth2ClientSecret     string `split_words:"true"`
	Oauth2ClientSecretFile string `split_words:"true"`
	Oauth2RefreshToken     string `split_words:"true"`
	Oauth2RefreshTokenFile string `split_words:"true"`
	Oauth2Scopes           string `split_words:"true"`
	Oauth2Tenant           string `split_words:"true"`
}

// sinkEnv is read first for every sink (prefix POPHOOK_SINK_<NAME>); its
// TYPE decides which of the per-type structs below is read next.
type sinkEnv struct {
	Type string `split_words:"true"`
}

type webhookEnv struct {
	URL          string `split_words:"true"`
	Format       string `split_words:"true" default:"json"`
	Secret       string `split_words:"true"`
	SecretFile   string `split_words:"true"`
	Headers      string `split_words:"true"`
	HeadersFile  string `split_words:"true"`
	Timeout      string `split_words:"true" default:"30s"`
	Budget       string `split_words:"true" default:"45s"`
	InlineLimit  string `split_words:"true" default:"10MiB"`
	IncludeRaw   string `split_words:"true" default:"false"`
	FormField    string `split_words:"true" default:"message"`
	FormFilename string `split_words:"true"`
	FormFields   string `split_words:"true"`
	AcceptHTML   string `split_words:"true" default:"false"`
}

type maildirEnv struct {
	Path string `split_words:"true"`
}

type smtpEnv struct {
	Host          string `split_words:"true"`
	Port          string `split_words:"true"` // default depends on TLS
	TLS           string `split_words:"true" default:"starttls"`
	AllowInsecure string `split_words:"true" default:"false"`
	TlsCaFile     string `split_words:"true"` // spelled so that split_words gives TLS_CA_FILE
	Username      string `split_words:"true"`
	Password      string `split_words:"true"`
	PasswordFile  string `split_words:"true"`
	From          string `split_words:"true"`
	To            string `split_words:"true"`
	Timeout       string `split_words:"true" default:"30s"`
	Budget        string `split_words:"true" default:"45s"`
}

// Sink types and the variables each reads besides TYPE.
const (
	SinkWebhook = "webhook"
	SinkMaildir = "maildir"
	SinkSMTP    = "smtp"
)

var sinkTypes = []string{SinkWebhook, SinkMaildir, SinkSMTP}

var sinkTypeEnv = map[string]any{
	SinkWebhook: webhookEnv{},
	SinkMaildir: maildirEnv{},
	SinkSMTP:    smtpEnv{},
}

// read fills spec (a pointer to one of the *Env structs) from the variables
// prefix_NAME with envconfig, then applies two rules envconfig does not
// have, so that one .env file means the same to every loader (see
// Unquote): one pair of surrounding quotes is removed, and a variable
// that is set but empty counts as unset and gets its default (docker
// --env-file and systemd make it easy to leave a value empty), except
// where the field is tagged empty:"keep".
func read(prefix string, spec any) {
	// Every field is a string, so Process can only fail on a malformed
	// spec, which the tests would catch.
	if err := envconfig.Process(prefix, spec); err != nil {
		panic("config: " + err.Error())
	}
	v := reflect.ValueOf(spec).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		v.Field(i).SetString(Unquote(v.Field(i).String()))
		if v.Field(i).String() == "" && f.Tag.Get("empty") != "keep" {
			v.Field(i).SetString(f.Tag.Get("default"))
		}
	}
}

// Unquote removes one pair of matching single or double quotes around a
// whole value. A POSIX shell, systemd's EnvironmentFile= and compose's
// env_file remove them when they read '@every 1m' from a .env file;
// docker run --env-file passes them on. Removing them here makes a
// quoted value mean the same under all four, which is what lets the
// example write values with spaces and backslashes in single quotes.
func Unquote(v string) string {
	if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// suffixes lists the variable names of an *Env struct after its prefix, as
// envconfig derives them. They depend only on the struct's type, so each
// type's list is derived once (envconfig's template and regular
// expressions are slow) and handed out as a copy.
func suffixes(spec any) []string {
	return slices.Clone(cachedSuffixes(reflect.TypeOf(spec)))
}

// suffixCache maps an *Env struct's reflect.Type to its suffixes.
var suffixCache sync.Map

// cachedSuffixes returns the shared list of suffixes of the struct type t:
// callers must not modify it.
func cachedSuffixes(t reflect.Type) []string {
	if names, ok := suffixCache.Load(t); ok {
		return names.([]string)
	}
	const prefix = "P"
	var b strings.Builder
	tmpl := template.Must(template.New("").Parse("{{range .}}{{.Key}}\n{{end}}"))
	ptr := reflect.New(t).Interface()
	if err := envconfig.Usaget(prefix, ptr, &b, tmpl); err != nil {
		panic("config: " + err.Error())
	}
	var names []string
	for _, key := range strings.Fields(b.String()) {
		names = append(names, strings.TrimPrefix(key, prefix+"_"))
	}
	names = slices.Clip(names)
	actual, _ := suffixCache.LoadOrStore(t, names)
	return actual.([]string)
}

var (
	globalSuffixes  = sync.OnceValue(func() []string { return cachedSuffixes(reflect.TypeFor[globalEnv]()) })
	accountSuffixes = sync.OnceValue(func() []string { return cachedSuffixes(reflect.TypeFor[accountEnv]()) })
	// sinkSuffixLists maps each sink type, and "" for any other, to
	// what sinkSuffixes returns for it.
	sinkSuffixLists = sync.OnceValue(func() map[string][]string {
		lists := map[string][]string{}
		base := cachedSuffixes(reflect.TypeFor[sinkEnv]())
		all := slices.Clone(base)
		for _, t := range sinkTypes {
			own := cachedSuffixes(reflect.TypeOf(sinkTypeEnv[t]))
			lists[t] = slices.Clip(slices.Concat(base, own))
			for _, s := range own {
				if !slices.Contains(all, s) {
					all = append(all, s)
				}
			}
		}
		lists[""] = slices.Clip(all)
		return lists
	})
)

func accountPrefix(name string) string { return envPrefix + "_ACCOUNT_" + strings.ToUpper(name) }
func sinkPrefix(name string) string    { return envPrefix + "_SINK_" + strings.ToUpper(name) }

// sinkSuffixes lists the suffixes a sink of the given type reads; with an
// empty or unknown type, those of every type. The list is shared: callers
// must not modify it (appending is safe, it has no spare capacity).
func sinkSuffixes(typ string) []string {
	lists := sinkSuffixLists()
	if names, ok := lists[typ]; ok {
		return names
	}
	return lists[""]
}

// Variables returns every variable name Load reads for the given account
// names and sinks (name -> type): the global ones, then each account's in
// the order given, then each sink's in name order. A sink with an empty or
// unknown type lists the variables of every type.
func Variables(accounts []string, sinks map[string]string) []string {
	global, account := globalSuffixes(), accountSuffixes()
	n := len(global) + len(accounts)*len(account)
	for _, typ := range sinks {
		n += len(sinkSuffixes(typ))
	}
	names := make([]string, 0, n)
	for _, s := range global {
		names = append(names, envPrefix+"_"+s)
	}
	for _, a := range accounts {
		prefix := accountPrefix(a) + "_"
		for _, s := range account {
			names = append(names, prefix+s)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(sinks)) {
		prefix := sinkPrefix(name) + "_"
		for _, s := range sinkSuffixes(sinks[name]) {
			names = append(names, prefix+s)
		}
	}
	return names
}
