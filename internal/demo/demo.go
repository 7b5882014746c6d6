// Package demo is `pophook demo`: a complete run on one machine with
// nothing set up, no network and no root. It starts an in-process POP3
// server over implicit TLS (with a throwaway certificate that only this run
// trusts) holding a dozen sample messages, a local webhook receiver that
// verifies the Standard Webhooks signature, and a temporary data dir with
// a ledger, a spool and a Maildir. It then runs the real job twice, wired
// as the pophook binary wires it, shows what arrived, checks that every
// message arrived exactly once at each sink and that the mailbox is empty,
// and ends with how to do the same with a real mailbox.
package demo

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/maildir"
	"github.com/pophook/pophook/sinks/webhook"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker"
	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// Options configure Run. The zero value is fine.
type Options struct {
	// Version goes into the webhook's User-Agent (pophook/VERSION);
	// "" is "dev".
	Version string
	// Keep leaves the temporary data dir (ledger, Maildir) in place and
	// prints its path; by default it is removed at the end.
	Keep bool

	// rejectMessageID makes the receiver refuse that message (tests).
	rejectMessageID string
}

// Names used in the demo, as in .env.example.
const (
	accountName = "support"
	user        = "alice"
	password    = "secret" // pop3test's default user
	hookName    = "helpdesk"
	archiveName = "archive"
)

