//go:build unix

package postfixtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// rawConn is a deliberately dumb SMTP client: it sends exactly the bytes it
// is given, so that tests control line endings and dot-stuffing.
type rawConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

// dialRaw connects and reads the greeting; cfg != nil means implicit TLS.
func dialRaw(t testing.TB, addr string, cfg *tls.Config) *rawConn {
	t.Helper()
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = tls.Dial("tcp", addr, cfg)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect(220)
	return rc
}

// reply reads one (possibly multi-line) reply.
func (c *rawConn) reply() (int, string) {
	c.t.Helper()
	var text []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v (got %q)", err, l)
		}
		if !strings.HasSuffix(l, "\r\n") || len(l) < 6 {
			c.t.Fatalf("malformed reply line %q", l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		text = append(text, l[4:])
		if l[3] == ' ' {
			var code int
			fmt.Sscanf(l[:3], "%d", &code)
			return code, strings.Join(text, "\n")
		}
	}
}

func (c *rawConn) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("reply %d %q, want %d", got, text, code)
	}
	return text
}

func (c *rawConn) cmd(format string, a ...any) (int, string) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.c, format+"\r\n", a...); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

// ehlo returns the EHLO keywords (upper case, parameters dropped).
func (c *rawConn) ehlo() []string {
	c.t.Helper()
	code, text := c.cmd("EHLO client.example")
	if code != 250 {
		c.t.Fatalf("EHLO: %d %s", code, text)
	}
	var kw []string
	for _, l := range strings.Split(text, "\n")[1:] {
		kw = append(kw, strings.ToUpper(strings.Fields(l)[0]))
	}
	return kw
}

// send runs one transaction; wire is the DATA content as sent, terminator
// included. It returns the first reply that is not positive.
func (c *rawConn) send(mail string, rcpts []string, wire []byte) (int, string) {
	c.t.Helper()
	if code, text := c.cmd("MAIL FROM:%s", mail); code != 250 {
		return code, text
	}
	for _, r := range rcpts {
		if code, text := c.cmd("RCPT TO:<%s>", r); code != 250 {
			c.cmd("RSET")
			return code, text
		}
	}
	if code, text := c.cmd("DATA"); code != 354 {
		return code, text
	}
	if _, err := c.c.Write(wire); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

// wire dot-stuffs a CRLF message and appends the terminator.
func wire(msg string) []byte {
	var b strings.Builder
	for _, l := range strings.SplitAfter(msg, "\r\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	b.WriteString(".\r\n")
	return []byte(b.String())
}

// lf is what Postfix stores for a CRLF message: LF line endings.
func lf(msg string) []byte { return []byte(strings.ReplaceAll(msg, "\r\n", "\n")) }

// traceRE matches the trace header fields of a message sent over plain
// SMTP (no TLS, no SMTPUTF8) to exactly one recipient.
func traceRE(sender, rcpt string) *regexp.Regexp {
	q := regexp.QuoteMeta
	return regexp.MustCompile(`^Return-Path: <` + q(sender) + `>\n` +
		`X-Original-To: ` + q(rcpt) + `\n` +
		`Delivered-To: ` + q(rcpt) + `\n` +
		`Received: from client\.example \(unknown \[127\.0\.0\.1\]\)\n` +
		`\tby localhost \(Postfix\) with ESMTP id [0-9A-F]{6,}\n` +
		`\tfor <` + q(rcpt) + `>; [A-Z][a-z]{2}, [ 0-9]\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [-+]\d{4}( \(\w+\))?\n$`)
}

// caPool builds the pool a client would from Server.CAFile.
func caPool(t testing.TB, s *Server) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", s.CAFile())
	}
	return pool
}

// sendNetSMTP sends msg with net/smtp on an open client and returns when
// Postfix has answered the end of DATA.
func sendNetSMTP(t testing.TB, c *smtp.Client, from string, to []string, msg []byte) {
	t.Helper()
	if err := c.Mail(from); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
}

