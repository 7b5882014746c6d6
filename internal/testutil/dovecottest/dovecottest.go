//go:build unix

// Package dovecottest starts a real, private Dovecot POP3 server for Go
// tests.
//
// Start writes a complete dovecot.conf (nothing under /etc/dovecot is read),
// a passwd-file, a throw-away CA and server certificate and one Maildir per
// user into a temp dir, runs "dovecot -F -c CONF" as a child process, waits
// until both ports greet "+OK" and kills it (and waits for it) in
// t.Cleanup. A system Dovecot is neither used nor touched. Start takes about
// 0.1s, almost all of it Dovecot starting up; stopping takes about 20ms
// (see Server.Stop).
//
// The server offers:
//
//   - plain POP3 on Server.Port with STLS; USER/PASS and AUTH PLAIN/LOGIN are
//     refused there before STLS ("-ERR [AUTH] Plaintext authentication
//     disallowed on non-secure (SSL/TLS) connections.", at USER) unless
//     Options.AllowPlaintextAuth is set;
//   - implicit-TLS POP3S on Server.TLSPort;
//   - TLS 1.2 and later, with an ECDSA certificate for "localhost",
//     127.0.0.1 and Server.Host, signed by a CA made at test time
//     (Server.CAFile, Server.RootCAs, Server.TLSConfig);
//   - passwd-file users with {PLAIN} passwords; SASL PLAIN and LOGIN by
//     default, others on request (Options.AuthMechanisms);
//   - on request (Options.OAuth2), SASL XOAUTH2 and OAUTHBEARER with
//     bearer tokens that Dovecot's oauth2 passdb checks against a token
//     introspection endpoint the test serves (StartIntrospection);
//   - Maildir storage with pop3_uidl_format = %08Xu%08Xv (Dovecot's default,
//     set explicitly); Server.Deliver drops a message into new/ and
//     Server.Count counts what is left, reading the files directly. DELE
//     takes effect at QUIT.
//
// # Loopback connections count as secured
//
// Dovecot treats a connection whose client and server address are equal as
// secured, like TLS: a client on 127.0.0.1 talking to a server on 127.0.0.1
// may send its password in clear text whatever disable_plaintext_auth says.
// So that a client which sends credentials before STLS is caught, Dovecot
// listens on 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback
// interface, and a client connecting there gets source address 127.0.0.1).
// Where 127.0.0.2 cannot be bound (macOS without an alias) it falls back to
// 127.0.0.1 and sets Server.PlaintextAllowed. Dial Server.Addr or
// Server.TLSAddr, never a hard-coded 127.0.0.1.
//
// # Users and permissions
//
// Run as root (as in CI), Dovecot's login processes run as "dovenull" and
// its internal processes as "dovecot" (both made by the Debian package), and
// mail is accessed as the system user "mail" (uid 8, gid 8): Dovecot refuses
// to access mail as root; "mail" exists on every Debian system
// (base-passwd), owns nothing that matters and is neither Dovecot's login
// nor its internal user. The Maildirs and everything Deliver writes are
// owned by it, and the temp dir and its parent are made traversable (0711)
// so it can reach them. Run as a normal user, everything runs as, and is
// owned by, that user.
//
// The temp dir is t.TempDir, unless its path cannot be written into
// dovecot.conf unquoted (a subtest named "a#1" puts a comment sign in it) or
// is too long for the Unix sockets Dovecot makes under it; then it is a
// fresh directory under /tmp, removed in t.Cleanup.
//
// # What Dovecot 2.3 does not let you change
//
// CAPA always lists PIPELINING, TOP, UIDL, RESP-CODES and AUTH-RESP-CODE:
// the list is compiled in, so a server without PIPELINING cannot be made
// with Dovecot. Before login CAPA adds USER, STLS (plain port, before STLS
// only) and a SASL line; where plaintext auth is refused, the SASL line
// omits PLAIN and LOGIN (it is a bare "SASL"). After login CAPA lists
// neither USER, SASL nor STLS.
//
// # Settings that differ from Dovecot's defaults, for speed
//
// auth_failure_delay = 0 (Dovecot answers a wrong password after 2s; it
// still batches failures every 0.5s, so "-ERR [AUTH] Authentication failed."
// takes about 0.5s), no per-IP auth penalty (Dovecot otherwise delays every
// login from an IP, good or bad, by up to 15s after failures from it) and
// mail_fsync = never. Options.ExtraConfig can restore them:
//
//	auth_failure_delay = 2s
//	service anvil {
//	  unix_listener anvil-auth-penalty {
//	    mode = 0600
//	  }
//	}
//
// Left at Dovecot's default: mail_max_userip_connections = 10 sessions of one
// user from one IP; set it to 1 in a "protocol pop3 { }" block to get an
// immediate "-ERR [IN-USE] Maximum number of connections from user+IP
// exceeded" for a second session. (pop3_lock_session = yes also gives
// [IN-USE], but only after a fixed 10s wait for the lock.)
//
// # When Dovecot is missing
//
// Start skips the test, saying "apt-get install dovecot-core dovecot-pop3d";
// with CI=true in the environment it fails the test instead, because a
// skipped Dovecot test in CI hides a missing package.
package dovecottest

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

