package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/pophook/pophook/worker"
	"github.com/pophook/pophook/worker/pop3"
)

// hint says what to do about an account's connection or login error, in
// terms of the variables to change; "" when there is nothing to add. It is
// used by check, once and the logs, so they give the same advice.
func hint(a *worker.Account, err error) string {
	v := "POPHOOK_ACCOUNT_" + strings.ToUpper(a.Name) + "_"
	var (
		cv  *tls.CertificateVerificationError
		dns *net.DNSError
		he  x509.HostnameError
	)
	switch {
	case errors.As(err, &dns):
		return fmt.Sprintf("the name %s does not resolve: check %sHOST", a.Host, v)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens on %s: check %sHOST and %sPORT", a.Addr(), v, v)
	case errors.Is(err, pop3.ErrNotTLS):
		return fmt.Sprintf("port %d speaks plain POP3: set %sTLS=starttls (its usual port is 110) or use the server's TLS port (995) with %sTLS=implicit", a.Port, v, v)
	case errors.Is(err, pop3.ErrNoGreeting) && a.TLS != pop3.TLSImplicit:
		return fmt.Sprintf("the server said nothing: if port %d is a TLS port (995), set %sTLS=implicit", a.Port, v)
	case errors.Is(err, pop3.ErrNoGreeting):
		return fmt.Sprintf("no greeting after the TLS handshake: check %sPORT", v)
	case errors.As(err, &he):
		return fmt.Sprintf("the certificate is for %s, not %s: set %sHOST to a name it carries", certNames(he.Certificate), a.Host, v)
	case errors.As(err, &cv) && len(cv.UnverifiedCertificates) > 0:
		c := cv.UnverifiedCertificates[0]
		var expired x509.CertificateInvalidError
		if errors.As(err, &expired) && expired.Reason == x509.Expired {
			return fmt.Sprintf("the server's certificate (%s) expired on %s: the server must renew it", c.Subject, c.NotAfter.UTC().Format(time.DateOnly))
		}
		return fmt.Sprintf("the server's certificate is not trusted (subject %s, issuer %s, SHA-256 %s): if it is your server's own, put its CA certificate (PEM) in a file and set %sTLS_CA_FILE to it",
			c.Subject, c.Issuer, fingerprint(c), v)
	case errors.Is(err, pop3.ErrInsecureAuth):
		return fmt.Sprintf("the password would cross the network in clear text: use %sTLS=starttls or implicit, or set %sALLOW_INSECURE=true if you must", v, v)
	case errors.Is(err, pop3.ErrAuth):
		var pe *pop3.Error
		if errors.As(err, &pe) && pe.Vague {
			return fmt.Sprintf("the server gave no reason: check %sUSERNAME and %sPASSWORD, and that the mailbox exists and can be opened", v, v)
		}
		return fmt.Sprintf("check %sUSERNAME and %sPASSWORD (or %sPASSWORD_FILE)", v, v, v)
	case errors.Is(err, pop3.ErrMechanism):
		return fmt.Sprintf("set %sAUTH=auto, or to a mechanism the server offers", v)
	case errors.Is(err, pop3.ErrNoUIDL):
		return "the server cannot tell messages apart between sessions (no UIDL): pophook cannot fetch from it safely"
	}
	return ""
}

// withHint appends the hint to an error message.
func withHint(a *worker.Account, err error) string {
	if h := hint(a, err); h != "" {
		return err.Error() + "\n    → " + h
	}
	return err.Error()
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func certNames(c *x509.Certificate) string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = append(names, c.Subject.CommonName)
	}
	return strings.Join(names, ", ")
}
