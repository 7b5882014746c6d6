package webhook

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pophook/pophook/sinks"
)

const testKey = "ph1_0123456789abcdef0123456789abcdef01234567"

// testSecret is a Standard Webhooks secret (32 random bytes).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwIf2Ot1vRE/w="

// sample is a message as fetched: CRLF line endings, a line that was
// dot-stuffed, a bare LF and CR, and bytes that are not UTF-8.
var sample = []byte("Return-Path: <zhang@example.cn>\r\n" +
	"From: =?UTF-8?B?5byg5LiJ?= <zhang@example.cn>\r\n" +
	"To: support@example.com\r\n" +
	"Subject: hello\r\n" +
	"Message-ID: <abc@example.cn>\r\n" +
	"\r\n" +
	"line one\r\n" +
	".dot line\r\n" +
	"bare\nlf and bare\rcr\r\n" +
	"latin-1 \xe9\xff\x00 end\r\n")

func message(key string, raw []byte) *sinks.Message {
	sum := sha256.Sum256(raw)
	return &sinks.Message{
		Account: "support",
		Mailbox: "support@example.com",
		UIDL:    "uidl-" + key,
		Key:     key,
		Size:    int64(len(raw)),
		SHA256:  hex.EncodeToString(sum[:]),
		Raw:     bytes.NewReader(raw),
	}
}

// hit is one request as the test server saw it.
type hit struct {
	at               time.Time
	header           http.Header
	body             []byte
	contentLength    int64
	transferEncoding []string
	user, pass       string
	basicAuth        bool
}

// recorder is a test endpoint: it reads and records each request, then
// lets handle answer it (n counts requests from 0). A nil handle answers
// 200.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hit
}

func newRecorder(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request, body []byte)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("server: reading the body: %v", err)
		}
		h := hit{at: time.Now(), header: r.Header.Clone(), body: body, contentLength: r.ContentLength,
			transferEncoding: r.TransferEncoding}
		h.user, h.pass, h.basicAuth = r.BasicAuth()
		rec.mu.Lock()
		n := len(rec.hits)
		rec.hits = append(rec.hits, h)
		rec.mu.Unlock()
		if handle == nil {
			// "ok" is what a mail gateway must say for format form.
			io.WriteString(w, "ok\n")
			return
		}
		ow := &okWriter{ResponseWriter: w, code: http.StatusOK}
		handle(n, ow, r, body)
		ow.finish()
	}))
	t.Cleanup(rec.Close)
	return rec
}

// okWriter gives a 2xx answer without a body the body "ok", which format
// form needs to count it as delivered (a mail gateway's receipt).
type okWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *okWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *okWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}
func (w *okWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.wrote = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}
func (w *okWriter) finish() {
	if !w.wrote && w.code/100 == 2 && w.code != http.StatusNoContent {
		io.WriteString(w.ResponseWriter, "ok\n")
	}
}

func (rec *recorder) got() []hit {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.hits)
}

// statuses answers the n-th request with codes[n], the last one after.
func statuses(codes ...int) func(int, http.ResponseWriter, *http.Request, []byte) {
	return func(n int, w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.WriteHeader(codes[min(n, len(codes)-1)])
	}
}

func newSink(t *testing.T, opts Options) *Sink {
	t.Helper()
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func deliver(t *testing.T, s *Sink, m *sinks.Message) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.Deliver(ctx, m)
}

