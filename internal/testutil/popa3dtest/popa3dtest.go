//go:build unix

// Package popa3dtest runs the real popa3d (Openwall's POP3 server, Debian
// 12 package popa3d 1.0.3) for Go tests, without installing it or changing
// anything on the machine.
//
// # How it runs
//
// Start listens on 127.0.0.1 (a free port) and, inetd-style, runs one
// popa3d per connection with the connection on its standard input and
// output (popa3d's default mode; -D would need port 110). Between the
// socket and popa3d sit two pipes, so that Server.Log can record what
// clients sent; popa3d reads and writes its standard input and output and
// cannot tell the difference.
//
// popa3d's paths are compiled in: it needs the system user "popa3d"
// (getpwnam), chroots to /var/lib/popa3d, authenticates with PAM service
// "popa3d" and reads mail from /var/mail/USER (mbox). Each popa3d therefore
// runs in a private mount namespace (CLONE_NEWNS, made by Go for a /bin/sh
// that bind-mounts and then execs popa3d) in which these are bind-mounted
// from the server's temp dir:
//
//	/etc/passwd, /etc/group, /etc/shadow  root, popa3d and the test users only
//	/etc/pam.d                            one file, popa3d (see below)
//	/var/lib                              holding the empty chroot dir popa3d
//	/var/mail                             the test users' mboxes
//
// Nothing outside the temp dir is created or changed, no user is added to
// the system, and the namespaces vanish with their processes: tests in
// parallel, in several packages at once, or killed half-way, cannot collide
// or leave anything behind. Inside a namespace the only users are root,
// popa3d and the test users (uids from 61000, which need not exist
// outside); the mboxes in the temp dir are owned by those uids.
//
// PAM: /etc/pam.d/popa3d is "auth required pam_unix.so nodelay" and
// "account required pam_unix.so". Debian's package includes common-auth and
// common-account instead, which amount to the same pam_unix check but wait
// 2s after a wrong password; nodelay makes the refusal immediate. Passwords
// are stored as SHA-512 crypt hashes.
//
// # What popa3d does
//
//   - greets with a bare "+OK"; answers -ERR (bare) to CAPA, AUTH and every
//     command it does not know: no CAPA, no SASL, no STLS, no PIPELINING;
//   - USER/PASS only; a wrong password (or an unknown user) gets
//     "-ERR Authentication failed (bad password?)"; a mailbox it cannot open
//     as the user (for example owned by root, mode 000) gets a bare "-ERR"
//     to PASS;
//   - a missing mailbox is an empty one;
//   - UIDL is a digest of a message's Received, Delivered-To, Date,
//     Message-ID and X-Delivery-ID headers: messages with none of them all
//     get the same UIDL;
//   - LF in the mbox is sent as CRLF (a CRLF in the mbox goes out as
//     CR CR LF); sizes in LIST count CRLF. DELE takes effect at QUIT, and
//     the mbox is rewritten before QUIT's "+OK";
//   - opening a non-empty mbox modified in the current second costs a 1s
//     pause. Deliver backdates the mbox so that tests do not pay it, but a
//     session in the same second as one that deleted some (not all) of the
//     mail does.
//
// # Requirements
//
// Linux, root (bind mounts, and popa3d itself switches users), mount(8) and
// the popa3d binary: $POPA3D, /opt/popa3d/usr/sbin/popa3d or
// /usr/sbin/popa3d. The package need not be installed (where Dovecot is,
// the two packages conflict): unpacking it is enough,
//
//	apt-get download popa3d && dpkg-deb -x popa3d_*.deb /opt/popa3d
//
// (its dependency libpam0g is on every Debian system). When something is
// missing Start skips the test saying what; with CI=true in the
// environment it fails the test instead, because a skipped popa3d test in
// CI hides a missing install step.
package popa3dtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is how to make popa3d available to Start on Debian 12.
const InstallHint = "apt-get download popa3d && dpkg-deb -x popa3d_*.deb /opt/popa3d (or set POPA3D to the binary)"

// Options configure a server started by Start.
type Options struct {
	// Users maps user name to password. Default: {"alice": "alice-secret"}.
	// Names: lower-case letters, digits, '.', '_' and '-', starting with a
	// letter, at most 32 characters, not "root" or "popa3d". Passwords:
	// not empty (popa3d refuses empty ones), no control characters.
	Users map[string]string
}

