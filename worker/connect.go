package worker

import (
	"fmt"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/worker/pop3"
)

// POP3Options turns an account's configuration into client options.
func POP3Options(a config.Account) (pop3.Options, error) {
	var opts pop3.Options
	switch a.TLS {
	case "implicit", "":
		opts.TLS = pop3.TLSImplicit
	case "starttls":
		opts.TLS = pop3.TLSStartTLS
	case "none":
		opts.TLS = pop3.TLSNone
	default:
		return opts, fmt.Errorf("account %s: unknown TLS mode %q", a.Name, a.TLS)
	}
	opts.AllowInsecureAuth = a.AllowInsecure
	cfg, err := pop3.TLSConfig(a.Host, a.TLSCAFile, a.TLSSkipVerify)
	if err != nil {
		return opts, fmt.Errorf("account %s: %w", a.Name, err)
	}
	opts.TLSConfig = cfg
	opts.MaxMessageSize = a.MaxMessageSize
	return opts, nil
}