// verifyStandardWebhook checks a request the way a Standard Webhooks
// receiver does, written from the specification, not from the sink: the
// headers present, the timestamp within tolerance, and one of the
// space-separated "v1,<base64>" signatures equal (in constant time) to
// HMAC-SHA256 over "id.timestamp.body" keyed with the secret's base64
// part decoded.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	const tolerance = 5 * time.Minute
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("timestamp %s outside the tolerance", ts)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte("."))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Split(sigs, " ") {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

func TestRawFormat(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, nil)
	s := newSink(t, Options{URL: rec.URL + "/hook", Format: FormatRaw})
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	hits := rec.got()
	if len(hits) != 1 {
		t.Fatalf("%d requests, want 1", len(hits))
	}
	h := hits[0]
	if !bytes.Equal(h.body, sample) {
		t.Errorf("body differs from the message:\n got %q\nwant %q", h.body, sample)
	}
	if ct := h.header.Get("Content-Type"); ct != "message/rfc822" {
		t.Errorf("Content-Type %q", ct)
	}
	if h.contentLength != int64(len(sample)) || len(h.transferEncoding) != 0 {
		t.Errorf("Content-Length %d, Transfer-Encoding %q; want %d and none", h.contentLength, h.transferEncoding, len(sample))
	}
}

func TestFormFormat(t *testing.T) {
	t.Parallel()
	type part struct {
		name, filename, contentType string
		content                     []byte
	}
	var (
		mu    sync.Mutex
		parts []part
	)
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request, body []byte) {
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/form-data" {
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Errorf("multipart: %v", err)
				break
			}
			b, _ := io.ReadAll(p)
			mu.Lock()
			parts = append(parts, part{p.FormName(), p.FileName(), p.Header.Get("Content-Type"), b})
			mu.Unlock()
		}
		io.WriteString(w, "ok")
	})
	s := newSink(t, Options{
		URL:        rec.URL + "/REST/1.0/NoAuth/mail-gateway",
		Format:     FormatForm,
		FormFields: [][2]string{{"queue", "General"}, {"action", "correspond"}},
	})
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	hits := rec.got()
	if len(hits) != 1 || hits[0].contentLength != int64(len(hits[0].body)) {
		t.Fatalf("%d requests, Content-Length %d", len(hits), hits[0].contentLength)
	}
	mu.Lock()
	defer mu.Unlock()
	var names []string
	for _, p := range parts {
		names = append(names, p.name)
	}
	if want := []string{"queue", "action", "message"}; !slices.Equal(names, want) {
		t.Fatalf("fields %q, want %q", names, want)
	}
	if string(parts[0].content) != "General" || string(parts[1].content) != "correspond" {
		t.Errorf("queue %q, action %q", parts[0].content, parts[1].content)
	}
	msg := parts[2]
	// No file name: RT (Plack) would take the part for an upload and
	// leave $ARGS{message} empty.
	if msg.filename != "" || msg.contentType != "message/rfc822" {
		t.Errorf("message part: filename %q, Content-Type %q; want a plain field of type message/rfc822", msg.filename, msg.contentType)
	}
	if !bytes.Equal(msg.content, sample) {
		t.Errorf("file part differs from the message:\n got %q\nwant %q", msg.content, sample)
	}
}

// TestFormFilename: endpoints that want a file upload (multer, Django's
// request.FILES) get the message part with a file name.
func TestFormFilename(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			t.Errorf("ParseMultipartForm: %v", err)
			return
		}
		f, fh, err := r.FormFile("message")
		if err != nil {
			t.Errorf("no uploaded file in field message: %v", err)
			return
		}
		got, _ := io.ReadAll(f)
		if fh.Filename != "message.eml" || fh.Header.Get("Content-Type") != "message/rfc822" || !bytes.Equal(got, sample) {
			t.Errorf("upload %q (%s), %d bytes", fh.Filename, fh.Header.Get("Content-Type"), len(got))
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	s := newSink(t, Options{URL: srv.URL, Format: FormatForm, FormFilename: "message.eml"})
	if err := deliver(t, s, message("k1", sample)); err != nil {
		t.Fatal(err)
	}
}

func TestFormFieldName(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			t.Errorf("ParseMultipartForm: %v", err)
			return
		}
		// A plain field, as frameworks (and RT) read it.
		if got := r.FormValue("eml"); got != string(sample) {
			t.Errorf("field eml = %q, want the message", got)
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	s := newSink(t, Options{URL: srv.URL, Format: FormatForm, FormField: "eml"})
	if err := deliver(t, s, message("k1", sample)); err != nil {
		t.Fatal(err)
	}
}

