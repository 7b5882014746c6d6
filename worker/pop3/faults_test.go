package pop3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// Fault tests: the in-process server produces what a real one cannot be
// made to (cuts, garbage, broken pipelining) over a real TCP connection.

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mailbox(n int) []pop3test.Message {
	var msgs []pop3test.Message
	for i := 0; i < n; i++ {
		body := strings.Repeat("line of text for message\r\n", 50*(i+1))
		msgs = append(msgs, pop3test.Message{Data: []byte("Subject: m\r\n\r\n.dot first\r\n" + body)})
	}
	return msgs
}

func startServer(t *testing.T, opts pop3test.Options, msgs []pop3test.Message) *pop3test.Server {
	t.Helper()
	if opts.Users == nil {
		opts.Users = map[string]string{"alice": "secret"}
	}
	s := pop3test.NewTLSServer(opts)
	t.Cleanup(s.Close)
	s.SetMailbox("alice", msgs)
	return s
}

func dialTLS(t *testing.T, s *pop3test.Server, mod func(*pop3.Options)) (*pop3.Client, error) {
	t.Helper()
	opts := pop3.Options{TLSConfig: s.ClientTLSConfig(), Timeout: 5 * time.Second}
	if mod != nil {
		mod(&opts)
	}
	return pop3.Dial(testCtx(t), s.Addr, opts)
}

