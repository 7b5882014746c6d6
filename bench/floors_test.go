//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sClientFloor fetches messages 1..n of user with "openssl s_client":
// log in and every RETR and QUIT sent pipelined in one go from a file,
// every byte the server sends going into a pipe to this process, which
// only checks that every answer was +OK and every RETR came back whole
// (a popCheck). This is what moving the mail over TLS costs without
// looking at it.
func (e *env) sClientFloor(user string, n int, want int64) sample {
	e.t.Helper()
	script := filepath.Join(e.work, "s_client-"+user+".in")
	if _, err := os.Stat(script); err != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "USER %s\r\nPASS %s\r\n", user, e.d.Users[user])
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "RETR %d\r\n", i)
		}
		b.WriteString("QUIT\r\n")
		if err := os.WriteFile(script, []byte(b.String()), 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
	in, err := os.Open(script)
	if err != nil {
		e.t.Fatal(err)
	}
	defer in.Close()
	// -quiet implies -ign_eof: after the script, read until the server
	// closes the connection (after QUIT).
	cmd := exec.Command("openssl", "s_client", "-connect", e.d.TLSAddr(), "-servername", e.d.ServerName,
		"-CAfile", e.d.CAFile, "-verify_return_error", "-quiet")
	cmd.Path, _ = exec.LookPath("openssl")
	pc := &popCheck{pre: 3, retrs: n} // greeting, USER, PASS
	cmd.Stdin, cmd.Stdout = in, pc
	s, _ := e.timeRun("openssl s_client floor", cmd)
	if err := pc.verify(n, want); err != nil {
		e.t.Fatalf("openssl s_client floor: %v", err)
	}
	return s
}

// goFloor does what sClientFloor does with Go's crypto/tls: the floor for
// a Go client.
func (e *env) goFloor(user string, n int, want int64) sample {
	pc := &popCheck{pre: 1, retrs: n} // AUTH (the greeting is read first)
	s := e.inProcess(func() {
		c, err := tls.Dial("tcp", e.d.TLSAddr(), e.d.TLSConfig())
		if err != nil {
			e.t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 64<<10)
		if _, err := br.ReadString('\n'); err != nil {
			e.t.Fatal(err)
		}
		w := bufio.NewWriterSize(c, 64<<10)
		fmt.Fprintf(w, "AUTH PLAIN %s\r\n", plain(user, e.d.Users[user]))
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "RETR %d\r\n", i)
		}
		w.WriteString("QUIT\r\n")
		werr := make(chan error, 1)
		go func() { werr <- w.Flush() }()
		if _, err := io.Copy(pc, br); err != nil {
			e.t.Fatal(err)
		}
		if err := <-werr; err != nil {
			e.t.Fatal(err)
		}
	})
	if err := pc.verify(n, want); err != nil {
		e.t.Fatalf("Go crypto/tls floor: %v", err)
	}
	return s
}

// popCheck reads the server's side of a pipelined POP3 session: pre
// single-line answers (greeting, login), then retrs answers to RETR, each
// followed by a message ending in a line ".", then QUIT's. It counts
// what it sees; verify says whether that was the whole session.
type popCheck struct {
	pre, retrs int

	head    []byte // the first bytes of the current line
	lineLen int    // its length so far, CR included
	inBody  bool   // inside a RETR's message
	status  int    // status lines seen
	oks     int    // of which +OK
	bodies  int    // messages that ended with "."
	bytes   int64  // message bytes, CRLF and dot-stuffing included
	firstNo string // the first status line that was not +OK
}

func (p *popCheck) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		seg := b
		if i >= 0 {
			seg, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if k := min(len(seg), 8-len(p.head)); k > 0 {
			p.head = append(p.head, seg[:k]...)
		}
		p.lineLen += len(seg)
		if i < 0 {
			break
		}
		p.line()
		p.head, p.lineLen = p.head[:0], 0
	}
	return n, nil
}

func (p *popCheck) line() {
	if p.inBody {
		if p.lineLen == 2 && string(p.head) == ".\r" {
			p.inBody = false
			p.bodies++
			return
		}
		p.bytes += int64(p.lineLen) + 1
		return
	}
	i := p.status
	p.status++
	if !bytes.HasPrefix(p.head, []byte("+OK")) {
		if p.firstNo == "" {
			p.firstNo = fmt.Sprintf("answer %d starts %q", i+1, p.head)
		}
		return
	}
	p.oks++
	if i >= p.pre && i < p.pre+p.retrs {
		p.inBody = true
	}
}

// verify checks that the session had every answer +OK, n whole messages
// of at least want bytes in all, and QUIT's answer.
func (p *popCheck) verify(n int, want int64) error {
	if p.firstNo != "" {
		return fmt.Errorf("the server refused: %s", p.firstNo)
	}
	if total := p.pre + n + 1; p.oks != total || p.bodies != n || p.inBody || p.lineLen != 0 {
		return fmt.Errorf("%d of %d answers +OK, %d of %d messages whole (cut off: %v)", p.oks, total, p.bodies, n, p.inBody || p.lineLen != 0)
	}
	if p.bytes < want {
		return fmt.Errorf("%d message bytes, want at least %d", p.bytes, want)
	}
	return nil
}

func plain(user, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pw))
}

// loginFloor logs into every user's mailbox, conc at a time, as bare as a
// client can: TLS (verified), greeting, AUTH PLAIN, STAT, QUIT, each
// waiting for its answer. STAT must count msgs messages.
func (e *env) loginFloor(users []string, conc, msgs int) sample {
	return e.inProcess(func() {
		work := make(chan string)
		errs := make(chan error, len(users))
		var wg sync.WaitGroup
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for u := range work {
					if err := e.bareLogin(u, msgs); err != nil {
						errs <- fmt.Errorf("%s: %w", u, err)
					}
				}
			}()
		}
		for _, u := range users {
			work <- u
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			e.t.Fatal(err)
		}
	})
}

func (e *env) bareLogin(user string, msgs int) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", e.d.TLSAddr(), e.d.TLSConfig())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	var last string
	expect := func() error {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		last = line
		if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("%q", line)
		}
		return nil
	}
	if err := expect(); err != nil {
		return err
	}
	for _, cmd := range []string{"AUTH PLAIN " + plain(user, e.d.Users[user]), "STAT", "QUIT"} {
		if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
			return err
		}
		if err := expect(); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(cmd)[0], err)
		}
		if cmd == "STAT" && !strings.HasPrefix(last, "+OK "+strconv.Itoa(msgs)+" ") {
			return fmt.Errorf("STAT: %q, want %d messages", last, msgs)
		}
	}
	return nil
}