func TestJSONFormat(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, nil)
	s := newSink(t, Options{URL: rec.URL, Format: FormatJSON, IncludeRaw: true})
	m := message(testKey, sample)
	if err := deliver(t, s, m); err != nil {
		t.Fatal(err)
	}
	hits := rec.got()
	if len(hits) != 1 {
		t.Fatalf("%d requests", len(hits))
	}
	h := hits[0]
	if ct := h.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if h.contentLength != int64(len(h.body)) || len(h.transferEncoding) != 0 {
		t.Errorf("Content-Length %d for %d bytes, Transfer-Encoding %q", h.contentLength, len(h.body), h.transferEncoding)
	}
	if !json.Valid(h.body) {
		t.Fatalf("not valid JSON: %.300s", h.body)
	}
	var p struct {
		Type string
		Data struct {
			ID, Account, Mailbox, UIDL, SHA256, Raw string
			Size                                    int64
		}
	}
	if err := json.Unmarshal(h.body, &p); err != nil {
		t.Fatal(err)
	}
	d := p.Data
	if p.Type != "message.received" || d.ID != testKey || d.Account != m.Account || d.Mailbox != m.Mailbox ||
		d.UIDL != m.UIDL || d.Size != m.Size || d.SHA256 != m.SHA256 {
		t.Errorf("payload %+v does not match the message %+v", p, m)
	}
	if raw, err := base64.StdEncoding.DecodeString(d.Raw); err != nil || !bytes.Equal(raw, sample) {
		t.Errorf("data.raw does not decode to the message (%v)", err)
	}
}

func TestHeadersAndSignature(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, statuses(http.StatusInternalServerError, http.StatusOK))
	u, _ := url.Parse(rec.URL + "/hook?tenant=acme")
	u.User = url.UserPassword("hookuser", "hook pass:word")
	s := newSink(t, Options{
		URL:       u.String(),
		Format:    FormatRaw,
		Secret:    Fixed(testSecret),
		UserAgent: "pophook/1.2.3",
		Headers:   Fixed("X-Api-Key: key-123\nX-Tenant: acme\nX-Tenant: beta"),
	})
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	hits := rec.got()
	if len(hits) != 2 {
		t.Fatalf("%d requests, want 2 (500, then 200)", len(hits))
	}
	for i, h := range hits {
		if got := h.header.Get("Idempotency-Key"); got != testKey {
			t.Errorf("request %d: Idempotency-Key %q", i, got)
		}
		if got := h.header.Get("User-Agent"); got != "pophook/1.2.3" {
			t.Errorf("request %d: User-Agent %q", i, got)
		}
		if got := h.header.Get("X-Api-Key"); got != "key-123" {
			t.Errorf("request %d: X-Api-Key %q", i, got)
		}
		if got := h.header.Values("X-Tenant"); !slices.Equal(got, []string{"acme", "beta"}) {
			t.Errorf("request %d: X-Tenant %q", i, got)
		}
		if !h.basicAuth || h.user != "hookuser" || h.pass != "hook pass:word" {
			t.Errorf("request %d: basic auth %v %q %q", i, h.basicAuth, h.user, h.pass)
		}
		if got := h.header.Get("webhook-id"); got != testKey {
			t.Errorf("request %d: webhook-id %q, want the key on every attempt", i, got)
		}
		if err := verifyStandardWebhook(testSecret, h.header, h.body, h.at); err != nil {
			t.Errorf("request %d: signature: %v", i, err)
		}
	}
	// The signature is the receiver's proof: a changed body must fail.
	if err := verifyStandardWebhook(testSecret, hits[1].header, append(slices.Clone(hits[1].body), 'x'), time.Now()); err == nil {
		t.Error("the verifier accepts a tampered body")
	}
}

