package config

import (
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// The *Env structs name every variable Load reads: the envconfig tag is the
// variable's suffix after its prefix, the default tag its default. Every
// field is a string so that nothing can fail while reading; conversion and
// validation happen afterwards, where all problems can be collected. The
// same tags feed Variables, so the list of known variables cannot drift
// from what Load reads.

const envPrefix = "POPHOOK"

// globalEnv is read with the prefix POPHOOK.
type globalEnv struct {
	DataDir     string `envconfig:"DATA_DIR" default:"/var/lib/pophook"`
	LogLevel    string `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat   string `envconfig:"LOG_FORMAT" default:"text"`
	HTTPAddr    string `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080" empty:"keep"` // empty disables the endpoints
	Concurrency string `envconfig:"CONCURRENCY" default:"4"`
	Accounts    string `envconfig:"ACCOUNTS"`
	Sinks       string `envconfig:"SINKS"`
}

// accountEnv is read with the prefix POPHOOK_ACCOUNT_<NAME>.
type accountEnv struct {
	Host           string `envconfig:"HOST"`
	Port           string `envconfig:"PORT"` // default depends on TLS
	TLS            string `envconfig:"TLS" default:"implicit"`
	AllowInsecure  string `envconfig:"ALLOW_INSECURE" default:"false"`
	TLSCAFile      string `envconfig:"TLS_CA_FILE"`
	TLSSkipVerify  string `envconfig:"TLS_SKIP_VERIFY" default:"false"`
	Username       string `envconfig:"USERNAME"`
	Password       string `envconfig:"PASSWORD"`
	PasswordFile   string `envconfig:"PASSWORD_FILE"`
	Auth           string `envconfig:"AUTH" default:"auto"`
	Schedule       string `envconfig:"SCHEDULE" default:"@every 1m"`
	Sinks          string `envconfig:"SINKS"`
	Keep           string `envconfig:"KEEP" default:"false"`
	SkipExisting   string `envconfig:"SKIP_EXISTING" default:"false"`
	MaxMessageSize string `envconfig:"MAX_MESSAGE_SIZE" default:"64MiB"`
}

// sinkEnv is read first for every sink (prefix POPHOOK_SINK_<NAME>); its
// TYPE decides which of the per-type structs below is read next.
type sinkEnv struct {
	Type string `envconfig:"TYPE"`
}

type webhookEnv struct {
	URL          string `envconfig:"URL"`
	Format       string `envconfig:"FORMAT" default:"json"`
	Secret       string `envconfig:"SECRET"`
	SecretFile   string `envconfig:"SECRET_FILE"`
	Headers      string `envconfig:"HEADERS"`
	HeadersFile  string `envconfig:"HEADERS_FILE"`
	Timeout      string `envconfig:"TIMEOUT" default:"30s"`
	Budget       string `envconfig:"BUDGET" default:"45s"`
	InlineLimit  string `envconfig:"INLINE_LIMIT" default:"10MiB"`
	IncludeRaw   string `envconfig:"INCLUDE_RAW" default:"false"`
	FormField    string `envconfig:"FORM_FIELD" default:"message"`
	FormFilename string `envconfig:"FORM_FILENAME"`
	FormFields   string `envconfig:"FORM_FIELDS"`
	AcceptHTML   string `envconfig:"ACCEPT_HTML" default:"false"`
}

type maildirEnv struct {
	Path string `envconfig:"PATH"`
}

type smtpEnv struct {
	Host          string `envconfig:"HOST"`
	Port          string `envconfig:"PORT"` // default depends on TLS
	TLS           string `envconfig:"TLS" default:"starttls"`
	AllowInsecure string `envconfig:"ALLOW_INSECURE" default:"false"`
	Username      string `envconfig:"USERNAME"`
	Password      string `envconfig:"PASSWORD"`
	PasswordFile  string `envconfig:"PASSWORD_FILE"`
	From          string `envconfig:"FROM"`
	To            string `envconfig:"TO"`
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
// prefix_SUFFIX. envconfig does the reading; the pass after it corrects two
// of its habits that would be wrong here:
//   - a variable that is set but empty does not get its default, but for
//     us empty means unset (docker --env-file and systemd make it easy to
//     leave a value empty), except where the field is tagged empty:"keep";
//   - when prefix_SUFFIX is unset, envconfig falls back to the bare SUFFIX,
//     so the shell's PATH would become a maildir path and HOST a POP3
//     server. Only the prefixed name may ever be read.
func read(prefix string, spec any) {
	// Every field is a string, so Process can only fail on a malformed
	// spec, which the tests would catch.
	if err := envconfig.Process(prefix, spec); err != nil {
		panic("config: " + err.Error())
	}
	v := reflect.ValueOf(spec).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		value, set := os.LookupEnv(prefix + "_" + f.Tag.Get("envconfig"))
		switch {
		case value != "":
			v.Field(i).SetString(value)
		case set && f.Tag.Get("empty") == "keep":
			v.Field(i).SetString("")
		default:
			v.Field(i).SetString(f.Tag.Get("default"))
		}
	}
}

// suffixes lists the variable suffixes (envconfig tags) of an *Env struct.
func suffixes(spec any) []string {
	t := reflect.TypeOf(spec)
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		names = append(names, t.Field(i).Tag.Get("envconfig"))
	}
	return names
}

func accountPrefix(name string) string { return envPrefix + "_ACCOUNT_" + strings.ToUpper(name) }
func sinkPrefix(name string) string    { return envPrefix + "_SINK_" + strings.ToUpper(name) }

// sinkSuffixes lists the suffixes a sink of the given type reads; with an
// empty or unknown type, those of every type.
func sinkSuffixes(typ string) []string {
	names := suffixes(sinkEnv{})
	if spec, ok := sinkTypeEnv[typ]; ok {
		return append(names, suffixes(spec)...)
	}
	for _, t := range sinkTypes {
		for _, s := range suffixes(sinkTypeEnv[t]) {
			if !slices.Contains(names, s) {
				names = append(names, s)
			}
		}
	}
	return names
}

// Variables returns every variable name Load reads for the given account
// names and sinks (name -> type): the global ones, then each account's in
// the order given, then each sink's in name order. A sink with an empty or
// unknown type lists the variables of every type.
func Variables(accounts []string, sinks map[string]string) []string {
	var names []string
	for _, s := range suffixes(globalEnv{}) {
		names = append(names, envPrefix+"_"+s)
	}
	for _, a := range accounts {
		for _, s := range suffixes(accountEnv{}) {
			names = append(names, accountPrefix(a)+"_"+s)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(sinks)) {
		for _, s := range sinkSuffixes(sinks[name]) {
			names = append(names, sinkPrefix(name)+"_"+s)
		}
	}
	return names
}
