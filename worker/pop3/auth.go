package pop3

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/pophook/pophook/internal/redact"
)

// Mechanism names a way to log in.
type Mechanism string

const (
	MechAuto    Mechanism = "auto"    // PLAIN if offered, else USER/PASS (also without CAPA), else LOGIN
	MechUser    Mechanism = "user"    // USER and PASS (RFC 1939)
	MechPlain   Mechanism = "plain"   // SASL PLAIN (RFC 4616)
	MechLogin   Mechanism = "login"   // SASL LOGIN (draft-murchison-sasl-login)
	MechXOAUTH2 Mechanism = "xoauth2" // SASL XOAUTH2 with a bearer token
)

// maxCommandLength is the RFC 5034 limit for an AUTH command with an
// initial response, CRLF included; longer ones use the two-step form.
const maxCommandLength = 255

// Authenticate logs in with mechanism; secret is the password, or the
// OAuth2 access token for MechXOAUTH2. A SASL mechanism the server does not
// offer fails with ErrMechanism before anything is sent. A refused login is
// an *Error with Login set (errors.Is(err, ErrAuth) unless it carries a
// temporary code). After success the capabilities are asked for again,
// since servers may offer more once logged in.
func (c *Client) Authenticate(ctx context.Context, mech Mechanism, user, secret string) error {
	if err := c.mayAuthenticate(); err != nil {
		return err
	}
	if mech == MechAuto {
		mech = c.autoMechanism()
	}
	if err := c.offered(mech); err != nil {
		return err
	}
	c.secrets = redact.Wire(secret, "\x00"+user+"\x00"+secret, xoauth2Response(user, secret))
	defer func() { c.secrets = nil }()
	var err error
	switch mech {
	case MechUser:
		err = c.userPass(ctx, user, secret)
	case MechPlain:
		err = c.authPlain(ctx, user, secret)
	case MechLogin:
		err = c.authLogin(ctx, user, secret)
	case MechXOAUTH2:
		err = c.authXOAUTH2(ctx, user, secret)
	default:
		return fmt.Errorf("pop3: unknown authentication mechanism %q", mech)
	}
	if err != nil {
		return c.loginRefused(err)
	}
	c.authed, c.mech = true, mech
	if c.capaOK {
		return c.capa(ctx)
	}
	return nil
}

// offered checks a SASL mechanism against CAPA. USER/PASS is RFC 1939's
// baseline and is always tried: servers that support it do not all list
// it.
func (c *Client) offered(mech Mechanism) error {
	if mech == MechUser {
		return nil
	}
	name := strings.ToUpper(string(mech))
	switch {
	case !c.capaOK:
		return fmt.Errorf("%w: SASL %s asked for, but the server answers no CAPA and so offers no SASL; use USER/PASS (auth user or auto)", ErrMechanism, name)
	case !c.caps.HasSASL(name):
		return fmt.Errorf("%w: SASL %s asked for; the server offers %s", ErrMechanism, name, c.offers())
	}
	return nil
}

// offers lists the login mechanisms in CAPA, for error messages.
func (c *Client) offers() string {
	var l []string
	if c.caps.Has("USER") {
		l = append(l, "USER/PASS")
	}
	for _, m := range c.caps.SASL() {
		l = append(l, "SASL "+m)
	}
	if len(l) == 0 {
		return "no login mechanism in CAPA"
	}
	return strings.Join(l, ", ")
}

// loginRefused marks a -ERR to a login command as such and says whether
// it is vague (see Error.Vague).
func (c *Client) loginRefused(err error) error {
	var pe *Error
	if !errors.As(err, &pe) {
		return err
	}
	pe.Login = true
	pe.Vague = pe.Code == "" && !mentionsLock(pe.Text) && (pe.Text == "" || c.caps.Has("AUTH-RESP-CODE"))
	return err
}

// Mechanism is the mechanism the session logged in with ("" before).
func (c *Client) Mechanism() Mechanism { return c.mech }