func TestSignatureAcrossFormats(t *testing.T) {
	t.Parallel()
	for _, format := range []string{FormatJSON, FormatRaw, FormatForm} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, nil)
			s := newSink(t, Options{URL: rec.URL, Format: format, Secret: Fixed(testSecret)})
			if err := deliver(t, s, message(testKey, sample)); err != nil {
				t.Fatal(err)
			}
			h := rec.got()[0]
			if err := verifyStandardWebhook(testSecret, h.header, h.body, h.at); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestNoSignatureWithoutSecret(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, nil)
	s := newSink(t, Options{URL: rec.URL, Format: FormatRaw})
	if err := deliver(t, s, message(testKey, sample)); err != nil {
		t.Fatal(err)
	}
	h := rec.got()[0]
	for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature", "Authorization"} {
		if v := h.header.Values(name); len(v) != 0 {
			t.Errorf("%s sent without a secret: %q", name, v)
		}
	}
	if got := h.header.Get("User-Agent"); got != "pophook/dev" {
		t.Errorf("default User-Agent %q", got)
	}
	if got := h.header.Get("Idempotency-Key"); got != testKey {
		t.Errorf("Idempotency-Key %q", got)
	}
}

// The staged body is private (0600) while in use and gone afterwards,
// whatever the outcome.
func TestStagedBodyFiles(t *testing.T) {
	t.Parallel()
	for _, format := range []string{FormatJSON, FormatForm} {
		for _, code := range []int{http.StatusOK, http.StatusBadRequest} {
			t.Run(fmt.Sprintf("%s/%d", format, code), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				rec := newRecorder(t, func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
					ents, _ := os.ReadDir(dir)
					if len(ents) != 1 {
						t.Errorf("%d files in TempDir during the request, want 1", len(ents))
					} else if fi, err := ents[0].Info(); err != nil || fi.Mode().Perm() != 0o600 {
						t.Errorf("staged body mode %v (%v), want 0600", fi.Mode(), err)
					}
					w.WriteHeader(code)
				})
				s := newSink(t, Options{URL: rec.URL, Format: format, TempDir: dir})
				deliver(t, s, message(testKey, sample))
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Errorf("left in TempDir: %v", ents)
				}
			})
		}
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(n int, w http.ResponseWriter, _ *http.Request, _ []byte) {
		if n%3 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	s := newSink(t, Options{URL: rec.URL, Format: FormatForm, Secret: Fixed(testSecret)})
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			raw := fmt.Appendf(slices.Clone(sample), "message %02d\r\n", i)
			if err := deliver(t, s, message(fmt.Sprintf("key-%02d", i), raw)); err != nil {
				t.Errorf("message %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, h := range rec.got() {
		if err := verifyStandardWebhook(testSecret, h.header, h.body, h.at); err != nil {
			t.Error(err)
		}
		key := h.header.Get("Idempotency-Key")
		if !bytes.Contains(h.body, []byte("message "+strings.TrimPrefix(key, "key-")+"\r\n")) {
			t.Errorf("request with key %s carries another message", key)
		}
		seen[key] = true
	}
	if len(seen) != 12 {
		t.Errorf("%d keys seen, want 12", len(seen))
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	s, err := New(Options{URL: "https://hooks.example.com/in"})
	if err != nil {
		t.Fatal(err)
	}
	if s.format != FormatJSON || s.timeout != 30*time.Second || s.retry.BudgetOrDefault() != 45*time.Second ||
		s.formField != "message" || s.userAgent != "pophook/dev" || s.tempDir != os.TempDir() {
		t.Errorf("defaults: format %q timeout %s budget %s field %q UA %q temp %q",
			s.format, s.timeout, s.retry.BudgetOrDefault(), s.formField, s.userAgent, s.tempDir)
	}

	base := &http.Client{}
	if _, err := New(Options{URL: "https://hooks.example.com/in", Client: base}); err != nil {
		t.Fatal(err)
	}
	if base.CheckRedirect != nil || base.Timeout != 0 {
		t.Error("New changed the caller's http.Client")
	}

	const pass = "s3cret-pass"
	bad := []struct {
		opts Options
		want string
	}{
		{Options{}, "no URL"},
		{Options{URL: "ftp://host/x"}, "not an absolute http or https URL"},
		{Options{URL: "/relative"}, "not an absolute http or https URL"},
		{Options{URL: "http://user:" + pass + "@host:port/"}, "not a valid URL"},
		{Options{URL: "http://user:" + pass + "@host/", Format: "xml"}, `format "xml"`},
		{Options{URL: "http://host/", Secret: Fixed("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")}, "not a Standard Webhooks secret"},
		{Options{URL: "http://host/", Secret: Fixed("whsec_!!!" + pass)}, "not a Standard Webhooks secret"},
		{Options{URL: "http://host/", Secret: Fixed("whsec_")}, "not a Standard Webhooks secret"},
		{Options{URL: "http://host/", Headers: Fixed("Idempotency-Key: x")}, "Idempotency-Key is set by pophook"},
		{Options{URL: "http://host/", Headers: Fixed("webhook-signature: x")}, "Webhook-Signature is set by pophook"},
		{Options{URL: "http://host/", Headers: Fixed("Content-Type: x")}, "Content-Type is set by pophook"},
		{Options{URL: "http://host/", Headers: Fixed("Bad Name: x")}, "not a header name"},
		{Options{URL: "http://host/", Headers: Fixed("X-Token: " + pass + "\x01X-Evil: 1")}, "control characters"},
		{Options{URL: "http://u:" + pass + "@host/", Headers: Fixed("Authorization: Bearer " + pass)}, "use one"},
		{Options{URL: "http://host/", FormFields: [][2]string{{"", "v"}}}, "no name"},
	}
	for _, c := range bad {
		_, err := New(c.opts)
		if err == nil {
			t.Errorf("New(%+v) accepted", c.opts)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("New: %q, want it to say %q", err, c.want)
		}
		if strings.Contains(err.Error(), pass) {
			t.Errorf("New's error shows a secret: %q", err)
		}
	}
}

// TestMailGatewayVerdict: Request Tracker's mail gateway answers 200 and
// says in the body whether it filed the message. As rt-mailgate does, only
// a body starting with "ok" is a delivery; an auth proxy's login page, an
// empty body or anything else is not (those were once taken for success
// and the mail deleted).
func TestMailGatewayVerdict(t *testing.T) {
	t.Parallel()
	const login = "<!DOCTYPE html>\n<html><head><title>Sign in - Authelia</title></head><body>...</body></html>"
	for _, tc := range []struct {
		body, contentType string
		want              sinks.Outcome
		says              string
	}{
		{"ok\nTicket: 42\n", "text/plain", sinks.OutcomeDelivered, ""},
		{"ok", "", sinks.OutcomeDelivered, ""},
		{"not ok - Couldn't load queue General", "text/plain", sinks.OutcomeRejected, "not ok - Couldn't load queue General"},
		{"temporary failure - database is down", "text/plain", sinks.OutcomeTemporary, "temporary failure - database is down"},
		{"", "", sinks.OutcomeTemporary, "empty body"},
		{login, "text/html; charset=utf-8", sinks.OutcomeTemporary, `HTML page ("Sign in - Authelia")`},
		{"Okay, thanks\n", "text/plain", sinks.OutcomeTemporary, `did not answer "ok"`},
		{"<html><body>ok</body></html>", "", sinks.OutcomeTemporary, "HTML page"},
		{" ok", "text/plain", sinks.OutcomeTemporary, `did not answer "ok"`},
		{"Error\nsecond line\n", "text/plain", sinks.OutcomeTemporary, `"Error"`},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.contentType != "" {
				w.Header().Set("Content-Type", tc.contentType)
			}
			io.WriteString(w, tc.body)
		}))
		// A 2xx is never retried: the budget only has to cover one POST.
		s := newSink(t, Options{URL: srv.URL, Format: FormatForm, Budget: 2 * time.Second})
		err := deliver(t, s, message("k1", sample))
		srv.Close()
		if got := sinks.Classify(err); got != tc.want {
			t.Errorf("body %q: err = %v (%s), want %s", tc.body, err, got, tc.want)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.says) {
			t.Errorf("body %q: error %q does not say %q", tc.body, err, tc.says)
		}
		if err != nil && strings.Contains(err.Error(), "second line") {
			t.Errorf("body %q: the error quotes more than the first line: %q", tc.body, err)
		}
	}
}

