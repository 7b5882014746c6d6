//go:build unix

// Package postfixtest starts a real, private Postfix SMTP server for Go
// tests and reads back what it delivered.
//
// Start writes a complete main.cf and master.cf into a temp dir (of
// /etc/postfix only Postfix's compiled-in meta_directory files, such as
// dynamicmaps.cf, are read), makes a queue_directory, a data_directory, a
// Maildir and a throw-away CA and server certificate there, runs Postfix's
// master daemon in the foreground as a child process ("master -c CONFDIR
// -d", in its own process group), waits until both ports greet "220" and
// kills the whole process group (and waits for it) in t.Cleanup. A system
// Postfix is neither used nor touched: it may be running or not, on port 25
// or not. Start takes about 65ms (most of it the first two smtpd processes
// starting); delivery, from the client's "250" after DATA to the file in the
// Maildir, about 3ms (10-20ms for the first message, which starts cleanup,
// trivial-rewrite and virtual); Close about 10ms. TestDeliveryLatency logs
// the figures.
//
// # What the server offers
//
//   - plain SMTP on Server.Addr, offering STARTTLS (smtpd_tls_security_level
//     = may), and implicit TLS on Server.TLSAddr (smtpd_tls_wrappermode, as
//     on port 465); TLS 1.2 and later, with an ECDSA certificate for
//     "localhost", 127.0.0.1 and Server.Host signed by a CA made at test time
//     (Server.CAFile, Server.RootCAs, Server.TLSConfig); no TLS session
//     tickets (see "Settings" below);
//   - no AUTH (no SASL is configured); clients in mynetworks = 127.0.0.0/8
//     may relay, so every loopback client can send to any address;
//   - delivery of every accepted recipient, at Domain or at any other domain,
//     by virtual(8) into one Maildir (Server.Maildir) as the system user
//     "mail": Domain is a virtual_mailbox_domain, and default_transport =
//     virtual makes relayed mail land in the same Maildir instead of leaving
//     the machine. Server.Messages picks a recipient's copies by the
//     Delivered-To field virtual(8) prepends (one file per recipient).
//     Delivery is asynchronous: use Server.WaitMessages, and
//     Server.WaitQueueEmpty before asserting that something did not arrive;
//   - EHLO keywords (Postfix 3.7.11, Debian 12): PIPELINING, SIZE 10240000,
//     VRFY, ETRN, STARTTLS (plain port, before STARTTLS), ENHANCEDSTATUSCODES,
//     8BITMIME, DSN, SMTPUTF8, CHUNKING. Options can remove 8BITMIME,
//     SMTPUTF8 and others, change SIZE and make RCPT fail with 4xx or 5xx.
//
// # What Postfix stores (Postfix 3.7.11; TestStoredBytes checks all of it)
//
// A stored file starts with four trace header fields, in this order (the
// first three from virtual(8), Received from smtpd(8), 3 or 4 lines):
//
//	Return-Path: <sender@example.org>
//	X-Original-To: bob@pophook.test
//	Delivered-To: bob@pophook.test
//	Received: from client.example (unknown [127.0.0.1])
//		by localhost (Postfix) with ESMTP id 7E6789881AF
//		for <bob@pophook.test>; Thu,  3 Dec 2026 12:42:43 +0000 (UTC)
//
// Return-Path holds the envelope sender ("<>" for a null one), X-Original-To
// and Delivered-To the recipient as given at RCPT TO. "with" says ESMTP,
// ESMTPS (TLS), UTF8SMTP or UTF8SMTPS (SMTPUTF8 given at MAIL; net/smtp gives
// it whenever the server offers it). The "for <recipient>" part is there
// only when the message had exactly one recipient; otherwise the date
// follows the queue ID after ";". SplitTrace and StripTrace remove exactly
// these four fields.
//
// The rest is the message as the client sent it, after SMTP dot-unstuffing,
// with these differences:
//
//   - Line endings are LF: each CRLF becomes LF. A bare LF also ends a line
//     (Debian 12's Postfix has smtpd_forbid_bare_newline = no, and "\n.\n"
//     ends DATA). A bare CR inside a line becomes a space, in the header
//     and in the body; CRs right before the line ending are dropped. The file
//     always ends with LF: SMTP cannot carry a message without a final line
//     break (clients add CRLF before the final ".").
//   - The top-level header loses every Return-Path, Bcc, Resent-Bcc and
//     Content-Length field (cleanup(8) does this to all mail; nothing turns it
//     off). The same fields in MIME part headers stay.
//   - A header that ends without a blank line (the next line is not a header
//     field) gets one inserted, and a message whose first line is not a header
//     field (a body line, a line starting with white space) gets an empty line
//     in front, so all of it is body. A first line "From ..." (mbox separator)
//     becomes a field "X-Mailbox-Line: From ...". A NUL byte cuts the rest of
//     its header line (it stays in the body). A header field longer than
//     header_size_limit (102400 octets) is cut there.
//   - Nothing else changes: no Date, Message-ID, From or To is added
//     (local_header_rewrite_clients is empty, so the loopback client counts as
//     remote), no header address is rewritten, header order and folding stay,
//     and so do lines of any length (a 100000-octet body line, a 5000-octet
//     header line), raw 8-bit and UTF-8 bytes in header and body (whether or
//     not BODY=8BITMIME or SMTPUTF8 was given or offered), an empty message,
//     and a Delivered-To field already in the message, even for the same
//     recipient (virtual(8), unlike local(8), has no loop detection; Messages
//     goes by the first Delivered-To, which is Postfix's).
//
// So a sink's test can compare, byte for byte, StripTrace(stored) with the
// message it relayed after CRLF -> LF, minus the four deleted header fields.
//
// # Users and permissions
//
// Postfix's master runs only as root, so Start skips the test when not run
// as root (CI runs as root; locally, "sudo -E go test"). The daemons run as
// "postfix" (mail_owner, with setgid_group "postdrop"; both made by the
// postfix package) and virtual(8) writes the Maildir as "mail" (Debian's
// base-passwd), so the temp dir and its parent are made traversable (0711).
//
// The temp dir is t.TempDir, unless its path cannot be written into main.cf
// unquoted ('$', ',', white space, braces...); then it is a fresh directory
// under /tmp, removed in t.Cleanup. Postfix's sockets use paths relative to
// the queue directory, so the path may be long.
//
// # Address
//
// Postfix listens on 127.0.0.2 (127.0.0.1 where that cannot be bound):
// clients connecting there get source address 127.0.0.1, and as outgoing
// connections take their local ports on 127.0.0.1, a port picked free on
// 127.0.0.2 is less likely to be taken before Postfix binds it (Start
// retries with new ports if it is). Unlike Dovecot, Postfix gives loopback
// clients nothing special beyond mynetworks (set explicitly) and
// local_header_rewrite_clients (emptied). Dial Server.Addr or
// Server.TLSAddr, never a hard-coded address. inet_interfaces is
// loopback-only: Postfix accepts only addresses of network interfaces there,
// and 127.0.0.2 is none; master.cf names the listening addresses.
//
// # Settings that differ from Postfix's defaults, for speed
//
// main.cf, master.cf and the recipient table get a modification time in the
// past: Postfix rereads a file changed within the last second every 300ms
// until it is not, which made master and each smtpd wait over a second. No
// TLS session tickets (tls_ssl_options = NO_TICKET, and NumTickets = 0 in an
// openssl.cnf passed in OPENSSL_CONF): an smtpd that sends tickets after the
// handshake has its first reply held back by Nagle's algorithm until the
// client's delayed ACK, 40ms on every TLS connection. (A TLS 1.2 client on
// the implicit-TLS port still waits those 40ms for the greeting: the
// server's last handshake message is then still unacknowledged. Go's
// default is TLS 1.3.) A connection made while earlier ones are still open
// waits 10-15ms for master to start another smtpd; one made after the last
// closed reuses the idle smtpd. Also in_flow_delay = 0
// (otherwise a burst of messages is slowed down by up to 1s per message),
// smtpd_error_sleep_time = 0, smtpd_peername_lookup = no (the client is
// "unknown[127.0.0.1]"; no DNS), no pickup(8). Logging goes to
// Server.LogFile (maillog_file, through postlogd), tailed on failure; errors
// master meets before it has read maillog_file go to syslog only, so then
// Start shows what "postconf -n" warns about instead.
//
// # When Postfix is missing
//
// Start skips the test, saying how to install Postfix (InstallHint) or that
// root is needed; with CI=true in the environment it fails the test instead,
// because a skipped Postfix test in CI hides a missing package.
package postfixtest

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is how to install what Start needs on Debian and Ubuntu. The
// debconf answer keeps the package from writing /etc/postfix/main.cf and so
// from starting a system Postfix on port 25; Start does not need one.
const InstallHint = `echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends postfix`

