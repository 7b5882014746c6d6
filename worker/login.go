package worker

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/pophook/pophook/worker/pop3"
)

// DialOptions tune Dial.
type DialOptions struct {
	// DisablePipelining forces lock-step (a server that drops pipelined
	// commands).
	DisablePipelining bool
	// Dialer replaces the TCP dialer (tests).
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
	// Trace receives the redacted POP3 exchange.
	Trace io.Writer
}

// LoginInfo is what a login showed about the server: what the job audits
// and `pophook check` reports.
type LoginInfo struct {
	Server       string // host:port
	TLSVersion   string // "TLS 1.3"; "" without TLS
	CipherSuite  string
	Certificate  *x509.Certificate // the server's leaf certificate; nil without TLS
	Capabilities pop3.Capabilities // after login
	UTF8         bool              // the server took UTF8 (RFC 6856)
	Mechanism    pop3.Mechanism    // what the login used (auto resolved)
	// LoginDelay is the minimum time between logins the server asks for
	// (RFC 2449 LOGIN-DELAY); 0 when it asks for none.
	LoginDelay time.Duration
}

// CertificateSHA256 is the hex SHA-256 fingerprint of the certificate.
func (i LoginInfo) CertificateSHA256() string {
	if i.Certificate == nil {
		return ""
	}
	sum := sha256.Sum256(i.Certificate.Raw)
	return hex.EncodeToString(sum[:])
}

// Dial connects to a's server, protects the connection as a asks, and
// logs in with secret. It is the login the job makes and the one `check`
// shows; the caller closes the client (without QUIT nothing is deleted).
func Dial(ctx context.Context, a *Account, secret string, o DialOptions) (*pop3.Client, LoginInfo, error) {
	opts := pop3.Options{
		TLS:               a.TLS,
		TLSConfig:         a.TLSConfig,
		AllowInsecureAuth: a.AllowInsecureAuth,
		DisablePipelining: o.DisablePipelining,
		MaxMessageSize:    a.MaxMessageSize,
		Dialer:            o.Dialer,
		Trace:             o.Trace,
	}
	info := LoginInfo{Server: a.Addr()}
	c, err := pop3.Dial(ctx, info.Server, opts)
	if err != nil {
		return nil, info, err
	}
	if err := c.Authenticate(ctx, a.mechanism(), a.Username, secret); err != nil {
		c.Close()
		return nil, info, err
	}
	if st, ok := c.TLSConnectionState(); ok {
		info.TLSVersion = tls.VersionName(st.Version)
		info.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
		if len(st.PeerCertificates) > 0 {
			info.Certificate = st.PeerCertificates[0]
		}
	}
	info.Capabilities = c.Capabilities()
	info.UTF8 = c.UTF8()
	info.Mechanism = c.Mechanism()
	if d := info.Capabilities["LOGIN-DELAY"]; len(d) > 0 {
		if secs, err := strconv.Atoi(d[0]); err == nil && secs > 0 {
			info.LoginDelay = time.Duration(secs) * time.Second
		}
	}
	return c, info, nil
}

// auditAttrs are the login audit's log attributes.
func (i LoginInfo) auditAttrs(user string) []any {
	attrs := []any{"server", i.Server, "user", user}
	if i.TLSVersion == "" {
		return append(attrs, "tls", "none")
	}
	attrs = append(attrs, "tls", i.TLSVersion, "cipher", i.CipherSuite)
	if c := i.Certificate; c != nil {
		attrs = append(attrs, "cert_subject", c.Subject.String(), "cert_issuer", c.Issuer.String(),
			"cert_expires", c.NotAfter.UTC().Format(time.RFC3339), "cert_sha256", i.CertificateSHA256())
	}
	return attrs
}

// String sums up the audit, to notice when it changes.
func (i LoginInfo) String() string { return fmt.Sprint(i.auditAttrs("")...) }
