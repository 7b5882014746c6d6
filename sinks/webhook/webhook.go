// Package webhook is the sink that POSTs each message to an HTTP endpoint,
// in one of three formats (DESIGN.md section 4):
//
//   - json: the parsed message (package payload), Content-Type
//     application/json;
//   - raw: the message exactly as fetched, Content-Type message/rfc822;
//   - form: multipart/form-data with the raw message in a file field plus
//     configured plain fields, for Request Tracker's mail gateway and the
//     like.
//
// Every request carries Idempotency-Key (the message's key, the same on
// every attempt) and, with a secret, the Standard Webhooks signature
// headers. The message is never held in memory: json and form bodies are
// written once per delivery to a private temporary file, raw bodies are
// read from the spool, and every attempt replays from there.
//
// The sink owns its retries (retry.go, with the policy of sinks.Retry) and
// its verdicts (verdict.go): 2xx is success unless the body says
// otherwise (a mail gateway's "not ok", an auth proxy's HTML login page);
// 408, 425, 429, 5xx and network errors are retried within a time budget;
// refused credentials, a redirect or an untrusted certificate make the
// sink unavailable; any other 4xx rejects the message.
package webhook

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/webhook/payload"
)

// Formats.
const (
	FormatJSON = "json"
	FormatRaw  = "raw"
	FormatForm = "form"
)

const (
	defaultTimeout   = 30 * time.Second
	defaultFormField = "message"
	defaultUserAgent = "pophook/dev"
	secretPrefix     = "whsec_"
)

var _ sinks.Sink = (*Sink)(nil)

// Source returns a secret at the moment it is needed. The sink calls it
// for every delivery, so a token that a sidecar rotates in a file is used
// from the next message on, without a restart.
type Source func() (string, error)

// Fixed is a Source that always returns s.
func Fixed(s string) Source { return func() (string, error) { return s, nil } }

// Options configure a Sink. Only URL is required.
type Options struct {
	// Name is the sink's name in the configuration ("helpdesk"); messages
	// that ask the operator to change a variable use it. Optional.
	Name string
	// URL is the absolute http or https endpoint. It may carry
	// user:password, sent as basic auth and never logged.
	URL string
	// Format is "json" (the default), "raw" or "form".
	Format string
	// Secret gives the Standard Webhooks secret, "whsec_" + base64 of
	// the key; nil sends no signature headers.
	Secret Source
	// Headers gives extra request headers as "Name: value" lines (see
	// ParseHeaders). Their values are treated as secrets (bearer tokens):
	// never logged, never in errors.
	Headers Source
	// Timeout bounds one request, from dialling to the end of the
	// response; default 30s.
	Timeout time.Duration
	// Budget bounds one delivery, all attempts and waits included;
	// default sinks.DefaultBudget.
	Budget time.Duration
	// FormField is the name of the form field holding the message in
	// format "form"; default "message".
	FormField string
	// FormFilename, when set, gives the message part of format "form" a
	// file name, for endpoints that take it as a file upload (multer,
	// Django's request.FILES). Request Tracker needs it unset.
	FormFilename string
	// AcceptHTML makes a 2xx answer that is an HTML page count as
	// delivered (json and raw). Off by default: such a page is what an
	// auth proxy's login form or a captive portal answers.
	AcceptHTML bool
	// FormFields are plain fields sent before the file field, in order,
	// e.g. {"queue", "General"}, {"action", "correspond"}.
	FormFields [][2]string
	// InlineLimit and IncludeRaw are passed to payload.Options (json).
	InlineLimit int64
	IncludeRaw  bool
	// TempDir is where json and form bodies are staged (the spool
	// directory); default os.TempDir().
	TempDir string
	// UserAgent defaults to "pophook/dev".
	UserAgent string
	// Client is an optional base client (custom TLS, tests). The sink
	// uses a copy whose Timeout is Timeout and which never follows
	// redirects.
	Client *http.Client
	// Logger may be nil.
	Logger *slog.Logger
	// OnRetry, if set, is called before each retry (a metric).
	OnRetry func()
}

// Sink delivers messages to one webhook endpoint. It is safe for
// concurrent use.
type Sink struct {
	name         string
	url          string // without userinfo
	shown        string // redacted, for logs and errors
	user         *url.Userinfo
	format       string
	secret       Source // nil: no signature
	headers      Source // nil: no extra headers
	retry        sinks.Retry
	timeout      time.Duration
	formField    string
	formFilename string
	formFields   [][2]string
	acceptHTML   bool
	payloadOpts  payload.Options
	tempDir      string
	userAgent    string
	client       *http.Client
	log          *slog.Logger
	secrets      scrubber // the URL's: scrubbed from response snippets
	now          func() time.Time
	onRetry      func()
}