// Domain is the test domain, a virtual_mailbox_domain. Addresses at any
// other domain are delivered into the same Maildir too (see the package
// doc); Domain only matters to a client outside mynetworks, which the tests
// never are.
const Domain = "pophook.test"

// Replies Postfix gives at RCPT for Options.RejectRecipients and
// Options.DeferRecipients (Postfix inserts "<address>: Recipient address
// rejected: " after the enhanced status code).
const (
	RejectReply = "550 5.1.1 User unknown (postfixtest reject)"
	DeferReply  = "450 4.2.1 Mailbox temporarily unavailable (postfixtest defer)"
)

// Options configure a server started by Start. The zero value is a server
// advertising 8BITMIME and SMTPUTF8 with Postfix's default size limit that
// accepts every recipient.
type Options struct {
	// Disable8BITMIME stops advertising 8BITMIME (smtpd_discard_ehlo_keywords).
	// Postfix has no way to refuse 8-bit mail: MAIL FROM with BODY=8BITMIME
	// is still accepted, and 8-bit data is stored unchanged.
	Disable8BITMIME bool

	// DisableSMTPUTF8 sets smtputf8_enable = no: SMTPUTF8 is not advertised
	// and MAIL FROM with the SMTPUTF8 parameter is refused ("555 5.5.4
	// Unsupported option: SMTPUTF8"). UTF-8 in addresses without that
	// parameter is still accepted (it is with SMTPUTF8 enabled, too).
	DisableSMTPUTF8 bool

	// DiscardEHLOKeywords are more EHLO keywords not to advertise
	// (smtpd_discard_ehlo_keywords), lower case. What happens when a client
	// uses them anyway (Postfix 3.7.11): STARTTLS gets "502 5.5.1 Error:
	// command not implemented", BDAT (chunking) "521 5.5.1", RET= or NOTIFY=
	// (dsn) "501 5.7.1 DSN support is disabled"; SIZE= (size) and
	// pipelining keep working.
	DiscardEHLOKeywords []string

	// MessageSizeLimit is message_size_limit in octets, advertised as SIZE.
	// A larger message gets "552 5.3.4 Error: message file too big" at the
	// end of DATA, MAIL FROM with a larger SIZE= "552 5.3.4 Message size
	// exceeds fixed limit" (and Postfix 3.7 then gives the next MAIL FROM of
	// the session the same reply, even without SIZE=, until RSET). 0 keeps
	// Postfix's 10240000; negative means no limit (message_size_limit = 0).
	// smtpd refuses mail ("452 4.3.1 Insufficient system storage") when the
	// queue's file system has less than 1.5 times the limit free.
	MessageSizeLimit int64

	// RejectRecipients get RejectReply (5xx) at RCPT TO, DeferRecipients
	// get DeferReply (4xx). RecipientReplies maps an address to any reply
	// "NNN X.Y.Z text" (or another Postfix access(5) action). Matching is on
	// the whole address, case-insensitive. Addresses must not contain white
	// space or control characters.
	RejectRecipients []string
	DeferRecipients  []string
	RecipientReplies map[string]string

	// ExtraConfig is appended to main.cf; a parameter given again overrides
	// the generated one (Postfix uses the last).
	ExtraConfig string
}

