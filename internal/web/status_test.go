package web

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"html"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/worker"
)

func statusPageOf(t *testing.T, opts Options) (string, string) {
	t.Helper()
	code, body, hd := get(t, New(opts), "/")
	if code != 200 {
		t.Fatalf("GET /: %d %s", code, body)
	}
	if ct := hd.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	return body, hd.Get("Content-Security-Policy")
}

// text is the page's text as a reader sees it: tags removed (inline ones
// without a trace, others as a space), entities decoded, white space
// folded.
func text(page string) string {
	page = regexp.MustCompile(`(?s)<style>.*?</style>`).ReplaceAllString(page, " ")
	page = regexp.MustCompile(`</?(span|time|code|small)\b[^>]*>`).ReplaceAllString(page, "")
	page = regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, " ")
	return strings.Join(strings.Fields(html.UnescapeString(page)), " ")
}

func TestStatusPage(t *testing.T) {
	page, _ := statusPageOf(t, realistic())
	got := text(page)
	for _, want := range []string{
		"pophook", "version v1.4.0", "as of 2026-12-03T12:15:00Z (now)", "refreshes every 30 s",
		"Ready",
		"Accounts (3)",
		// support: fine
		"support ok",
		"last run 2026-12-03T12:12:50Z (2 min ago), took 1.4 s",
		"next run 2026-12-03T12:15:50Z (in 50 s)",
		"12 listed 3 delivered 3 deleted 0 problems",
		// billing: backing off
		"billing skipped backing off after refused logins (refused 3 times, last: -ERR [AUTH] Authentication failed.; change the credential to try at once); next attempt at 2026-12-03T12:40:00Z",
		"last run 2026-12-03T12:14:00Z (1 min ago), took 3 ms",
		"login allowed 2026-12-03T12:40:00Z (in 25 min)",
		// sales: running after a failed run
		"sales running",
		"running since 2026-12-03T12:14:40Z (20 s ago) last result failed",
		"last run 2026-12-03T12:10:00Z (5 min ago), took 30.0 s",
		"next run 2026-12-03T12:19:40Z (in 4 min)",
		"last error account sales: RETR 3: read tcp 192.0.2.10:40122->203.0.113.7:995: i/o timeout",
		"problems in the last run sink helpdesk failed; it is not used again in this run: Post: dial tcp 198.51.100.4:443: i/o timeout",
		// rejected messages, each with the command to retry it
		"Rejected messages (2)",
		`account support message 000001a4f3e2 sink helpdesk next attempt 2026-12-03T13:13:00Z (in 58 min) error HTTP 422 Unprocessable Entity: {"error":"invalid payload"} to retry it now, run pophook ledger retry support 000001a4f3e2`,
		`account sales message UID7'$(reboot) sink helpdesk next attempt 2026-12-04T11:15:00Z (in 23 h) error ` + hostileError + ` to retry it now, run pophook ledger retry sales 'UID7'\''$(reboot)'`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the page does not say %q", want)
		}
	}
	for _, want := range []string{
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		`<meta http-equiv="refresh" content="30">`,
		`<section class="card account" id="account-billing">`,
		`<span class="badge bad">skipped</span>`,
		`<span class="badge ok">ok</span>`,
		`<span class="badge run">running</span>`,
		`<time datetime="2026-12-03T12:40:00Z">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	// No script and nothing fetched from anywhere.
	for _, bad := range []string{"<script", "<link", "<img", "<iframe", "@import", "url("} {
		if strings.Contains(strings.ToLower(page), bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	if tag := regexp.MustCompile(`(?i)<[a-z][^>]*\b(src|href|action)=[^>]*>`).FindString(page); tag != "" {
		t.Errorf("the page refers to another resource: %s", tag)
	}
}

// Every value from a server, a receiver or a message is escaped, and the
// Content-Security-Policy allows nothing but the page's own style sheet.
func TestStatusPageEscapes(t *testing.T) {
	evil := `<script>alert("x")</script>`
	opts := realistic()
	statuses := []worker.Status{{
		Account: `acct"><script>alert(1)</script>`,
		Last: &worker.Result{
			Started: fixedNow.Add(-time.Minute), Skipped: worker.SkipInUse, SkipDetail: "-ERR [IN-USE] " + evil,
			Problems: []worker.Problem{{Kind: worker.ProblemTooLarge, UIDL: `"><img src=x onerror=alert(2)>`, Err: errors.New(evil)}},
		},
		LastErr: errors.New(evil),
	}}
	opts.Accounts = func() []worker.Status { return statuses }
	opts.Rejected = func() ([]Rejected, error) {
		return []Rejected{{Account: "support", UIDL: `</code><script>alert(3)</script>`, Sink: evil, LastError: evil}}, nil
	}
	opts.Version = evil
	page, csp := statusPageOf(t, opts)
	for _, bad := range []string{"<script", "<img"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q unescaped", bad)
		}
	}
	if !strings.Contains(page, `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`) {
		t.Error("the hostile string is not shown escaped")
	}
	if got := text(page); !strings.Contains(got, `pophook ledger retry support '</code><script>alert(3)</script>'`) {
		t.Error("the retry command for a hostile UIDL is missing or unquoted")
	}

	// The policy's hash is that of the style element as served.
	m := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no style element")
	}
	sum := sha256.Sum256([]byte(m[1]))
	want := "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	if csp != want {
		t.Errorf("Content-Security-Policy:\n%s\nwant\n%s", csp, want)
	}
}