const netSMTPMsg = "From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@pophook.test>\r\n" +
	"Subject: =?UTF-8?Q?caf=C3=A9?= via %s\r\n" +
	"Message-ID: <%s@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Hello Bob, caf\u00e9.\r\n" +
	".a line starting with a dot\r\n"

// TestSTARTTLSAndImplicitTLS sends a message with net/smtp over STARTTLS
// and one over implicit TLS, trusting the CA from CAFile, and reads both
// back from the Maildir.
func TestSTARTTLSAndImplicitTLS(t *testing.T) {
	begin := time.Now()
	s := Start(t, Options{})
	t.Logf("Start took %v; Addr %s TLSAddr %s", time.Since(begin), s.Addr(), s.TLSAddr())
	cfg := &tls.Config{RootCAs: caPool(t, s), ServerName: "localhost"}

	t.Run("STARTTLS", func(t *testing.T) {
		c, err := smtp.Dial(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("STARTTLS"); !ok {
			t.Fatal("STARTTLS not offered")
		}
		if err := c.StartTLS(cfg); err != nil {
			t.Fatalf("STARTTLS: %v", err)
		}
		if ok, _ := c.Extension("STARTTLS"); ok {
			t.Error("STARTTLS still offered after STARTTLS")
		}
		msg := fmt.Sprintf(netSMTPMsg, "STARTTLS", "starttls")
		sendNetSMTP(t, c, "alice@example.org", []string{"bob@pophook.test"}, []byte(msg))
		sent := time.Now()
		got := s.WaitMessages(t, "bob@pophook.test", 1, 10*time.Second)
		t.Logf("delivered %v after the reply to DATA", time.Since(sent))
		if err := c.Quit(); err != nil {
			t.Error(err)
		}
		if len(got) != 1 {
			t.Fatalf("%d messages", len(got))
		}
		trace, rest, err := SplitTrace(got[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("trace fields:\n%s", trace)
		// net/smtp asks for SMTPUTF8 and BODY=8BITMIME whenever offered.
		if !bytes.Contains(trace, []byte(" with UTF8SMTPS id ")) {
			t.Errorf("Received does not say UTF8SMTPS:\n%s", trace)
		}
		if !bytes.Equal(rest, lf(msg)) {
			t.Errorf("stored message differs:\n got %q\nwant %q", rest, lf(msg))
		}
	})

	t.Run("ImplicitTLS", func(t *testing.T) {
		conn, err := tls.Dial("tcp", s.TLSAddr(), cfg)
		if err != nil {
			t.Fatalf("implicit TLS to %s: %v", s.TLSAddr(), err)
		}
		c, err := smtp.NewClient(conn, "localhost")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("STARTTLS"); ok {
			t.Error("STARTTLS offered on the implicit-TLS port")
		}
		msg := fmt.Sprintf(netSMTPMsg, "implicit TLS", "implicit")
		sendNetSMTP(t, c, "alice@example.org", []string{"Carol@Example.COM"}, []byte(msg))
		sent := time.Now()
		// Any domain is delivered; Messages matches case-insensitively.
		got := s.WaitMessages(t, "carol@example.com", 1, 10*time.Second)
		t.Logf("delivered %v after the reply to DATA", time.Since(sent))
		c.Quit()
		if rest := StripTrace(t, got[0]); !bytes.Equal(rest, lf(msg)) {
			t.Errorf("stored message differs:\n got %q\nwant %q", rest, lf(msg))
		}
		if !bytes.HasPrefix(got[0], []byte("Return-Path: <alice@example.org>\nX-Original-To: Carol@Example.COM\nDelivered-To: Carol@Example.COM\n")) {
			t.Errorf("trace: %q", got[0][:120])
		}
	})

	t.Run("CertificateNames", func(t *testing.T) {
		for _, name := range []string{"localhost", "127.0.0.1", s.Host} {
			c, err := tls.Dial("tcp", s.TLSAddr(), &tls.Config{RootCAs: s.RootCAs, ServerName: name})
			if err != nil {
				t.Errorf("ServerName %q: %v", name, err)
				continue
			}
			c.Close()
		}
		_, err := tls.Dial("tcp", s.TLSAddr(), &tls.Config{ServerName: "localhost"})
		var uerr x509.UnknownAuthorityError
		if !errors.As(err, &uerr) {
			t.Errorf("without the CA: %v, want unknown authority", err)
		}
	})

	if n := len(s.Messages(t, "")); n != 2 {
		t.Errorf("Messages(\"\") = %d messages, want 2", n)
	}
}

// TestDeliveryLatency measures how long Postfix takes from the reply to DATA
// to the file in the Maildir, and how long a TLS session takes to set up.
func TestDeliveryLatency(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	begin := time.Now()
	c := dialRaw(t, s.TLSAddr(), s.TLSConfig())
	c.ehlo()
	t.Logf("implicit TLS connection, greeting and EHLO: %v", time.Since(begin))
	const n = 20
	var lat []time.Duration
	for i := range n {
		rcpt := fmt.Sprintf("lat%d@pophook.test", i)
		if code, text := c.send("<a@example.org>", []string{rcpt}, wire("Subject: latency\r\n\r\nbody\r\n")); code != 250 {
			t.Fatalf("%d %s", code, text)
		}
		sent := time.Now()
		s.WaitMessages(t, rcpt, 1, 10*time.Second)
		lat = append(lat, time.Since(sent))
	}
	slices.Sort(lat)
	t.Logf("delivery latency over %d messages: min %v median %v max %v", n, lat[0], lat[n/2], lat[n-1])

	// A burst: all sent, then all waited for.
	begin = time.Now()
	for i := range n {
		c.send("<a@example.org>", []string{"burst@pophook.test"}, wire(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i)))
	}
	s.WaitMessages(t, "burst@pophook.test", n, 10*time.Second)
	t.Logf("%d messages sent and delivered in %v", n, time.Since(begin))
	s.WaitQueueEmpty(t, 10*time.Second)
}

// TestStoredBytes pins down what Postfix stores for what a client sends; the
// package doc summarises it.
func TestStoredBytes(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	c := dialRaw(t, s.Addr(), nil)
	c.ehlo()

	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	// Header fields cleanup(8) deletes from the top-level header.
	dropped := "Return-Path: <forged@example.org>\r\n" +
		"Bcc: hidden@pophook.test\r\n" +
		"Resent-Bcc: hidden2@pophook.test\r\n" +
		"Content-Length: 12345\r\n"
	full := "From: Alice <alice@example.org>\r\n" +
		"To: bob@pophook.test\r\n" +
		dropped +
		"Subject: caf\u00e9 \u00fcn\u00efcode in a raw UTF-8 header\r\n" +
		"X-Latin1: caf\xe9\r\n" +
		"X-Folded: first\r\n\tsecond\r\n  third\r\n" +
		"X-Long: " + long('h', 5000) + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n" +
		"\r\n" +
		"--b\r\n" +
		"Content-Type: text/plain\r\n" +
		"Content-Length: 5\r\n" +
		"Bcc: in-part@pophook.test\r\n" +
		"Return-Path: <in-part@example.org>\r\n" +
		"\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		"From the start of a body line\r\n" +
		long('x', 998) + "\r\n" +
		long('x', 999) + "\r\n" +
		long('y', 100000) + "\r\n" +
		"trailing white space \t\r\n" +
		"\r\n" +
		"\r\n" +
		"--b--\r\n"
	fullWant := strings.Replace(full, dropped, "", 1)

	cases := []struct {
		name string
		wire []byte
		want []byte
	}{
		{"full", wire(full), lf(fullWant)},
		// A bare LF ends a line; a bare CR becomes a space; CRs before the
		// line ending go.
		{"bare", []byte("Subject: bare\r\nX-CR: a\rb\r\n\r\nline one\nline two\rstill two\r\nends in CR\r\r\nend\r\n.\r\n"),
			[]byte("Subject: bare\nX-CR: a b\n\nline one\nline two still two\nends in CR\nend\n")},
		{"lf-only", []byte("Subject: lf\n\nbody\n.\n"), []byte("Subject: lf\n\nbody\n")},
		// An mbox "From " line at the top becomes a header field.
		{"from-line", wire("From someone@example.org Thu Dec  3 12:00:00 2026\r\nSubject: x\r\n\r\nbody\r\n"),
			[]byte("X-Mailbox-Line: From someone@example.org Thu Dec  3 12:00:00 2026\nSubject: x\n\nbody\n")},
		// A line that is no header field ends the header: a blank line is
		// inserted before it.
		{"no-separator", wire("Subject: x\r\nbody without a blank line\r\n"), []byte("Subject: x\n\nbody without a blank line\n")},
		{"no-header", wire("just a body line\r\n"), []byte("\njust a body line\n")},
		{"space-first", wire(" starts with a space\r\nSubject: x\r\n\r\nbody\r\n"), []byte("\n starts with a space\nSubject: x\n\nbody\n")},
		{"empty", wire(""), []byte("")},
		// A NUL ends a header line (the rest of the line is lost); in the
		// body it is kept.
		{"nul", wire("Subject: n\x00ul\r\n\r\nbo\x00dy\r\n"), []byte("Subject: n\n\nbo\x00dy\n")},
		// header_size_limit = 102400 cuts a header field there.
		{"huge-header", wire("Subject: big\r\nX-Big: " + long('b', 150000) + "\r\nX-After: yes\r\n\r\nbody\r\n"),
			[]byte("Subject: big\nX-Big: " + long('b', 102400-len("X-Big: ")) + "\nX-After: yes\n\nbody\n")},
		// virtual(8) does no Delivered-To loop detection.
		{"delivered-to", wire("Delivered-To: delivered-to@pophook.test\r\nSubject: loop?\r\n\r\nbody\r\n"),
			[]byte("Delivered-To: delivered-to@pophook.test\nSubject: loop?\n\nbody\n")},
	}
	for _, tc := range cases {
		rcpt := tc.name + "@pophook.test"
		if code, text := c.send("<sender@example.org>", []string{rcpt}, tc.wire); code != 250 {
			t.Fatalf("%s: %d %s", tc.name, code, text)
		}
	}
	// Two recipients and a null sender: no "for" clause, Return-Path <>.
	if code, text := c.send("<>", []string{"multi1@pophook.test", "multi2@example.com"}, wire("Subject: m\r\n\r\nx\r\n")); code != 250 {
		t.Fatalf("multi: %d %s", code, text)
	}
	c.cmd("QUIT")

	for _, tc := range cases {
		rcpt := tc.name + "@pophook.test"
		got := s.WaitMessages(t, rcpt, 1, 10*time.Second)
		if len(got) != 1 {
			t.Errorf("%s: %d messages", tc.name, len(got))
			continue
		}
		trace, rest, err := SplitTrace(got[0])
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !traceRE("sender@example.org", rcpt).Match(trace) {
			t.Errorf("%s: unexpected trace fields:\n%s", tc.name, trace)
		}
		if !bytes.Equal(rest, tc.want) {
			t.Errorf("%s: stored\n%s\nwant\n%s", tc.name, clip(rest), clip(tc.want))
		}
	}
	for _, rcpt := range []string{"multi1@pophook.test", "multi2@example.com"} {
		got := s.WaitMessages(t, rcpt, 1, 10*time.Second)
		trace, rest, err := SplitTrace(got[0])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(trace, []byte("Return-Path: <>\n")) || bytes.Contains(trace, []byte("\tfor <")) || !bytes.HasSuffix(trace, []byte(")\n")) {
			t.Errorf("%s: trace\n%s", rcpt, trace)
		}
		if string(rest) != "Subject: m\n\nx\n" {
			t.Errorf("%s: %q", rcpt, rest)
		}
	}
}

// clip shortens long runs for error messages.
func clip(b []byte) string {
	q := fmt.Sprintf("%q", b)
	if len(q) > 600 {
		return q[:300] + fmt.Sprintf("...(%d bytes)...", len(b)) + q[len(q)-300:]
	}
	return q
}

func TestDefaultExtensionsAndSMTPUTF8(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	c := dialRaw(t, s.Addr(), nil)
	kw := c.ehlo()
	t.Logf("EHLO keywords: %v", kw)
	want := []string{"PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"}
	if !slices.Equal(kw, want) {
		t.Errorf("EHLO keywords %v, want %v", kw, want)
	}
	// An address in UTF-8, with SMTPUTF8.
	rcpt := "b\u00f6b@pophook.test"
	if code, text := c.send("<s\u00e9nder@example.org> SMTPUTF8", []string{rcpt}, wire("Subject: \u00fc\r\n\r\nbody\r\n")); code != 250 {
		t.Fatalf("SMTPUTF8: %d %s", code, text)
	}
	// Without SMTPUTF8, Postfix 3.7 accepts it too.
	code, text := c.send("<sender@example.org>", []string{rcpt}, wire("Subject: no SMTPUTF8\r\n\r\nbody\r\n"))
	t.Logf("UTF-8 recipient without SMTPUTF8: %d %s", code, text)
	if code != 250 {
		t.Errorf("UTF-8 recipient without SMTPUTF8: %d %s", code, text)
	}
	got := s.WaitMessages(t, rcpt, 2, 10*time.Second)
	for _, m := range got {
		trace, _, err := SplitTrace(m)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("trace:\n%s", trace)
	}
	if !bytes.Contains(got[0], []byte(" with UTF8SMTP id ")) && !bytes.Contains(got[1], []byte(" with UTF8SMTP id ")) {
		t.Error("no Received says UTF8SMTP")
	}
}

func TestDisabledExtensions(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Disable8BITMIME: true, DisableSMTPUTF8: true, DiscardEHLOKeywords: []string{"chunking", "dsn"}})
	c := dialRaw(t, s.Addr(), nil)
	kw := c.ehlo()
	t.Logf("EHLO keywords: %v", kw)
	for _, k := range []string{"8BITMIME", "SMTPUTF8", "CHUNKING", "DSN"} {
		if slices.Contains(kw, k) {
			t.Errorf("%s advertised: %v", k, kw)
		}
	}
	if !slices.Contains(kw, "STARTTLS") || !slices.Contains(kw, "PIPELINING") {
		t.Errorf("too little advertised: %v", kw)
	}
	// Not advertised, but still accepted: Postfix cannot refuse 8-bit mail.
	msg := "Subject: caf\u00e9\r\n\r\n8-bit body: \xe9\xff\r\n"
	if code, text := c.send("<s@example.org> BODY=8BITMIME", []string{"eight@pophook.test"}, wire(msg)); code != 250 {
		t.Errorf("BODY=8BITMIME without 8BITMIME: %d %s", code, text)
	}
	if code, text := c.send("<s@example.org>", []string{"eight-plain@pophook.test"}, wire(msg)); code != 250 {
		t.Errorf("8-bit data without BODY=: %d %s", code, text)
	}
	code, text := c.cmd("MAIL FROM:<s@example.org> SMTPUTF8")
	t.Logf("MAIL with SMTPUTF8 when disabled: %d %s", code, text)
	if code != 555 {
		t.Errorf("MAIL with SMTPUTF8 when disabled: %d %s, want 555", code, text)
	}
	for _, r := range []string{"eight@pophook.test", "eight-plain@pophook.test"} {
		if got := StripTrace(t, s.WaitMessages(t, r, 1, 10*time.Second)[0]); !bytes.Equal(got, lf(msg)) {
			t.Errorf("%s: stored %q", r, got)
		}
	}
}