// Server is a running private Postfix.
type Server struct {
	Host       string // loopback address Postfix listens on: "127.0.0.2", or "127.0.0.1"
	Port       int    // plain SMTP port offering STARTTLS
	TLSPort    int    // implicit-TLS port (smtpd_tls_wrappermode)
	ServerName string // DNS name in the certificate and myhostname: "localhost"
	RootCAs    *x509.CertPool

	Dir     string // the temp dir holding config, queue, certificates, log and mail
	LogFile string // Postfix's log (maillog_file)

	caFile string
	proc   *process
}

// Addr returns the host:port of the plain SMTP port (with STARTTLS).
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// TLSAddr returns the host:port of the implicit-TLS SMTP port.
func (s *Server) TLSAddr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.TLSPort)) }

// CAFile returns the path of the PEM file of the CA that signed the server
// certificate.
func (s *Server) CAFile() string { return s.caFile }

// TLSConfig returns a fresh client configuration that verifies the server
// against RootCAs and ServerName.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.RootCAs, ServerName: s.ServerName, MinVersion: tls.VersionTLS12}
}

// Maildir returns the Maildir (holding cur, new and tmp) every message is
// delivered into.
func (s *Server) Maildir() string { return filepath.Join(s.Dir, "mail", "Maildir") }

// Close kills Postfix and all its processes now and waits for them (about
// 10ms). Mail not yet delivered stays undelivered. The test's cleanup
// calls Close too (and reports a failure to stop); later calls do nothing
// and return the first call's result. Messages can still be read after
// Close.
func (s *Server) Close() error { return s.proc.stop() }

// Start launches a private Postfix for the test and stops it in t.Cleanup.
//
// When Postfix is not installed, or the test does not run as root, it skips
// the test saying so; when the environment has CI=true it fails the test
// instead (a skip in CI is a failure).
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	return start(t, opts, freePorts)
}