func TestStatusPageStates(t *testing.T) {
	opts := Options{
		Now: clockAt(fixedNow),
		Accounts: func() []worker.Status {
			return []worker.Status{
				{Account: "fresh"},
				{Account: "first", Running: true, RunStarted: fixedNow.Add(-3 * time.Second)},
				{Account: "inuse", Last: &worker.Result{Skipped: worker.SkipInUse, SkipDetail: "-ERR [IN-USE] mailbox locked"}},
				{Account: "problems", Last: &worker.Result{Problems: make([]worker.Problem, 12)}},
			}
		},
		Rejected: func() ([]Rejected, error) { return nil, errors.New("ledger: timeout") },
	}
	page, _ := statusPageOf(t, opts)
	got := text(page)
	for _, want := range []string{
		"fresh waiting no run has finished yet last run none yet next run not scheduled",
		"first running no run has finished yet running since 2026-12-03T12:14:57Z (3 s ago) last run none yet",
		"inuse skipped mailbox in use by another session (-ERR [IN-USE] mailbox locked)",
		"problems ok", "and 2 more",
		"Rejected messages (0) Could not list the rejected messages: ledger: timeout",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the page does not say %q\n%s", want, got)
		}
	}
	for _, want := range []string{`<span class="badge idle">waiting</span>`, `<span class="badge warn">skipped</span>`, `<span class="badge warn">ok</span>`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}

	// Not ready is said at the top; no Rejected func, no section.
	opts.Accounts = func() []worker.Status {
		return []worker.Status{{Account: "support", Last: runBackoff}}
	}
	opts.Rejected = nil
	page, _ = statusPageOf(t, opts)
	if got := text(page); !strings.Contains(got, "Not ready: account support: authentication failed 3 times; next attempt 12:40 UTC") ||
		strings.Contains(got, "Rejected") {
		t.Errorf("page:\n%s", got)
	}
}

func TestRelative(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "now"}, {-400 * time.Millisecond, "now"},
		{-12 * time.Second, "12 s ago"}, {-3*time.Minute - 59*time.Second, "3 min ago"},
		{25 * time.Minute, "in 25 min"}, {-5 * time.Hour, "5 h ago"}, {47 * time.Hour, "in 47 h"},
		{-72 * time.Hour, "3 d ago"},
	} {
		if got := relative(fixedNow.Add(tc.d), fixedNow); got != tc.want {
			t.Errorf("relative(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// The retry command, pasted into a shell, passes the UIDL unchanged.
func TestRetryCommand(t *testing.T) {
	if got := RetryCommand("support", "000001a4f3e2"); got != "pophook ledger retry support 000001a4f3e2" {
		t.Errorf("RetryCommand = %q", got)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, uidl := range []string{"000001a4f3e2", hostileUIDL, `a b`, `"; rm -rf ~ #`, "`id`", `$HOME`, `'`, `''`, `\`, "*", "-n", "ü€", "x\ny", "AAA+/=="} {
		cmd := RetryCommand("support", uidl)
		// Let the shell split and unquote the arguments.
		out, err := exec.Command(sh, "-c", "printf '%s|' "+strings.TrimPrefix(cmd, "pophook ledger retry ")).Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if got, want := string(out), "support|"+uidl+"|"; got != want {
			t.Errorf("%s: the shell sees %q, want %q", cmd, got, want)
		}
	}
}
