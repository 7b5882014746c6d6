package pop3

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// A transcript is a scripted server: "S: text" is sent to the client with
// CRLF appended, "S! text" is sent as it is (no line ending added), and
// "S? text" is sent with CRLF but the client may hang up instead of
// reading it, "C: text" must be the next line the client sends, and "X: "
// (last) hangs up. The script fails the
// test on the first difference, so every transcript also checks that the
// client sent exactly what it should, in the right order.
type transcript struct {
	t    *testing.T
	done chan struct{}
}

// startTranscript returns a client connection served by script. The test
// fails if the client deviates or if, at cleanup, the script was not
// played to its end.
func startTranscript(t *testing.T, script ...string) net.Conn {
	t.Helper()
	srv, cli := net.Pipe()
	tr := &transcript{t: t, done: make(chan struct{})}
	played := make(chan int, 1)
	go func() {
		defer close(tr.done)
		defer srv.Close()
		r := bufio.NewReader(srv)
		for i, step := range script {
			kind, text := step[:3], step[3:]
			switch kind {
			case "S: ", "S! ", "S? ":
				if kind != "S! " {
					text += "\r\n"
				}
				srv.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := srv.Write([]byte(text)); err != nil && kind != "S? " {
					t.Errorf("step %d %.80q: client stopped reading: %v", i, step, err)
					played <- i
					return
				}
			case "C: ":
				srv.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, err := r.ReadString('\n')
				if err != nil {
					t.Errorf("step %d: want client to send %q, got error %v", i, text, err)
					played <- i
					return
				}
				if got := strings.TrimSuffix(line, "\r\n"); got != text {
					t.Errorf("step %d: client sent %.80q, want %.80q", i, got, text)
					played <- i
					return
				}
			case "X: ":
				srv.Close()
				played <- len(script)
				return
			default:
				panic("bad transcript step " + step)
			}
		}
		played <- len(script)
		// Anything the client sends after the script is a failure. The
		// connection stays open and silent until the client closes it.
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := r.ReadString('\n'); err == nil {
			t.Errorf("client sent %q after the end of the transcript", line)
		}
	}()
	t.Cleanup(func() {
		cli.Close()
		<-tr.done
		if n := <-played; n != len(script) {
			t.Errorf("transcript stopped at step %d of %d", n, len(script))
		}
	})
	return cli
}

// plainOpts are for transcripts: no TLS, credentials allowed in clear.
var plainOpts = Options{TLS: TLSNone, AllowInsecureAuth: true, Timeout: 5 * time.Second}

func newTestClient(t *testing.T, opts Options, script ...string) *Client {
	t.Helper()
	head := []string{"S: +OK ready", "C: CAPA", "S: -ERR no CAPA here"}
	conn := startTranscript(t, append(head, script...)...)
	c, err := NewClient(context.Background(), conn, "example.org", opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// loggedOut is a session that listed caps and has not logged in yet.
func loggedOut(t *testing.T, opts Options, caps []string, script ...string) *Client {
	t.Helper()
	head := []string{"S: +OK ready", "C: CAPA", "S: +OK"}
	head = append(head, capLines(caps)...)
	head = append(head, "S: .")
	conn := startTranscript(t, append(head, script...)...)
	c, err := NewClient(context.Background(), conn, "example.org", opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func capLines(caps []string) []string {
	var out []string
	for _, c := range caps {
		if !strings.HasPrefix(c, "S: ") {
			c = "S: " + c
		}
		out = append(out, c)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// loggedIn is a session already past authentication (USER/PASS).
func loggedIn(t *testing.T, opts Options, caps []string, script ...string) *Client {
	t.Helper()
	head := []string{"S: +OK ready", "C: CAPA", "S: +OK"}
	head = append(head, caps...)
	head = append(head, "S: .", "C: USER u", "S: +OK", "C: PASS p", "S: +OK in", "C: CAPA", "S: +OK")
	head = append(head, caps...)
	head = append(head, "S: .")
	conn := startTranscript(t, append(head, script...)...)
	c, err := NewClient(context.Background(), conn, "example.org", opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if err := c.Authenticate(context.Background(), MechUser, "u", "p"); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

func caps(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, "S: "+n)
	}
	return out
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lines(n int, format string) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf(format, i, i))
	}
	return out
}