// start is Start with the port picker as a parameter, for tests.
func start(t testing.TB, opts Options, pickPorts func(host string) (int, int, error)) *Server {
	t.Helper()
	bins, err := findPostfix(exec.LookPath, fileExists)
	if err != nil {
		unavailable(t, isCI(), err.Error()+"; install it with: "+InstallHint)
		return nil // not reached: Skip and Fatal stop the test
	}
	if os.Geteuid() != 0 {
		unavailable(t, isCI(), "Postfix's master daemon runs only as root; run the test as root (e.g. sudo -E go test)")
		return nil
	}
	id, err := lookupIdentity()
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	access, err := accessTable(opts)
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	for _, k := range opts.DiscardEHLOKeywords {
		if k == "" || strings.Trim(strings.ToLower(k), "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			t.Fatalf("postfixtest: EHLO keyword %q (Options.DiscardEHLOKeywords) is not a keyword", k)
		}
	}

	s := &Server{ServerName: "localhost", Dir: t.TempDir()}
	// main.cf has no quoting: use a plain directory when needed.
	if !plainPath(s.Dir) {
		dir, err := os.MkdirTemp("/tmp", "postfixtest")
		if err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		t.Cleanup(func() {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("postfixtest: %v", err)
			}
		})
		s.Dir = dir
	}
	s.LogFile = filepath.Join(s.Dir, "maillog")
	s.Host = "127.0.0.2"
	if l, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		s.Host = "127.0.0.1"
	} else {
		l.Close()
	}

	// t.TempDir makes its parent 0700, MkdirTemp the dir itself: "mail"
	// (virtual) and "postfix" must get through both.
	for _, d := range []string{filepath.Dir(s.Dir), s.Dir} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 != 0 {
			continue
		}
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
	}
	if d := untraversable(s.Dir); d != "" {
		t.Fatalf("postfixtest: %s is not searchable by others, so Postfix's users cannot reach %s; point TMPDIR elsewhere (e.g. /tmp)", d, s.Dir)
	}
	if err := s.makeDirs(id); err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	if err := s.writeCerts(); err != nil {
		t.Fatalf("postfixtest: certificates: %v", err)
	}
	if err := writeConf(filepath.Join(s.Dir, "conf", "recipient_access"), access); err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	if err := writeConf(filepath.Join(s.Dir, "conf", "openssl.cnf"), opensslConf); err != nil {
		t.Fatalf("postfixtest: %v", err)
	}

	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.Port, s.TLSPort, err = pickPorts(s.Host)
		if err != nil {
			t.Fatalf("postfixtest: picking ports: %v", err)
		}
		if err := writeConf(filepath.Join(s.Dir, "conf", "main.cf"), s.mainCF(id, opts)); err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		if err := writeConf(filepath.Join(s.Dir, "conf", "master.cf"), s.masterCF()); err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		proc, err := s.launch(bins.master)
		if err == nil {
			s.proc = proc
			t.Cleanup(func() {
				if err := proc.stop(); err != nil {
					t.Errorf("postfixtest: stopping postfix: %v", err)
				}
				if t.Failed() {
					t.Logf("postfixtest: tail of %s:\n%s", s.LogFile, tail(s.LogFile, 40))
				}
			})
			return s
		}
		logTail := tail(s.LogFile, 30)
		errTail := tail(proc.stderrPath, 10)
		// master reports a port taken by someone else to syslog only; its
		// own sockets are gone once it is, so a port that cannot be bound
		// now is someone else's.
		if taken := portsTaken(s.Host, s.Port, s.TLSPort); attempt < attempts && (taken || strings.Contains(logTail+errTail, "Address already in use")) {
			os.Truncate(s.LogFile, 0)
			continue
		}
		if strings.TrimSpace(logTail) == "" || strings.HasPrefix(logTail, "(") {
			// master logs what goes wrong before it has read maillog_file
			// (a bad parameter value, for instance) to syslog only.
			logTail += "(master logs errors it meets before it has set up maillog_file to syslog only; postconf -n says:)\n" + postconfCheck(filepath.Join(s.Dir, "conf"))
		}
		t.Fatalf("postfixtest: starting %s -c %s -d: %v\n--- %s (tail):\n%s--- master stderr (tail):\n%s",
			bins.master, filepath.Join(s.Dir, "conf"), err, s.LogFile, logTail, errTail)
	}
}

// writeConf writes a configuration file or table with a modification time
// in the past. Postfix reads main.cf and texthash tables with
// dict_load_file, which, while a file's mtime is within the last second,
// sleeps 300ms and reads it again ("let it cool down"): without this, master
// and every smtpd would spend up to 1.5s each waiting for files written
// just now.
func writeConf(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return err
	}
	past := time.Now().Add(-time.Hour)
	return os.Chtimes(path, past, past)
}

// postconfCheck returns what "postconf -c DIR -n" writes to stderr
// (warnings about unknown or malformed parameters), for a master that died
// without a word in its log.
func postconfCheck(confDir string) string {
	pc, err := exec.LookPath("postconf")
	if err != nil {
		pc = "/usr/sbin/postconf"
	}
	cmd := exec.Command(pc, "-c", confDir, "-n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(&stderr, "(%s: %v)\n", pc, err)
	}
	if stderr.Len() == 0 {
		return "(no warnings)\n"
	}
	return stderr.String()
}

// unavailable skips the test, or fails it when ci is set.
func unavailable(t testing.TB, ci bool, reason string) {
	t.Helper()
	msg := "postfixtest: " + reason
	if ci {
		t.Fatal(msg + " (CI=true: a skipped Postfix test counts as a failure)")
		return
	}
	t.Skip(msg)
}

func isCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

type binaries struct {
	master string // the master daemon; the other daemons are next to it
}

// findPostfix returns Postfix's master daemon, and an error when it or a
// daemon Start needs is missing. Debian puts the daemons in
// /usr/lib/postfix/sbin, other systems in /usr/libexec/postfix; elsewhere
// postconf (which takes 10ms to ask) says where.
func findPostfix(lookPath func(string) (string, error), exists func(string) bool) (binaries, error) {
	dirs := []string{"/usr/lib/postfix/sbin", "/usr/libexec/postfix", "/usr/local/libexec/postfix"}
	dir := ""
	for _, d := range dirs {
		if exists(filepath.Join(d, "master")) {
			dir = d
			break
		}
	}
	if dir == "" {
		if pc, err := lookPath("postconf"); err == nil {
			if out, err := exec.Command(pc, "-d", "-h", "daemon_directory").Output(); err == nil {
				if d := strings.TrimSpace(string(out)); d != "" && exists(filepath.Join(d, "master")) {
					dir = d
				}
			}
		}
	}
	if dir == "" {
		return binaries{}, fmt.Errorf("postfix is not installed (no master daemon in %s, and no postconf saying where)", strings.Join(dirs, ", "))
	}
	for _, daemon := range []string{"smtpd", "cleanup", "qmgr", "trivial-rewrite", "virtual", "postlogd", "bounce", "tlsmgr"} {
		if !exists(filepath.Join(dir, daemon)) {
			return binaries{}, fmt.Errorf("postfix is incomplete: master is in %s but %s is not", dir, daemon)
		}
	}
	return binaries{master: filepath.Join(dir, "master")}, nil
}