func TestSizeLimitAndRecipientReplies(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{
		MessageSizeLimit: 2000,
		RejectRecipients: []string{"Gone@pophook.test"},
		DeferRecipients:  []string{"later@pophook.test"},
		RecipientReplies: map[string]string{"full@pophook.test": "552 5.2.2 Mailbox full"},
	})
	c := dialRaw(t, s.Addr(), nil)
	code, text := c.cmd("EHLO client.example")
	if code != 250 || !strings.Contains(text, "\nSIZE 2000\n") {
		t.Errorf("EHLO: %d %q, want SIZE 2000", code, text)
	}
	for _, tc := range []struct {
		rcpt string
		code int
		text string
	}{
		{"gone@pophook.test", 550, "5.1.1 <gone@pophook.test>: Recipient address rejected: User unknown (postfixtest reject)"},
		{"later@pophook.test", 450, "4.2.1 <later@pophook.test>: Recipient address rejected: Mailbox temporarily unavailable (postfixtest defer)"},
		{"full@pophook.test", 552, "5.2.2 <full@pophook.test>: Recipient address rejected: Mailbox full"},
	} {
		code, text := c.send("<s@example.org>", []string{tc.rcpt}, nil)
		if code != tc.code || text != tc.text {
			t.Errorf("RCPT %s: %d %q, want %d %q", tc.rcpt, code, text, tc.code, tc.text)
		}
	}
	code, text = c.send("<s@example.org>", []string{"ok@pophook.test"}, wire("Subject: big\r\n\r\n"+strings.Repeat("z", 2100)+"\r\n"))
	if code != 552 {
		t.Errorf("DATA over the limit: %d %s, want 552", code, text)
	}
	t.Logf("DATA over the limit: %d %s", code, text)
	code, text = c.send("<s@example.org>", []string{"ok@pophook.test"}, wire("Subject: small\r\n\r\nbody\r\n"))
	if code != 250 {
		t.Errorf("small message: %d %s", code, text)
	}
	code, text = c.cmd("MAIL FROM:<s@example.org> SIZE=2001")
	if code != 552 {
		t.Errorf("MAIL SIZE=2001: %d %s, want 552", code, text)
	}
	t.Logf("MAIL SIZE=2001: %d %s", code, text)
	// Postfix 3.7 remembers that SIZE: the next MAIL without SIZE= gets
	// the same 552, until RSET.
	if code, text := c.cmd("MAIL FROM:<s@example.org>"); code != 552 {
		t.Errorf("MAIL after a refused SIZE=: %d %s", code, text)
	}
	c.cmd("RSET")
	if code, text := c.cmd("MAIL FROM:<s@example.org>"); code != 250 {
		t.Errorf("MAIL after RSET: %d %s", code, text)
	}
	c.cmd("RSET")

	// The same through net/smtp: the codes come back as *textproto.Error.
	nc, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Mail("s@example.org")
	var terr *textproto.Error
	if err := nc.Rcpt("later@pophook.test"); !errors.As(err, &terr) || terr.Code != 450 {
		t.Errorf("net/smtp RCPT later: %v", err)
	}
	if err := nc.Rcpt("gone@pophook.test"); !errors.As(err, &terr) || terr.Code != 550 {
		t.Errorf("net/smtp RCPT gone: %v", err)
	}
	nc.Quit()

	s.WaitQueueEmpty(t, 10*time.Second)
	if n := len(s.Messages(t, "")); n != 1 {
		t.Errorf("%d messages stored, want 1", n)
	}
}

