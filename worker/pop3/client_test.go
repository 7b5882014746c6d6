package pop3

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestGreetingError(t *testing.T) {
	conn := startTranscript(t, "S: -ERR [SYS/TEMP] overloaded, come back later")
	_, err := NewClient(context.Background(), conn, "example.org", plainOpts)
	if !errors.Is(err, ErrSysTemp) || !IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary [SYS/TEMP] error", err)
	}
}

func TestGreetingGarbage(t *testing.T) {
	conn := startTranscript(t, "S: HTTP/1.1 400 Bad Request")
	_, err := NewClient(context.Background(), conn, "example.org", plainOpts)
	if !errors.Is(err, ErrProtocol) || IsTemporary(err) {
		t.Fatalf("err = %v, want a permanent protocol error", err)
	}
}

func TestCapa(t *testing.T) {
	conn := startTranscript(t,
		"S: +OK hi", "C: CAPA", "S: +OK Capability list follows",
		"S: TOP", "S: UIDL", "S: SASL plain Login XOAUTH2", "S: RESP-CODES", "S: PIPELINING",
		"S: IMPLEMENTATION Test Server 1.0", "S: .")
	c, err := NewClient(context.Background(), conn, "example.org", plainOpts)
	ok(t, err)
	got := c.Capabilities()
	for _, name := range []string{"TOP", "uidl", "PIPELINING", "RESP-CODES"} {
		if !got.Has(name) {
			t.Errorf("capability %s missing from %v", name, got)
		}
	}
	if got.Has("STLS") {
		t.Error("STLS reported but not listed")
	}
	if !got.HasSASL("PLAIN") || !got.HasSASL("login") || !got.HasSASL("XOAUTH2") || got.HasSASL("CRAM-MD5") {
		t.Errorf("SASL = %v", got.SASL())
	}
	if impl := strings.Join(got["IMPLEMENTATION"], " "); impl != "Test Server 1.0" {
		t.Errorf("IMPLEMENTATION = %q", impl)
	}
	if c.Greeting() != "hi" {
		t.Errorf("greeting = %q", c.Greeting())
	}
}

func TestUserPass(t *testing.T) {
	c := newTestClient(t, plainOpts, "C: USER bob", "S: +OK", "C: PASS s3cret", "S: +OK maildrop locked")
	ok(t, c.Authenticate(ctx(t), MechAuto, "bob", "s3cret"))
}

func TestResponseCodes(t *testing.T) {
	// The server of this transcript answers no CAPA, so a refusal
	// without a code and without text is vague (see Error.Vague).
	tests := []struct {
		reply            string
		sentinel         error
		temporary, vague bool
	}{
		{"-ERR [IN-USE] mailbox locked by another session", ErrInUse, true, false},
		{"-ERR [LOGIN-DELAY] minimum time between logins is 300 seconds", ErrLoginDelay, true, false},
		{"-ERR [SYS/TEMP] backend unavailable", ErrSysTemp, true, false},
		{"-ERR [SYS/TEMP/DISK] spool full", ErrSysTemp, true, false},
		{"-ERR [AUTH] invalid password", ErrAuth, false, false},
		{"-ERR [SYS/PERM] account disabled", ErrSysPerm, false, false},
		{"-ERR [auth] lower case code", ErrAuth, false, false},
		{"-ERR invalid password", ErrAuth, false, false},
		{"-ERR Authentication failed (bad password?)", ErrAuth, false, false}, // popa3d
		{"-ERR [not a code] text", ErrAuth, false, false},
		{"-ERR unable to lock maildrop", ErrInUse, true, false}, // RFC 1939's example
		{"-ERR Mailbox is busy", ErrInUse, true, false},
		{"-err", ErrAuth, false, true},
		{"-ERR", ErrAuth, false, true}, // popa3d, mailbox it cannot open
	}
	for _, tt := range tests {
		t.Run(tt.reply, func(t *testing.T) {
			c := newTestClient(t, plainOpts, "C: USER bob", "S: +OK", "C: PASS x", "S: "+tt.reply)
			err := c.Authenticate(ctx(t), MechUser, "bob", "x")
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if pe.Command != "PASS" {
				t.Errorf("Command = %q, want PASS (and never the password)", pe.Command)
			}
			for _, s := range []error{ErrInUse, ErrLoginDelay, ErrSysTemp, ErrAuth, ErrSysPerm} {
				if want := s == tt.sentinel; errors.Is(err, s) != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, !want, want)
				}
			}
			if pe.Temporary() != tt.temporary || IsTemporary(err) != tt.temporary {
				t.Errorf("Temporary() = %v, want %v", pe.Temporary(), tt.temporary)
			}
			if !pe.Login || pe.Vague != tt.vague {
				t.Errorf("Login %v, Vague %v; want a login refusal, vague %v", pe.Login, pe.Vague, tt.vague)
			}
			if strings.Contains(err.Error(), "x\"") || strings.Contains(err.Error(), "PASS x") {
				t.Errorf("error leaks the password: %v", err)
			}
			// A -ERR reply leaves the session usable.
			if c.err != nil {
				t.Errorf("session closed after a -ERR reply: %v", c.err)
			}
		})
	}
}

