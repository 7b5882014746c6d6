package pop3

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

// SASL XOAUTH2 against a real Dovecot whose oauth2 passdb asks a token
// introspection endpoint served by the test (dovecottest.Options.OAuth2),
// and against a transcript of Exchange Online's exchange.
//
// What Dovecot 2.3.19 does, as these tests see it:
//
//   - AUTH XOAUTH2 without an initial response gets "+ " (a challenge with
//     nothing in it); the client's base64 "user=U^Aauth=Bearer T^A^A" then
//     makes Dovecot POST "token=T&client_id=&client_secret=" to the
//     endpoint; {"active":true,"username":"alice"} logs in ("+OK Logged
//     in.", about 10ms).
//   - A token the endpoint answers {"active":false} for (or one issued to
//     another user) gets the JSON error as a challenge at once, "+ " +
//     base64 of {"status":"401","schemes":"bearer","scope":"mail"}, and
//     only after the client answers it (an empty line) the final
//     "-ERR [AUTH] Authentication failed.", about 0.5s later: Dovecot
//     batches failures every 0.5s even with auth_failure_delay = 0, which
//     dovecottest sets (Dovecot's default is 2s, and its per-IP penalty,
//     which dovecottest turns off, can add up to 15s). A client that did
//     not answer the challenge would wait for Dovecot's login timeout.
//   - An endpoint that fails (status 500, no JSON, too slow) is
//     "-ERR [SYS/TEMP] Temporary authentication failure. [...]", without a
//     challenge.
//   - pop3-login takes SASL response lines of up to 8188 base64 octets
//     (a token of about 6 KB); a longer one makes it hang up without a
//     reply ("Authentication response too large" in its log), which the
//     client reports as "unexpected EOF".

const xoauth2Deadline = 20 * time.Second

// startOAuth2Dovecot starts Dovecot with alice, whose token is token.
func startOAuth2Dovecot(t *testing.T, token string) (*dovecottest.Server, *dovecottest.Introspection) {
	t.Helper()
	in := dovecottest.StartIntrospection(t, map[string]string{token: "alice"})
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post")})
	return d, in
}

func dialOAuth2Dovecot(t *testing.T, d *dovecottest.Server, mode TLSMode, trace *bytes.Buffer) *Client {
	t.Helper()
	addr := d.TLSAddr()
	if mode == TLSStartTLS {
		addr = d.Addr()
	}
	opts := Options{TLS: mode, TLSConfig: d.TLSConfig(), Timeout: 10 * time.Second}
	if trace != nil {
		opts.Trace = trace
	}
	ctx, cancel := context.WithTimeout(context.Background(), xoauth2Deadline)
	defer cancel()
	c, err := Dial(ctx, addr, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if !c.Capabilities().HasSASL("XOAUTH2") {
		t.Fatalf("Dovecot does not offer XOAUTH2: %v", c.Capabilities())
	}
	return c
}

func TestXOAUTH2DovecotValidToken(t *testing.T) {
	// Entra ID access tokens are JWTs of 1.5-3 KB: the AUTH continuation
	// line is then several KB of base64, far beyond the 255 octets of an
	// initial response.
	long := "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + strings.Repeat("x", 2500) + ".sig-_"
	for _, tc := range []struct {
		name  string
		mode  TLSMode
		token string
	}{
		{"implicit TLS", TLSImplicit, "ya29.valid-token"},
		{"STLS", TLSStartTLS, "ya29.valid-token"},
		{"JWT-sized token", TLSImplicit, long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, in := startOAuth2Dovecot(t, tc.token)
			d.Deliver(t, "alice", []byte("Subject: one\n\nbody\n"))
			var trace bytes.Buffer
			c := dialOAuth2Dovecot(t, d, tc.mode, &trace)
			ctx, cancel := context.WithTimeout(context.Background(), xoauth2Deadline)
			defer cancel()
			if err := c.Authenticate(ctx, MechXOAUTH2, "alice", tc.token); err != nil {
				t.Fatalf("XOAUTH2 login: %v\ntrace:\n%s", err, trace.String())
			}
			if c.Mechanism() != MechXOAUTH2 {
				t.Errorf("Mechanism() = %q", c.Mechanism())
			}
			if _, ok := c.TLSConnectionState(); !ok {
				t.Error("logged in without TLS")
			}
			n, _, err := c.Stat(ctx)
			if err != nil || n != 1 {
				t.Fatalf("STAT = %d, %v", n, err)
			}
			if err := c.Quit(ctx); err != nil {
				t.Fatal(err)
			}
			// The token reached the endpoint intact, once.
			reqs := in.Requests()
			if len(reqs) != 1 || reqs[0].Token != tc.token || !reqs[0].Active {
				t.Fatalf("introspection requests: %d, first token intact: %v", len(reqs), len(reqs) > 0 && reqs[0].Token == tc.token)
			}
			// Two-step, as Exchange wants it: a bare AUTH XOAUTH2.
			if !strings.Contains(trace.String(), "C: AUTH XOAUTH2\nS: + \nC: <redacted>\nS: +OK") {
				t.Errorf("not the two-step exchange:\n%s", trace.String())
			}
			assertNoToken(t, tc.token, trace.String())
		})
	}
}