func TestCloseAndOddTestName(t *testing.T) {
	t.Parallel()
	t.Run("name with $ {x}, and spaces", func(t *testing.T) {
		s := Start(t, Options{})
		if !plainPath(s.Dir) {
			t.Fatalf("Dir %q unusable in main.cf", s.Dir)
		}
		c := dialRaw(t, s.TLSAddr(), s.TLSConfig())
		c.ehlo()
		if code, text := c.send("<a@example.org>", []string{"x@pophook.test"}, wire("Subject: x\r\n\r\nx\r\n")); code != 250 {
			t.Fatalf("%d %s", code, text)
		}
		s.WaitMessages(t, "x@pophook.test", 1, 10*time.Second)
		pgid := s.proc.cmd.Process.Pid
		begin := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Close took %v", time.Since(begin))
		if left := groupMembers(pgid); len(left) > 0 {
			t.Errorf("processes left after Close: %v", left)
		}
		if _, err := c.r.ReadString('\n'); err == nil {
			t.Error("session still alive after Close")
		}
		for _, addr := range []string{s.Addr(), s.TLSAddr()} {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still open after Close", addr)
			}
		}
		if err := s.Close(); err != nil { // idempotent; Cleanup calls it again
			t.Error(err)
		}
		if n := len(s.Messages(t, "x@pophook.test")); n != 1 {
			t.Errorf("Messages after Close: %d", n)
		}
	})
}