func TestInsecureAuthRefusedBeforeSending(t *testing.T) {
	opts := plainOpts
	opts.AllowInsecureAuth = false
	for _, mech := range []Mechanism{MechAuto, MechUser, MechPlain, MechLogin, MechXOAUTH2} {
		t.Run(string(mech), func(t *testing.T) {
			// The transcript expects nothing after CAPA: any byte the
			// client sent would fail the test.
			c := newTestClient(t, opts)
			if err := c.Authenticate(ctx(t), mech, "bob", "secret"); !errors.Is(err, ErrInsecureAuth) {
				t.Fatalf("err = %v, want ErrInsecureAuth", err)
			}
		})
	}
}

func TestAuthPlainInitialResponse(t *testing.T) {
	c := loggedOut(t, plainOpts, []string{"SASL PLAIN"},
		"C: AUTH PLAIN AGJvYgBzM2NyZXQ=", "S: +OK", "C: CAPA", "S: +OK", "S: SASL PLAIN", "S: .")
	ok(t, c.Authenticate(ctx(t), MechAuto, "bob", "s3cret"))
}

func TestAuthPlainTwoStepWhenLong(t *testing.T) {
	user, pass := strings.Repeat("u", 100), strings.Repeat("p", 100)
	enc := b64("\x00" + user + "\x00" + pass)
	if len("AUTH PLAIN ")+len(enc)+2 <= 255 {
		t.Fatal("test credentials too short to force the two-step form")
	}
	c := loggedOut(t, plainOpts, []string{"SASL PLAIN"},
		"C: AUTH PLAIN", "S: + ", "C: "+enc, "S: +OK", "C: CAPA", "S: +OK", "S: .")
	ok(t, c.Authenticate(ctx(t), MechPlain, user, pass))
}

func TestAuthLogin(t *testing.T) {
	t.Run("initial response", func(t *testing.T) {
		c := loggedOut(t, plainOpts, []string{"SASL LOGIN"},
			"C: AUTH LOGIN "+b64("bob"), "S: + UGFzc3dvcmQ6", "C: "+b64("s3cret"), "S: +OK",
			"C: CAPA", "S: +OK", "S: .")
		ok(t, c.Authenticate(ctx(t), MechAuto, "bob", "s3cret"))
	})
	t.Run("two-step", func(t *testing.T) {
		user := strings.Repeat("u", 200)
		c := loggedOut(t, plainOpts, []string{"SASL LOGIN"},
			"C: AUTH LOGIN", "S: + VXNlcm5hbWU6", "C: "+b64(user), "S: + UGFzc3dvcmQ6", "C: "+b64("pw"),
			"S: -ERR [AUTH] nope")
		if err := c.Authenticate(ctx(t), MechLogin, user, "pw"); !errors.Is(err, ErrAuth) {
			t.Fatalf("err = %v, want [AUTH]", err)
		}
	})
}

