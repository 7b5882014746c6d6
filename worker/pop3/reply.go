package pop3

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Response codes from RFC 2449 and RFC 3206 that change what a caller
// should do next.
const (
	CodeInUse      = "IN-USE"      // mailbox locked by another session: try later
	CodeLoginDelay = "LOGIN-DELAY" // logged in too soon after the last session: try later
	CodeAuth       = "AUTH"        // the credentials are wrong: retrying will not help
	CodeSysTemp    = "SYS/TEMP"    // a transient server problem: try later
	CodeSysPerm    = "SYS/PERM"    // a lasting server problem: a person must act
)

// Sentinels for errors.Is: errors.Is(err, ErrInUse) is true when the server
// answered -ERR [IN-USE]. ErrAuth also matches a refused login without a
// code (see Error.Login), and ErrInUse one whose text says the mailbox is
// locked, as RFC 1939's own "-ERR unable to lock maildrop".
var (
	ErrInUse      = &Error{Code: CodeInUse}
	ErrLoginDelay = &Error{Code: CodeLoginDelay}
	ErrAuth       = &Error{Code: CodeAuth}
	ErrSysTemp    = &Error{Code: CodeSysTemp}
	ErrSysPerm    = &Error{Code: CodeSysPerm}
)

var (
	// ErrProtocol marks a reply that does not follow POP3: garbage, an
	// over-long line, a malformed listing. The connection is closed.
	ErrProtocol = errors.New("pop3: protocol violation")

	// ErrInsecureAuth is returned, before anything is sent, when a
	// credential would cross a connection without TLS and the caller did
	// not set Options.AllowInsecureAuth.
	ErrInsecureAuth = errors.New("pop3: refusing to send credentials over a connection without TLS")

	// ErrMessageTooLarge is returned when a RETR or TOP body exceeds
	// Options.MaxMessageSize. The connection is closed: reading the rest
	// of an oversized message only to throw it away is not worth it.
	ErrMessageTooLarge = errors.New("pop3: message exceeds the size limit")

	// ErrPipeliningBroken is returned when a server advertises PIPELINING
	// but loses pipelined commands. The connection is closed because a
	// late reply could still arrive and be taken for the answer to a later
	// command; redial with Options.DisablePipelining.
	ErrPipeliningBroken = errors.New("pop3: server advertises PIPELINING but drops pipelined commands")

	// ErrClosed is returned by calls on a client whose connection is gone.
	ErrClosed = errors.New("pop3: connection closed")

	// ErrNoGreeting is returned when the server sent no greeting within
	// Options.GreetingTimeout: usually plain text spoken to a TLS port.
	ErrNoGreeting = errors.New("pop3: no greeting from the server")

	// ErrNotTLS is returned when the server answered the TLS handshake
	// with something else: usually TLS spoken to a plain POP3 port.
	ErrNotTLS = errors.New("pop3: the server does not speak TLS on this port")

	// ErrNoUIDL wraps the -ERR of a server that does not support UIDL:
	// without unique ids a fetcher cannot tell what it has delivered.
	ErrNoUIDL = errors.New("pop3: the server does not support UIDL")

	// ErrMechanism is returned, before anything is sent, when the
	// mechanism asked for is not one the server offers (a SASL mechanism
	// missing from CAPA, or any SASL at all on a server without CAPA).
	ErrMechanism = errors.New("pop3: authentication mechanism not offered by the server")
)

// Error is a -ERR reply.
type Error struct {
	Command string // the command as sent, secrets redacted ("RETR 3", "PASS")
	Code    string // response code without brackets, upper case; "" when none
	Text    string // the human-readable rest of the line

	// Login is set on a -ERR to USER, PASS or AUTH: a refused login.
	// Without a code it counts as [AUTH] for errors.Is, unless its text
	// says the mailbox is locked ([IN-USE]).
	Login bool
	// Vague is set on a refused login that does not tell a wrong password
	// from a mailbox the server could not open: no code, and no text (a
	// bare "-ERR", as popa3d answers when it cannot open the mailbox), or
	// a server that announced AUTH-RESP-CODE and so would have said
	// [AUTH] if the credentials were wrong (RFC 3206).
	Vague bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pop3: ")
	if e.Command != "" {
		b.WriteString(e.Command)
		b.WriteString(": ")
	}
	b.WriteString("-ERR")
	if e.Code != "" {
		b.WriteString(" [" + e.Code + "]")
	}
	if e.Text != "" {
		b.WriteString(" " + e.Text)
	}
	return b.String()
}

