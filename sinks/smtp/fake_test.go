package smtp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// fake is go-smtp's server with hooks, for the faults a real MTA will not
// produce on demand (a reject at RCPT for one address, a dropped
// connection mid-DATA, a stall). The real relay is Postfix
// (postfix_test.go).
type fake struct {
	srv      *gosmtp.Server
	ln       net.Listener
	Addr     string
	cert     *x509.Certificate
	password string // AUTH PLAIN for user "relay" when set

	mu    sync.Mutex
	got   []received
	conns map[*gosmtp.Conn]bool // go-smtp makes a new session at every EHLO
	mails []string              // MAIL FROM lines: from and whether SMTPUTF8 was asked
	// Hooks return an error to refuse; nil to accept. n counts DATA
	// commands across the server's life.
	onMail func(from string) error
	onRcpt func(to string) error
	onData func(n int, c *gosmtp.Conn, r io.Reader) error
	datas  int
}

type received struct {
	from string
	to   []string
	data []byte
}

type fakeOpts struct {
	tls      bool // offer STARTTLS
	implicit bool // TLS from the first byte
	utf8     bool // offer SMTPUTF8
	password string
}

func newFake(t *testing.T, o fakeOpts) *fake {
	t.Helper()
	return newFakeOn(t, "127.0.0.1:0", o)
}

func newFakeOn(t *testing.T, addr string, o fakeOpts) *fake {
	t.Helper()
	f := &fake{password: o.password}
	be := gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		f.mu.Lock()
		if f.conns == nil {
			f.conns = map[*gosmtp.Conn]bool{}
		}
		f.conns[c] = true
		f.mu.Unlock()
		return &fakeSession{f: f, conn: c}, nil
	})
	f.srv = gosmtp.NewServer(be)
	f.srv.Domain = "fake.test"
	f.srv.EnableSMTPUTF8 = o.utf8
	f.srv.ReadTimeout, f.srv.WriteTimeout = 30*time.Second, 30*time.Second
	var tlsConfig *tls.Config
	if o.tls || o.implicit {
		cert, leaf := selfSigned(t)
		f.cert = leaf
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		f.srv.TLSConfig = tlsConfig
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if o.implicit {
		ln = tls.NewListener(ln, tlsConfig)
	}
	f.ln, f.Addr = ln, ln.Addr().String()
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

// clientTLS trusts only the fake's certificate.
func (f *fake) clientTLS() *tls.Config {
	if f.cert == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.cert)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

func (f *fake) messages() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]byte
	for _, r := range f.got {
		out = append(out, r.data)
	}
	return out
}

func (f *fake) received() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.got...)
}

func (f *fake) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

type fakeSession struct {
	f    *fake
	conn *gosmtp.Conn
	from string
	to   []string
	auth bool
}

func (s *fakeSession) AuthMechanisms() []string {
	if s.f.password == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *fakeSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != "relay" || password != s.f.password {
			return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		s.auth = true
		return nil
	}), nil
}

func (s *fakeSession) Mail(from string, opts *gosmtp.MailOptions) error {
	if s.f.password != "" && !s.auth {
		return &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	s.f.mu.Lock()
	hook := s.f.onMail
	utf8 := ""
	if opts != nil && opts.UTF8 {
		utf8 = " SMTPUTF8"
	}
	s.f.mails = append(s.f.mails, from+utf8)
	s.f.mu.Unlock()
	if hook != nil {
		if err := hook(from); err != nil {
			return err
		}
	}
	s.from = from
	return nil
}

func (s *fakeSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.f.mu.Lock()
	hook := s.f.onRcpt
	s.f.mu.Unlock()
	if hook != nil {
		if err := hook(to); err != nil {
			return err
		}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *fakeSession) Data(r io.Reader) error {
	s.f.mu.Lock()
	n := s.f.datas
	s.f.datas++
	hook := s.f.onData
	s.f.mu.Unlock()
	if hook != nil {
		if err := hook(n, s.conn, r); err != nil {
			io.Copy(io.Discard, r)
			return err
		}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.f.mu.Lock()
	s.f.got = append(s.f.got, received{from: s.from, to: s.to, data: b})
	s.f.mu.Unlock()
	return nil
}

func (s *fakeSession) Reset()        { s.from, s.to = "", nil }
func (s *fakeSession) Logout() error { return nil }

var (
	certOnce sync.Once
	cert     tls.Certificate
	certLeaf *x509.Certificate
)

// selfSigned is one certificate for every fake of the test binary, so a
// fake restarted on the same port is still trusted.
func selfSigned(t *testing.T) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	certOnce.Do(func() { cert, certLeaf = makeCert() })
	return cert, certLeaf
}

func makeCert() (tls.Certificate, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "fake smtp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}