// TestHTMLAnswerIsNotADelivery: a 2xx HTML page in answer to json or raw
// (an auth proxy's login form) makes the sink unavailable, unless the
// operator said the receiver answers HTML.
func TestHTMLAnswerIsNotADelivery(t *testing.T) {
	t.Parallel()
	pages := []struct{ body, contentType string }{
		{"<!DOCTYPE html><html><head><title>Log in &middot; Traefik</title></head></html>", "text/html"},
		{"\n  <!doctype HTML>\n<html><title>Portal</title>", "application/octet-stream"},
		{"<HTML><BODY>Please log in</BODY></HTML>", ""},
		{`{"status":"accepted"}`, "text/html; charset=utf-8"},
	}
	for _, format := range []string{FormatJSON, FormatRaw} {
		for _, p := range pages {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if p.contentType != "" {
					w.Header().Set("Content-Type", p.contentType)
				}
				io.WriteString(w, p.body)
			}))
			s := newSink(t, Options{Name: "helpdesk", URL: srv.URL, Format: format})
			err := deliver(t, s, message("k1", sample))
			if sinks.Classify(err) != sinks.OutcomeUnavailable || !strings.Contains(err.Error(), "HTML page") ||
				!strings.Contains(err.Error(), "POPHOOK_SINK_HELPDESK_ACCEPT_HTML=true") {
				t.Errorf("%s, %q: err = %v (%s), want unavailable naming the opt-out", format, p.body, err, sinks.Classify(err))
			}
			accepting := newSink(t, Options{URL: srv.URL, Format: format, AcceptHTML: true})
			if err := deliver(t, accepting, message("k1", sample)); err != nil {
				t.Errorf("%s, %q with AcceptHTML: %v", format, p.body, err)
			}
			srv.Close()
		}
	}
	// A JSON receipt, a plain "ok" and an empty 204 are deliveries.
	for _, body := range []string{`{"ok":true}`, "ok", ""} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if body == "" {
				w.WriteHeader(http.StatusNoContent)
			}
			io.WriteString(w, body)
		}))
		s := newSink(t, Options{URL: srv.URL})
		if err := deliver(t, s, message("k1", sample)); err != nil {
			t.Errorf("body %q: %v", body, err)
		}
		srv.Close()
	}
}