// InstallHint is how to install what Start needs on Debian and Ubuntu.
const InstallHint = "apt-get install dovecot-core dovecot-pop3d"

// Options configure a server started by Start. The zero value is a server
// with one user, alice, password alice-secret.
type Options struct {
	// Users maps user name to password. Default: {"alice": "alice-secret"}.
	// Names must be lower case (Dovecot lowercases the name a client logs
	// in with) without ':', '/', '#', white space or control characters;
	// passwords must not contain ':' or control characters.
	Users map[string]string

	// AllowPlaintextAuth lets USER/PASS and AUTH PLAIN/LOGIN through on the
	// plain port before STLS (disable_plaintext_auth = no).
	AllowPlaintextAuth bool

	// AuthMechanisms replaces the SASL mechanisms offered
	// (auth_mechanisms); default "plain", "login". With {PLAIN} passwords
	// and no other server, Dovecot 2.3.19 can also offer "cram-md5",
	// "digest-md5", "scram-sha-1", "scram-sha-256" and "apop" (APOP adds a
	// timestamp to the greeting). "oauthbearer" and "xoauth2" need
	// Options.OAuth2, which adds them. "anonymous" and "external" are
	// accepted but need more setup before anyone can log in with them;
	// "otp", "ntlm", "rpa", "skey", "gssapi", "gss-spnego" and
	// "winbind" make the auth process fail, and so Start.
	AuthMechanisms []string

	// ExtraConfig is appended to dovecot.conf. A setting given again
	// overrides the generated one, also inside service and protocol blocks.
	ExtraConfig string

	// OAuth2, when set, lets users log in with an OAuth2 bearer token over
	// SASL XOAUTH2 and OAUTHBEARER, checked by Dovecot's oauth2 passdb
	// against a token introspection endpoint (see OAuth2Options and
	// StartIntrospection). Passwords keep working for the other mechanisms.
	OAuth2 *OAuth2Options
}

// Server is a running private Dovecot.
type Server struct {
	Host       string // loopback address Dovecot listens on: "127.0.0.2", or "127.0.0.1" (see the package doc)
	Port       int    // plain POP3 port offering STLS
	TLSPort    int    // implicit-TLS POP3S port
	ServerName string // DNS name in the certificate: "localhost"
	CAFile     string // PEM file of the CA that signed the server certificate
	RootCAs    *x509.CertPool

	// PlaintextAllowed reports whether Dovecot accepts credentials on Port
	// before STLS: set by Options.AllowPlaintextAuth, or because Dovecot had
	// to listen on 127.0.0.1 and considers loopback connections secured.
	PlaintextAllowed bool

	Users   map[string]string // effective users and passwords
	Dir     string            // the temp dir holding config, certificates, log and mail
	LogFile string            // Dovecot's log (log_path)

	// OAuth2ConfigFile is the oauth2 passdb's configuration file
	// (Options.OAuth2); "" without OAuth2.
	OAuth2ConfigFile string

	proc             *process
	mailUID, mailGID int // owner of mail files; -1 when not running as root
	mu               sync.Mutex
	lastStamp        time.Time
	seq              int
}