func TestXOAUTH2DovecotRevokedToken(t *testing.T) {
	const token = "ya29.revoked-SECRET-token"
	d, in := startOAuth2Dovecot(t, token)
	in.Revoke(token) // the endpoint now answers {"active":false}
	var trace bytes.Buffer
	c := dialOAuth2Dovecot(t, d, TLSImplicit, &trace)

	ctx, cancel := context.WithTimeout(context.Background(), xoauth2Deadline)
	defer cancel()
	begin := time.Now()
	err := c.Authenticate(ctx, MechXOAUTH2, "alice", token)
	took := time.Since(begin)
	t.Logf("refused after %v: %v", took, err)
	if !errors.Is(err, ErrAuth) || IsTemporary(err) {
		t.Fatalf("err = %v, want a permanent [AUTH] error", err)
	}
	var pe *Error
	if !errors.As(err, &pe) || !pe.Login || pe.Code != CodeAuth || pe.Command != "AUTH XOAUTH2" {
		t.Errorf("err = %#v", err)
	}
	// About 0.5s of Dovecot's failure batching; the bound is generous for
	// a loaded machine and still short of xoauth2Deadline (20s).
	if took > 15*time.Second {
		t.Errorf("refusal took %v", took)
	}
	// The client answered Dovecot's JSON error challenge with one line
	// and then read the -ERR.
	challenge := "S: + " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer","scope":"mail"}`))
	want := "C: AUTH XOAUTH2\nS: + \nC: <redacted>\n" + challenge + "\nC: <redacted>\nS: -ERR [AUTH] Authentication failed.\n"
	if !strings.Contains(trace.String(), want) {
		t.Errorf("trace:\n%s\nwant it to contain:\n%s", trace.String(), want)
	}
	if reqs := in.Requests(); len(reqs) != 1 || reqs[0].Token != token || reqs[0].Active {
		t.Errorf("introspection: %d requests", len(reqs))
	}
	assertNoToken(t, token, err.Error(), trace.String())

	// The session is still in step: a valid token now logs in on it.
	in.SetToken(token, "alice")
	if err := c.Authenticate(ctx, MechXOAUTH2, "alice", token); err != nil {
		t.Fatalf("valid token on the same session: %v", err)
	}
	if _, _, err := c.Stat(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestXOAUTH2DovecotOtherUsersToken(t *testing.T) {
	const token = "ya29.bobs-SECRET-token"
	in := dovecottest.StartIntrospection(t, map[string]string{token: "bob"})
	d := dovecottest.Start(t, dovecottest.Options{
		Users:  map[string]string{"alice": "alice-secret", "bob": "bob-secret"},
		OAuth2: in.OAuth2Options("post"),
	})
	c := dialOAuth2Dovecot(t, d, TLSImplicit, nil)
	ctx, cancel := context.WithTimeout(context.Background(), xoauth2Deadline)
	defer cancel()
	err := c.Authenticate(ctx, MechXOAUTH2, "alice", token)
	if !errors.Is(err, ErrAuth) || IsTemporary(err) {
		t.Fatalf("bob's token for alice: err = %v, want [AUTH]", err)
	}
	assertNoToken(t, token, err.Error())
}

func TestXOAUTH2DovecotEndpointDown(t *testing.T) {
	const token = "ya29.SECRET-token"
	d, in := startOAuth2Dovecot(t, token)
	in.Fail(503)
	c := dialOAuth2Dovecot(t, d, TLSImplicit, nil)
	ctx, cancel := context.WithTimeout(context.Background(), xoauth2Deadline)
	defer cancel()
	err := c.Authenticate(ctx, MechXOAUTH2, "alice", token)
	// Not the token's fault: try again later, do not disable the account.
	if !errors.Is(err, ErrSysTemp) || errors.Is(err, ErrAuth) || !IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary [SYS/TEMP] error", err)
	}
	assertNoToken(t, token, err.Error())
}

// assertNoToken fails when the token, its XOAUTH2 payload or that
// payload's base64 appears in any of texts.
func assertNoToken(t *testing.T, token string, texts ...string) {
	t.Helper()
	payload := "user=alice\x01auth=Bearer " + token + "\x01\x01"
	for _, text := range texts {
		for _, secret := range []string{token, payload, base64.StdEncoding.EncodeToString([]byte(payload))} {
			if strings.Contains(text, secret) {
				t.Errorf("token leaked into %.200q", text)
			}
		}
	}
}

// Exchange Online (outlook.office365.com:995): no RESP-CODES, the token
// only in the second step, and a refused token answered with a JSON
// challenge, an empty line from the client and a -ERR without a code.
func TestXOAUTH2ExchangeTranscript(t *testing.T) {
	exchangeCaps := []string{"TOP", "UIDL", "SASL PLAIN XOAUTH2", "USER"}
	payload := b64("user=alice@contoso.com\x01auth=Bearer EwB4A-SECRET\x01\x01")
	t.Run("accepted", func(t *testing.T) {
		c := loggedOut(t, plainOpts, exchangeCaps,
			"C: AUTH XOAUTH2", "S: + ", "C: "+payload, "S: +OK",
			"C: CAPA", "S: +OK", "S: TOP", "S: UIDL", "S: .")
		ok(t, c.Authenticate(ctx(t), MechXOAUTH2, "alice@contoso.com", "EwB4A-SECRET"))
		if c.Mechanism() != MechXOAUTH2 {
			t.Errorf("Mechanism() = %q", c.Mechanism())
		}
	})
	t.Run("refused", func(t *testing.T) {
		var trace bytes.Buffer
		opts := plainOpts
		opts.Trace = &trace
		c := loggedOut(t, opts, exchangeCaps,
			"C: AUTH XOAUTH2", "S: + ", "C: "+payload,
			"S: + eyJzdGF0dXMiOiI0MDEiLC4uLn0=", "C: ", "S: -ERR Authentication failure")
		err := c.Authenticate(ctx(t), MechXOAUTH2, "alice@contoso.com", "EwB4A-SECRET")
		// No code: a refused login counts as [AUTH]. Exchange does not
		// announce AUTH-RESP-CODE, and the text says what happened, so
		// it is not vague.
		var pe *Error
		if !errors.Is(err, ErrAuth) || IsTemporary(err) || !errors.As(err, &pe) || pe.Vague || !pe.Login {
			t.Fatalf("err = %#v, want a permanent, not vague [AUTH] error", err)
		}
		assertNoToken(t, "EwB4A-SECRET", err.Error(), trace.String())
	})
}
