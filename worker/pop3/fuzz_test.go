package pop3

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// stuff is the sender's side of RFC 1939 byte-stuffing, written
// independently of bodyReader: a dot is added to every line that starts
// with one, and the terminator follows a CRLF.
func stuff(msg []byte) []byte {
	var b bytes.Buffer
	lineStart := true
	for _, c := range msg {
		if lineStart && c == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(c)
		lineStart = c == '\n'
	}
	if !lineStart {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// FuzzBodyReader checks that any message survives stuffing and unstuffing
// byte for byte, whatever the buffer size and read pattern, and that the
// bytes after the terminator are left for the next reply.
func FuzzBodyReader(f *testing.F) {
	for _, seed := range []string{
		"", "a", "\r\n", ".", "..\r\n", "Subject: x\r\n\r\n.\r\n..\r\nend\r\n",
		"bare\nLF\n.\n", ".\r", "a\r\n.\r", "x\r\n.y\r\n", strings.Repeat("long", 5000) + "\r\n",
	} {
		f.Add([]byte(seed), uint8(7))
	}
	f.Fuzz(func(t *testing.T, msg []byte, chunk uint8) {
		// A trailing CR without LF is completed by the sender; keep the
		// expectation in step.
		want := msg
		if len(msg) > 0 && msg[len(msg)-1] != '\n' {
			want = append(append([]byte{}, msg...), "\r\n"...)
		}
		wire := append(stuff(msg), "+OK next\r\n"...)
		br := bufio.NewReaderSize(bytes.NewReader(wire), 16)
		d := newBodyReader(br, 0)
		got, err := io.ReadAll(&oneByteMax{d, int(chunk%64) + 1})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round trip changed the message:\n got %q\nwant %q", got, want)
		}
		rest, _ := io.ReadAll(br)
		if string(rest) != "+OK next\r\n" {
			t.Fatalf("after the body %q remained", rest)
		}
	})
}

// FuzzBodyReaderArbitrary feeds raw server bytes: the reader must never
// panic, never produce more bytes than it consumed, and end with EOF or
// an unexpected-EOF error.
func FuzzBodyReaderArbitrary(f *testing.F) {
	f.Add([]byte("a\r\n.\r\n"))
	f.Add([]byte("..\r\n.."))
	f.Add([]byte(".\r\r\n.\n"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		d := newBodyReader(bufio.NewReaderSize(bytes.NewReader(wire), 16), 0)
		got, err := io.ReadAll(d)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v", err)
		}
		if len(got) > len(wire) {
			t.Fatalf("produced %d bytes from %d", len(got), len(wire))
		}
	})
}

type oneByteMax struct {
	r io.Reader
	n int
}

func (o *oneByteMax) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), o.n)]) }

// FuzzParseStatus: any line parses or is refused; a parsed -ERR keeps
// its code within the line and never invents one.
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"+OK", "+OK 2 320", "-ERR", "-ERR [IN-USE] locked", "-ERR [SYS/TEMP/X] y", "-ERR [", "-ERR []", "+OKAY", "-ERR [a b] c", "+ok"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseStatus(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not a protocol error", err)
			}
			return
		}
		if r.ok && r.code != "" {
			t.Fatalf("+OK with a code: %+v", r)
		}
		if r.code != "" && !strings.Contains(strings.ToUpper(string(line)), "["+r.code+"]") {
			t.Fatalf("code %q not in %q", r.code, line)
		}
	})
}

// FuzzServerReplies plays arbitrary bytes as everything a server says
// after logging in, and runs the multi-line commands against them. The
// client must return (no hang, no panic), and any error must be one this
// package documents.
func FuzzServerReplies(f *testing.F) {
	f.Add([]byte("+OK\r\n1 10\r\n2 20\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n"))
	f.Add([]byte("+OK\r\n1 10\r\n.\r\n-ERR [SYS/TEMP] no\r\n"))
	f.Add([]byte("+OK\r\n..x\r\n.\r\n"))
	f.Add([]byte("+OK 1 2\r\n+OK\r\n+ \r\n"))
	f.Add([]byte("-ERR [IN-USE]\r\n\r\n\r\n.\r\n"))
	f.Fuzz(func(t *testing.T, replies []byte) {
		server := append([]byte("+OK hi\r\n-ERR no capa\r\n+OK\r\n+OK\r\n"), replies...)
		conn := &replayConn{r: bytes.NewReader(server)}
		c, err := NewClient(context.Background(), conn, "example.org", Options{TLS: TLSNone, AllowInsecureAuth: true, MaxListEntries: 100})
		if err != nil {
			t.Fatalf("greeting: %v", err)
		}
		if err := c.Authenticate(context.Background(), MechUser, "u", "p"); err != nil {
			t.Fatalf("login: %v", err)
		}
		check := func(err error) {
			var pe *Error
			var ce *CallerError
			switch {
			case err == nil, errors.As(err, &pe), errors.As(err, &ce), errors.Is(err, ErrProtocol),
				errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrClosed):
			default:
				t.Fatalf("undocumented error %T %v", err, err)
			}
		}
		_, err = c.Scan(context.Background())
		check(err)
		_, err = c.Retr(context.Background(), 1, io.Discard)
		check(err)
		_, _, err = c.Stat(context.Background())
		check(err)
		check(c.RetrEach(context.Background(), []int{1, 2}, func(int, io.Reader, error) error { return nil }))
	})
}

// replayConn is a net.Conn that plays fixed bytes and swallows writes.
type replayConn struct{ r io.Reader }

func (c *replayConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		err = io.EOF
	}
	return n, err
}
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