// Stop kills Dovecot and all its processes now, like a crash (open sessions
// drop without a reply; their DELEs are not applied), and waits for them.
// On Linux everything gets SIGKILL, which takes milliseconds; elsewhere the
// master gets SIGTERM, which takes over a second. The test's cleanup calls
// Stop too (and reports a failure to stop); later calls do nothing.
func (s *Server) Stop() {
	s.proc.stop()
}

// Addr returns the host:port of the plain (STLS) POP3 port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// TLSAddr returns the host:port of the implicit-TLS POP3S port.
func (s *Server) TLSAddr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.TLSPort)) }

// TLSConfig returns a fresh client configuration that verifies the server
// against RootCAs and ServerName.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.RootCAs, ServerName: s.ServerName, MinVersion: tls.VersionTLS12}
}

// MaildirPath returns the user's Maildir (holding cur, new and tmp).
func (s *Server) MaildirPath(user string) string {
	return filepath.Join(s.Dir, "mail", user, "Maildir")
}

// Start launches a private Dovecot for the test and stops it in t.Cleanup.
//
// When dovecot is not installed it skips the test with a message saying
// "apt-get install dovecot-core dovecot-pop3d"; when the environment has
// CI=true it fails the test instead (a skip in CI is a failure).
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := findDovecot(exec.LookPath, fileExists)
	if err != nil {
		unavailable(t, isCI(), err.Error())
		return nil // not reached: Skip and Fatal stop the test
	}

	users := opts.Users
	if len(users) == 0 {
		users = map[string]string{"alice": "alice-secret"}
	}
	for u, p := range users {
		if !validName(u) || !validPassword(p) {
			t.Fatalf("dovecottest: invalid user %q or its password (see Options.Users)", u)
		}
	}
	mechs := opts.AuthMechanisms
	if len(mechs) == 0 {
		mechs = []string{"plain", "login"}
	}
	if opts.OAuth2 != nil {
		if err := opts.OAuth2.check(); err != nil {
			t.Fatalf("dovecottest: Options.OAuth2: %v", err)
		}
		mechs = withOAuth2Mechanisms(mechs)
	}

	s := &Server{
		ServerName: "localhost",
		Users:      make(map[string]string, len(users)),
		Dir:        t.TempDir(),
		mailUID:    -1,
		mailGID:    -1,
	}
	for u, p := range users {
		s.Users[u] = p
	}
	// dovecot.conf has no quoting for paths ('#' starts a comment; t.TempDir
	// of a subtest "x#01" contains one) and Unix socket paths under base_dir
	// must fit in ~108 bytes: use a short, plain directory when needed.
	if !plainPath(s.Dir) || len(s.Dir) > maxDirLen {
		dir, err := os.MkdirTemp(shortTempRoot(), "dovecottest")
		if err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		t.Cleanup(func() {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("dovecottest: %v", err)
			}
		})
		s.Dir = dir
	}
	s.LogFile = filepath.Join(s.Dir, "dovecot.log")
	s.Host = "127.0.0.2"
	if l, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		s.Host = "127.0.0.1"
	} else {
		l.Close()
	}
	s.PlaintextAllowed = opts.AllowPlaintextAuth || s.Host == "127.0.0.1"

	id, err := processIdentity()
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	if id.root {
		s.mailUID, s.mailGID = id.mailUID, id.mailGID
		// t.TempDir makes its parent 0700, MkdirTemp the dir itself: the
		// mail user must get through both.
		for _, d := range []string{filepath.Dir(s.Dir), s.Dir} {
			if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 != 0 {
				continue
			}
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatalf("dovecottest: %v", err)
			}
		}
		if d := untraversable(s.Dir); d != "" {
			t.Fatalf("dovecottest: %s is not searchable by others, so Dovecot's mail user %q cannot reach %s; point TMPDIR elsewhere (e.g. /tmp)", d, id.mailUser, s.Dir)
		}
	}
	baseDir := filepath.Join(s.Dir, "run") // Dovecot creates it

	for _, d := range []string{filepath.Join(s.Dir, "state"), filepath.Join(s.Dir, "mail")} {
		if err := os.Mkdir(d, 0o711); err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
	}
	for u := range s.Users {
		md := s.MaildirPath(u)
		for _, d := range []string{filepath.Dir(md), md, filepath.Join(md, "tmp"), filepath.Join(md, "new"), filepath.Join(md, "cur")} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatalf("dovecottest: %v", err)
			}
			s.chown(t, d)
		}
	}

	if err := s.writeCerts(); err != nil {
		t.Fatalf("dovecottest: certificates: %v", err)
	}
	passwd := filepath.Join(s.Dir, "passwd")
	var pw strings.Builder
	for _, u := range sortedKeys(s.Users) {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", u, s.Users[u])
	}
	// Read by the auth process, which runs as "dovecot" when we are root.
	if err := os.WriteFile(passwd, []byte(pw.String()), 0o644); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}

	if opts.OAuth2 != nil {
		s.OAuth2ConfigFile = filepath.Join(s.Dir, "oauth2.conf")
		// Read by the auth process, which runs as "dovecot" when we are root.
		if err := os.WriteFile(s.OAuth2ConfigFile, []byte(opts.OAuth2.config()), 0o644); err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
	}

	conf := filepath.Join(s.Dir, "dovecot.conf")
	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.Port, s.TLSPort, err = freePorts(s.Host)
		if err != nil {
			t.Fatalf("dovecottest: picking ports: %v", err)
		}
		cfg := s.config(id, baseDir, passwd, mechs, opts)
		if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		proc, err := s.launch(bin, conf)
		if err == nil {
			s.proc = proc
			t.Cleanup(func() {
				if err := proc.stop(); err != nil {
					t.Errorf("dovecottest: stopping dovecot: %v", err)
				}
				if t.Failed() {
					t.Logf("dovecottest: tail of %s:\n%s", s.LogFile, tail(s.LogFile, 40))
				}
			})
			return s
		}
		logTail := tail(s.LogFile, 30)
		errTail := tail(proc.stderrPath, 10)
		if attempt < attempts && strings.Contains(logTail+errTail, "Address already in use") {
			os.Truncate(s.LogFile, 0)
			continue
		}
		t.Fatalf("dovecottest: starting %s -F -c %s: %v\n--- %s (tail):\n%s--- dovecot stderr (tail):\n%s",
			bin, conf, err, s.LogFile, logTail, errTail)
	}
}