// TestParallelServers starts several servers at once, as parallel tests
// and packages do, and checks that each gets only its own mail.
func TestParallelServers(t *testing.T) {
	t.Parallel()
	const n = 4
	var mu sync.Mutex
	addrs := map[string]bool{}
	for i := range n {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := Start(t, Options{})
			mu.Lock()
			for _, a := range []string{s.Addr(), s.TLSAddr()} {
				if addrs[a] {
					t.Errorf("address %s used twice", a)
				}
				addrs[a] = true
			}
			mu.Unlock()
			c := dialRaw(t, s.Addr(), nil)
			c.ehlo()
			rcpt := fmt.Sprintf("p%d@pophook.test", i)
			if code, text := c.send("<a@example.org>", []string{rcpt}, wire(fmt.Sprintf("Subject: %d\r\n\r\nx\r\n", i))); code != 250 {
				t.Fatalf("%d %s", code, text)
			}
			s.WaitMessages(t, rcpt, 1, 10*time.Second)
			s.WaitQueueEmpty(t, 10*time.Second)
			if all := s.Messages(t, ""); len(all) != 1 {
				t.Errorf("%d messages, want 1", len(all))
			}
		})
	}
}

func TestSplitTrace(t *testing.T) {
	trace := "Return-Path: <a@example.org>\nX-Original-To: b@x\nDelivered-To: b@x\n" +
		"Received: from c (unknown [127.0.0.1])\n\tby localhost (Postfix) with ESMTP id 1234ABC\n\tfor <b@x>; Thu,  3 Dec 2026 12:00:00 +0000 (UTC)\n"
	for _, rest := range []string{"Subject: x\n\nbody\n", "", "\n starts with space\n"} {
		tr, r, err := SplitTrace([]byte(trace + rest))
		if err != nil || string(tr) != trace || string(r) != rest {
			t.Errorf("rest %q: %q, %q, %v", rest, tr, r, err)
		}
	}
	for _, bad := range []string{
		"",
		"Subject: x\n\nbody\n",
		"Return-Path: <a@example.org>\nDelivered-To: b@x\nReceived: x\n\nbody\n",
		strings.TrimSuffix(trace, "\n"),
	} {
		if _, _, err := SplitTrace([]byte(bad)); err == nil {
			t.Errorf("SplitTrace(%q) did not fail", bad)
		}
	}
}

