package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

// TestCheck runs pophook check against the test Dovecot the ways operators
// get it wrong, and checks each says what to do, fetching and deleting
// nothing and creating nothing on disk.
func TestCheck(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for range 2 {
		d.Deliver(t, "alice", []byte("Subject: x\n\nbody\n"))
	}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Header.Get("Webhook-Signature") == "" {
			http.Error(w, "unsigned", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	for _, tc := range []struct {
		name  string
		extra []string
		code  int
		says  []string
	}{
		{"good", nil, 0, []string{"account support (", "): ok", "tls         TLS 1.3", "verified", "login       ok (plain)",
			"mailbox     2 message(s)", "UIDL yes, pipelining yes", "sink archive (maildir): ok: ", "does not exist yet",
			"sink hook (webhook): ok: ", "took a signed ping event"}},
		{"wrong password", []string{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=wrong"}, 1, []string{"FAILED", "login       refused: pop3: AUTH PLAIN: -ERR [AUTH]",
			"check POPHOOK_ACCOUNT_SUPPORT_USERNAME and POPHOOK_ACCOUNT_SUPPORT_PASSWORD"}},
		{"untrusted certificate", []string{"POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE="}, 1, []string{"NOT verified", "sha256 ",
			"is not trusted (subject", "set POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE"}},
		{"starttls to the TLS port", []string{"POPHOOK_ACCOUNT_SUPPORT_TLS=starttls"}, 1, []string{"no greeting", "set POPHOOK_ACCOUNT_SUPPORT_TLS=implicit"}},
		{"implicit to the plain port", []string{"POPHOOK_ACCOUNT_SUPPORT_PORT=" + strconv.Itoa(d.Port)}, 1, []string{"speaks plain POP3",
			"set POPHOOK_ACCOUNT_SUPPORT_TLS=starttls"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
				append([]string{"POPHOOK_SINKS=archive,hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=archive,hook",
					"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL=" + hook.URL,
					"POPHOOK_SINK_HOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwIf2Ot1vRE/w="}, tc.extra...)...)
			out, code := runBin(t, env, "check", "--ping")
			t.Logf("pophook check (%s):\n%s", tc.name, out)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, want := range tc.says {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if strings.Contains(out, d.Users["alice"]) {
				t.Error("the password is in the output")
			}
			for _, p := range []string{"data", "Maildir"} {
				if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
					t.Errorf("check created %s", p)
				}
			}
		})
	}
	if n := d.Count(t, "alice"); n != 2 {
		t.Errorf("%d messages on the server after check, want 2", n)
	}

	// --json for scripts.
	dir := t.TempDir()
	out, code := runBin(t, dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir")), "check", "--json")
	var rep checkReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Accounts) != 1 || !rep.Accounts[0].OK || rep.Accounts[0].Messages != 2 {
		t.Errorf("check --json: exit %d\n%s", code, out)
	}
}