// Server is a running private popa3d.
type Server struct {
	Host    string            // "127.0.0.1"
	Port    int               // where the harness accepts connections
	Users   map[string]string // effective users and passwords
	Dir     string            // temp dir holding the private /etc files, chroot and mail
	Binary  string            // the popa3d binary
	Version string            // what popa3d -V said

	ln     net.Listener
	uids   map[string]int
	stderr *os.File // shared by every process the harness starts
	wg     sync.WaitGroup

	mu       sync.Mutex
	log      []string
	live     map[*exec.Cmd]net.Conn
	startErr error // the last failure to start a popa3d for a connection
	closed   bool
}

// Addr returns the host:port clients connect to.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// MailboxPath returns the user's mbox (its /var/mail file as popa3d sees
// it). A test may chown or chmod it; Start creates it empty, owned by the
// user, mode 0600.
func (s *Server) MailboxPath(user string) string {
	return filepath.Join(s.Dir, "var", "mail", user)
}

// Log returns every line clients sent, in order, across all sessions,
// without CRLF; passwords included.
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// Start launches a private popa3d for the test and stops it in t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := requirements()
	if err != nil {
		unavailable(t, err.Error())
		return nil // not reached
	}
	users := opts.Users
	if len(users) == 0 {
		users = map[string]string{"alice": "alice-secret"}
	}
	s := &Server{Host: "127.0.0.1", Users: map[string]string{}, Dir: t.TempDir(), Binary: bin,
		uids: map[string]int{}, live: map[*exec.Cmd]net.Conn{}}
	for u, p := range users {
		if !validName(u) || !validPassword(p) {
			t.Fatalf("popa3dtest: invalid user %q or its password (see Options.Users)", u)
		}
		s.Users[u] = p
	}
	if err := s.writeFiles(); err != nil {
		t.Fatalf("popa3dtest: %v", err)
	}
	if s.stderr, err = os.OpenFile(filepath.Join(s.Dir, "stderr.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
		t.Fatalf("popa3dtest: %v", err)
	}

	// popa3d -V in the namespace: the mounts work and the binary runs.
	var out bytes.Buffer
	cmd := s.command("-V")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		s.stderr.Close()
		msg := fmt.Sprintf("running %s -V in a private mount namespace: %v", bin, err)
		if o := strings.TrimSpace(out.String()); o != "" {
			msg += ": " + o
		}
		if errors.Is(err, syscall.EPERM) {
			unavailable(t, msg+" (no permission to create a mount namespace: CAP_SYS_ADMIN is needed)")
		}
		t.Fatalf("popa3dtest: %s", msg)
	}
	s.Version = strings.TrimSpace(out.String())

	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		s.stderr.Close()
		t.Fatalf("popa3dtest: %v", err)
	}
	s.Port = s.ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("popa3dtest: %v", err)
		}
		if t.Failed() {
			t.Logf("popa3dtest: %s; lines clients sent:\n%s\n--- stderr of the popa3d processes (tail):\n%s",
				s.Version, strings.Join(s.Log(), "\n"), tail(filepath.Join(s.Dir, "stderr.log"), 20))
		}
	})
	if err := s.probe(); err != nil {
		t.Fatalf("popa3dtest: %s does not greet: %v\n--- stderr (tail):\n%s", bin, err, tail(filepath.Join(s.Dir, "stderr.log"), 20))
	}
	s.mu.Lock()
	s.log = nil // the probe's QUIT
	s.mu.Unlock()
	return s
}

// requirements returns the popa3d binary, or why Start cannot run it.
func requirements() (string, error) {
	if _, err := os.Stat("/proc/self/ns/mnt"); err != nil {
		return "", errors.New("popa3dtest needs Linux mount namespaces")
	}
	if os.Geteuid() != 0 {
		return "", errors.New("popa3dtest needs root (bind mounts in a private mount namespace; popa3d switches users)")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		if _, err := os.Stat("/usr/bin/mount"); err != nil {
			return "", errors.New("mount(8) is not installed (apt-get install mount)")
		}
	}
	candidates := []string{"/opt/popa3d/usr/sbin/popa3d", "/usr/sbin/popa3d"}
	if p := os.Getenv("POPA3D"); p != "" {
		candidates = []string{p}
	}
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("popa3d not found (looked for %s); to get it: %s", strings.Join(candidates, ", "), InstallHint)
}

// unavailable skips the test, or fails it when CI=true.
func unavailable(t testing.TB, reason string) {
	t.Helper()
	msg := "popa3dtest: " + reason
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + " (CI=true: a skipped popa3d test counts as a failure)")
	}
	t.Skip(msg)
}