// TestAnswersThatMakeTheSinkUnavailable: refused credentials and
// redirects are not the message's fault.
func TestAnswersThatMakeTheSinkUnavailable(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired, http.StatusFound, http.StatusPermanentRedirect} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if code/100 == 3 {
				w.Header().Set("Location", "https://elsewhere.example/hook")
			}
			w.WriteHeader(code)
		}))
		s := newSink(t, Options{Name: "helpdesk", URL: srv.URL})
		err := deliver(t, s, message("k1", sample))
		srv.Close()
		if sinks.Classify(err) != sinks.OutcomeUnavailable || !strings.Contains(err.Error(), "POPHOOK_SINK_HELPDESK_") {
			t.Errorf("HTTP %d: err = %v (%s), want unavailable naming a variable", code, err, sinks.Classify(err))
		}
	}
}

// TestTooLargeSaysWhichLimit: a 413 is a rejection of this message whose
// error says what to raise.
func TestTooLargeSaysWhichLimit(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, "<html><head><title>413 Request Entity Too Large</title></head></html>")
	}))
	defer srv.Close()
	s := newSink(t, Options{URL: srv.URL, Format: FormatRaw})
	err := deliver(t, s, message("k1", sample))
	if sinks.Classify(err) != sinks.OutcomeRejected || !strings.Contains(err.Error(), "client_max_body_size") ||
		!strings.Contains(err.Error(), fmt.Sprintf("%d bytes", len(sample))) {
		t.Errorf("err = %v (%s)", err, sinks.Classify(err))
	}
}