func TestAuthXOAUTH2(t *testing.T) {
	payload := b64("user=bob@example.com\x01auth=Bearer tok-123\x01\x01")
	t.Run("accepted", func(t *testing.T) {
		c := loggedOut(t, plainOpts, []string{"SASL XOAUTH2"},
			"C: AUTH XOAUTH2", "S: + ", "C: "+payload, "S: +OK", "C: CAPA", "S: +OK", "S: .")
		ok(t, c.Authenticate(ctx(t), MechXOAUTH2, "bob@example.com", "tok-123"))
	})
	t.Run("rejected with JSON challenge", func(t *testing.T) {
		c := loggedOut(t, plainOpts, []string{"SASL XOAUTH2"},
			"C: AUTH XOAUTH2", "S: +", "C: "+payload,
			"S: + "+b64(`{"status":"401","schemes":"bearer"}`), "C: ", "S: -ERR [AUTH] token expired")
		err := c.Authenticate(ctx(t), MechXOAUTH2, "bob@example.com", "tok-123")
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("err = %v, want [AUTH]", err)
		}
	})
	t.Run("endless challenges are cancelled", func(t *testing.T) {
		c := loggedOut(t, plainOpts, []string{"SASL XOAUTH2"},
			"C: AUTH XOAUTH2", "S: + ", "C: "+payload, "S: + e30=", "C: ", "S: + e30=", "C: *")
		err := c.Authenticate(ctx(t), MechXOAUTH2, "bob@example.com", "tok-123")
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("err = %v, want a protocol error", err)
		}
	})
}

