package pop3test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// maxLine is the longest line, line break included, the server accepts from
// a client. RFC 2449 allows 255 octets for a command; the fake is lenient.
const maxLine = 4096

var (
	errTooLong = errors.New("pop3test: line too long")
	errQuit    = errors.New("pop3test: quit")
	errDrop    = errors.New("pop3test: dropping the connection")
)

// session is one client connection.
type session struct {
	srv *Server
	f   Faults // as of accept
	id  int

	raw  net.Conn // the TCP connection, closed by Server.Close
	conn net.Conn // raw, or the TLS connection over it
	tls  bool
	r    *bufio.Reader // nil with BrokenPipelining
	w    *bufio.Writer

	utf8    bool     // the client sent UTF8
	userArg string   // from USER, waiting for PASS
	user    string   // logged in, holding the mailbox lock; "" in AUTHORIZATION
	msgs    []stored // maildrop as of login
	deleted []bool
}

func (s *Server) serveConn(raw net.Conn, id int, f Faults) {
	defer s.wg.Done()
	c := &session{srv: s, f: f, id: id, raw: raw, conn: raw}
	if s.implicitTLS {
		c.conn = tls.Server(raw, s.tlsConfig)
		c.tls = true
	}
	c.setConn(c.conn)
	c.serve()
	c.w.Flush()
	if c.user != "" {
		s.unlock(c.user) // dropped or closed: deletes are not applied
	}
	raw.Close()
	s.forget(raw)
}

func (c *session) setConn(conn net.Conn) {
	c.conn = conn
	c.w = bufio.NewWriter(conn)
	if !c.f.BrokenPipelining {
		c.r = bufio.NewReaderSize(conn, maxLine)
	}
}

func (c *session) serve() {
	if c.f.GreetingError != "" {
		c.reply(errLine(c.f.GreetingError))
		return
	}
	if !c.garbage("") {
		c.reply("+OK pop3test ready")
	}
	for {
		line, err := c.readLine()
		if errors.Is(err, errTooLong) {
			c.reply("-ERR line too long")
			continue
		}
		if err != nil {
			return
		}
		if err := c.command(line); err != nil {
			return
		}
	}
}

// readLine flushes pending replies unless another complete command is
// already buffered (so pipelined replies go out together), then reads one
// line, records it and returns it without its line break.
func (c *session) readLine() (string, error) {
	if c.r == nil {
		if err := c.w.Flush(); err != nil {
			return "", err
		}
		return c.readLineBroken()
	}
	if buf, _ := c.r.Peek(c.r.Buffered()); bytes.IndexByte(buf, '\n') < 0 {
		if err := c.w.Flush(); err != nil {
			return "", err
		}
	}
	var line []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		if len(line)+len(frag) > maxLine {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = c.r.ReadSlice('\n')
			}
			if err != nil {
				return "", err
			}
			return "", errTooLong
		}
		line = append(line, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		return c.got(line), nil
	}
}

// readLineBroken reads like a broken server: whatever a network read returns
// beyond the first line is thrown away.
func (c *session) readLineBroken() (string, error) {
	var acc []byte
	buf := make([]byte, maxLine)
	for {
		n, err := c.conn.Read(buf)
		acc = append(acc, buf[:n]...)
		if i := bytes.IndexByte(acc, '\n'); i >= 0 {
			if i+1 > maxLine {
				return "", errTooLong
			}
			return c.got(acc[:i+1]), nil
		}
		if err != nil {
			return "", err
		}
		if len(acc) > maxLine {
			return "", errTooLong // the rest of the line is read as the next command
		}
	}
}

// got records a line and returns it without its line break.
func (c *session) got(line []byte) string {
	text := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	c.srv.record(c.id, c.tls, text)
	return text
}

// reply writes one status or continuation line after the SlowReply pause.
func (c *session) reply(line string) {
	c.srv.pause(c.f.SlowReply)
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
}

// multi writes a status line and a multi-line body that is already
// dot-stuffed and terminated.
func (c *session) multi(status string, body []byte) {
	c.reply(status)
	c.w.Write(body)
}

// multiLines writes a status line and short lines that need no dot-stuffing.
func (c *session) multiLines(status string, lines []string) {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	c.multi(status, b.Bytes())
}

// errLine turns a fault's text into a -ERR line.
func errLine(text string) string {
	if strings.HasPrefix(text, "-ERR") {
		return text
	}
	return "-ERR " + text
}