// mountScript runs in the new mount namespace (already private: Go makes
// "/" MS_PRIVATE|MS_REC after CLONE_NEWNS) as: sh -c mountScript
// popa3dtest DIR BINARY [ARGS...].
const mountScript = `set -e
d=$1 bin=$2
shift 2
mount -n --bind "$d/etc/passwd" /etc/passwd
mount -n --bind "$d/etc/group" /etc/group
mount -n --bind "$d/etc/shadow" /etc/shadow
mount -n --bind "$d/etc/pam.d" /etc/pam.d
mount -n --bind "$d/var/lib" /var/lib
mount -n --bind "$d/var/mail" /var/mail
exec "$bin" "$@"
`

// command returns popa3d with args, to run in its own mount namespace.
func (s *Server) command(args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", mountScript, "popa3dtest", s.Dir, s.Binary}, args...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = sysProcAttr()
	return cmd
}

// writeFiles lays out the files the namespace mounts.
func (s *Server) writeFiles() error {
	for _, d := range []string{"etc/pam.d", "var/lib/popa3d", "var/mail"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return err
		}
	}
	// The bind mounts make these the paths popa3d sees; the temp dir's
	// own permissions do not matter to it.
	names := make([]string, 0, len(s.Users))
	for u := range s.Users {
		names = append(names, u)
	}
	sort.Strings(names)
	var passwd, group, shadow strings.Builder
	passwd.WriteString("root:x:0:0:root:/root:/bin/sh\n")
	group.WriteString("root:x:0:\n")
	id := 61000
	add := func(name, hash string) {
		fmt.Fprintf(&passwd, "%s:x:%d:%d:popa3dtest:/nonexistent:/usr/sbin/nologin\n", name, id, id)
		fmt.Fprintf(&group, "%s:x:%d:\n", name, id)
		fmt.Fprintf(&shadow, "%s:%s:19000:0:99999:7:::\n", name, hash)
		s.uids[name] = id
		id++
	}
	add("popa3d", "*")
	for _, u := range names {
		add(u, sha512Crypt(s.Users[u], randomSalt()))
	}
	pam := "# popa3dtest: Debian's common-auth and common-account come to pam_unix;\n" +
		"# nodelay drops its 2s pause after a wrong password.\n" +
		"auth\trequired\tpam_unix.so nodelay\n" +
		"account\trequired\tpam_unix.so\n"
	for _, f := range []struct {
		path, data string
		mode       os.FileMode
	}{
		{"etc/passwd", passwd.String(), 0o644},
		{"etc/group", group.String(), 0o644},
		{"etc/shadow", shadow.String(), 0o600},
		{"etc/pam.d/popa3d", pam, 0o644},
	} {
		if err := os.WriteFile(filepath.Join(s.Dir, f.path), []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	for _, u := range names {
		p := s.MailboxPath(u)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return err
		}
		if err := os.Chown(p, s.uids[u], s.uids[u]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed by stop
		}
		s.wg.Add(1)
		go s.serve(c)
	}
}

// serve runs one popa3d for conn: conn → pipe → stdin (recording lines),
// stdout → pipe → conn.
func (s *Server) serve(conn net.Conn) {
	defer s.wg.Done()
	defer conn.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		s.failed(err)
		return
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		s.failed(err)
		return
	}
	cmd := s.command()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, s.stderr
	s.mu.Lock()
	if s.closed {
		err = errors.New("server stopped")
	} else if err = cmd.Start(); err == nil {
		s.live[cmd] = conn
	}
	s.mu.Unlock()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		s.failed(err)
		return
	}

	in := make(chan struct{})
	go func() {
		defer close(in)
		defer inW.Close()
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				s.mu.Lock()
				s.log = append(s.log, strings.TrimRight(line, "\r\n"))
				s.mu.Unlock()
				if _, werr := io.WriteString(inW, line); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	io.Copy(conn, outR) // until popa3d and its children are done with stdout
	outR.Close()
	conn.Close() // the client sees the end; the reader above stops
	<-in
	cmd.Wait()
	s.mu.Lock()
	delete(s.live, cmd)
	s.mu.Unlock()
}

func (s *Server) failed(err error) {
	s.mu.Lock()
	s.startErr = err
	s.mu.Unlock()
	fmt.Fprintf(s.stderr, "popa3dtest: starting popa3d for a connection: %v\n", err)
}