type identity struct {
	mailOwner        string // runs the daemons
	setgidGroup      string
	mailUID, mailGID int // virtual(8) writes the Maildir as this user
	ownerUID         int
	setgidGID        int
	mailUser         string
}

func lookupIdentity() (identity, error) {
	id := identity{mailOwner: "postfix", setgidGroup: "postdrop", mailUser: "mail"}
	u, err := user.Lookup(id.mailOwner)
	if err != nil {
		return id, fmt.Errorf("system user %q missing (it comes with the postfix package: %s): %v", id.mailOwner, InstallHint, err)
	}
	if id.ownerUID, err = strconv.Atoi(u.Uid); err != nil {
		return id, err
	}
	g, err := user.LookupGroup(id.setgidGroup)
	if err != nil {
		return id, fmt.Errorf("system group %q missing (it comes with the postfix package): %v", id.setgidGroup, err)
	}
	if id.setgidGID, err = strconv.Atoi(g.Gid); err != nil {
		return id, err
	}
	m, err := user.Lookup(id.mailUser)
	if err != nil {
		return id, fmt.Errorf("system user %q missing: %v", id.mailUser, err)
	}
	if id.mailUID, err = strconv.Atoi(m.Uid); err != nil {
		return id, err
	}
	if id.mailGID, err = strconv.Atoi(m.Gid); err != nil {
		return id, err
	}
	if id.mailUID == 0 || id.mailGID == 0 {
		return id, fmt.Errorf("system user %q is root", id.mailUser)
	}
	return id, nil
}

// makeDirs makes conf, data, queue (with the subdirectories and owners
// "postfix set-permissions" would give them) and the Maildir.
func (s *Server) makeDirs(id identity) error {
	type dir struct {
		path     string
		uid, gid int
		mode     fs.FileMode
	}
	q := filepath.Join(s.Dir, "queue")
	dirs := []dir{
		{filepath.Join(s.Dir, "conf"), 0, 0, 0o755},
		{filepath.Join(s.Dir, "data"), id.ownerUID, 0, 0o700},
		{q, 0, 0, 0o755},
		{filepath.Join(q, "pid"), 0, 0, 0o755},
		{filepath.Join(q, "maildrop"), id.ownerUID, id.setgidGID, 0o730},
		{filepath.Join(q, "public"), id.ownerUID, id.setgidGID, 0o710},
	}
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		dirs = append(dirs, dir{filepath.Join(q, d), id.ownerUID, 0, 0o700})
	}
	md := s.Maildir()
	for _, d := range []string{filepath.Dir(md), md, filepath.Join(md, "tmp"), filepath.Join(md, "new"), filepath.Join(md, "cur")} {
		dirs = append(dirs, dir{d, id.mailUID, id.mailGID, 0o700})
	}
	for _, d := range dirs {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // umask
			return err
		}
		if err := os.Lchown(d.path, d.uid, d.gid); err != nil {
			return err
		}
	}
	return nil
}

// accessTable returns the texthash check_recipient_access table.
func accessTable(opts Options) (string, error) {
	entries := map[string]string{}
	add := func(addr, action string) error {
		if addr == "" || strings.HasPrefix(addr, "#") || strings.ContainsFunc(addr, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fmt.Errorf("recipient %q cannot be put in an access table (empty, white space, control characters or leading #)", addr)
		}
		if strings.ContainsAny(action, "\r\n") || strings.TrimSpace(action) == "" {
			return fmt.Errorf("reply %q for %q must be one non-empty line", action, addr)
		}
		entries[strings.ToLower(addr)] = action
		return nil
	}
	for _, a := range opts.RejectRecipients {
		if err := add(a, RejectReply); err != nil {
			return "", err
		}
	}
	for _, a := range opts.DeferRecipients {
		if err := add(a, DeferReply); err != nil {
			return "", err
		}
	}
	for a, r := range opts.RecipientReplies {
		if err := add(a, r); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	b.WriteString("# check_recipient_access table written by postfixtest\n")
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s\n", k, entries[k])
	}
	return b.String(), nil
}