func TestTraceRedactsSecrets(t *testing.T) {
	var trace bytes.Buffer
	opts := plainOpts
	opts.Trace = &trace
	c := loggedOut(t, opts, []string{"SASL PLAIN LOGIN XOAUTH2"},
		"C: USER bob", "S: +OK", "C: PASS hunter2", "S: -ERR [AUTH] no",
		"C: AUTH PLAIN "+b64("\x00bob\x00hunter2"), "S: -ERR [AUTH] no",
		"C: AUTH LOGIN "+b64("bob"), "S: + UGFzc3dvcmQ6", "C: "+b64("hunter2"), "S: -ERR [AUTH] no",
		"C: AUTH XOAUTH2", "S: + ", "C: "+b64("user=bob\x01auth=Bearer tok-SECRET\x01\x01"), "S: -ERR [AUTH] no")
	for _, m := range []Mechanism{MechUser, MechPlain, MechLogin} {
		if err := c.Authenticate(ctx(t), m, "bob", "hunter2"); !errors.Is(err, ErrAuth) {
			t.Fatalf("%s: %v", m, err)
		}
	}
	if err := c.Authenticate(ctx(t), MechXOAUTH2, "bob", "tok-SECRET"); !errors.Is(err, ErrAuth) {
		t.Fatal(err)
	}
	out := trace.String()
	for _, secret := range []string{"hunter2", b64("hunter2"), "tok-SECRET", b64("\x00bob\x00hunter2"), "dG9r"} {
		if strings.Contains(out, secret) {
			t.Errorf("trace contains secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{"C: USER bob", "C: PASS <redacted>", "C: AUTH PLAIN <redacted>", "S: -ERR [AUTH] no"} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}
}

func TestStatListUIDL(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: STAT", "S: +OK 2 320",
		"C: LIST 2", "S: +OK 2 200",
		"C: UIDL 1", "S: +OK 1 whqtswO00WBw418f9t5JxYwZ",
		"C: LIST", "S: +OK 2 messages", "S: 1 120", "S: 2 200", "S: .",
		"C: UIDL", "S: +OK", "S: 1 whqtswO00WBw418f9t5JxYwZ", "S: 2 QhdPYR:00WBw1Ph7x7", "S: .",
	)
	n, size, err := c.Stat(ctx(t))
	ok(t, err)
	if n != 2 || size != 320 {
		t.Errorf("STAT = %d %d", n, size)
	}
	s, err := c.ListOne(ctx(t), 2)
	ok(t, err)
	if s != 200 {
		t.Errorf("LIST 2 = %d", s)
	}
	uid, err := c.UIDLOne(ctx(t), 1)
	ok(t, err)
	if uid != "whqtswO00WBw418f9t5JxYwZ" {
		t.Errorf("UIDL 1 = %q", uid)
	}
	list, err := c.List(ctx(t))
	ok(t, err)
	if len(list) != 2 || list[0] != (MessageInfo{Num: 1, Size: 120}) || list[1] != (MessageInfo{Num: 2, Size: 200}) {
		t.Errorf("LIST = %+v", list)
	}
	uids, err := c.UIDL(ctx(t))
	ok(t, err)
	if len(uids) != 2 || uids[1].UID != "QhdPYR:00WBw1Ph7x7" {
		t.Errorf("UIDL = %+v", uids)
	}
}

func TestScanLockStep(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: LIST", "S: +OK", "S: 1 10", "S: 2 20", "S: .",
		"C: UIDL", "S: +OK", "S: 1 a", "S: 2 b", "S: .")
	got, err := c.Scan(ctx(t))
	ok(t, err)
	want := []MessageInfo{{1, 10, "a"}, {2, 20, "b"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Scan = %+v, want %+v", got, want)
	}
	if c.Pipelined() {
		t.Error("pipelined without PIPELINING")
	}
}

func TestScanPipelined(t *testing.T) {
	// The script only works if LIST and UIDL arrive before any reply:
	// the client must send both at once after the probe.
	c := loggedIn(t, plainOpts, caps("PIPELINING", "UIDL"),
		"C: NOOP", "C: NOOP", "S: +OK", "S: +OK",
		"C: LIST", "C: UIDL",
		"S: +OK", "S: 1 10", "S: 2 20", "S: .",
		"S: +OK", "S: 2 b", "S: 1 a", "S: .")
	got, err := c.Scan(ctx(t))
	ok(t, err)
	if len(got) != 2 || got[0].UID != "a" || got[1].UID != "b" {
		t.Errorf("Scan = %+v", got)
	}
	if !c.Pipelined() {
		t.Error("not pipelined")
	}
}

func TestScanWithoutUIDL(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: LIST", "S: +OK", "S: 1 10", "S: .",
		"C: UIDL", "S: -ERR unknown command",
		"C: NOOP", "S: +OK")
	_, err := c.Scan(ctx(t))
	var pe *Error
	if !errors.As(err, &pe) || pe.Command != "UIDL" {
		t.Fatalf("err = %v, want -ERR from UIDL", err)
	}
	ok(t, c.Noop(ctx(t)))
}

func TestMalformedListingClosesSession(t *testing.T) {
	for _, bad := range []string{"S: one 10", "S: 1", "S: -1 5", "S: 1 -5", "S: 1 10", "S: " + strings.Repeat("9", 5000)} {
		t.Run(bad[:min(len(bad), 12)], func(t *testing.T) {
			script := []string{"C: LIST", "S: +OK", "S: 1 10", bad}
			c := loggedIn(t, plainOpts, nil, script...)
			_, err := c.List(ctx(t))
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want protocol error", err)
			}
			if err := c.Noop(ctx(t)); !errors.Is(err, ErrClosed) {
				t.Errorf("session still used after a protocol error: %v", err)
			}
		})
	}
}

func TestRetrDotUnstuffing(t *testing.T) {
	long := strings.Repeat("x", 100_000) // far beyond any line limit
	c := loggedIn(t, plainOpts, nil,
		"C: RETR 1", "S: +OK 42 octets",
		"S: Subject: dots", "S: ", "S: ..leading dot", "S: ..", "S: ...", "S: "+long,
		"S! bare\nLF and a lone CR\r in a line\r\n", "S: .not stuffed", "S: .",
		"C: NOOP", "S: +OK")
	var buf bytes.Buffer
	n, err := c.Retr(ctx(t), 1, &buf)
	ok(t, err)
	want := "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\n" + long + "\r\n" +
		"bare\nLF and a lone CR\r in a line\r\nnot stuffed\r\n"
	if buf.String() != want || n != int64(len(want)) {
		t.Fatalf("body = %q (%d), want %q", trunc(buf.String()), n, trunc(want))
	}
	ok(t, c.Noop(ctx(t)))
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:100] + "..." + s[len(s)-100:]
	}
	return s
}