func (c *Client) autoMechanism() Mechanism {
	switch {
	case c.caps.HasSASL("PLAIN"):
		return MechPlain
	case c.caps.Has("USER") || !c.capaOK:
		return MechUser
	case c.caps.HasSASL("LOGIN"):
		return MechLogin
	}
	return MechUser
}

// mayAuthenticate refuses, before a byte is sent, to put a credential on a
// connection without TLS unless the caller allowed it.
func (c *Client) mayAuthenticate() error {
	if _, ok := c.TLSConnectionState(); ok || c.opts.AllowInsecureAuth {
		return nil
	}
	return ErrInsecureAuth
}

func (c *Client) userPass(ctx context.Context, user, pass string) error {
	if err := c.mayAuthenticate(); err != nil {
		return err
	}
	return c.exchange(ctx, func() error {
		c.send("USER "+user, "")
		if err := c.flush(); err != nil {
			return err
		}
		if _, err := c.readReply("USER"); err != nil {
			return err
		}
		c.send("PASS "+pass, "PASS <redacted>")
		if err := c.flush(); err != nil {
			return err
		}
		_, err := c.readReply("PASS")
		return err
	})
}

func (c *Client) authPlain(ctx context.Context, user, pass string) error {
	return c.sasl(ctx, "PLAIN", []string{"\x00" + user + "\x00" + pass})
}

func (c *Client) authLogin(ctx context.Context, user, pass string) error {
	return c.sasl(ctx, "LOGIN", []string{user, pass})
}

func (c *Client) authXOAUTH2(ctx context.Context, user, token string) error {
	// Exchange Online rejects the initial-response form, so the token
	// always goes in the second step.
	return c.sasl(ctx, "XOAUTH2", []string{"", xoauth2Response(user, token)})
}

func xoauth2Response(user, token string) string {
	return "user=" + user + "\x01auth=Bearer " + token + "\x01\x01"
}

// sasl runs an AUTH exchange (RFC 5034). responses[0] is the initial
// response; it is sent on the AUTH line when that fits in 255 octets and
// otherwise after the first "+" challenge. An empty responses[0] means
// the mechanism has none. Every client line is redacted in the trace. A
// challenge beyond the prepared responses is answered with an empty line,
// as XOAUTH2 requires after its JSON error, and the final -ERR returned.
func (c *Client) sasl(ctx context.Context, mech string, responses []string) error {
	if err := c.mayAuthenticate(); err != nil {
		return err
	}
	command := "AUTH " + mech
	return c.exchange(ctx, func() error {
		pending := responses
		if ir := base64.StdEncoding.EncodeToString([]byte(pending[0])); pending[0] != "" && len(command)+1+len(ir)+2 <= maxCommandLength {
			c.send(command+" "+ir, command+" <redacted>")
			pending = pending[1:]
		} else {
			c.send(command, "")
			if pending[0] == "" {
				pending = pending[1:]
			}
		}
		if err := c.flush(); err != nil {
			return err
		}
		extra := 0
		for {
			line, err := c.readLine()
			if err != nil {
				return fmt.Errorf("pop3: %s: %w", command, err)
			}
			if line != "+" && !strings.HasPrefix(line, "+ ") {
				r, err := parseStatus([]byte(line))
				if err != nil {
					return c.fail(fmt.Errorf("pop3: %s: %w", command, err))
				}
				if !r.ok {
					return &Error{Command: command, Code: r.code, Text: r.text}
				}
				return nil
			}
			answer := ""
			switch {
			case len(pending) > 0:
				answer = base64.StdEncoding.EncodeToString([]byte(pending[0]))
				pending = pending[1:]
			case extra > 0:
				// A server that keeps challenging would keep us here
				// for ever: cancel the exchange.
				c.send("*", "")
				c.flush()
				return c.fail(fmt.Errorf("pop3: %s: %w: unexpected challenge %q", command, ErrProtocol, truncate([]byte(line))))
			default:
				extra++
			}
			c.send(answer, "<redacted>")
			if err := c.flush(); err != nil {
				return err
			}
		}
	})
}
