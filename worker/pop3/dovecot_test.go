package pop3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/testcorpus"
	"github.com/pophook/pophook/worker/pop3"
)

// Tests against a real Dovecot, started per test from a config in a temp
// dir (internal/dovecottest). Without Dovecot installed they skip, saying
// how to install it; under CI=true that is a failure.

func dovecotLogin(t testing.TB, d *dovecottest.Server, mode pop3.TLSMode, mech pop3.Mechanism, mod func(*pop3.Options)) *pop3.Client {
	t.Helper()
	opts := pop3.Options{TLS: mode, TLSConfig: d.TLSConfig(), Timeout: 30 * time.Second}
	if mod != nil {
		mod(&opts)
	}
	addr := addrFor(d, mode)
	ctx := context.Background()
	c, err := pop3.Dial(ctx, addr, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(ctx, mech, "alice", d.Users["alice"]); err != nil {
		t.Fatalf("login with %s: %v", mech, err)
	}
	return c
}

func addrFor(d *dovecottest.Server, mode pop3.TLSMode) string {
	if mode == pop3.TLSImplicit {
		return d.TLSAddr()
	}
	return d.Addr()
}

func TestDovecotTLSModesAndMechanisms(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: one\n\nbody\n"))
	for _, mode := range []pop3.TLSMode{pop3.TLSImplicit, pop3.TLSStartTLS} {
		t.Run(mode.String()+"/capabilities", func(t *testing.T) {
			c, err := pop3.Dial(context.Background(), addrFor(d, mode), pop3.Options{TLS: mode, TLSConfig: d.TLSConfig()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// After TLS, before login: the mechanisms are offered and
			// STLS is gone (CAPA was asked again after STLS).
			if caps := c.Capabilities(); !caps.HasSASL("PLAIN") || !caps.HasSASL("LOGIN") || caps.Has("STLS") {
				t.Errorf("capabilities: %v", caps)
			}
		})
		for _, mech := range []pop3.Mechanism{pop3.MechAuto, pop3.MechUser, pop3.MechPlain, pop3.MechLogin} {
			t.Run(fmt.Sprintf("%s/%s", mode, mech), func(t *testing.T) {
				c := dovecotLogin(t, d, mode, mech, nil)
				st, ok := c.TLSConnectionState()
				if !ok || st.Version < tls.VersionTLS12 || len(st.PeerCertificates) == 0 {
					t.Fatalf("TLS state: ok=%v version=%x certs=%d", ok, st.Version, len(st.PeerCertificates))
				}
				// Logged in: CAPA was asked again and shows the
				// transaction state (no SASL, no STLS).
				if caps := c.Capabilities(); !caps.Has("PIPELINING") || caps.Has("STLS") || caps.Has("SASL") {
					t.Errorf("capabilities after login: %v", caps)
				}
				n, _, err := c.Stat(context.Background())
				if err != nil || n != 1 {
					t.Fatalf("STAT = %d, %v", n, err)
				}
				if err := c.Quit(context.Background()); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestDovecotWrongPassword(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	c, err := pop3.Dial(context.Background(), d.TLSAddr(), pop3.Options{TLSConfig: d.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Authenticate(context.Background(), pop3.MechPlain, "alice", "wrong")
	if !errors.Is(err, pop3.ErrAuth) || pop3.IsTemporary(err) {
		t.Fatalf("err = %v, want a permanent [AUTH] error", err)
	}
}

func TestDovecotCertificateChecked(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	// System roots do not know the test CA.
	if _, err := pop3.Dial(context.Background(), d.TLSAddr(), pop3.Options{}); err == nil || pop3.IsTemporary(err) {
		t.Fatalf("untrusted certificate: err = %v", err)
	}
	// The CA file, as POPHOOK_ACCOUNT_*_TLS_CA_FILE gives it, is enough.
	cfg, err := pop3.TLSConfig(d.ServerName, d.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pop3.Dial(context.Background(), d.TLSAddr(), pop3.Options{TLSConfig: cfg})
	if err != nil {
		t.Fatalf("with CA file: %v", err)
	}
	c.Close()
	// A name the certificate does not carry is refused.
	cfg.ServerName = "pop.example.com"
	if _, err := pop3.Dial(context.Background(), d.TLSAddr(), pop3.Options{TLSConfig: cfg}); err == nil {
		t.Fatal("wrong server name accepted")
	}
}

func TestDovecotNoCredentialsInClear(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	c, err := pop3.Dial(context.Background(), d.Addr(), pop3.Options{TLS: pop3.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Authenticate(context.Background(), pop3.MechAuto, "alice", d.Users["alice"]); !errors.Is(err, pop3.ErrInsecureAuth) {
		t.Fatalf("err = %v, want ErrInsecureAuth", err)
	}
}

func deliverMixed(t testing.TB, d *dovecottest.Server, n int) [][]byte {
	t.Helper()
	var msgs [][]byte
	for i := 0; i < n; i++ {
		var b bytes.Buffer
		fmt.Fprintf(&b, "From: sender%d@example.org\nSubject: message %d\nMessage-ID: <%d@example.org>\n\n", i, i, i)
		// Mixed sizes: mostly small, some tens of KiB, a few near 1 MiB;
		// lines that start with dots and one very long line.
		size := 500
		switch {
		case i%50 == 7:
			size = 900_000
		case i%10 == 3:
			size = 40_000
		}
		for b.Len() < size {
			fmt.Fprintf(&b, ".line %d of message %d with some padding text\n", b.Len(), i)
		}
		if i%25 == 0 {
			b.WriteString(strings.Repeat("y", 20_000) + "\n")
		}
		d.Deliver(t, "alice", b.Bytes())
		msgs = append(msgs, testcorpus.CRLF(b.Bytes()))
	}
	return msgs
}

func retrieveAll(t testing.TB, c *pop3.Client) ([]pop3.MessageInfo, [][]byte) {
	t.Helper()
	list, err := c.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nums := make([]int, len(list))
	for i, m := range list {
		nums[i] = m.Num
	}
	got := make([][]byte, len(list)+1)
	err = c.RetrEach(context.Background(), nums, func(n int, body io.Reader, err error) error {
		if err != nil {
			return err
		}
		got[n], err = io.ReadAll(body)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return list, got[1:]
}

func TestDovecotPipelinedAndLockStep(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	want := deliverMixed(t, d, 60)
	for _, pipelined := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelined=%v", pipelined), func(t *testing.T) {
			c := dovecotLogin(t, d, pop3.TLSImplicit, pop3.MechAuto, func(o *pop3.Options) { o.DisablePipelining = !pipelined })
			list, got := retrieveAll(t, c)
			if c.Pipelined() != pipelined {
				t.Errorf("Pipelined() = %v", c.Pipelined())
			}
			if len(got) != len(want) {
				t.Fatalf("%d messages, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("message %d differs from what was delivered", i+1)
				}
				if list[i].Size != int64(len(got[i])) {
					t.Errorf("message %d: LIST says %d octets, RETR gave %d", i+1, list[i].Size, len(got[i]))
				}
			}
			if err := c.Quit(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDovecotDeleteOnlyAtQuit(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	deliverMixed(t, d, 5)

	// Dropped connection after DELE: nothing is deleted.
	c := dovecotLogin(t, d, pop3.TLSImplicit, pop3.MechAuto, nil)
	if errs, err := c.DeleMany(context.Background(), []int{1, 2, 3}); err != nil || errors.Join(errs...) != nil {
		t.Fatalf("DELE: %v %v", err, errs)
	}
	c.Close()
	waitCount(t, d, 5)

	// RSET undoes marks; QUIT then deletes nothing.
	c = dovecotLogin(t, d, pop3.TLSImplicit, pop3.MechAuto, nil)
	if err := c.Dele(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Rset(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCount(t, d, 5)

	// DELE then QUIT: deleted.
	c = dovecotLogin(t, d, pop3.TLSImplicit, pop3.MechAuto, nil)
	if errs, err := c.DeleMany(context.Background(), []int{1, 2, 3}); err != nil || errors.Join(errs...) != nil {
		t.Fatalf("DELE: %v %v", err, errs)
	}
	if err := c.Quit(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCount(t, d, 2)
}

// waitCount waits for Dovecot to finish with a dropped session before
// counting, since it notices the drop asynchronously.
func waitCount(t *testing.T, d *dovecottest.Server, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := d.Count(t, "alice")
		if got == want {
			// Count again after a moment: a late expunge would show here.
			time.Sleep(200 * time.Millisecond)
			if got = d.Count(t, "alice"); got == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailbox holds %d messages, want %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDovecotTopAndSingles(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: top\n\nl1\nl2\nl3\n"))
	c := dovecotLogin(t, d, pop3.TLSImplicit, pop3.MechAuto, nil)
	var b bytes.Buffer
	if _, err := c.Top(context.Background(), 1, 1, &b); err != nil {
		t.Fatal(err)
	}
	if b.String() != "Subject: top\r\n\r\nl1\r\n" {
		t.Errorf("TOP 1 1 = %q", b.String())
	}
	uid, err := c.UIDLOne(context.Background(), 1)
	if err != nil || uid == "" {
		t.Fatalf("UIDL 1 = %q, %v", uid, err)
	}
	size, err := c.ListOne(context.Background(), 1)
	if err != nil || size != int64(len("Subject: top\r\n\r\nl1\r\nl2\r\nl3\r\n")) {
		t.Fatalf("LIST 1 = %d, %v", size, err)
	}
	if err := c.Noop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Retr(context.Background(), 9, io.Discard); err == nil || !errors.As(err, new(*pop3.Error)) {
		t.Fatalf("RETR of a missing message: %v", err)
	}
}

// TestDovecotCorpus fetches every file of the corpus (testdata/corpus) and compares
// it with the file, line endings normalised to CRLF as Dovecot serves them.
func TestDovecotCorpus(t *testing.T) {
	files := testcorpus.Files(t)
	d := dovecottest.Start(t, dovecottest.Options{})
	for _, f := range files {
		d.Deliver(t, "alice", f.Data)
	}
	c := dovecotLogin(t, d, pop3.TLSImplicit, pop3.MechAuto, nil)
	_, got := retrieveAll(t, c)
	if len(got) != len(files) {
		t.Fatalf("Dovecot serves %d messages, %d delivered", len(got), len(files))
	}
	exact := 0
	for i, f := range files {
		want := testcorpus.CRLF(f.Data)
		if len(want) == 0 {
			// Dovecot serves an empty file as one empty line: the
			// header/body separator every message has.
			want = []byte("\r\n")
		}
		if bytes.Equal(got[i], want) {
			exact++
		} else {
			t.Errorf("%s: fetched %d bytes, want %d", f.Name, len(got[i]), len(want))
		}
	}
	t.Logf("corpus: %d of %d files fetched byte-exact", exact, len(files))
}

// The wrong TLS mode for a port is told apart quickly, never after the
// minute-long read timeout: TLS to the plain port fails the handshake at
// once; plain text to the TLS port waits for a greeting that never comes.
func TestDovecotWrongTLSMode(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	cfg, err := pop3.TLSConfig(d.ServerName, d.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = pop3.Dial(context.Background(), net.JoinHostPort(d.Host, strconv.Itoa(d.Port)), pop3.Options{TLS: pop3.TLSImplicit, TLSConfig: cfg})
	if !errors.Is(err, pop3.ErrNotTLS) || time.Since(start) > 5*time.Second {
		t.Errorf("implicit TLS to the plain port: %v after %s, want ErrNotTLS at once", err, time.Since(start))
	}
	for _, mode := range []pop3.TLSMode{pop3.TLSStartTLS, pop3.TLSNone} {
		start := time.Now()
		_, err = pop3.Dial(context.Background(), d.TLSAddr(), pop3.Options{TLS: mode, TLSConfig: cfg, GreetingTimeout: time.Second})
		if !errors.Is(err, pop3.ErrNoGreeting) || time.Since(start) > 5*time.Second {
			t.Errorf("%s to the TLS port: %v after %s, want ErrNoGreeting after the greeting timeout", mode, err, time.Since(start))
		}
		if strings.Count(err.Error(), "no greeting") != 1 {
			t.Errorf("%s: %q says it twice", mode, err)
		}
	}
}