// Message numbers that are not 1, 2, 3... in order (a gap, a jump back)
// are merged by number all the same, and a number listed twice, or named
// only by UIDL, is refused, whether it sits at its natural place or not.
func TestScanNumbering(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: LIST", "S: +OK", "S: 1 10", "S: 5 50", "S: 2 20", "S: .",
		"C: UIDL", "S: +OK", "S: 2 b", "S: 5 e", "S: 1 a", "S: .")
	got, err := c.Scan(ctx(t))
	ok(t, err)
	want := []MessageInfo{{1, 10, "a"}, {5, 50, "e"}, {2, 20, "b"}}
	if !slices.Equal(got, want) {
		t.Errorf("Scan = %+v, want %+v", got, want)
	}
	for _, tc := range []struct {
		name    string
		script  []string // after the failing line, "S? ": the client has hung up
		message string
	}{
		{"natural place listed twice", []string{"C: LIST", "S: +OK", "S: 1 10", "S: 1 10", "S? ."}, "message 1 listed twice"},
		{"moved listed twice", []string{"C: LIST", "S: +OK", "S: 3 10", "S: 3 10", "S? ."}, "message 3 listed twice"},
		{"uidl twice", []string{"C: LIST", "S: +OK", "S: 1 10", "S: .", "C: UIDL", "S: +OK", "S: 1 a", "S: 1 b", "S? ."}, "message 1 listed twice"},
		{"uidl only", []string{"C: LIST", "S: +OK", "S: 1 10", "S: .", "C: UIDL", "S: +OK", "S: 1 a", "S: 2 b", "S? ."}, "names message 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loggedIn(t, plainOpts, nil, tc.script...)
			if _, err := c.Scan(ctx(t)); err == nil || !strings.Contains(err.Error(), tc.message) {
				t.Errorf("err = %v, want %q", err, tc.message)
			}
		})
	}
}

// Listing lists UIDL alone, sizes unknown (-1); AddSizes fills them from
// one LIST and refuses a LIST that does not size exactly those messages.
func TestListingThenSizes(t *testing.T) {
	c := loggedIn(t, plainOpts, nil,
		"C: UIDL", "S: +OK", "S: 1 a", "S: 2 b", "S: .",
		"C: LIST", "S: +OK", "S: 2 20", "S: 1 10", "S: .")
	list, err := c.Listing(ctx(t), 2)
	ok(t, err)
	if len(list) != 2 || list[0] != (MessageInfo{1, -1, "a"}) || list[1] != (MessageInfo{2, -1, "b"}) {
		t.Fatalf("Listing = %+v", list)
	}
	ok(t, c.AddSizes(ctx(t), list))
	if list[0].Size != 10 || list[1].Size != 20 {
		t.Errorf("after AddSizes: %+v", list)
	}
	for name, lines := range map[string][]string{
		// The session is closed at the offending line.
		"unknown message": {"S: 1 10", "S: 2 20", "S: 3 30"},
		"listed twice":    {"S: 1 10", "S: 1 10"},
		"one left out":    {"S: 1 10", "S: ."},
	} {
		t.Run(name, func(t *testing.T) {
			script := append([]string{"C: UIDL", "S: +OK", "S: 1 a", "S: 2 b", "S: .", "C: LIST", "S: +OK"}, lines...)
			c := loggedIn(t, plainOpts, nil, script...)
			list, err := c.Listing(ctx(t), 0)
			ok(t, err)
			if err := c.AddSizes(ctx(t), list); !errors.Is(err, ErrProtocol) {
				t.Fatalf("AddSizes: %v, want a protocol error", err)
			}
		})
	}
}