// garbage sends the GarbageReply or LongReply fault instead of the reply to
// the command name ("" for the greeting) and reports whether it did.
func (c *session) garbage(name string) bool {
	on := strings.ToUpper(c.f.GarbageOn)
	if on == "GREETING" {
		on = ""
	}
	if on != name || (c.f.GarbageReply == "" && c.f.LongReply <= 0) {
		return false
	}
	if c.f.LongReply > 0 {
		c.srv.pause(c.f.SlowReply)
		line := []byte("+OK ")
		if c.f.LongReply < len(line) {
			line = line[:c.f.LongReply]
		}
		c.w.Write(line)
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for left := c.f.LongReply - len(line); left > 0; left -= len(chunk) {
			if _, err := c.w.Write(chunk[:min(left, len(chunk))]); err != nil {
				break
			}
		}
		c.w.WriteString("\r\n")
		return true
	}
	c.reply(c.f.GarbageReply)
	return true
}

// command runs one command line. A non-nil error ends the session.
func (c *session) command(line string) error {
	if c.f.Hook != nil {
		if reply, ok := c.f.Hook(c.user, line); ok {
			if reply == "" {
				return errDrop
			}
			c.srv.pause(c.f.SlowReply)
			c.w.WriteString(reply)
			return nil
		}
	}
	name, arg, _ := strings.Cut(line, " ")
	name = strings.ToUpper(name)
	if name != "" && c.garbage(name) {
		return nil
	}
	args := strings.Fields(arg)
	auth := c.user == "" // AUTHORIZATION state

	switch {
	case (name == "CAPA" || name == "AUTH") && c.srv.opts.NoCAPA:
		c.reply("-ERR")
	case name == "CAPA":
		c.capa()
	case name == "UTF8" && auth && c.srv.opts.UTF8Substitute != nil:
		c.utf8 = true
		c.reply("+OK UTF8 enabled")
	case name == "QUIT":
		return c.quit()
	case name == "STLS" && auth && c.srv.opts.STLS && !c.tls:
		return c.stls()
	case name == "USER" && !c.srv.opts.NoUser:
		if !auth {
			c.reply("-ERR already logged in")
		} else if len(args) != 1 {
			c.reply("-ERR usage: USER name")
		} else {
			c.userArg = args[0]
			c.reply("+OK send PASS")
		}
	case name == "PASS" && !c.srv.opts.NoUser:
		switch {
		case !auth:
			c.reply("-ERR already logged in")
		case c.userArg == "":
			c.reply("-ERR send USER first")
		default:
			user := c.userArg
			c.userArg = ""
			pass, known := c.srv.opts.Users[user]
			c.login(user, known && pass == arg)
		}
	case name == "AUTH":
		if !auth {
			c.reply("-ERR already logged in")
			return nil
		}
		return c.authenticate(args)
	case auth && transactionCommand(name, c.srv.opts.NoUIDL):
		c.reply("-ERR not logged in")
	case auth:
		c.reply("-ERR unknown command")
	default:
		return c.transaction(name, args)
	}
	return nil
}

// transactionCommand reports whether name is a command of TRANSACTION state.
func transactionCommand(name string, noUIDL bool) bool {
	_, ok := transactionArgs[name]
	return ok && !(name == "UIDL" && noUIDL)
}

// capa answers CAPA. In TRANSACTION state USER, SASL and STLS are left out,
// as RFC 2449 allows.
func (c *session) capa() {
	o := c.srv.opts
	auth := c.user == ""
	caps := []string{"TOP"}
	if !o.NoUIDL {
		caps = append(caps, "UIDL")
	}
	if auth && !o.NoUser {
		caps = append(caps, "USER")
	}
	if auth && len(o.SASL) > 0 {
		caps = append(caps, "SASL "+strings.Join(o.SASL, " "))
	}
	caps = append(caps, "RESP-CODES", "AUTH-RESP-CODE")
	if o.Pipelining {
		caps = append(caps, "PIPELINING")
	}
	if auth && o.STLS && !c.tls {
		caps = append(caps, "STLS")
	}
	if auth && o.UTF8Substitute != nil {
		caps = append(caps, "UTF8 USER")
	}
	caps = append(caps, o.Capabilities...)
	caps = append(caps, "IMPLEMENTATION pop3test")
	c.multiLines("+OK capability list follows", caps)
}

// stls upgrades the connection to TLS. Anything the client sent after STLS
// and before the handshake is discarded, as RFC 2595 asks.
func (c *session) stls() error {
	c.reply("+OK begin TLS negotiation")
	if err := c.w.Flush(); err != nil {
		return err
	}
	t := tls.Server(c.conn, c.srv.tlsConfig)
	if err := t.Handshake(); err != nil {
		return err
	}
	c.tls = true
	c.setConn(t)
	return nil
}