func TestMaildirNamesAndDeliveredTo(t *testing.T) {
	sec, usec := maildirTime("1796301352.Vfe00I984093M148447.vm")
	if sec != 1796301352 || usec != 148447 {
		t.Errorf("maildirTime = %d, %d", sec, usec)
	}
	if sec, usec := maildirTime("odd"); sec != 0 || usec != 0 {
		t.Errorf("maildirTime(odd) = %d, %d", sec, usec)
	}
	msg := "Return-Path: <a>\nX-Original-To: b@x\ndelivered-to:  b@x \nDelivered-To: other@x\n\nDelivered-To: body@x\n"
	if got := deliveredTo([]byte(msg)); got != "b@x" {
		t.Errorf("deliveredTo = %q", got)
	}
	if got := deliveredTo([]byte("Subject: x\n\nDelivered-To: body@x\n")); got != "" {
		t.Errorf("deliveredTo from body = %q", got)
	}
}

func TestAccessTable(t *testing.T) {
	table, err := accessTable(Options{
		RejectRecipients: []string{"A@x"},
		DeferRecipients:  []string{"b@x"},
		RecipientReplies: map[string]string{"c@x": "554 5.7.1 no"},
	})
	want := "# check_recipient_access table written by postfixtest\n" +
		"a@x " + RejectReply + "\nb@x " + DeferReply + "\nc@x 554 5.7.1 no\n"
	if err != nil || table != want {
		t.Errorf("accessTable = %q, %v", table, err)
	}
	for _, o := range []Options{
		{RejectRecipients: []string{"a b@x"}},
		{RejectRecipients: []string{""}},
		{DeferRecipients: []string{"#x"}},
		{RecipientReplies: map[string]string{"a@x": "550 a\nb"}},
		{RecipientReplies: map[string]string{"a@x": " "}},
	} {
		if _, err := accessTable(o); err == nil {
			t.Errorf("accessTable(%+v) did not fail", o)
		}
	}
}

