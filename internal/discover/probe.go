package discover

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strconv"

	"github.com/pophook/pophook/worker/pop3"
)

// Dialer dials TCP connections; *net.Dialer is one.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// errNeedsTLS refuses a probe without TLS: discovery only proposes
// servers whose identity it has verified.
var errNeedsTLS = errors.New("discovery probes only with TLS (implicit or starttls)")

// ProbeTLS returns the Prober to use outside tests: it connects with
// dialer (nil: a net.Dialer), protects the connection as the mode says
// (implicit TLS, or STLS on a plain connection), verifies the certificate
// for the host against roots (nil: the system roots) with TLS 1.2 at
// least, reads the greeting and capabilities, and hangs up without
// logging in. Verification is never skipped; a server with a private CA
// needs its CA in roots (from TLS_CA_FILE) or a HOST pinned by hand.
func ProbeTLS(dialer Dialer, roots *x509.CertPool) Prober {
	return func(ctx context.Context, host string, port int, mode pop3.TLSMode) error {
		if mode != pop3.TLSImplicit && mode != pop3.TLSStartTLS {
			return errNeedsTLS
		}
		opts := pop3.Options{
			TLS:             mode,
			TLSConfig:       &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12},
			Timeout:         StepTimeout,
			GreetingTimeout: StepTimeout,
		}
		if dialer != nil {
			opts.Dialer = dialer
		}
		c, err := pop3.Dial(ctx, net.JoinHostPort(host, strconv.Itoa(port)), opts)
		if err != nil {
			return err
		}
		c.Close() // without QUIT: nothing was asked of the mailbox
		return nil
	}
}