func login(t *testing.T, s *pop3test.Server, mod func(*pop3.Options)) *pop3.Client {
	t.Helper()
	c, err := dialTLS(t, s, mod)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(testCtx(t), pop3.MechAuto, "alice", "secret"); err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

func fetchAll(ctx context.Context, c *pop3.Client) (map[int][]byte, error) {
	list, err := c.Scan(ctx)
	if err != nil {
		return nil, err
	}
	var nums []int
	for _, m := range list {
		nums = append(nums, m.Num)
	}
	got := map[int][]byte{}
	err = c.RetrEach(ctx, nums, func(n int, body io.Reader, err error) error {
		if err != nil {
			return err
		}
		b, err := io.ReadAll(body)
		got[n] = b
		return err
	})
	return got, err
}

func TestFaultCutMidRetr(t *testing.T) {
	s := startServer(t, pop3test.Options{Faults: pop3test.Faults{CutRetrAfter: 700}}, mailbox(3))
	c := login(t, s, nil)
	_, err := fetchAll(testCtx(t), c)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !pop3.IsTemporary(err) {
		t.Fatalf("err = %v, want a temporary unexpected EOF", err)
	}
	if len(s.Messages("alice")) != 3 {
		t.Error("a cut session deleted mail")
	}
}

func TestFaultGarbageReply(t *testing.T) {
	for _, cmd := range []string{"LIST", "UIDL", "RETR"} {
		t.Run(cmd, func(t *testing.T) {
			s := startServer(t, pop3test.Options{Faults: pop3test.Faults{GarbageOn: cmd, GarbageReply: "* OK IMAP4rev1 ready"}}, mailbox(2))
			c := login(t, s, nil)
			_, err := fetchAll(testCtx(t), c)
			if !errors.Is(err, pop3.ErrProtocol) {
				t.Fatalf("err = %v, want protocol error", err)
			}
		})
	}
}

func TestFaultOverlongReply(t *testing.T) {
	s := startServer(t, pop3test.Options{Faults: pop3test.Faults{GarbageOn: "STAT", LongReply: 1 << 20}}, mailbox(1))
	c := login(t, s, nil)
	if _, _, err := c.Stat(testCtx(t)); !errors.Is(err, pop3.ErrProtocol) {
		t.Fatalf("err = %v, want protocol error", err)
	}
}

func TestFaultSlowReplyHitsDeadline(t *testing.T) {
	s := startServer(t, pop3test.Options{}, mailbox(1))
	c := login(t, s, nil)
	s.SetFaults(pop3test.Faults{SlowReply: 2 * time.Second}) // new connections only
	c2, err := dialTLS(t, s, func(o *pop3.Options) { o.Timeout = 200 * time.Millisecond })
	if err == nil {
		c2.Close()
		t.Fatal("dial succeeded despite a greeting slower than the timeout")
	}
	if !pop3.IsTemporary(err) {
		t.Errorf("timeout not temporary: %v", err)
	}
	_ = c
}

func TestFaultBrokenPipeliningFallsBack(t *testing.T) {
	s := startServer(t, pop3test.Options{Pipelining: true, Faults: pop3test.Faults{BrokenPipelining: true}}, mailbox(4))
	c := login(t, s, nil)
	_, err := fetchAll(testCtx(t), c)
	if !errors.Is(err, pop3.ErrPipeliningBroken) {
		t.Fatalf("err = %v, want ErrPipeliningBroken", err)
	}
	// The documented recovery: redial lock-step and fetch everything.
	c2 := login(t, s, func(o *pop3.Options) { o.DisablePipelining = true })
	got, err := fetchAll(testCtx(t), c2)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range s.Messages("alice") {
		if !bytes.Equal(got[i+1], m.Wire()) {
			t.Errorf("message %d differs after fallback", i+1)
		}
	}
}

func TestPipelinedAgainstFake(t *testing.T) {
	s := startServer(t, pop3test.Options{Pipelining: true}, mailbox(40))
	c := login(t, s, func(o *pop3.Options) { o.PipelineWindow = 8 })
	got, err := fetchAll(testCtx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Pipelined() {
		t.Error("session not pipelined")
	}
	msgs := s.Messages("alice")
	for i, m := range msgs {
		if !bytes.Equal(got[i+1], m.Wire()) {
			t.Errorf("message %d differs", i+1)
		}
	}
	var nums []int
	for i := range msgs {
		nums = append(nums, i+1)
	}
	errs, err := c.DeleMany(testCtx(t), nums)
	if err != nil || errors.Join(errs...) != nil {
		t.Fatalf("DELE: %v %v", err, errs)
	}
	if err := c.Quit(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Messages("alice")); n != 0 {
		t.Errorf("%d messages left after DELE and QUIT", n)
	}
}

func TestLoginResponseCodes(t *testing.T) {
	for _, tc := range []struct {
		reply    string
		sentinel error
		temp     bool
	}{
		{"[IN-USE] mailbox locked", pop3.ErrInUse, true},
		{"[LOGIN-DELAY] 300", pop3.ErrLoginDelay, true},
		{"[SYS/TEMP] try later", pop3.ErrSysTemp, true},
		{"[AUTH] bad password", pop3.ErrAuth, false},
		{"[SYS/PERM] gone", pop3.ErrSysPerm, false},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			s := startServer(t, pop3test.Options{SASL: []string{"PLAIN"}, Faults: pop3test.Faults{LoginError: tc.reply}}, nil)
			c, err := dialTLS(t, s, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Authenticate(testCtx(t), pop3.MechAuto, "alice", "secret")
			if !errors.Is(err, tc.sentinel) || pop3.IsTemporary(err) != tc.temp {
				t.Fatalf("err = %v (temporary %v), want %v temporary=%v", err, pop3.IsTemporary(err), tc.sentinel, tc.temp)
			}
		})
	}
}

func TestSecondSessionInUse(t *testing.T) {
	s := startServer(t, pop3test.Options{}, mailbox(1))
	login(t, s, nil)
	c, err := dialTLS(t, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Authenticate(testCtx(t), pop3.MechUser, "alice", "secret"); !errors.Is(err, pop3.ErrInUse) {
		t.Fatalf("err = %v, want [IN-USE]", err)
	}
}

func TestAuthMechanismsAgainstFake(t *testing.T) {
	for _, mech := range []pop3.Mechanism{pop3.MechUser, pop3.MechPlain, pop3.MechLogin, pop3.MechXOAUTH2} {
		t.Run(string(mech), func(t *testing.T) {
			s := startServer(t, pop3test.Options{SASL: []string{"PLAIN", "LOGIN", "XOAUTH2"}, Tokens: map[string]string{"alice": "tok"}}, mailbox(1))
			c, err := dialTLS(t, s, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			secret := "secret"
			if mech == pop3.MechXOAUTH2 {
				secret = "tok"
			}
			if err := c.Authenticate(testCtx(t), mech, "alice", secret+"-wrong"); !errors.Is(err, pop3.ErrAuth) {
				t.Fatalf("wrong secret: err = %v, want [AUTH]", err)
			}
			if err := c.Authenticate(testCtx(t), mech, "alice", secret); err != nil {
				t.Fatalf("right secret: %v", err)
			}
			if n, _, err := c.Stat(testCtx(t)); err != nil || n != 1 {
				t.Fatalf("STAT = %d, %v", n, err)
			}
		})
	}
}

func TestSTLSAgainstFake(t *testing.T) {
	s := pop3test.NewServer(pop3test.Options{STLS: true, Users: map[string]string{"alice": "secret"}})
	defer s.Close()
	c, err := pop3.Dial(testCtx(t), s.Addr, pop3.Options{TLS: pop3.TLSStartTLS, TLSConfig: s.ClientTLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, ok := c.TLSConnectionState()
	if !ok || st.Version < 0x0303 {
		t.Fatalf("TLS state %v %x", ok, st.Version)
	}
	if c.Capabilities().Has("STLS") {
		t.Error("STLS still listed after TLS started: CAPA was not asked again")
	}
	if err := c.Authenticate(testCtx(t), pop3.MechUser, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	for _, l := range s.Transcript() {
		if (strings.HasPrefix(l.Text, "PASS") || strings.HasPrefix(l.Text, "USER")) && !l.TLS {
			t.Errorf("%q sent outside TLS", l.Text)
		}
	}
}

func TestUntrustedCertificateRefused(t *testing.T) {
	s := startServer(t, pop3test.Options{}, nil)
	_, err := pop3.Dial(testCtx(t), s.Addr, pop3.Options{}) // system roots only
	if err == nil || pop3.IsTemporary(err) {
		t.Fatalf("err = %v, want a permanent certificate error", err)
	}
	c, err := pop3.Dial(testCtx(t), s.Addr, pop3.Options{TLSConfig: &tlsSkip})
	if err != nil {
		t.Fatalf("skip-verify dial: %v", err)
	}
	c.Close()
}

func TestSizeCapAgainstFake(t *testing.T) {
	s := startServer(t, pop3test.Options{}, mailbox(2))
	c := login(t, s, func(o *pop3.Options) { o.MaxMessageSize = 500 })
	_, err := c.Retr(testCtx(t), 2, io.Discard)
	if !errors.Is(err, pop3.ErrMessageTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

var tlsSkip = tls.Config{InsecureSkipVerify: true}
