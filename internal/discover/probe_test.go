package discover

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, n
}

// redirect dials every address at to, as DNS pointing a name there would,
// except that nothing listens on port 110.
type redirect struct{ to string }

func (r redirect) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if strings.HasSuffix(addr, ":110") {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, r.to)
}

// noLogin fails if a probe sent anything that logs in.
func noLogin(t *testing.T, srv *pop3test.Server) {
	t.Helper()
	for _, line := range srv.Log() {
		cmd, _, _ := strings.Cut(strings.ToUpper(line), " ")
		if cmd == "USER" || cmd == "PASS" || cmd == "AUTH" || cmd == "APOP" {
			t.Errorf("the probe sent %q: it must not log in", line)
		}
	}
}

func TestProbeTLS(t *testing.T) {
	srv := pop3test.NewTLSServer(pop3test.Options{})
	defer srv.Close()
	host, port := hostPort(t, srv.Addr)

	// Trusting the server's certificate, the probe succeeds, for the IP
	// and for the other name the certificate carries.
	probe := ProbeTLS(nil, srv.RootCAs())
	if err := probe(t.Context(), host, port, pop3.TLSImplicit); err != nil {
		t.Fatalf("probe of a trusted server: %v", err)
	}
	if err := ProbeTLS(redirect{srv.Addr}, srv.RootCAs())(t.Context(), "localhost", port, pop3.TLSImplicit); err != nil {
		t.Errorf("probe as localhost: %v", err)
	}

	// Verification is on: an unknown authority fails...
	err := ProbeTLS(nil, x509.NewCertPool())(t.Context(), host, port, pop3.TLSImplicit)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("untrusted certificate: %v, want x509.UnknownAuthorityError", err)
	}
	// ...so does another server's certificate...
	other := pop3test.NewTLSServer(pop3test.Options{})
	defer other.Close()
	if err := ProbeTLS(nil, other.RootCAs())(t.Context(), host, port, pop3.TLSImplicit); !errors.As(err, &unknown) {
		t.Errorf("another server's certificate: %v, want x509.UnknownAuthorityError", err)
	}
	// ...and a trusted certificate for another name: the name checked is
	// the host probed (as when DNS sends pop.example.com elsewhere).
	err = ProbeTLS(redirect{srv.Addr}, srv.RootCAs())(t.Context(), "pop.example.com", port, pop3.TLSImplicit)
	var wrongName x509.HostnameError
	if !errors.As(err, &wrongName) {
		t.Errorf("certificate for another name: %v, want x509.HostnameError", err)
	}

	// Implicit TLS against a plain server fails (pophook's error for the
	// wrong TLS mode).
	plain := pop3test.NewServer(pop3test.Options{})
	defer plain.Close()
	phost, pport := hostPort(t, plain.Addr)
	if err := probe(t.Context(), phost, pport, pop3.TLSImplicit); !errors.Is(err, pop3.ErrNotTLS) {
		t.Errorf("implicit TLS to a plain server: %v, want pop3.ErrNotTLS", err)
	}
	if err := probe(t.Context(), phost, pport, pop3.TLSStartTLS); err == nil {
		t.Error("STARTTLS to a server without STLS succeeded")
	}
	// Discovery never proposes a server without TLS.
	if err := probe(t.Context(), phost, pport, pop3.TLSNone); err == nil {
		t.Error("a probe without TLS succeeded")
	}
	noLogin(t, srv)
	noLogin(t, plain)
}

func TestProbeSTARTTLS(t *testing.T) {
	srv := pop3test.NewServer(pop3test.Options{STLS: true})
	defer srv.Close()
	host, port := hostPort(t, srv.Addr)
	if err := ProbeTLS(nil, srv.RootCAs())(t.Context(), host, port, pop3.TLSStartTLS); err != nil {
		t.Fatalf("STARTTLS probe: %v", err)
	}
	var unknown x509.UnknownAuthorityError
	if err := ProbeTLS(nil, x509.NewCertPool())(t.Context(), host, port, pop3.TLSStartTLS); !errors.As(err, &unknown) {
		t.Errorf("STARTTLS with an untrusted certificate: %v, want x509.UnknownAuthorityError", err)
	}
	noLogin(t, srv)
}

// Discover with the real probe: an SRV target (a name under the domain,
// which the test's dialer sends to the server) is verified for its own
// name, so a server whose certificate does not carry it is refused and the
// next step runs.
func TestDiscoverWithProbeTLS(t *testing.T) {
	server := pop3test.NewTLSServer(pop3test.Options{})
	defer server.Close()
	_, port := hostPort(t, server.Addr)
	r := &stubResolver{answers: map[string]srvAnswer{
		"_pop3s._tcp.example.com": {recs: []*net.SRV{srv("pop.example.com", uint16(port), 0, 0)}},
	}}
	_, steps, err := Discover(t.Context(), r, ProbeTLS(redirect{server.Addr}, server.RootCAs()), "x@example.com")
	if err == nil {
		t.Fatal("a certificate without the name was accepted")
	}
	var wrongName x509.HostnameError
	if len(steps) < 3 || !errors.As(steps[0].Err, &wrongName) {
		t.Errorf("steps %v: want the SRV target refused for its certificate", steps)
	}
	noLogin(t, server)
}