// fakeTB records Skip and Fatal instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Skip(args ...any)  { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatal(args ...any) { f.failed = fmt.Sprint(args...) }

func TestUnavailable(t *testing.T) {
	for _, ci := range []bool{false, true} {
		f := &fakeTB{}
		unavailable(f, ci, "postfix is not installed; install it with: "+InstallHint)
		msg := f.skipped
		if ci {
			msg = f.failed
			if f.skipped != "" {
				t.Errorf("CI: skipped %q", f.skipped)
			}
		} else if f.failed != "" {
			t.Errorf("not CI: failed %q", f.failed)
		}
		if !strings.Contains(msg, "apt-get install --no-install-recommends postfix") {
			t.Errorf("ci=%v: message %q lacks the install hint", ci, msg)
		}
	}
}

func TestFindPostfix(t *testing.T) {
	notFound := func(string) (string, error) { return "", errors.New("not found") }
	files := func(have ...string) func(string) bool {
		return func(p string) bool { return slices.Contains(have, p) }
	}
	daemons := func(dir string, except string) []string {
		var fs []string
		for _, d := range []string{"master", "smtpd", "cleanup", "qmgr", "trivial-rewrite", "virtual", "postlogd", "bounce", "tlsmgr"} {
			if d != except {
				fs = append(fs, dir+"/"+d)
			}
		}
		sort.Strings(fs)
		return fs
	}
	if _, err := findPostfix(notFound, files()); err == nil {
		t.Error("no postfix: no error")
	}
	b, err := findPostfix(notFound, files(daemons("/usr/lib/postfix/sbin", "")...))
	if err != nil || b.master != "/usr/lib/postfix/sbin/master" {
		t.Errorf("Debian layout: %+v, %v", b, err)
	}
	if _, err := findPostfix(notFound, files(daemons("/usr/libexec/postfix", "virtual")...)); err == nil || !strings.Contains(err.Error(), "virtual") {
		t.Errorf("without virtual: %v", err)
	}
}

// TestMasterDeath checks what sysProcAttr relies on: when master dies (as
// when the kernel kills it because the test binary died), Postfix's daemons
// exit by themselves, apart from an smtpd still serving a client.
func TestMasterDeath(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	pgid := s.proc.cmd.Process.Pid
	if err := syscall.Kill(pgid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if left := waitGroupGone(pgid, 10*time.Second); len(left) > 0 {
		t.Fatalf("processes %v still alive 10s after master died", left)
	}
	t.Logf("daemons gone %v after master", time.Since(begin))
}

// TestPortTaken makes the first ports Start picks busy: Start must notice
// and retry with others. (master reports that to syslog only, and exits 1s
// later.)
func TestPortTaken(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		busy, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	calls := 0
	pick := func(host string) (int, int, error) {
		calls++
		if calls == 1 {
			_, q, err := freePorts(host)
			return busyPort, q, err
		}
		return freePorts(host)
	}
	s := start(t, Options{}, pick)
	if calls != 2 || s.Port == busyPort {
		t.Fatalf("%d port picks, port %d (busy %d)", calls, s.Port, busyPort)
	}
	dialRaw(t, s.Addr(), nil).cmd("QUIT")
}
