package webhook

import (
	"encoding/base64"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Neither errors nor logs (debug level included) ever show the URL's
// password, a long query value, the signing secret or header values, even
// when the endpoint echoes them back.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	const (
		user     = "hookuser"
		pass     = "pa55word-secret"
		apiKey   = "apikey-secret-value"
		bearer   = "bearer-secret-token"
		qtoken   = "querytoken123456"
		redirect = "http://" + user + ":" + pass + "@elsewhere.example/x?token=" + qtoken
	)
	secrets := []string{
		pass, apiKey, bearer, qtoken, testSecret, strings.TrimPrefix(testSecret, "whsec_"),
		base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)),
	}

	// echo answers with what a careless endpoint might put in an error.
	echo := func(r *http.Request) string {
		return "auth=" + r.Header.Get("Authorization") + " key=" + r.Header.Get("X-Api-Key") +
			" query=" + r.URL.RawQuery + " secret=" + testSecret
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/reject":
			w.WriteHeader(http.StatusUnprocessableEntity)
			w.Write([]byte(echo(r)))
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(echo(r)))
		case "/moved":
			w.Header().Set("Location", redirect)
			w.WriteHeader(http.StatusFound)
		}
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	withUser := func(base, path string) string {
		u, _ := url.Parse(base + path + "?token=" + qtoken)
		u.User = url.UserPassword(user, pass)
		return u.String()
	}
	sinks := map[string]Options{
		"userinfo": {Headers: http.Header{"X-Api-Key": {apiKey}}},
		"bearer":   {Headers: http.Header{"Authorization": {"Bearer " + bearer}, "X-Api-Key": {apiKey}}},
	}
	var errs []string
	for name, opts := range sinks {
		for _, path := range []string{"/reject", "/down", "/moved", "/refused"} {
			base := srv.URL
			if path == "/refused" {
				base = closed.URL
			}
			opts.URL = base + path + "?token=" + qtoken
			if name == "userinfo" {
				opts.URL = withUser(base, path)
			}
			opts.Secret = testSecret
			opts.Format = FormatForm
			opts.Budget = 1200 * time.Millisecond
			opts.Logger = logger.With("sink", name)
			s := newSink(t, opts)
			err := deliver(t, s, message(testKey, sample))
			if err == nil {
				t.Fatalf("%s %s: no error", name, path)
			}
			errs = append(errs, err.Error())
			if path == "/reject" && !strings.Contains(err.Error(), "key="+redacted+" query=token="+redacted) {
				t.Errorf("%s: the echoed body is not in the error, scrubbed: %q", name, err)
			}
		}
	}
	// A URL that does not parse.
	if _, err := New(Options{URL: "http://" + user + ":" + pass + "@host:port/" + qtoken}); err != nil {
		errs = append(errs, err.Error())
	} else {
		t.Error("New accepted a bad URL")
	}

	if !strings.Contains(logs.String(), "retrying") || !strings.Contains(logs.String(), "stays on the server") {
		t.Errorf("the test did not exercise the logs:\n%s", logs)
	}
	for _, secret := range secrets {
		for _, e := range errs {
			if strings.Contains(e, secret) {
				t.Errorf("an error shows %q: %s", secret, e)
			}
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log shows %q", secret)
		}
	}
	if t.Failed() {
		t.Logf("errors:\n%s\nlog:\n%s", strings.Join(errs, "\n"), logs)
	}
}

func TestSnippet(t *testing.T) {
	t.Parallel()
	s := &Sink{secrets: []string{"tok-123456", "abc"}}
	cases := []struct{ in, want string }{
		{"", ""},
		{"  plain  text \r\n\r\n more\t", "plain text more"},
		{"bad \xff\xfe utf8", "bad \uFFFD utf8"},
		{"esc \x1b[31m bell \x07 nul \x00 del \x7f", "esc [31m bell nul del"},
		{"bidi \u202e evil \u2028 line", "bidi evil line"},
		{"token tok-123456 abc", "token " + redacted + " abc"}, // "abc" is too short to scrub
		{"中文错误信息", "中文错误信息"},
	}
	for _, c := range cases {
		if got := s.snippet(strings.NewReader(c.in)); got != c.want {
			t.Errorf("snippet(%q) = %q, want %q", c.in, got, c.want)
		}
	}

	long := strings.Repeat("é", 300) // 600 bytes
	got := s.snippet(strings.NewReader(long))
	if !strings.HasSuffix(got, "…") || len(got) > snippetMax+len("…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("long snippet %q (%d bytes)", got, len(got))
	}
	// A body longer than what is read, cut inside a character.
	huge := strings.Repeat("a", snippetRead-1) + "é"
	if got := s.snippet(strings.NewReader(huge)); strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("a cut character became U+FFFD: %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("https://user:pw@example.com:8443/a/b?token=t0k&x=1&x=2#frag")
	got := redactURL(u)
	if want := "https://user:xxxxx@example.com:8443/a/b?token=xxxxx&x=xxxxx&x=xxxxx"; got != want {
		t.Errorf("redactURL = %q, want %q", got, want)
	}
	if u.String() != "https://user:pw@example.com:8443/a/b?token=t0k&x=1&x=2#frag" {
		t.Error("redactURL changed its argument")
	}
}