// HasCode reports whether the reply carries code or a code below it in the
// hierarchy (RFC 2449: SYS/TEMP/DISK has SYS/TEMP).
func (e *Error) HasCode(code string) bool {
	return hasCode(e.Code, code)
}

func hasCode(have, code string) bool {
	return have == code || strings.HasPrefix(have, code+"/")
}

// meaning is the code the reply is taken to carry: its own, or for a
// refused login without one, IN-USE when the text speaks of a lock and
// AUTH otherwise.
func (e *Error) meaning() string {
	switch {
	case e.Code != "" || !e.Login:
		return e.Code
	case mentionsLock(e.Text):
		return CodeInUse
	}
	return CodeAuth
}

// mentionsLock recognises the replies of servers without response codes
// that cannot open a mailbox another session holds ("unable to lock
// maildrop", "mailbox in use", "mailbox busy").
func mentionsLock(text string) bool {
	t := strings.ToLower(text)
	return strings.Contains(t, "lock") || strings.Contains(t, "in use") || strings.Contains(t, "busy")
}

// Is makes errors.Is(err, ErrInUse) and the other sentinels work.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Command != "" || t.Text != "" || t.Code == "" {
		return false
	}
	return hasCode(e.meaning(), t.Code)
}

// Temporary reports whether the same command may succeed later without
// anyone changing anything. A plain -ERR is taken as permanent: a server
// that means "try later" has the response codes to say so (a refused
// login whose text speaks of a lock is the exception, see Is).
func (e *Error) Temporary() bool {
	m := e.meaning()
	return hasCode(m, CodeInUse) || hasCode(m, CodeLoginDelay) || hasCode(m, CodeSysTemp)
}

// IsTemporary classifies any error from this package: true for -ERR replies
// with a temporary code and for network failures and timeouts; false for
// other -ERR replies, protocol violations, certificate and TLS handshake
// failures, refused plaintext authentication and oversized messages.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Temporary()
	}
	var certErr *tls.CertificateVerificationError
	var alert tls.AlertError
	switch {
	case errors.As(err, &certErr), errors.As(err, &alert),
		errors.Is(err, ErrProtocol), errors.Is(err, ErrInsecureAuth), errors.Is(err, ErrMechanism), errors.Is(err, ErrNotTLS),
		errors.Is(err, ErrMessageTooLarge), errors.Is(err, ErrPipeliningBroken):
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// What is left is a dropped connection (EOF, reset) or cancellation.
	return true
}

// reply is one parsed status line.
type reply struct {
	ok   bool
	code string
	text string
}

// parseStatus parses a status line without its line ending.
func parseStatus(line []byte) (reply, error) {
	var r reply
	var rest []byte
	switch {
	case hasPrefixFold(line, "+OK"):
		r.ok, rest = true, line[3:]
	case hasPrefixFold(line, "-ERR"):
		rest = line[4:]
	default:
		return r, fmt.Errorf("%w: expected +OK or -ERR, got %q", ErrProtocol, truncate(line))
	}
	if len(rest) > 0 && rest[0] != ' ' && rest[0] != '\t' {
		return r, fmt.Errorf("%w: malformed status line %q", ErrProtocol, truncate(line))
	}
	rest = bytes.TrimSpace(rest)
	if !r.ok {
		r.code, rest = splitCode(rest)
	}
	r.text = string(rest)
	return r, nil
}

// splitCode takes a leading "[CODE/SUB]" off a -ERR text. Brackets that do
// not hold a well-formed code are left as text.
func splitCode(text []byte) (string, []byte) {
	if len(text) < 3 || text[0] != '[' {
		return "", text
	}
	end := bytes.IndexByte(text, ']')
	if end < 2 {
		return "", text
	}
	code := text[1:end]
	for _, c := range code {
		ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '/'
		if !ok {
			return "", text
		}
	}
	return strings.ToUpper(string(code)), bytes.TrimSpace(text[end+1:])
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}

// truncate keeps hostile replies from flooding error messages and logs.
func truncate(b []byte) []byte {
	const max = 80
	if len(b) > max {
		return append(b[:max:max], "..."...)
	}
	return b
}