// login finishes PASS or AUTH for user, given whether the credentials were
// right, and replies.
func (c *session) login(user string, ok bool) {
	switch {
	case c.f.LoginError != "":
		c.reply(errLine(c.f.LoginError))
	case !ok:
		c.reply("-ERR [AUTH] invalid credentials")
	case !c.srv.lock(user):
		c.reply("-ERR [IN-USE] mailbox locked by another session")
	default:
		c.user = user
		c.msgs = c.srv.snapshot(user)
		c.deleted = make([]bool, len(c.msgs))
		n, size := c.stat()
		c.reply(fmt.Sprintf("+OK %s has %d messages (%d octets)", user, n, size))
	}
}

// quit ends the session; in TRANSACTION state it enters UPDATE and applies
// the deletes, releasing the mailbox lock before the reply is sent so the
// client may log in again at once.
func (c *session) quit() error {
	if c.user == "" {
		c.reply("+OK bye")
		return errQuit
	}
	ids := make(map[uint64]bool)
	for i, d := range c.deleted {
		if d {
			ids[c.msgs[i].id] = true
		}
	}
	left := c.srv.expunge(c.user, ids)
	c.srv.unlock(c.user)
	c.user = ""
	c.reply(fmt.Sprintf("+OK pop3test signing off (%d messages left)", left))
	return errQuit
}