// New checks opts and returns a sink. The secret and headers are read and
// checked once here, so that a wrong one stops start-up, and again at
// every delivery. Its errors never quote the URL's password, the secret
// or header values. New touches no file.
func New(opts Options) (*Sink, error) {
	s := &Sink{
		name:         opts.Name,
		format:       opts.Format,
		timeout:      opts.Timeout,
		retry:        sinks.Retry{Budget: opts.Budget},
		secret:       opts.Secret,
		headers:      opts.Headers,
		formField:    opts.FormField,
		formFilename: opts.FormFilename,
		formFields:   opts.FormFields,
		acceptHTML:   opts.AcceptHTML,
		tempDir:      opts.TempDir,
		userAgent:    opts.UserAgent,
		log:          opts.Logger,
		now:          time.Now,
		onRetry:      opts.OnRetry,
		payloadOpts: payload.Options{
			InlineLimit: opts.InlineLimit,
			IncludeRaw:  opts.IncludeRaw,
		},
	}
	if err := s.setURL(opts.URL); err != nil {
		return nil, err
	}
	switch s.format {
	case "":
		s.format = FormatJSON
	case FormatJSON, FormatRaw, FormatForm:
	default:
		return nil, fmt.Errorf("webhook %s: format %q is not json, raw or form", s.shown, s.format)
	}
	if _, err := s.credentials(); err != nil {
		return nil, err
	}
	if s.timeout <= 0 {
		s.timeout = defaultTimeout
	}
	if s.formField == "" {
		s.formField = defaultFormField
	}
	for _, f := range s.formFields {
		if f[0] == "" {
			return nil, fmt.Errorf("webhook %s: a form field has no name", s.shown)
		}
	}
	if strings.ContainsAny(s.formField+s.formFilename, "\"\r\n") {
		return nil, fmt.Errorf("webhook %s: the form field name and file name cannot hold quotes or line breaks", s.shown)
	}
	if s.tempDir == "" {
		s.tempDir = os.TempDir()
	}
	if s.userAgent == "" {
		s.userAgent = defaultUserAgent
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("url", s.shown)

	var c http.Client
	if opts.Client != nil {
		c = *opts.Client
	} else {
		c.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	c.Timeout = s.timeout
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s.client = &c
	return s, nil
}

// setURL parses raw, keeps its userinfo apart (sent as basic auth, never
// part of a request URL and so of no error) and sets the shown form.
func (s *Sink) setURL(raw string) error {
	s.shown = "(no URL)"
	if raw == "" {
		return errors.New("webhook: no URL given")
	}
	u, err := ParseURL(raw)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	s.shown = redactURL(u)
	if u.User != nil {
		s.user = u.User
		pass, _ := u.User.Password()
		s.secrets = append(s.secrets, pass,
			base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass)))
		u.User = nil
	}
	u.Fragment, u.RawFragment = "", ""
	s.url = u.String()
	// A long query value is likely a token: keep it out of snippets too.
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= 8 {
				s.secrets = append(s.secrets, v)
			}
		}
	}
	return nil
}

// creds is what one delivery authenticates with, read from the sources
// at its start.
type creds struct {
	key     []byte // Standard Webhooks key; nil: no signature
	headers http.Header
	secrets scrubber // every secret value, for scrubbing echoes
}

// credentials reads the secret and the extra headers now and checks them.
func (s *Sink) credentials() (*creds, error) {
	c := &creds{secrets: slices.Clone(s.secrets)}
	if s.secret != nil {
		secret, err := s.secret()
		if err != nil {
			return nil, fmt.Errorf("webhook %s: reading the signing secret: %w", s.shown, err)
		}
		if secret != "" {
			if c.key, err = SecretKey(secret); err != nil {
				return nil, fmt.Errorf("webhook %s: the secret is %w", s.shown, err)
			}
			c.secrets = append(c.secrets, secret, strings.TrimPrefix(secret, secretPrefix))
		}
	}
	if s.headers != nil {
		text, err := s.headers()
		if err != nil {
			return nil, fmt.Errorf("webhook %s: reading the extra headers: %w", s.shown, err)
		}
		h, errs := ParseHeaders(text)
		if len(errs) > 0 {
			return nil, fmt.Errorf("webhook %s: extra headers: %w", s.shown, errors.Join(errs...))
		}
		if h.Get("Authorization") != "" && s.user != nil {
			return nil, fmt.Errorf("webhook %s: both the URL's user:password and an Authorization header are set; use one", s.shown)
		}
		for _, values := range h {
			for _, v := range values {
				c.secrets = append(c.secrets, v)
				// "Bearer <token>": the token alone may be echoed too.
				if _, tok, ok := strings.Cut(v, " "); ok {
					c.secrets = append(c.secrets, strings.TrimSpace(tok))
				}
			}
		}
		c.headers = h
	}
	return c, nil
}