// Run runs the demo, writing to out. It returns an error when anything
// could not be set up or when one of the demo's checks failed, naming
// what failed.
func Run(ctx context.Context, out io.Writer, opts Options) (err error) {
	start := time.Now()
	w := &lockedWriter{w: out}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	samples, err := loadSamples()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	// The mailbox: POP3 over implicit TLS, as on port 995. During the first
	// pass the connection drops at QUIT, as if pophook were killed right
	// there: POP3 applies deletions only at QUIT, so the second pass shows
	// the ledger deleting what was delivered without sending it again.
	var dropQuit atomic.Bool
	dropQuit.Store(true)
	srv := pop3test.NewTLSServer(pop3test.Options{Pipelining: true, Faults: pop3test.Faults{
		Hook: func(_, line string) (string, bool) {
			if strings.EqualFold(line, "QUIT") && dropQuit.Load() {
				return "", true // hang up without a reply; no DELE takes effect
			}
			return "", false
		},
	}})
	defer srv.Close()
	srv.SetMailbox(user, mailbox(samples))
	host, portText, _ := net.SplitHostPort(srv.Addr)
	port, _ := strconv.Atoi(portText)

	// The help desk: a webhook receiver on loopback.
	secret, err := newSecret()
	if err != nil {
		return fmt.Errorf("demo: making a webhook secret: %w", err)
	}
	rc := newReceiver(secret, w, opts.rejectMessageID)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: starting the webhook receiver: %w", err)
	}
	hs := &http.Server{Handler: rc, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	hookURL := "http://" + ln.Addr().String() + "/hooks/mail"

	// The data dir, with the ledger, the spool and a Maildir.
	dir, err := os.MkdirTemp("", "pophook-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if opts.Keep {
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("demo: removing %s: %w", dir, rerr)
		}
	}()
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	mdPath := filepath.Join(dir, "Maildir")

	// Warnings and errors of the job and the sinks, as pophook logs them.
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn, ReplaceAttr: dropTime}))

	ledger, err := state.Open(dir, 2*time.Second)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer ledger.Close()
	hook, err := webhook.New(webhook.Options{
		Name: hookName, URL: hookURL, Format: webhook.FormatJSON, Secret: webhook.Fixed(secret),
		Timeout: 5 * time.Second, Budget: 5 * time.Second, TempDir: spool,
		UserAgent: "pophook/" + version, Logger: log.With("sink", hookName),
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	archive, err := maildir.New(mdPath, log.With("sink", archiveName))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	tlsConfig := srv.ClientTLSConfig() // trusts this server's certificate, and only it
	tlsConfig.MinVersion = tls.VersionTLS12
	acct := &worker.Account{
		Name: accountName, Host: host, Port: port, TLS: pop3.TLSImplicit, TLSConfig: tlsConfig,
		Username: user, Mechanism: pop3.MechAuto, Sinks: []string{hookName, archiveName},
		Credential:     worker.CredentialFunc(func(context.Context) (string, error) { return password, nil }),
		MaxMessageSize: 64 << 20,
	}
	var fetched int // messages retrieved by the pass under way
	logEvents := worker.LogEvents(log)
	job := &worker.Job{
		Account: acct, Ledger: ledger, SpoolDir: spool, Logger: log,
		Sinks: map[string]sinks.Sink{hookName: hook, archiveName: archive},
		// A change of configuration offers rejected messages again; the
		// ledger keeps only a keyed fingerprint, never the secret.
		SinkConfig: map[string]string{
			hookName:    ledger.Fingerprint("webhook", hookURL, webhook.FormatJSON, secret),
			archiveName: ledger.Fingerprint("maildir", mdPath),
		},
		OnEvent: func(e worker.Event) {
			if e.Kind == worker.EventRunDone && dropQuit.Load() {
				return // the dropped QUIT is the demo's own doing; the output explains it
			}
			logEvents(e)
			if e.Kind == worker.EventFetched {
				fetched++
			}
		},
	}

	fmt.Fprintf(w, "pophook demo: a complete run on this machine, with nothing to set up\n\n")
	fmt.Fprintf(w, "  mailbox   pop3s://%s, user %s: %s\n", srv.Addr, user, plural(len(samples), "sample message"))
	fmt.Fprintf(w, "            (implicit TLS with a throwaway certificate that only this run trusts)\n")
	fmt.Fprintf(w, "  webhook   %s, format json, signed with a fresh whsec_ secret\n", hookURL)
	fmt.Fprintf(w, "  Maildir   %s\n", mdPath)
	fmt.Fprintf(w, "  ledger    %s\n\n", ledger.Path())

	var o observed
	o.samples = samples
	fmt.Fprintf(w, "First pass: fetch each message, hand it to the webhook and the Maildir, then delete it.\n")
	fmt.Fprintf(w, "The receiver verifies each request's signature and prints what it got:\n\n")
	o.first, err = job.Run(ctx)
	dropQuit.Store(false)
	if err != nil && !strings.Contains(err.Error(), "QUIT") {
		return fmt.Errorf("demo: first pass: %w", err)
	}
	o.fetched[0], fetched = fetched, 0
	o.after1 = rc.tally()
	md1, err := readMaildir(mdPath)
	if err != nil {
		return fmt.Errorf("demo: reading the Maildir: %w", err)
	}
	o.left1 = len(srv.Messages(user))
	fmt.Fprintf(w, "\n  fetched %d, delivered %d in %s; the receiver has %s, the Maildir %s\n",
		o.fetched[0], o.first.Delivered, o.first.Duration.Round(time.Millisecond),
		plural(len(o.after1.byKey), "message"), plural(len(md1), "file"))
	fmt.Fprintf(w, "  then the connection dropped at QUIT, as if pophook had been killed there: POP3 deletes\n")
	fmt.Fprintf(w, "  only at QUIT, so all %d are still on the server.\n\n", o.left1)

	fmt.Fprintf(w, "Second pass: the same job again, with the same ledger. It knows what was delivered.\n")
	if o.second, err = job.Run(ctx); err != nil {
		return fmt.Errorf("demo: second pass: %w", err)
	}
	o.fetched[1] = fetched
	o.after2 = rc.tally()
	if o.maildir, err = readMaildir(mdPath); err != nil {
		return fmt.Errorf("demo: reading the Maildir: %w", err)
	}
	o.left = len(srv.Messages(user))
	fmt.Fprintf(w, "  fetched %d, delivered %d, deleted %d; the receiver got %s, the Maildir holds %s\n\n",
		o.fetched[1], o.second.Delivered, o.second.Deleted, plural(o.after2.requests-o.after1.requests, "new request"),
		plural(len(o.maildir), "file"))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	closerLook(w, o.after2.payloads)

	if err := check(o); err != nil {
		fmt.Fprintf(w, "Checks: FAILED (see below)\n\n")
		return err
	}
	fmt.Fprintf(w, "Checks: OK. Each of the %d messages reached the receiver exactly once (by Idempotency-Key\n", len(samples))
	fmt.Fprintf(w, "and by Message-ID) and the Maildir once; after the dropped QUIT the second pass deleted\n")
	fmt.Fprintf(w, "them without sending any again, and the POP3 mailbox is empty. (%s in all.)\n\n", time.Since(start).Round(10*time.Millisecond))
	if opts.Keep {
		fmt.Fprintf(w, "The data dir stays for you to look at: %s\n\n", dir)
	}
	fmt.Fprint(w, nextSteps)
	return nil
}

const nextSteps = `Next steps, with your own mailbox:
  1. cp .env.example .env, and fill in the account's host, user name and password
     and the webhook's URL
  2. pophook check   connects, logs in and probes the sinks; fetches and deletes nothing
  3. pophook once    one real pass; exits 0 when everything was delivered
  README.md explains every setting; docs/webhook.md describes the payload and how to
  verify the signature in your receiver.
`

// closerLook shows three fields of the payloads that help desks use:
// stripped_text, parse_errors and the plus address.
func closerLook(w io.Writer, payloads []*payload) {
	var reply *payload
	for _, p := range payloads {
		if p.stripped() && (reply == nil || len(p.Data.Text)-len(p.Data.StrippedText) > len(reply.Data.Text)-len(reply.Data.StrippedText)) {
			reply = p
		}
	}
	var lines []string
	if reply != nil {
		lines = append(lines, fmt.Sprintf("  %q: stripped_text leaves out the quoted history:", reply.Data.Subject))
		for l := range strings.Lines(reply.Data.StrippedText) {
			lines = append(lines, strings.TrimRight("      | "+l, " \n"))
		}
	}
	for _, p := range payloads {
		if len(p.Data.ParseErrors) > 0 {
			lines = append(lines, fmt.Sprintf("  %q was delivered despite its parse_errors:", p.Data.Subject))
			for _, e := range p.Data.ParseErrors {
				lines = append(lines, "      - "+e)
			}
		}
	}
	for _, p := range payloads {
		if p.Data.MailboxHash != "" {
			lines = append(lines, fmt.Sprintf("  %q: original_recipient %s, mailbox_hash %q",
				p.Data.Subject, p.Data.OriginalRecipient, p.Data.MailboxHash))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "A closer look at the payloads (docs/webhook.md describes every field):\n")
	fmt.Fprintf(w, "%s\n\n", strings.Join(lines, "\n"))
}

// dropTime leaves the time out of log lines: the demo is read, not kept.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// lockedWriter serialises the writes of the receiver, the logger and Run.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
