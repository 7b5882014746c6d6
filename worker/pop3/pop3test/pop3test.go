// Package pop3test runs an in-process POP3 server for tests, in the spirit of
// net/http/httptest.
//
// The server speaks RFC 1939 (USER/PASS, STAT, LIST, UIDL, TOP, RETR, DELE,
// RSET, NOOP, QUIT), RFC 2449 (CAPA, PIPELINING, RESP-CODES, AUTH-RESP-CODE),
// RFC 5034 (AUTH with PLAIN, LOGIN and XOAUTH2) and RFC 2595 (STLS). It
// listens on 127.0.0.1 on a random port, keeps one mailbox per user, takes a
// per-user lock for the length of a session like real servers do, and applies
// DELE only when a session ends with QUIT. Options.Faults makes it misbehave
// in the ways real servers do, so clients can be tested against them.
//
// Replies are buffered and flushed when no further complete command is
// waiting in the input, so pipelined commands are answered in one write.
// A session that ends without QUIT (dropped connection, Close, a fault)
// applies no deletes and releases its mailbox lock as soon as the server
// notices, which may be a moment after the client has closed its end.
//
//	srv := pop3test.NewServer(pop3test.Options{Pipelining: true})
//	defer srv.Close()
//	srv.SetMailbox("alice", []pop3test.Message{{UID: "u1", Data: []byte("Subject: hi\n\nhello\n")}})
//	// dial srv.Addr, log in as alice / secret ...
//	left := srv.Messages("alice")
package pop3test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// Message is one message in a mailbox.
type Message struct {
	// UID is what UIDL reports. When empty, the server fills in the first
	// 16 hex digits of the SHA-256 of Data when the message is stored (as
	// servers that hash content do), so identical messages share a UID.
	UID string
	// Data is the message as stored. On the wire every bare LF becomes
	// CRLF, a CRLF is added when Data does not end in a line break, and
	// lines starting with "." are dot-stuffed; see Wire.
	Data []byte
	// ListSize, when positive, is the size LIST and STAT report instead
	// of the true one, as servers that count LF line endings or estimate
	// sizes do.
	ListSize int
}