// Deliver POSTs m and returns nil once the endpoint took it (see
// verdict.go), an error marked sinks.Reject when it rejected the message,
// one marked sinks.Unavailable when the endpoint cannot take anything
// until someone fixes something (credentials refused, a redirect, an
// untrusted certificate, an HTML login page, an unreadable secret), and a
// temporary error otherwise (the budget spent on retries, ctx cancelled).
// Staging, every attempt and every wait run under one deadline, Budget,
// so it returns within about Budget.
func (s *Sink) Deliver(ctx context.Context, m *sinks.Message) error {
	if m == nil || m.Key == "" || m.Raw == nil {
		return fmt.Errorf("webhook %s: message has no idempotency key or no content", s.shown)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("webhook %s: delivery cancelled: %w", s.shown, err)
	}
	start := s.now()
	c, err := s.credentials()
	if err != nil {
		return sinks.Unavailable(err)
	}
	bctx, cancel := context.WithTimeout(ctx, s.retry.BudgetOrDefault())
	defer cancel()

	body, size, contentType, cleanup, err := s.stage(bctx, m)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("webhook %s: delivery cancelled: %w", s.shown, ctx.Err())
		}
		return err
	}
	defer cleanup()

	d := &delivery{Sink: s, creds: c, msg: m, ctx: bctx, parent: ctx, start: start, body: body, size: size}
	d.deadline, _ = bctx.Deadline()
	return d.run(contentType)
}

// stage returns the request body of m: the spool itself for raw, else a
// private temporary file in TempDir written once, removed by cleanup.
func (s *Sink) stage(ctx context.Context, m *sinks.Message) (body io.ReaderAt, size int64, contentType string, cleanup func(), err error) {
	if s.format == FormatRaw {
		return m.Raw, m.Size, "message/rfc822", func() {}, nil
	}
	f, err := os.CreateTemp(s.tempDir, "webhook-*.body") // 0600
	if err != nil {
		return nil, 0, "", nil, fmt.Errorf("webhook %s: staging the request body: %w", s.shown, err)
	}
	cleanup = func() {
		f.Close()
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove a staged request body", "file", f.Name(), "err", err)
		}
	}
	bw := stageWriters.Get().(*bufio.Writer)
	bw.Reset(ctxWriter{ctx, f})
	defer func() {
		bw.Reset(nil) // nothing of this message stays referenced
		stageWriters.Put(bw)
	}()
	cw := &countWriter{w: bw}
	switch s.format {
	case FormatJSON:
		contentType = "application/json"
		meta := payload.Meta{
			ID: m.Key, Account: m.Account, Mailbox: m.Mailbox, UIDL: m.UIDL,
			Size: m.Size, SHA256: m.SHA256, Timestamp: s.now().UTC(),
		}
		err = payload.Write(cw, m.Reader(), meta, s.payloadOpts)
	case FormatForm:
		contentType, err = s.writeForm(cw, m)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		cleanup()
		return nil, 0, "", nil, fmt.Errorf("webhook %s: staging the %s request body: %w", s.shown, s.format, err)
	}
	return f, cw.n, contentType, cleanup, nil
}

// stageWriters hold the buffers stage writes request bodies through, one
// per delivery in progress rather than one per message.
var stageWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

// writeForm writes the multipart/form-data body: the plain fields in
// order, then the message in the field formField, typed message/rfc822
// and, by default, without a file name, as rt-mailgate sends it: Request
// Tracker (Plack, CGI.pm) takes a part with a file name for an upload and
// leaves the form field empty. Endpoints that want an upload (multer,
// Django) get the file name FormFilename. It returns the Content-Type
// with the boundary.
func (s *Sink) writeForm(w io.Writer, m *sinks.Message) (string, error) {
	mw := multipart.NewWriter(w)
	for _, f := range s.formFields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return "", err
		}
	}
	h := make(textproto.MIMEHeader)
	disposition := fmt.Sprintf(`form-data; name="%s"`, s.formField)
	if s.formFilename != "" {
		disposition += fmt.Sprintf(`; filename="%s"`, s.formFilename)
	}
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Type", "message/rfc822")
	pw, err := mw.CreatePart(h)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(pw, m.Reader()); err != nil {
		return "", err
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	return mw.FormDataContentType(), nil
}

// request builds the request of a delivery: body replayed from the staged
// file or spool on every attempt, Content-Length set, headers and the
// signature of the first attempt.
func (d *delivery) request(contentType string) (*retryablehttp.Request, error) {
	body := retryablehttp.ReaderFunc(func() (io.Reader, error) {
		if d.size == 0 {
			return http.NoBody, nil
		}
		return io.NewSectionReader(d.body, 0, d.size), nil
	})
	req, err := retryablehttp.NewRequestWithContext(d.ctx, http.MethodPost, d.url, body)
	if err != nil {
		// d.url was parsed by New; this is not expected. Keep the URL
		// out of the message all the same.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("webhook %s: building the request: %w", d.shown, err)
	}
	req.ContentLength = d.size
	h := req.Header
	h.Set("User-Agent", d.userAgent)
	for name, values := range d.creds.headers {
		h[name] = append([]string(nil), values...)
	}
	h.Set("Content-Type", contentType)
	h.Set("Idempotency-Key", d.msg.Key)
	if d.user != nil {
		pass, _ := d.user.Password()
		req.SetBasicAuth(d.user.Username(), pass)
	}
	if err := d.sign(h); err != nil {
		return nil, err
	}
	return req, nil
}

// ctxWriter fails writes once ctx is done, so staging a large body stops
// when the delivery is cancelled.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (w ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}
