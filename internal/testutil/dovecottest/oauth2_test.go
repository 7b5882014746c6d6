//go:build unix

package dovecottest

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func xoauth2(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// What Dovecot 2.3.19 answers a refused XOAUTH2 token, before the -ERR.
const xoauth2Refusal = "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="

func TestOAuth2Modes(t *testing.T) {
	t.Parallel()
	// An odd token: every mode must carry it intact.
	const token = "tok/en+with%odd=&chars"
	for _, mode := range []string{"post", "get", "auth"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			in := StartIntrospection(t, map[string]string{token: "alice"})
			s := Start(t, Options{OAuth2: in.OAuth2Options(mode)})
			s.Deliver(t, "alice", msg1)

			p := dialTLS(t, s, s.TLSConfig())
			if capa := p.capa(); !has(capa, "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER") {
				t.Errorf("CAPA %q", capa)
			}
			// Two-step, as Exchange wants it.
			if l := p.cmd("AUTH XOAUTH2"); l != "+ " {
				t.Fatalf("AUTH XOAUTH2 = %q", l)
			}
			p.ok("%s", xoauth2("alice", token))
			if l := p.ok("STAT"); !strings.HasPrefix(l, "+OK 1 ") {
				t.Fatalf("STAT = %q", l)
			}
			p.ok("QUIT")

			reqs := in.Requests()
			if len(reqs) != 1 || !reqs[0].Active || reqs[0].Token != token {
				t.Fatalf("requests: %+v", reqs)
			}
			r := reqs[0]
			t.Logf("%s %s Content-Type=%q Authorization=%q body=%q", r.Method, r.URI, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), r.Body)
			switch mode {
			case "post":
				if r.Method != "POST" || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || !strings.HasPrefix(r.Body, "token=") {
					t.Errorf("post mode sent %+v", r)
				}
			case "get":
				if r.Method != "GET" || !strings.Contains(r.URI, "?token=") {
					t.Errorf("get mode sent %+v", r)
				}
			case "auth":
				if r.Method != "GET" || r.Header.Get("Authorization") != "Bearer "+token {
					t.Errorf("auth mode sent %+v", r)
				}
			}
		})
	}
}

func TestOAuth2Refusals(t *testing.T) {
	t.Parallel()
	in := StartIntrospection(t, map[string]string{"alice-token": "alice", "bob-token": "bob"})
	o := in.OAuth2Options("")
	// Timeout applies to every request Dovecot makes, not only the slow
	// one below: long enough that a loaded machine answers the others in
	// time, and well short of the slow case's delay.
	o.Timeout = 5 * time.Second
	s := Start(t, Options{
		Users:  map[string]string{"alice": "alice-secret", "bob": "bob-secret"},
		OAuth2: o,
		// To see in the log which passdbs a login went through.
		ExtraConfig: "auth_debug = yes",
	})
	p := dialTLS(t, s, s.TLSConfig())

	refused := func(what, auth string) {
		t.Helper()
		begin := time.Now()
		if l := p.cmd("%s", auth); l != xoauth2Refusal {
			t.Fatalf("%s: %q, want the JSON error challenge", what, l)
		}
		challenge := time.Since(begin)
		l := p.cmd("")
		t.Logf("%s: challenge after %v, %q after %v more", what, challenge, l, time.Since(begin)-challenge)
		if l != "-ERR [AUTH] Authentication failed." {
			t.Fatalf("%s: %q after the challenge", what, l)
		}
	}
	refused("unknown token", "AUTH XOAUTH2 "+xoauth2("alice", "nonsense"))
	refused("another user's token", "AUTH XOAUTH2 "+xoauth2("alice", "bob-token"))
	// A password is no token, and is never compared as one.
	refused("password as token", "AUTH XOAUTH2 "+xoauth2("alice", "alice-secret"))
	if strings.Contains(tail(s.LogFile, 1000), "passwd-file(alice,") {
		t.Error("an XOAUTH2 login reached the passwd-file passdb")
	}
	in.Revoke("alice-token")
	refused("revoked token", "AUTH XOAUTH2 "+xoauth2("alice", "alice-token"))

	// OAUTHBEARER's error is RFC 7628's, answered with ^A.
	if l := p.cmd("AUTH OAUTHBEARER %s", base64.StdEncoding.EncodeToString([]byte("n,a=bob,\x01auth=Bearer nonsense\x01\x01"))); l != "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=" {
		t.Fatalf("OAUTHBEARER refused: %q", l)
	}
	if l := p.cmd("AQ=="); l != "-ERR [AUTH] Authentication failed." {
		t.Fatalf("OAUTHBEARER after ^A: %q", l)
	}

	// The endpoint failing is a temporary failure, without a challenge.
	in.Fail(500)
	if l := p.cmd("AUTH XOAUTH2 %s", xoauth2("bob", "bob-token")); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Fatalf("endpoint answering 500: %q", l)
	}
	in.Fail(0)
	in.Delay(15 * time.Second) // well past Timeout
	begin := time.Now()
	if l := p.cmd("AUTH XOAUTH2 %s", xoauth2("bob", "bob-token")); !strings.HasPrefix(l, "-ERR [SYS/TEMP]") {
		t.Fatalf("endpoint too slow: %q", l)
	}
	t.Logf("endpoint too slow: [SYS/TEMP] after %v (Timeout %v)", time.Since(begin), o.Timeout)
	in.Delay(0)

	// Passwords still work, for the other mechanisms.
	p.ok("USER bob")
	p.ok("PASS bob-secret")
	p.ok("QUIT")
	if !strings.Contains(tail(s.LogFile, 1000), "passwd-file(bob,") {
		t.Error("the log does not show passwd-file lookups as expected: the check above proves nothing")
	}
	p = dialTLS(t, s, s.TLSConfig())
	p.ok("AUTH OAUTHBEARER %s", base64.StdEncoding.EncodeToString([]byte("n,a=bob,\x01auth=Bearer bob-token\x01\x01")))
	p.ok("QUIT")
}

func TestOAuth2OptionsChecked(t *testing.T) {
	for _, o := range []OAuth2Options{
		{},
		{IntrospectionURL: "ftp://127.0.0.1/x"},
		{IntrospectionURL: "http://127.0.0.1/x#y"},
		{IntrospectionURL: "http://127.0.0.1/x", IntrospectionMode: "local"},
		{IntrospectionURL: "http://127.0.0.1/x", IntrospectionMode: "get"},
		{IntrospectionURL: "http://127.0.0.1/x", UsernameAttribute: "user name"},
	} {
		if err := o.check(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	o := OAuth2Options{IntrospectionURL: "http://127.0.0.1:1/x?token=", IntrospectionMode: "get", ActiveAttribute: "-", Config: "scope = mail"}
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	conf := o.config()
	for _, want := range []string{"introspection_url = http://127.0.0.1:1/x?token=\n", "introspection_mode = get\n", "username_attribute = username\n", "use_grant_password = no\n", "timeout_msecs = 5000\n", "scope = mail\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "active_") {
		t.Errorf(`ActiveAttribute "-" still checks:\n%s`, conf)
	}
	if got := withOAuth2Mechanisms([]string{"plain", "XOAUTH2"}); strings.Join(got, " ") != "plain XOAUTH2 oauthbearer" {
		t.Errorf("mechanisms %q", got)
	}
}
