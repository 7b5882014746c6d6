package pop3

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// These transcripts replay what real servers other than Dovecot sent
// (Courier POP3 1.0.16 and popa3d 1.0.3, on Debian 12; recorded in
// testdata/transcripts/courier-popa3d.txt), so the client is held to their
// behaviour without running them.

// courierCAPA is Courier's capability list before login, over TLS.
var courierCAPA = []string{
	"S: +OK Hello there.", "C: CAPA", "S: +OK Here's what I can do:",
	"S: SASL LOGIN PLAIN", "S: TOP", "S: USER", "S: LOGIN-DELAY 10", "S: PIPELINING",
	"S: UIDL", "S: UTF8 USER", "S: IMPLEMENTATION Courier Mail Server", "S: .",
}

// TestCourierGetsUTF8BeforeLogin: Courier offers UTF8 (RFC 6856) and hands
// a client that did not send it a "Cannot display Unicode content" notice
// in place of any message with raw UTF-8 in a header. The client must
// send UTF8 before it logs in.
func TestCourierGetsUTF8BeforeLogin(t *testing.T) {
	script := append(append([]string{}, courierCAPA...),
		"C: UTF8", "S: +OK UTF8 enabled",
		"C: AUTH PLAIN "+b64("\x00iocour1\x00pw"), "S: +OK logged in.",
		"C: CAPA", "S: +OK Here's what I can do:", "S: TOP", "S: PIPELINING", "S: UIDL", "S: .",
	)
	conn := startTranscript(t, script...)
	c, err := NewClient(context.Background(), conn, "example.org", plainOpts)
	ok(t, err)
	if !c.UTF8() {
		t.Error("UTF8() = false after +OK UTF8 enabled")
	}
	ok(t, c.Authenticate(ctx(t), MechAuto, "iocour1", "pw"))
}

// A server that refuses UTF8 is used as it is.
func TestUTF8RefusedIsNotAnError(t *testing.T) {
	script := []string{"S: +OK", "C: CAPA", "S: +OK", "S: UTF8", "S: USER", "S: .", "C: UTF8", "S: -ERR not now",
		"C: USER u", "S: +OK", "C: PASS p", "S: +OK", "C: CAPA", "S: +OK", "S: .",
	}
	c, err := NewClient(context.Background(), startTranscript(t, script...), "example.org", plainOpts)
	ok(t, err)
	if c.UTF8() {
		t.Error("UTF8() = true after -ERR")
	}
	ok(t, c.Authenticate(ctx(t), MechUser, "u", "p"))
}

// popa3dHead is popa3d's greeting and its answer to CAPA: none.
var popa3dHead = []string{"S: +OK", "C: CAPA", "S: -ERR"}

// TestPopa3dAutoUsesUserPass: with no CAPA there is no SASL; auto logs in
// with USER/PASS (an AUTH PLAIN would earn a bare -ERR that looked like a
// wrong password).
func TestPopa3dAutoUsesUserPass(t *testing.T) {
	script := append(append([]string{}, popa3dHead...),
		"C: USER iopop1", "S: +OK", "C: PASS right", "S: +OK")
	c, err := NewClient(context.Background(), startTranscript(t, script...), "example.org", plainOpts)
	ok(t, err)
	ok(t, c.Authenticate(ctx(t), MechAuto, "iopop1", "right"))
}

// TestPopa3dExplicitSASLIsAConfigurationError: an explicit SASL mechanism
// on a server that offers none fails before anything is sent, saying so.
func TestPopa3dExplicitSASLIsAConfigurationError(t *testing.T) {
	for _, mech := range []Mechanism{MechPlain, MechLogin, MechXOAUTH2} {
		c, err := NewClient(context.Background(), startTranscript(t, popa3dHead...), "example.org", plainOpts)
		ok(t, err)
		err = c.Authenticate(ctx(t), mech, "iopop1", "right")
		if !errors.Is(err, ErrMechanism) || errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "no CAPA") {
			t.Errorf("%s: %v; want ErrMechanism saying the server has no CAPA", mech, err)
		}
	}
	// And on a server with CAPA that lacks the mechanism, the error lists
	// what it does offer.
	c := loggedOut(t, plainOpts, []string{"USER", "SASL LOGIN"})
	err := c.Authenticate(ctx(t), MechXOAUTH2, "u", "tok")
	if !errors.Is(err, ErrMechanism) || !strings.Contains(err.Error(), "USER/PASS, SASL LOGIN") {
		t.Errorf("XOAUTH2 not offered: %v", err)
	}
}

// TestPopa3dRefusals: a wrong password comes with a reason; a mailbox it
// cannot open with a bare -ERR to PASS, which must not be reported as
// certainly a wrong password.
func TestPopa3dRefusals(t *testing.T) {
	for _, tc := range []struct {
		reply string
		vague bool
	}{
		{"S: -ERR Authentication failed (bad password?)", false},
		{"S: -ERR", true},
	} {
		script := append(append([]string{}, popa3dHead...), "C: USER iopop1", "S: +OK", "C: PASS pw", tc.reply)
		c, err := NewClient(context.Background(), startTranscript(t, script...), "example.org", plainOpts)
		ok(t, err)
		err = c.Authenticate(ctx(t), MechAuto, "iopop1", "pw")
		var pe *Error
		if !errors.As(err, &pe) || !errors.Is(err, ErrAuth) || pe.Vague != tc.vague {
			t.Errorf("%s: %v (vague %v), want ErrAuth with vague %v", tc.reply, err, pe != nil && pe.Vague, tc.vague)
		}
	}
}

// A server that announces AUTH-RESP-CODE promises [AUTH] for wrong
// credentials (RFC 3206): its refusal without a code is vague.
func TestAuthRespCodeWithoutCodeIsVague(t *testing.T) {
	c := loggedOut(t, plainOpts, []string{"USER", "RESP-CODES", "AUTH-RESP-CODE"},
		"C: USER u", "S: +OK", "C: PASS p", "S: -ERR Temporary problem")
	err := c.Authenticate(ctx(t), MechUser, "u", "p")
	var pe *Error
	if !errors.As(err, &pe) || !pe.Vague {
		t.Errorf("%v: want a vague refusal", err)
	}
}

// TestNoUIDL: a server without UIDL gives ErrNoUIDL from Scan.
func TestNoUIDL(t *testing.T) {
	c := loggedIn(t, plainOpts, nil, "C: LIST", "S: +OK", "S: 1 100", "S: .", "C: UIDL", "S: -ERR unknown command")
	_, err := c.Scan(ctx(t))
	if !errors.Is(err, ErrNoUIDL) {
		t.Errorf("Scan: %v, want ErrNoUIDL", err)
	}
}