// probe connects and expects popa3d's "+OK" greeting.
func (s *Server) probe() error {
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.startErr != nil {
			return fmt.Errorf("%v (%v)", err, s.startErr)
		}
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("greeting %q", line)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	io.Copy(io.Discard, c)
	return nil
}

// stop closes the listener, ends every session still open (connection
// closed, popa3d killed) and waits for all of it.
func (s *Server) stop() error {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for cmd, conn := range s.live {
		conn.Close()
		cmd.Process.Kill() // safe until Wait returned: the pid is not reaped
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.stderr.Close()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("popa3d sessions still running 10s after they were killed")
	}
}

// mboxFrom starts every message in the mbox.
func mboxFrom(now time.Time) string {
	return "From popa3dtest@localhost " + now.UTC().Format("Mon Jan _2 15:04:05 2006") + "\n"
}

// stored is msg as Deliver writes it into the mbox: LF line endings (CRLF
// becomes LF), a final LF, and lines starting with "From " quoted as
// ">From " (popa3d does not unquote them).
func stored(msg []byte) []byte {
	m := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	if len(m) == 0 || m[len(m)-1] != '\n' {
		m = append(m, '\n')
	}
	var out bytes.Buffer
	for line := range bytes.Lines(m) {
		if bytes.HasPrefix(line, []byte("From ")) {
			out.WriteByte('>')
		}
		out.Write(line)
	}
	return out.Bytes()
}

// Served returns what popa3d sends for a message put in with Deliver, as a
// client has it after undoing the dot-stuffing: the stored form (see
// Deliver) with every LF sent as CRLF. Its length is what LIST says.
func Served(msg []byte) []byte {
	return bytes.ReplaceAll(stored(msg), []byte("\n"), []byte("\r\n"))
}

// Deliver appends one message to the user's mbox, as a local delivery
// agent would: a "From " line, the message with LF line endings (CRLF
// becomes LF, a missing final LF is added, lines starting with "From " get
// a '>'), and an empty line, then sets the mbox's modification time 2s
// back (see below). Served tells what popa3d then sends. Deliver
// takes the mbox's fcntl lock, as popa3d does, but is meant for between
// sessions: popa3d does not notice mail added during one.
func (s *Server) Deliver(t testing.TB, user string, msg []byte) {
	t.Helper()
	uid, ok := s.uids[user]
	if _, known := s.Users[user]; !ok || !known {
		t.Fatalf("popa3dtest: Deliver to unknown user %q", user)
	}
	_, statErr := os.Stat(s.MailboxPath(user))
	f, err := os.OpenFile(s.MailboxPath(user), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("popa3dtest: Deliver: %v", err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLKW, &lk); err != nil {
		t.Fatalf("popa3dtest: Deliver: locking the mbox: %v", err)
	}
	data := append([]byte(mboxFrom(time.Now())), stored(msg)...)
	data = append(data, '\n')
	if _, err := f.Write(data); err != nil {
		t.Fatalf("popa3dtest: Deliver: %v", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// Created here (the test had removed it): the user's, as Start's.
		if err := f.Chown(uid, uid); err != nil {
			t.Fatalf("popa3dtest: Deliver: %v", err)
		}
	}
	// popa3d pauses 1s when it opens an mbox modified in the current
	// second (so that a later change in the same second still shows);
	// mail delivered a moment "earlier" spares tests that pause.
	past := time.Now().Add(-2 * time.Second)
	if err := os.Chtimes(s.MailboxPath(user), past, past); err != nil {
		t.Fatalf("popa3dtest: Deliver: %v", err)
	}
}

// Count returns how many messages are in the user's mbox, reading the file
// directly (popa3d rewrites it before it answers QUIT).
func (s *Server) Count(t testing.TB, user string) int {
	t.Helper()
	if _, ok := s.Users[user]; !ok {
		t.Fatalf("popa3dtest: Count for unknown user %q", user)
	}
	data, err := os.ReadFile(s.MailboxPath(user))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatalf("popa3dtest: Count: %v", err)
	}
	n := 0
	for line := range bytes.Lines(data) {
		if bytes.HasPrefix(line, []byte("From ")) {
			n++ // Deliver quotes "From " inside messages
		}
	}
	return n
}

func validName(s string) bool {
	if s == "" || len(s) > 32 || s == "root" || s == "popa3d" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func validPassword(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f })
}

// tail returns the last n lines of a file, or a note why it cannot.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