// Wire returns the message as a client receives it after dot-unstuffing:
// Data with every bare LF turned into CRLF and a CRLF appended when Data
// does not end in a line break. Its length is the size LIST and STAT report.
func (m Message) Wire() []byte {
	out := make([]byte, 0, len(m.Data)+len(m.Data)/32+2)
	for i, b := range m.Data {
		if b == '\n' && (i == 0 || m.Data[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, b)
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// Options configures a Server. The zero value is a plain server with one user
// "alice" (password "secret"), USER/PASS login, UIDL and no SASL.
type Options struct {
	// Users maps user names to passwords for USER/PASS, AUTH PLAIN and
	// AUTH LOGIN. Nil means {"alice": "secret"}.
	Users map[string]string
	// Tokens maps user names to the bearer token AUTH XOAUTH2 accepts.
	// Nil means {"alice": "token"}.
	Tokens map[string]string
	// Pipelining advertises PIPELINING in CAPA. Pipelined commands are
	// handled correctly either way, as most real servers do.
	Pipelining bool
	// STLS offers STLS on a plain server, with a self-signed certificate
	// made at start (see Certificate, RootCAs and ClientTLSConfig).
	STLS bool
	// NoUIDL makes UIDL an unknown command, left out of CAPA.
	NoUIDL bool
	// NoUser makes USER and PASS unknown commands, left out of CAPA.
	NoUser bool
	// SASL lists the AUTH mechanisms offered and accepted: any of
	// "PLAIN", "LOGIN", "XOAUTH2". Nil offers none.
	SASL []string
	// NoCAPA makes the server answer CAPA and AUTH with a bare "-ERR",
	// as popa3d does: no capabilities, no response codes, no SASL.
	NoCAPA bool
	// Capabilities are extra CAPA lines ("LOGIN-DELAY 10").
	Capabilities []string
	// UTF8Substitute makes the server behave like Courier: it offers
	// "UTF8 USER" in CAPA, accepts the UTF8 command (RFC 6856) before
	// login, and to a session that did not send it answers RETR of any
	// message with a byte above 0x7F in its header with this text (sent
	// as a message, LF turned into CRLF) instead; LIST still reports the
	// original's size.
	UTF8Substitute []byte
	// Faults makes the server misbehave; see also Server.SetFaults.
	Faults Faults
}

// Faults makes the server misbehave like real servers do. The zero value is
// a well-behaved server. Faults are read when a connection is accepted, so
// Server.SetFaults affects the next connection, not live ones.
type Faults struct {
	// CutRetrAfter closes the connection once this many bytes of a RETR
	// body (after the +OK line, as sent: dot-stuffed, with the final
	// ".\r\n") have been written. No deletes are applied. 0 is off; a body
	// not longer than this is sent whole.
	CutRetrAfter int

	// GarbageOn names the reply that GarbageReply or LongReply replaces:
	// a command name such as "RETR" or "LIST" (any case), or "" or
	// "GREETING" for the greeting. A replaced command has no effect.
	GarbageOn string
	// GarbageReply is sent, followed by CRLF, instead of the whole reply
	// (status line and any multi-line body) to GarbageOn. "" is off.
	GarbageReply string
	// LongReply, when positive, replaces the reply to GarbageOn with a
	// status line "+OK xxx..." of exactly this many bytes before its
	// CRLF. It wins over GarbageReply.
	LongReply int

	// SlowReply is slept before every reply, the greeting and SASL
	// continuations included. Close interrupts it.
	SlowReply time.Duration

	// BrokenPipelining makes the server read commands the way broken
	// servers do: one command per network read, discarding whatever else
	// that read returned. Replies are flushed one by one. Combine it with
	// Options.Pipelining to advertise what the server cannot do.
	BrokenPipelining bool

	// LoginError, when set, is the answer to every PASS and every final
	// AUTH step, right or wrong credentials alike: "-ERR " + LoginError,
	// e.g. "[IN-USE] mailbox locked", "[LOGIN-DELAY] 300",
	// "[SYS/TEMP] try later", "[AUTH] bad password", "[SYS/PERM] gone".
	LoginError string
	// GreetingError, when set, replaces the greeting with
	// "-ERR " + GreetingError (e.g. "[SYS/TEMP] overloaded"), after which
	// the server closes the connection.
	GreetingError string
	// RetrError, when set, is the answer to every RETR: "-ERR " + RetrError.
	RetrError string

	// Hook, when set, sees every command line (without CRLF; not SASL
	// continuation lines) before the server does, with the logged-in
	// user or "" before login. If it returns handled, reply is written
	// verbatim (include the CRLFs, and the body and ".\r\n" of a
	// multi-line reply) instead of the server's own answer, and the
	// command has no other effect; handled with reply "" closes the
	// connection without a reply and without applying deletes. It is
	// called from connection goroutines, possibly concurrently.
	Hook func(user, line string) (reply string, handled bool)
}

// Line is one line the server received from a client.
type Line struct {
	Conn int    // connection number, counting from 1 in order of accept
	TLS  bool   // whether the line came over TLS
	Text string // the line without its line break, secrets as sent
}

// Server is a running POP3 server. Its methods are safe for concurrent use.
type Server struct {
	// Addr is the listening address, "127.0.0.1:port".
	Addr string

	opts        Options // fixed after start, Faults excepted
	ln          net.Listener
	implicitTLS bool
	tlsConfig   *tls.Config // server side; nil without TLS
	cert        *x509.Certificate
	done        chan struct{} // closed by Close
	wg          sync.WaitGroup

	mu     sync.Mutex
	faults Faults
	boxes  map[string][]stored
	nextID uint64
	locked map[string]bool
	conns  map[net.Conn]struct{}
	nconn  int
	log    []Line
	closed bool
}

// stored is a message in a mailbox with an identity that survives other
// messages being added or removed, so a session's deletes hit the right ones.
type stored struct {
	id   uint64
	msg  Message
	wire []byte // msg.Wire()
}

// listSize is the size LIST and STAT report.
func (st stored) listSize() int {
	if st.msg.ListSize > 0 {
		return st.msg.ListSize
	}
	return len(st.wire)
}

// NewServer starts a plain TCP server on 127.0.0.1 with a random port. It
// panics if it cannot listen. Call Close when done.
func NewServer(opts Options) *Server {
	return start(opts, false)
}

// NewTLSServer starts a server that speaks TLS from the first byte (implicit
// TLS, as on port 995) with a self-signed certificate valid for 127.0.0.1,
// ::1 and "localhost". Clients verify it with RootCAs or ClientTLSConfig.
func NewTLSServer(opts Options) *Server {
	return start(opts, true)
}

func start(opts Options, implicitTLS bool) *Server {
	if opts.Users == nil {
		opts.Users = map[string]string{"alice": "secret"}
	} else {
		opts.Users = copyMap(opts.Users)
	}
	if opts.Tokens == nil {
		opts.Tokens = map[string]string{"alice": "token"}
	} else {
		opts.Tokens = copyMap(opts.Tokens)
	}
	mechs := make([]string, len(opts.SASL))
	for i, m := range opts.SASL {
		mechs[i] = strings.ToUpper(m)
	}
	opts.SASL = mechs

	s := &Server{
		opts:        opts,
		implicitTLS: implicitTLS,
		done:        make(chan struct{}),
		faults:      opts.Faults,
		boxes:       make(map[string][]stored),
		locked:      make(map[string]bool),
		conns:       make(map[net.Conn]struct{}),
	}
	if implicitTLS || opts.STLS {
		cert, leaf, err := selfSigned()
		if err != nil {
			panic("pop3test: making a certificate: " + err.Error())
		}
		s.cert = leaf
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("pop3test: failed to listen: " + err.Error())
	}
	s.ln = ln
	s.Addr = ln.Addr().String()
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.nconn++
		id := s.nconn
		f := s.faults
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn, id, f)
	}
}

// Close stops the listener, closes every live connection (their deletes are
// not applied) and waits for all goroutines to finish. It may be called more
// than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return
	}
	s.closed = true
	close(s.done)
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// SetFaults replaces Options.Faults for connections accepted from now on.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// SetMailbox replaces the messages of user. Sessions already logged in keep
// the view they had at login, as on real servers.
func (s *Server) SetMailbox(user string, msgs []Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.boxes[user] = nil
	s.addLocked(user, msgs)
}

