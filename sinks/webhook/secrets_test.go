package webhook

import (
	"encoding/base64"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/sinks"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
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
		"userinfo": {Headers: Fixed("X-Api-Key: " + apiKey)},
		"bearer":   {Headers: Fixed("Authorization: Bearer " + bearer + "\nX-Api-Key: " + apiKey)},
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
			opts.Secret = Fixed(testSecret)
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
	s := scrubber{"tok-123456", "abc"}
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

// fileSource reads a secret from a file at every call, as a *_FILE
// variable does.
func fileSource(path string) Source {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		return strings.TrimRight(string(b), "\r\n"), err
	}
}

// TestRotatedSecretsAreUsed: the signing secret and the extra headers are
// read at every delivery, so a token rotated in a file is used from the
// next message on (they were once read at start-up only, and every
// message after a rotation got a 401).
func TestRotatedSecretsAreUsed(t *testing.T) {
	t.Parallel()
	const newSecret = "whsec_c2Vjb25kLWtleS1mb3ItdGhlLXJvdGF0aW9uLXRlc3Q="
	dir := t.TempDir()
	secretFile, headersFile := filepath.Join(dir, "secret"), filepath.Join(dir, "headers")
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(secretFile, testSecret+"\n")
	write(headersFile, "Authorization: Bearer token-one\n")
	rec := newRecorder(t, nil)
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw, Secret: fileSource(secretFile), Headers: fileSource(headersFile)})
	if err := deliver(t, s, message("k1", sample)); err != nil {
		t.Fatal(err)
	}
	write(secretFile, newSecret)
	write(headersFile, "Authorization: Bearer token-two\nX-Round: 2")
	if err := deliver(t, s, message("k2", sample)); err != nil {
		t.Fatal(err)
	}
	hits := rec.got()
	if len(hits) != 2 {
		t.Fatalf("%d requests", len(hits))
	}
	if got := hits[0].header.Get("Authorization"); got != "Bearer token-one" {
		t.Errorf("first request: Authorization %q", got)
	}
	if got := hits[1].header.Get("Authorization"); got != "Bearer token-two" || hits[1].header.Get("X-Round") != "2" {
		t.Errorf("second request: Authorization %q, X-Round %q; want the rotated headers", got, hits[1].header.Get("X-Round"))
	}
	if err := verifyStandardWebhook(testSecret, hits[0].header, hits[0].body, time.Now()); err != nil {
		t.Errorf("first request, old secret: %v", err)
	}
	if err := verifyStandardWebhook(newSecret, hits[1].header, hits[1].body, time.Now()); err != nil {
		t.Errorf("second request, rotated secret: %v", err)
	}

	// A secret that cannot be read makes the sink unavailable: no
	// message can be signed until it is fixed.
	os.Remove(secretFile)
	err := deliver(t, s, message("k3", sample))
	if sinks.Classify(err) != sinks.OutcomeUnavailable || len(rec.got()) != 2 {
		t.Errorf("unreadable secret: %v (%s), %d requests", err, sinks.Classify(err), len(rec.got()))
	}
	// A rotated header file that is wrong is caught the same way, and its
	// error does not show the value.
	write(secretFile, testSecret)
	write(headersFile, "Authorization Bearer token-three")
	err = deliver(t, s, message("k4", sample))
	if sinks.Classify(err) != sinks.OutcomeUnavailable || strings.Contains(err.Error(), "token-three") {
		t.Errorf("bad header file: %v (%s)", err, sinks.Classify(err))
	}
}