// unavailable skips the test, or fails it when ci is set.
func unavailable(t testing.TB, ci bool, reason string) {
	t.Helper()
	msg := fmt.Sprintf("dovecottest: %s; install it with: %s", reason, InstallHint)
	if ci {
		t.Fatal(msg + " (CI=true: a skipped Dovecot test counts as a failure)")
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

// findDovecot returns the dovecot binary, and an error when it or the POP3
// parts (dovecot-pop3d) are missing.
func findDovecot(lookPath func(string) (string, error), exists func(string) bool) (string, error) {
	bin, err := lookPath("dovecot")
	if err != nil {
		// /usr/sbin is often not in a normal user's PATH.
		bin = ""
		for _, p := range []string{"/usr/sbin/dovecot", "/usr/local/sbin/dovecot", "/opt/homebrew/sbin/dovecot"} {
			if exists(p) {
				bin = p
				break
			}
		}
		if bin == "" {
			return "", errors.New("dovecot is not installed (no dovecot in PATH or /usr/sbin)")
		}
	}
	prefix := filepath.Dir(filepath.Dir(bin))
	for _, d := range []string{"lib/dovecot", "libexec/dovecot"} {
		if exists(filepath.Join(prefix, d, "pop3-login")) && exists(filepath.Join(prefix, d, "pop3")) {
			return bin, nil
		}
	}
	return "", fmt.Errorf("%s is installed but its POP3 server (pop3-login, pop3 under %s/lib/dovecot or %s/libexec/dovecot) is not", bin, prefix, prefix)
}

type identity struct {
	root             bool
	loginUser        string // default_login_user
	internalUser     string // default_internal_user
	internalGroup    string // default_internal_group; "" keeps Dovecot's
	mailUser         string
	mailUID, mailGID int
}

func processIdentity() (identity, error) {
	if os.Geteuid() == 0 {
		id := identity{root: true, loginUser: "dovenull", internalUser: "dovecot"}
		for _, name := range []string{id.loginUser, id.internalUser} {
			if _, err := user.Lookup(name); err != nil {
				return id, fmt.Errorf("system user %q missing (it comes with dovecot-core: %s): %v", name, InstallHint, err)
			}
		}
		u, err := user.Lookup("mail")
		if err != nil {
			return id, fmt.Errorf("system user \"mail\" missing: %v", err)
		}
		id.mailUser = u.Username
		if id.mailUID, err = strconv.Atoi(u.Uid); err == nil {
			id.mailGID, err = strconv.Atoi(u.Gid)
		}
		return id, err
	}
	u, err := user.Current()
	if err != nil {
		return identity{}, fmt.Errorf("current user: %v", err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
	if err != nil {
		return identity{}, fmt.Errorf("current group: %v", err)
	}
	return identity{
		loginUser:     u.Username,
		internalUser:  u.Username,
		internalGroup: g.Name,
		mailUser:      u.Username,
		mailUID:       os.Geteuid(),
		mailGID:       os.Getegid(),
	}, nil
}

func (s *Server) config(id identity, baseDir, passwd string, mechs []string, opts Options) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# Written by github.com/pophook/pophook/internal/testutil/dovecottest for one test.")
	w("instance_name = dovecottest")
	w("base_dir = %s", baseDir)
	w("state_dir = %s", filepath.Join(s.Dir, "state"))
	w("log_path = %s", s.LogFile)
	w("protocols = pop3")
	w("listen = %s", s.Host)
	w("default_login_user = %s", id.loginUser)
	w("default_internal_user = %s", id.internalUser)
	if id.internalGroup != "" {
		w("default_internal_group = %s", id.internalGroup)
	}
	w("first_valid_uid = %d", id.mailUID)
	w("last_valid_uid = 0")
	if id.mailGID < 1 {
		w("first_valid_gid = %d", id.mailGID)
	}
	w("")
	w("auth_mechanisms = %s", strings.Join(mechs, " "))
	w("disable_plaintext_auth = %s", yesNo(!opts.AllowPlaintextAuth))
	w("auth_failure_delay = 0")
	w("auth_verbose = yes")
	if opts.OAuth2 != nil {
		// First, and only for the token mechanisms: a token is never
		// compared with a password, and a refused token ends the lookup.
		w("passdb {")
		w("  driver = oauth2")
		w("  mechanisms = xoauth2 oauthbearer")
		w("  args = %s", s.OAuth2ConfigFile)
		w("  result_failure = return-fail")
		w("  result_internalfail = return-fail")
		w("}")
	}
	w("passdb {")
	w("  driver = passwd-file")
	w("  args = scheme=PLAIN username_format=%%u %s", passwd)
	w("}")
	w("userdb {")
	w("  driver = static")
	w("  args = uid=%d gid=%d home=%s/%%u", id.mailUID, id.mailGID, filepath.Join(s.Dir, "mail"))
	w("}")
	w("")
	w("ssl = yes")
	w("ssl_min_protocol = TLSv1.2")
	w("ssl_cert = <%s", filepath.Join(s.Dir, "cert.pem"))
	w("ssl_key = <%s", filepath.Join(s.Dir, "key.pem"))
	w("")
	w("mail_location = maildir:~/Maildir")
	w("mail_fsync = never")
	w("pop3_uidl_format = %%08Xu%%08Xv")
	w("")
	w("service pop3-login {")
	w("  inet_listener pop3 {")
	w("    address = %s", s.Host)
	w("    port = %d", s.Port)
	w("  }")
	w("  inet_listener pop3s {")
	w("    address = %s", s.Host)
	w("    port = %d", s.TLSPort)
	w("    ssl = yes")
	w("  }")
	if !id.root {
		w("  chroot =")
	}
	w("}")
	// Without this socket the auth process disables its per-IP penalty
	// (up to 15s before every login from an IP after a failed one).
	w("service anvil {")
	w("  unix_listener anvil-auth-penalty {")
	w("    mode = 0")
	w("  }")
	if !id.root {
		w("  chroot =")
	}
	w("}")
	if !id.root {
		// Rootless Dovecot: no chroot, no switching to root.
		w("service auth-worker {")
		w("  user = $default_internal_user")
		w("}")
	}
	if opts.ExtraConfig != "" {
		w("")
		w("# Options.ExtraConfig")
		w("%s", opts.ExtraConfig)
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
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

// launch starts Dovecot and waits until both ports greet; on failure the
// process is stopped.
func (s *Server) launch(bin, conf string) (*process, error) {
	p := &process{done: make(chan struct{}), stderrPath: filepath.Join(s.Dir, "dovecot.stderr")}
	// A file, not a pipe: Dovecot's children may inherit it, and Wait must
	// not wait for them to close it.
	stderr, err := os.Create(p.stderrPath)
	if err != nil {
		return p, err
	}
	defer stderr.Close()
	p.cmd = exec.Command(bin, "-F", "-c", conf)
	p.cmd.Dir = s.Dir
	p.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	p.cmd.Stdout = stderr
	p.cmd.Stderr = stderr
	if err := p.cmd.Start(); err != nil {
		return p, err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	deadline := time.Now().Add(20 * time.Second)
	var lastErr error
	for _, probe := range []func() error{
		func() error { return s.probe(false) },
		func() error { return s.probe(true) },
	} {
		for {
			select {
			case <-p.done:
				return p, fmt.Errorf("dovecot exited during start-up (%v); last probe: %v", p.waitErr, lastErr)
			default:
			}
			if lastErr = probe(); lastErr == nil {
				break
			}
			// A broken auth or login process makes Dovecot retry for ever.
			if strings.Contains(tail(s.LogFile, 50), ": Fatal: ") {
				p.stop()
				return p, fmt.Errorf("a Dovecot process failed: %v", lastErr)
			}
			if time.Now().After(deadline) {
				p.stop()
				return p, fmt.Errorf("not ready after 20s: %v", lastErr)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return p, nil
}

// probe connects to one port and expects a "+OK" greeting.
func (s *Server) probe(implicitTLS bool) error {
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
	if implicitTLS {
		tc := tls.Client(c, s.TLSConfig())
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake on %s: %w", addr, err)
		}
		c = tc
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading greeting on %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("greeting on %s: %q", addr, line)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	return nil
}

// stop kills Dovecot and waits until all its processes are gone; it is
// idempotent. A graceful stop (SIGTERM) costs over a second, because the
// master sleeps 1s before exiting, so on Linux the master is frozen
// (SIGSTOP, so that it cannot fork), its children are found in /proc and
// everything gets SIGKILL. Without /proc it falls back to SIGTERM.
func (p *process) stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.kill() })
	return p.stopErr
}

func (p *process) kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	pid := p.cmd.Process.Pid
	if _, err := os.Stat("/proc/self/stat"); err == nil && syscall.Kill(pid, syscall.SIGSTOP) == nil {
		kids := childrenOf(pid)
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
		p.cmd.Process.Kill()
		<-p.done
		if !waitGone(kids, 10*time.Second) {
			return fmt.Errorf("dovecot processes %v still alive 10s after SIGKILL", kids)
		}
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.cmd.Process.Kill()
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.done
	return errors.New("dovecot did not stop within 15s of SIGTERM; killed")
}

// procStat returns the state and parent pid of a process from
// /proc/PID/stat ("pid (comm) S ppid ...", comm may hold anything).
func procStat(pid int) (state byte, ppid int, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

// childrenOf returns the pids of parent's child processes, from /proc.
func childrenOf(parent int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(pid); ok && ppid == parent {
			kids = append(kids, pid)
		}
	}
	return kids
}

// waitGone waits until none of pids runs any more (gone, or a zombie
// waiting for init), and reports whether that happened within timeout.
func waitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for {
			state, _, ok := procStat(pid)
			if !ok || state == 'Z' || state == 'X' || state == 'x' {
				break
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond)
		}
	}
	return true
}

func (s *Server) writeCerts() error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "dovecottest CA", Organization: []string{"pophook tests"}},
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
	s.CAFile = filepath.Join(s.Dir, "ca.pem")
	s.RootCAs = x509.NewCertPool()
	s.RootCAs.AddCert(ca)
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
		if err := os.WriteFile(filepath.Join(s.Dir, f.name), data, f.mode); err != nil {
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

// Deliver puts one message into user's Maildir, exactly as given: written
// to tmp/, owned by the mail user, then renamed into new/. Dovecot serves
// it with CRLF line endings (LF or CRLF in msg both work), dot-stuffed.
// Messages are numbered in the order they are delivered.
func (s *Server) Deliver(t testing.TB, user string, msg []byte) {
	t.Helper()
	if _, ok := s.Users[user]; !ok {
		t.Fatalf("dovecottest: Deliver to unknown user %q", user)
	}
	md := s.MaildirPath(user)
	name := s.uniqueName()
	tmp := filepath.Join(md, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	_, err = f.Write(msg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
	s.chown(t, tmp)
	if err := os.Rename(tmp, filepath.Join(md, "new", name)); err != nil {
		t.Fatalf("dovecottest: Deliver: %v", err)
	}
}

// uniqueName returns a Maildir file name whose time part strictly increases
// per server: Dovecot assigns UIDs to new mail in file-name time order.
func (s *Server) uniqueName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().Truncate(time.Microsecond)
	if !now.After(s.lastStamp) {
		now = s.lastStamp.Add(time.Microsecond)
	}
	s.lastStamp = now
	s.seq++
	return fmt.Sprintf("%d.M%06dP%dQ%d.dovecottest", now.Unix(), now.Nanosecond()/1000, os.Getpid(), s.seq)
}

// Count returns how many messages are in the user's Maildir (new + cur),
// reading the files directly.
func (s *Server) Count(t testing.TB, user string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(s.MaildirPath(user), sub))
		if err != nil {
			t.Fatalf("dovecottest: Count: %v", err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
				n++
			}
		}
	}
	return n
}

func (s *Server) chown(t testing.TB, path string) {
	t.Helper()
	if s.mailUID < 0 {
		return
	}
	if err := os.Lchown(path, s.mailUID, s.mailGID); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
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

// maxDirLen keeps base_dir/token-login/tokenlogin and friends within the
// Unix socket path limit (108 bytes on Linux, 104 on BSD).
const maxDirLen = 64

// plainPath reports whether path can be written unquoted into dovecot.conf.
func plainPath(path string) bool {
	for _, r := range path {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+", r)) {
			return false
		}
	}
	return true
}

// shortTempRoot returns a temp root for a directory plainPath accepts.
func shortTempRoot() string {
	if d := os.TempDir(); plainPath(d) && len(d) < maxDirLen-20 {
		return d
	}
	return "/tmp"
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && s == strings.ToLower(s) &&
		!strings.ContainsAny(s, ":/#") && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f })
}

func validPassword(s string) bool {
	return s != "" && !strings.Contains(s, ":") && !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