// AddMessages appends messages to user's mailbox. Sessions already logged
// in do not see them; the next session does.
func (s *Server) AddMessages(user string, msgs ...Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addLocked(user, msgs)
}

func (s *Server) addLocked(user string, msgs []Message) {
	for _, m := range msgs {
		m.Data = slices.Clone(m.Data)
		if m.UID == "" {
			sum := sha256.Sum256(m.Data)
			m.UID = hex.EncodeToString(sum[:8])
		}
		s.nextID++
		s.boxes[user] = append(s.boxes[user], stored{id: s.nextID, msg: m, wire: m.Wire()})
	}
}

// Messages returns a copy of user's committed mailbox: what a new session
// would see, after the deletes of every session that ended with QUIT.
func (s *Server) Messages(user string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	box := s.boxes[user]
	out := make([]Message, len(box))
	for i, st := range box {
		out[i] = Message{UID: st.msg.UID, Data: slices.Clone(st.msg.Data), ListSize: st.msg.ListSize}
	}
	return out
}

// Transcript returns every line received from clients so far, SASL
// continuation lines included, in the order the server read them. Commands
// that BrokenPipelining discarded are not in it.
func (s *Server) Transcript() []Line {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// Log returns the Text of every line in Transcript.
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.log))
	for i, l := range s.log {
		out[i] = l.Text
	}
	return out
}

// Certificate returns the server's self-signed certificate, or nil when the
// server has no TLS (neither NewTLSServer nor Options.STLS).
func (s *Server) Certificate() *x509.Certificate {
	return s.cert
}

// RootCAs returns a pool holding only the server's certificate, for a client
// to verify the server with; nil when the server has no TLS.
func (s *Server) RootCAs() *x509.CertPool {
	if s.cert == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.cert)
	return pool
}

// ClientTLSConfig returns a client configuration that trusts only this
// server's certificate, with ServerName "127.0.0.1"; nil when the server has
// no TLS.
func (s *Server) ClientTLSConfig() *tls.Config {
	if s.cert == nil {
		return nil
	}
	return &tls.Config{RootCAs: s.RootCAs(), ServerName: "127.0.0.1"}
}

// lock takes user's mailbox lock; false if another session holds it.
func (s *Server) lock(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked[user] {
		return false
	}
	s.locked[user] = true
	return true
}

func (s *Server) unlock(user string) {
	s.mu.Lock()
	delete(s.locked, user)
	s.mu.Unlock()
}

// snapshot returns user's mailbox as a session sees it at login.
func (s *Server) snapshot(user string) []stored {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.boxes[user])
}

// expunge removes the messages with the given ids from user's mailbox and
// returns how many messages are left.
func (s *Server) expunge(user string, ids map[uint64]bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	box := slices.DeleteFunc(s.boxes[user], func(st stored) bool { return ids[st.id] })
	s.boxes[user] = box
	return len(box)
}

func (s *Server) record(conn int, tls bool, text string) {
	s.mu.Lock()
	s.log = append(s.log, Line{Conn: conn, TLS: tls, Text: text})
	s.mu.Unlock()
}

func (s *Server) forget(conn net.Conn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
}

// pause sleeps for d, or until the server is closed.
func (s *Server) pause(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
	}
}

// selfSigned makes a certificate for 127.0.0.1, ::1 and localhost that is its
// own root.
func selfSigned() (tls.Certificate, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pop3test", Organization: []string{"pop3test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("parsing own certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, nil
}
