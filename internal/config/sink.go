package config

import (
	"fmt"
	"strings"

	"github.com/pophook/pophook/sinks/webhook"
)

// loadSink reads and checks the variables of sink name: TYPE first, then
// those of its type.
func loadSink(name string, p *Problems, ca caFiles) *Sink {
	v := vars(sinkPrefix(name))
	var e sinkEnv
	read(string(v), &e)
	s := &Sink{Name: name}
	if e.Type == "" {
		p.addf(v.name("TYPE"), "required: %s", strings.Join(sinkTypes, ", "))
		return s
	}
	s.Type = conv(p, v.name("TYPE"), e.Type, enum(sinkTypes...))
	switch s.Type {
	case SinkWebhook:
		loadWebhook(s, v, p)
	case SinkMaildir:
		loadMaildir(s, v, p)
	case SinkSMTP:
		loadSMTP(s, v, p, ca)
	}
	return s
}

func loadWebhook(s *Sink, v vars, p *Problems) {
	var e webhookEnv
	read(string(v), &e)
	s.URL = e.URL
	if s.URL == "" {
		p.required(v.name("URL"))
	} else if _, err := webhook.ParseURL(s.URL); err != nil {
		p.add(v.name("URL"), err)
	}
	s.Format = conv(p, v.name("FORMAT"), e.Format, enum("json", "raw", "form"))
	s.Timeout = conv(p, v.name("TIMEOUT"), e.Timeout, parsePositiveDuration)
	s.Budget = conv(p, v.name("BUDGET"), e.Budget, parsePositiveDuration)
	// 0 is allowed here, unlike other sizes: it means never inline.
	if strings.TrimSpace(e.InlineLimit) != "0" {
		s.InlineLimit = conv(p, v.name("INLINE_LIMIT"), e.InlineLimit, parseSize)
	}
	s.IncludeRaw = conv(p, v.name("INCLUDE_RAW"), e.IncludeRaw, parseBool)
	s.FormField = e.FormField
	if strings.ContainsAny(s.FormField, "\"\r\n") {
		p.addf(v.name("FORM_FIELD"), "a field name cannot contain quotes or line breaks")
	}
	s.FormFilename = e.FormFilename
	if strings.ContainsAny(s.FormFilename, "\"\r\n") {
		p.addf(v.name("FORM_FILENAME"), "a file name cannot contain quotes or line breaks")
	}
	s.FormFields = conv(p, v.name("FORM_FIELDS"), e.FormFields, parseFormFields)
	s.AcceptHTML = conv(p, v.name("ACCEPT_HTML"), e.AcceptHTML, parseBool)

	secret, value := loadSecret(p, v, "SECRET", e.Secret, e.SecretFile, false)
	s.Secret = secret
	if value != "" {
		if _, err := webhook.SecretKey(value); err != nil {
			p.add(secretSource(v, "SECRET", e.Secret), err)
		}
	}
	s.Headers = loadHeaders(p, v, e.Headers, e.HeadersFile)
}

// secretSource names the variable a secret's value came from, so a problem
// with the value points at the one the operator set.
func secretSource(v vars, suffix, value string) string {
	if value != "" {
		return v.name(suffix)
	}
	return v.name(suffix + "_FILE")
}

// loadHeaders checks HEADERS or HEADERS_FILE now, so a wrong one stops
// start-up; the sink reads and parses them again at every delivery.
func loadHeaders(p *Problems, v vars, value, file string) Secret {
	src, content := loadSecret(p, v, "HEADERS", value, file, false)
	if content == "" {
		return src // not set, or a problem with it is already recorded
	}
	_, errs := webhook.ParseHeaders(content)
	for _, err := range errs {
		p.add(secretSource(v, "HEADERS", value), err)
	}
	return src
}

func loadMaildir(s *Sink, v vars, p *Problems) {
	var e maildirEnv
	read(string(v), &e)
	s.Path = e.Path
	if s.Path == "" {
		p.required(v.name("PATH"))
	}
}

func loadSMTP(s *Sink, v vars, p *Problems, ca caFiles) {
	var e smtpEnv
	read(string(v), &e)
	s.Host = e.Host
	s.TLS = conv(p, v.name("TLS"), e.TLS, enum(TLSImplicit, TLSStartTLS, TLSNone))
	s.AllowInsecure = conv(p, v.name("ALLOW_INSECURE"), e.AllowInsecure, parseBool)
	checkServer(p, v, e.Host, s.TLS, s.AllowInsecure)
	// 465 is SMTP over implicit TLS (RFC 8314); 587 submission otherwise.
	s.Port = portOrDefault(p, v, e.Port, s.TLS, 465, 587)
	s.TLSCAFile = e.TlsCaFile
	if s.TLSCAFile != "" {
		if err := ca.check(s.TLSCAFile); err != nil {
			p.add(v.name("TLS_CA_FILE"), err)
		}
	}
	s.Timeout = conv(p, v.name("TIMEOUT"), e.Timeout, parsePositiveDuration)
	s.Budget = conv(p, v.name("BUDGET"), e.Budget, parsePositiveDuration)

	s.Username = e.Username
	s.Password, _ = loadSecret(p, v, "PASSWORD", e.Password, e.PasswordFile, false)
	switch {
	case s.Username != "" && !s.Password.IsSet():
		p.addf(v.name("PASSWORD"), "required with %s (or %s)", v.name("USERNAME"), v.name("PASSWORD_FILE"))
	case s.Username == "" && s.Password.IsSet():
		p.addf(v.name("USERNAME"), "required with a password")
	}

	if e.From != "" {
		s.From = conv(p, v.name("FROM"), e.From, parseAddress)
	}
	if e.To == "" {
		p.addf(v.name("TO"), "required: the envelope recipients, comma separated")
	} else {
		s.To = conv(p, v.name("TO"), e.To, parseAddresses)
	}
}

// parseFormFields reads "name=value" pairs separated by newlines (a literal
// "\n" counts as one, for one-line environment files), keeping their order.
func parseFormFields(s string) ([][2]string, error) {
	var out [][2]string
	for _, line := range strings.Split(strings.ReplaceAll(s, `\n`, "\n"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, "\"\r") {
			return nil, fmt.Errorf("%q is not a name=value pair", line)
		}
		out = append(out, [2]string{name, strings.TrimSpace(value)})
	}
	return out, nil
}