func (s *Server) mainCF(id identity, opts Options) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	conf := filepath.Join(s.Dir, "conf")
	w("# Written by github.com/pophook/pophook/internal/testutil/postfixtest for one test.")
	w("compatibility_level = 3.6")
	w("queue_directory = %s", filepath.Join(s.Dir, "queue"))
	w("data_directory = %s", filepath.Join(s.Dir, "data"))
	w("mail_owner = %s", id.mailOwner)
	w("setgid_group = %s", id.setgidGroup)
	w("maillog_file = %s", s.LogFile)
	w("maillog_file_prefixes = %s", s.Dir)
	w("syslog_name = postfix")
	w("")
	w("myhostname = %s", s.ServerName)
	w("mydomain = localdomain")
	w("myorigin = $myhostname")
	w("mydestination =")
	// Only addresses of network interfaces are allowed here, and 127.0.0.2
	// is not one (lo has 127.0.0.1/8): master.cf names the listening
	// addresses instead.
	w("inet_interfaces = loopback-only")
	w("inet_protocols = ipv4")
	w("mynetworks = 127.0.0.0/8")
	w("alias_maps =")
	w("alias_database =")
	w("local_recipient_maps =")
	w("local_header_rewrite_clients =")
	w("biff = no")
	w("")
	w("# Everything goes into one Maildir, owned by %q.", id.mailUser)
	w("virtual_mailbox_domains = %s", Domain)
	w("virtual_mailbox_base = %s", filepath.Join(s.Dir, "mail"))
	w("virtual_mailbox_maps = static:Maildir/")
	w("virtual_uid_maps = static:%d", id.mailUID)
	w("virtual_gid_maps = static:%d", id.mailGID)
	w("virtual_minimum_uid = %d", id.mailUID)
	w("virtual_mailbox_limit = 0")
	w("default_transport = virtual")
	w("relay_transport = virtual")
	w("")
	w("smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination")
	w("smtpd_recipient_restrictions = check_recipient_access texthash:%s", filepath.Join(conf, "recipient_access"))
	w("smtpd_peername_lookup = no")
	w("smtpd_error_sleep_time = 0")
	w("in_flow_delay = 0")
	switch {
	case opts.MessageSizeLimit > 0:
		w("message_size_limit = %d", opts.MessageSizeLimit)
	case opts.MessageSizeLimit < 0:
		w("message_size_limit = 0")
	}
	w("smtputf8_enable = %s", yesNo(!opts.DisableSMTPUTF8))
	discard := append([]string(nil), opts.DiscardEHLOKeywords...)
	if opts.Disable8BITMIME {
		discard = append(discard, "8bitmime")
	}
	if len(discard) > 0 {
		w("smtpd_discard_ehlo_keywords = silent-discard, %s", strings.Join(discard, ", "))
	}
	w("")
	w("smtpd_tls_security_level = may")
	w("smtpd_tls_chain_files = %s, %s", filepath.Join(conf, "key.pem"), filepath.Join(conf, "cert.pem"))
	w("smtpd_tls_protocols = >=TLSv1.2")
	w("smtpd_tls_mandatory_protocols = >=TLSv1.2")
	w("smtpd_tls_loglevel = 1")
	// No TLS session tickets: an smtpd that sends them right after the
	// handshake and then its first reply in a second small write has that
	// reply held back by Nagle's algorithm until the client's delayed ACK,
	// 40ms on Linux, on every TLS connection. tls_ssl_options stops
	// Postfix from asking for one ticket itself, NumTickets = 0 in
	// openssl.cnf stops OpenSSL's default of two (Postfix 3.7 has no
	// setting for it). Both ports are then ready for the client within
	// about 2ms of the handshake.
	w("tls_ssl_options = NO_TICKET")
	w("import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME OPENSSL_CONF=%s", filepath.Join(conf, "openssl.cnf"))
	if opts.ExtraConfig != "" {
		w("")
		w("# Options.ExtraConfig")
		w("%s", opts.ExtraConfig)
	}
	return b.String()
}

// opensslConf is the OpenSSL configuration the daemons get (see mainCF):
// OpenSSL's defaults apart from TLS 1.3 session tickets.
const opensslConf = `# Written by postfixtest: no TLS 1.3 session tickets (see main.cf).
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
NumTickets = 0
`

func (s *Server) masterCF() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# Written by github.com/pophook/pophook/internal/testutil/postfixtest for one test.")
	w("# service type  private unpriv  chroot  wakeup  maxproc command")
	w("%s inet n - n - - smtpd", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
	w("%s inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt", net.JoinHostPort(s.Host, strconv.Itoa(s.TLSPort)))
	for _, l := range []string{
		"cleanup   unix  n  -  n  -     0  cleanup",
		"qmgr      unix  n  -  n  300   1  qmgr",
		"tlsmgr    unix  -  -  n  1000? 1  tlsmgr",
		"rewrite   unix  -  -  n  -     -  trivial-rewrite",
		"bounce    unix  -  -  n  -     0  bounce",
		"defer     unix  -  -  n  -     0  bounce",
		"trace     unix  -  -  n  -     0  bounce",
		"verify    unix  -  -  n  -     1  verify",
		"flush     unix  n  -  n  1000? 0  flush",
		"proxymap  unix  -  -  n  -     -  proxymap",
		"proxywrite unix -  -  n  -     1  proxymap",
		"showq     unix  n  -  n  -     -  showq",
		"error     unix  -  -  n  -     -  error",
		"retry     unix  -  -  n  -     -  error",
		"discard   unix  -  -  n  -     -  discard",
		"anvil     unix  -  -  n  -     1  anvil",
		"scache    unix  -  -  n  -     1  scache",
		"postlog   unix-dgram n - n -   1  postlogd",
		"virtual   unix  -  n  n  -     -  virtual",
	} {
		w("%s", l)
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// portsTaken reports whether any of ports on host cannot be bound.
func portsTaken(host string, ports ...int) bool {
	for _, p := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			return true
		}
		l.Close()
	}
	return false
}