// authenticate runs an AUTH exchange (RFC 5034). args are the mechanism and
// the optional initial response.
func (c *session) authenticate(args []string) error {
	o := c.srv.opts
	if len(args) == 0 {
		c.multiLines("+OK SASL mechanisms follow", o.SASL)
		return nil
	}
	mech := strings.ToUpper(args[0])
	known := false
	for _, m := range o.SASL {
		known = known || m == mech
	}
	if !known || len(args) > 2 {
		c.reply("-ERR [AUTH] unsupported SASL mechanism")
		return nil
	}
	initial, hasInitial := "", len(args) == 2
	if hasInitial {
		initial = args[1]
	}
	// step returns the client's next response, decoded; the initial
	// response stands in for the first one when there is one.
	step := func(challenge string) ([]byte, error) {
		var line string
		if hasInitial {
			hasInitial = false
			line = initial
			if line == "=" {
				line = ""
			}
		} else {
			c.reply("+ " + challenge)
			var err error
			if line, err = c.readLine(); err != nil {
				if errors.Is(err, errTooLong) {
					c.reply("-ERR line too long")
					return nil, errCancel
				}
				return nil, err
			}
		}
		if line == "*" {
			c.reply("-ERR authentication cancelled")
			return nil, errCancel
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			c.reply("-ERR invalid base64")
			return nil, errCancel
		}
		return b, nil
	}

	err := func() error {
		switch mech {
		case "PLAIN":
			b, err := step("")
			if err != nil {
				return err
			}
			parts := strings.Split(string(b), "\x00")
			if len(parts) != 3 {
				c.login("", false)
				return nil
			}
			authz, user, pass := parts[0], parts[1], parts[2]
			want, ok := o.Users[user]
			c.login(user, ok && want == pass && (authz == "" || authz == user))
		case "LOGIN":
			user, err := step("VXNlcm5hbWU6") // "Username:"
			if err != nil {
				return err
			}
			pass, err := step("UGFzc3dvcmQ6") // "Password:"
			if err != nil {
				return err
			}
			want, ok := o.Users[string(user)]
			c.login(string(user), ok && want == string(pass))
		case "XOAUTH2":
			b, err := step("")
			if err != nil {
				return err
			}
			user, token := parseXOAUTH2(b)
			want, ok := o.Tokens[user]
			ok = ok && user != "" && want == token
			if !ok && c.f.LoginError == "" {
				// The error comes as a challenge; the client answers
				// with an empty line (or anything) and gets -ERR.
				c.reply("+ " + base64.StdEncoding.EncodeToString(
					[]byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`)))
				if _, err := c.readLine(); err != nil && !errors.Is(err, errTooLong) {
					return err
				}
			}
			c.login(user, ok)
		}
		return nil
	}()
	if errors.Is(err, errCancel) {
		return nil
	}
	return err
}

// errCancel ends a SASL exchange that has already been answered with -ERR.
var errCancel = errors.New("pop3test: SASL exchange cancelled")

// parseXOAUTH2 reads "user=U\x01auth=Bearer T\x01\x01".
func parseXOAUTH2(b []byte) (user, token string) {
	for _, kv := range strings.Split(string(b), "\x01") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "user":
			user = v
		case "auth":
			if t, ok := strings.CutPrefix(v, "Bearer "); ok {
				token = t
			}
		}
	}
	return user, token
}

// stat counts the messages not marked deleted and their size.
func (c *session) stat() (n, size int) {
	for i, st := range c.msgs {
		if !c.deleted[i] {
			n++
			size += st.listSize()
		}
	}
	return n, size
}

// msg parses a message number; it replies -ERR and returns -1 when the
// number is not that of a live message.
func (c *session) msg(arg string) int {
	n, err := strconv.Atoi(arg)
	switch {
	case err != nil || n < 1 || n > len(c.msgs):
		c.reply("-ERR no such message")
		return -1
	case c.deleted[n-1]:
		c.reply(fmt.Sprintf("-ERR message %d already deleted", n))
		return -1
	}
	return n - 1
}

// transactionArgs holds the least and most arguments of each TRANSACTION
// state command.
var transactionArgs = map[string][2]int{
	"STAT": {0, 0}, "LIST": {0, 1}, "UIDL": {0, 1}, "RETR": {1, 1},
	"TOP": {2, 2}, "DELE": {1, 1}, "RSET": {0, 0}, "NOOP": {0, 0},
}

// transaction runs a command in TRANSACTION state. A non-nil error ends the
// session.
func (c *session) transaction(name string, args []string) error {
	lim, ok := transactionArgs[name]
	if !ok || (name == "UIDL" && c.srv.opts.NoUIDL) {
		c.reply("-ERR unknown command")
		return nil
	}
	if len(args) < lim[0] || len(args) > lim[1] {
		c.reply("-ERR wrong number of arguments")
		return nil
	}
	switch name {
	case "STAT":
		n, size := c.stat()
		c.reply(fmt.Sprintf("+OK %d %d", n, size))
	case "LIST", "UIDL":
		value := func(i int) string {
			if name == "LIST" {
				return strconv.Itoa(c.msgs[i].listSize())
			}
			return c.msgs[i].msg.UID
		}
		if len(args) == 1 {
			if i := c.msg(args[0]); i >= 0 {
				c.reply(fmt.Sprintf("+OK %d %s", i+1, value(i)))
			}
			return nil
		}
		var lines []string
		for i := range c.msgs {
			if !c.deleted[i] {
				lines = append(lines, fmt.Sprintf("%d %s", i+1, value(i)))
			}
		}
		c.multiLines(fmt.Sprintf("+OK %d messages", len(lines)), lines)
	case "RETR":
		if c.f.RetrError != "" {
			c.reply(errLine(c.f.RetrError))
			return nil
		}
		i := c.msg(args[0])
		if i < 0 {
			return nil
		}
		wire := c.msgs[i].wire
		if sub := c.srv.opts.UTF8Substitute; sub != nil && !c.utf8 && rawUTF8Header(wire) {
			wire = Message{Data: sub}.Wire()
		}
		body := dotStuff(wire)
		status := fmt.Sprintf("+OK %d octets", len(wire))
		if cut := c.f.CutRetrAfter; cut > 0 && cut < len(body) {
			c.multi(status, body[:cut])
			return errDrop
		}
		c.multi(status, body)
	case "TOP":
		i := c.msg(args[0])
		if i < 0 {
			return nil
		}
		lines, err := strconv.Atoi(args[1])
		if err != nil || lines < 0 {
			c.reply("-ERR invalid line count")
			return nil
		}
		c.multi("+OK top of message follows", dotStuff(top(c.msgs[i].wire, lines)))
	case "DELE":
		if i := c.msg(args[0]); i >= 0 {
			c.deleted[i] = true
			c.reply(fmt.Sprintf("+OK message %d deleted", i+1))
		}
	case "RSET":
		clear(c.deleted)
		n, size := c.stat()
		c.reply(fmt.Sprintf("+OK maildrop has %d messages (%d octets)", n, size))
	case "NOOP":
		c.reply("+OK")
	}
	return nil
}

// rawUTF8Header reports whether the header of a message holds a byte above
// 0x7F, which is what makes Courier substitute it.
func rawUTF8Header(wire []byte) bool {
	end := bytes.Index(wire, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(wire)
	}
	for _, b := range wire[:end] {
		if b >= 0x80 {
			return true
		}
	}
	return false
}

// dotStuff returns wire-form data (CRLF lines, ending in CRLF or empty)
// dot-stuffed and followed by the ".\r\n" terminator.
func dotStuff(data []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(data) + len(data)/64 + 3)
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			i = len(data) - 1
		}
		if data[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(data[:i+1])
		data = data[i+1:]
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// top returns the header, the blank line and the first n body lines of a
// wire-form message. A message without a blank line is all header.
func top(data []byte, n int) []byte {
	end := -1
	if bytes.HasPrefix(data, []byte("\r\n")) {
		end = 2
	} else if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		end = i + 4
	}
	if end < 0 {
		return data
	}
	rest := data[end:]
	for ; n > 0 && len(rest) > 0; n-- {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			i = len(rest) - 1
		}
		rest = rest[i+1:]
	}
	return data[:len(data)-len(rest)]
}