// freePorts returns two distinct free TCP ports on host.
func freePorts(host string) (int, int, error) {
	var ports [2]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, 0, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

type process struct {
	cmd        *exec.Cmd
	done       chan struct{} // closed when cmd.Wait returned
	waitErr    error
	stderrPath string
	stopOnce   sync.Once
	stopErr    error
}

// launch starts master and waits until both ports greet; on failure the
// processes are stopped.
func (s *Server) launch(master string) (*process, error) {
	p := &process{done: make(chan struct{}), stderrPath: filepath.Join(s.Dir, "master.stderr")}
	// A file, not a pipe: the daemons inherit it, and Wait must not wait
	// for them to close it.
	stderr, err := os.Create(p.stderrPath)
	if err != nil {
		return p, err
	}
	defer stderr.Close()
	// -d keeps master in the foreground, attached to our stderr; in its own
	// process group (as "postfix start" would make it), so that one kill
	// reaches every Postfix process.
	p.cmd = exec.Command(master, "-c", filepath.Join(s.Dir, "conf"), "-d")
	p.cmd.Dir = s.Dir
	p.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	p.cmd.Stdout = stderr
	p.cmd.Stderr = stderr
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		close(p.done)
		return p, err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	// Both ports at once: each first connection makes master start an
	// smtpd, which takes most of the start-up time.
	deadline := time.Now().Add(20 * time.Second)
	errs := make(chan error, 2)
	for _, implicitTLS := range []bool{false, true} {
		go func() { errs <- s.waitReady(p, implicitTLS, deadline) }()
	}
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			p.stop() // ends the other wait too
		}
	}
	return p, first
}

// waitReady probes one port until it greets, master exits, a Postfix
// process logs a fatal error or deadline passes.
func (s *Server) waitReady(p *process, implicitTLS bool, deadline time.Time) error {
	var lastErr error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("master exited during start-up (%v); last probe: %v", p.waitErr, lastErr)
		default:
		}
		if lastErr = s.probe(implicitTLS, p.done); lastErr == nil {
			return nil
		}
		if strings.Contains(tail(s.LogFile, 50), "fatal: ") {
			return fmt.Errorf("a Postfix process failed: %v", lastErr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20s: %v", lastErr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// probe connects to one port and expects a "220 " greeting; it gives up
// when done is closed (master exited: whoever answers is not Postfix).
func (s *Server) probe(implicitTLS bool, done <-chan struct{}) error {
	addr := s.Addr()
	if implicitTLS {
		addr = s.TLSAddr()
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	probed := make(chan struct{})
	defer close(probed)
	go func() {
		select {
		case <-done:
			c.SetDeadline(time.Now())
		case <-probed:
		}
	}()
	if implicitTLS {
		tc := tls.Client(c, s.TLSConfig())
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake on %s: %w", addr, err)
		}
		c = tc
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading greeting on %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, "220 ") {
		return fmt.Errorf("greeting on %s: %q", addr, line)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	r.ReadString('\n')
	return nil
}

// stop kills every process of Postfix's process group with SIGKILL and
// waits until they are gone; it is idempotent. (SIGTERM would do too, but
// master's own handler then kills postlogd before it can log the shutdown,
// and it is no faster.)
func (p *process) stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.kill() })
	return p.stopErr
}

func (p *process) kill() error {
	if p.cmd == nil || p.cmd.Process == nil {
		return nil
	}
	pgid := p.cmd.Process.Pid
	// The group outlives master when master died on its own: kill it
	// anyway.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing process group %d: %v", pgid, err)
	}
	<-p.done
	if left := waitGroupGone(pgid, 10*time.Second); len(left) > 0 {
		return fmt.Errorf("postfix processes %v still alive 10s after SIGKILL", left)
	}
	return nil
}

// waitGroupGone waits until no process of group pgid runs any more (gone,
// or a zombie waiting for init); it returns the pids left after timeout.
// Without /proc it waits for kill(-pgid, 0) to fail.
func waitGroupGone(pgid int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		if _, err := os.Stat("/proc/self/stat"); err == nil {
			left = groupMembers(pgid)
		} else if syscall.Kill(-pgid, 0) == nil {
			left = []int{-pgid}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(time.Millisecond)
	}
}

// groupMembers returns the live (not zombie) processes in process group
// pgid, from /proc.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) S ppid pgrp ...", comm may hold anything.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" || f[0] == "x" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (s *Server) writeCerts() error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "postfixtest CA", Organization: []string{"pophook tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	if s.Host != "127.0.0.1" {
		ips = append(ips, net.ParseIP(s.Host))
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.ServerName},
		DNSNames:     []string{s.ServerName},
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	conf := filepath.Join(s.Dir, "conf")
	s.caFile = filepath.Join(conf, "ca.pem")
	s.RootCAs = x509.NewCertPool()
	s.RootCAs.AddCert(ca)
	// smtpd reads the key as root, before it drops privileges.
	for _, f := range []struct {
		name, typ string
		der       []byte
		mode      fs.FileMode
	}{
		{"ca.pem", "CERTIFICATE", caDER, 0o644},
		{"cert.pem", "CERTIFICATE", leafDER, 0o644},
		{"key.pem", "PRIVATE KEY", keyDER, 0o600},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(conf, f.name), data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

// Messages returns the messages delivered for recipient so far, exactly as
// stored (see the package doc for what Postfix changed), oldest delivery
// first. recipient is compared, case-insensitively, with the first
// Delivered-To header, the one virtual(8) prepended; "" returns every
// message. The files are read from the Maildir's new/ and cur/.
func (s *Server) Messages(t testing.TB, recipient string) [][]byte {
	t.Helper()
	msgs, err := s.messages(recipient)
	if err != nil {
		t.Fatalf("postfixtest: Messages: %v", err)
	}
	return msgs
}

type stored struct {
	sec, usec int64
	name      string
	data      []byte
}

func (s *Server) messages(recipient string) ([][]byte, error) {
	var all []stored
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(s.Maildir(), sub)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, err
			}
			if recipient != "" && !strings.EqualFold(deliveredTo(data), recipient) {
				continue
			}
			sec, usec := maildirTime(e.Name())
			all = append(all, stored{sec, usec, e.Name(), data})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.sec != b.sec {
			return a.sec < b.sec
		}
		if a.usec != b.usec {
			return a.usec < b.usec
		}
		return a.name < b.name
	})
	out := make([][]byte, len(all))
	for i, m := range all {
		out[i] = m.data
	}
	return out, nil
}

// maildirTime parses the time of delivery from a name virtual(8) gives a
// Maildir file: "SECONDS.VdevIinodeMmicroseconds.hostname"; zeros when the
// name has another form.
func maildirTime(name string) (sec, usec int64) {
	head, rest, ok := strings.Cut(name, ".")
	if !ok {
		return 0, 0
	}
	sec, _ = strconv.ParseInt(head, 10, 64)
	unique, _, _ := strings.Cut(rest, ".")
	if i := strings.LastIndexByte(unique, 'M'); i >= 0 {
		usec, _ = strconv.ParseInt(unique[i+1:], 10, 64)
	}
	return sec, usec
}

// deliveredTo returns the value of the first Delivered-To header field of
// a stored message, "" when it has none.
func deliveredTo(msg []byte) string {
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(line) == 0 {
			return ""
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Delivered-To") {
			return strings.TrimSpace(string(value))
		}
	}
	return ""
}

// WaitMessages waits until at least n messages for recipient (as in
// Messages) are stored and returns them all; it fails the test, with the
// tail of the log, when that takes longer than timeout.
func (s *Server) WaitMessages(t testing.TB, recipient string, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := s.messages(recipient)
		if err != nil {
			t.Fatalf("postfixtest: WaitMessages: %v", err)
		}
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfixtest: %d message(s) for %q after %v, want %d; tail of %s:\n%s",
				len(msgs), recipient, timeout, n, s.LogFile, tail(s.LogFile, 20))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WaitQueueEmpty waits until Postfix's queue holds no message (every
// accepted message delivered, bounced or given up on), so that a test can
// then assert that something was not delivered; it fails the test, with the
// tail of the log, after timeout. A message deferred by a delivery error
// stays in the queue, so this times out then.
func (s *Server) WaitQueueEmpty(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := s.queued()
		if err != nil {
			t.Fatalf("postfixtest: WaitQueueEmpty: %v", err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfixtest: %d queue file(s) left after %v; tail of %s:\n%s", n, timeout, s.LogFile, tail(s.LogFile, 20))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// queued counts the queue files in the queues a message passes through.
func (s *Server) queued() (int, error) {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		err := filepath.WalkDir(filepath.Join(s.Dir, "queue", q), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) { // removed while walking
					return nil
				}
				return err
			}
			if !d.IsDir() {
				n++
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// traceFields are the header fields Postfix prepends to every stored
// message, in order (see the package doc).
var traceFields = []string{"Return-Path", "X-Original-To", "Delivered-To", "Received"}

// SplitTrace splits a stored message into the trace header fields Postfix
// prepended (Return-Path, X-Original-To, Delivered-To and Received, with its
// continuation lines) and the rest, which is the message as the client sent
// it with LF line endings and Return-Path, Bcc, Resent-Bcc and
// Content-Length removed from its header. It fails when the message does not
// start with those four fields. (A message's own first line cannot be taken
// for a continuation of Received: Postfix puts an empty line in front of a
// first line that starts with white space.)
func SplitTrace(msg []byte) (trace, rest []byte, err error) {
	off := 0
	for i, name := range traceFields {
		end := bytes.IndexByte(msg[off:], '\n')
		if end < 0 {
			return nil, nil, fmt.Errorf("trace field %d (%s) is not a whole line", i+1, name)
		}
		line := msg[off : off+end]
		if !bytes.HasPrefix(line, []byte(name+": ")) {
			return nil, nil, fmt.Errorf("line %d is %q, want the %s trace field", i+1, truncate(line, 60), name)
		}
		off += end + 1
		for off < len(msg) && (msg[off] == '\t' || msg[off] == ' ') {
			end := bytes.IndexByte(msg[off:], '\n')
			if end < 0 {
				return nil, nil, fmt.Errorf("%s field is not followed by a line break", name)
			}
			off += end + 1
		}
	}
	return msg[:off], msg[off:], nil
}

// StripTrace returns msg without the trace header fields Postfix prepended
// (see SplitTrace), failing the test when it does not have them.
func StripTrace(t testing.TB, msg []byte) []byte {
	t.Helper()
	_, rest, err := SplitTrace(msg)
	if err != nil {
		t.Fatalf("postfixtest: StripTrace: %v", err)
	}
	return rest
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// untraversable returns the first of dir and its ancestors that others
// cannot search, or "".
func untraversable(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return d
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// plainPath reports whether path can be written unquoted into main.cf (no
// '$', ',', white space, braces or other specials).
func plainPath(path string) bool {
	for _, r := range path {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+", r)) {
			return false
		}
	}
	return true
}

// tail returns the last n lines of a file, or a note why it cannot.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)\n", err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := string(bytes.Join(lines, nil))
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out
}
