package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/oauth"
	"github.com/pophook/pophook/internal/web"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/maildir"
	"github.com/pophook/pophook/sinks/smtp"
	"github.com/pophook/pophook/sinks/webhook"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker"
	"github.com/pophook/pophook/worker/pop3"
)

// wiring is the configuration turned into typed accounts and sinks, with
// every check that needs no disk done. Nothing has been created yet.
type wiring struct {
	retries  *atomic.Pointer[*web.Metrics] // set when the daemon serves metrics
	cfg      *config.Config
	log      *slog.Logger
	accounts []*worker.Account
	built    map[string]sinks.Sink // sinks that need no disk (webhooks)
	maildirs map[string]string     // sink name -> path, created by open
	// pending are accounts whose server is still to be looked up.
	pending  []pendingAccount
	discover lookupFunc
}

type pendingAccount struct {
	config  *config.Account
	account *worker.Account
}

// wire builds the accounts and the sinks that can be built without
// touching the disk, and checks the rest. Its errors are configuration
// errors (exit status 2) naming the variable.
func wire(cfg *config.Config, log *slog.Logger) (*wiring, error) {
	w := &wiring{cfg: cfg, log: log, built: map[string]sinks.Sink{}, maildirs: map[string]string{}, retries: &atomic.Pointer[*web.Metrics]{},
		discover: discoverServer}
	spool := filepath.Join(cfg.DataDir, "spool")
	var problems []string
	for _, name := range sortedKeys(cfg.Sinks) {
		sc := cfg.Sinks[name]
		prefix := "POPHOOK_SINK_" + strings.ToUpper(name)
		switch sc.Type {
		case config.SinkMaildir:
			w.maildirs[name] = sc.Path
		case config.SinkWebhook:
			inline := sc.InlineLimit
			if inline == 0 {
				inline = -1 // INLINE_LIMIT=0: no attachment content at all
			}
			s, err := webhook.New(webhook.Options{
				Name: sc.Name, URL: sc.URL, Format: sc.Format, Secret: source(sc.Secret), Headers: source(sc.Headers),
				Timeout: sc.Timeout, Budget: sc.Budget, FormField: sc.FormField, FormFilename: sc.FormFilename,
				FormFields: sc.FormFields, AcceptHTML: sc.AcceptHTML, InlineLimit: inline, IncludeRaw: sc.IncludeRaw,
				TempDir: spool, UserAgent: "pophook/" + version, Logger: log.With("sink", name),
				OnRetry: w.retryHook(name),
			})
			if err != nil {
				problems = append(problems, prefix+": "+err.Error())
				continue
			}
			w.built[name] = s
		case config.SinkSMTP:
			s, err := smtpSink(sc, log.With("sink", name), w.retryHook(name))
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			w.built[name] = s
		default:
			problems = append(problems, fmt.Sprintf("%s_TYPE: sink type %q is not available in this version of pophook", prefix, sc.Type))
		}
	}
	for i := range cfg.Accounts {
		a, err := account(&cfg.Accounts[i], cfg.DataDir)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		w.accounts = append(w.accounts, a)
		if a.Host == "" {
			w.pending = append(w.pending, pendingAccount{config: &cfg.Accounts[i], account: a})
		}
	}
	if len(problems) > 0 {
		return nil, &exitError{code: 2, err: fmt.Errorf("the configuration has problems:\n  %s", strings.Join(problems, "\n  "))}
	}
	return w, nil
}

// retryHook counts a sink's retries in the metrics when there are any.
func (w *wiring) retryHook(name string) func() {
	return func() {
		if m := w.retries.Load(); m != nil {
			(*m).SinkRetry(name)
		}
	}
}

// smtpSink builds an SMTP relay sink.
func smtpSink(sc *config.Sink, log *slog.Logger, onRetry func()) (*smtp.Sink, error) {
	prefix := "POPHOOK_SINK_" + strings.ToUpper(sc.Name)
	tlsConfig, err := pop3.TLSConfig(sc.Host, sc.TLSCAFile, false)
	if err != nil {
		return nil, fmt.Errorf("%s_TLS_CA_FILE: %w", prefix, err)
	}
	var password func() (string, error)
	if sc.Password.IsSet() {
		password = sc.Password.Reveal
	}
	s, err := smtp.New(smtp.Options{
		Name: sc.Name, Host: sc.Host, Port: sc.Port, TLS: sc.TLS, TLSConfig: tlsConfig, AllowInsecure: sc.AllowInsecure,
		Username: sc.Username, Password: password, From: sc.From, To: sc.To,
		Timeout: sc.Timeout, Retry: sinks.Retry{Budget: sc.Budget}, Logger: log, OnRetry: onRetry,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	return s, nil
}

// account turns a configured account into the worker's.
func account(c *config.Account, dataDir string) (*worker.Account, error) {
	prefix := "POPHOOK_ACCOUNT_" + strings.ToUpper(c.Name)
	a := &worker.Account{
		Name: c.Name, Host: c.Host, Port: c.Port, AllowInsecureAuth: c.AllowInsecure,
		Username: c.Username, Mechanism: pop3.Mechanism(c.Auth), Schedule: c.Schedule, Sinks: c.Sinks,
		Keep: worker.Keep{Forever: c.Keep.Forever, After: c.Keep.After}, SkipExisting: c.SkipExisting,
		MaxMessageSize: c.MaxMessageSize,
	}
	switch c.TLS {
	case config.TLSImplicit:
		a.TLS = pop3.TLSImplicit
	case config.TLSStartTLS:
		a.TLS = pop3.TLSStartTLS
	case config.TLSNone:
		a.TLS = pop3.TLSNone
	}
	tlsConfig, err := pop3.TLSConfig(c.Host, c.TLSCAFile, c.TLSSkipVerify)
	if err != nil {
		return nil, fmt.Errorf("%s_TLS_CA_FILE: %w", prefix, err)
	}
	a.TLSConfig = tlsConfig
	if c.OAuth2 != nil {
		if c.Host != "" { // else setServer makes it once the server is known
			a.Credential = oauthSource(c, a.LedgerID(), dataDir)
		}
		return a, nil
	}
	secret := c.Password
	a.Credential = worker.CredentialFunc(func(context.Context) (string, error) { return secret.Reveal() })
	return a, nil
}

// oauthSource gets an OAuth2 account its access tokens; rotated refresh
// tokens and the current access token are kept in the data dir, in a file
// named after the mailbox so that renaming the account keeps it.
func oauthSource(c *config.Account, ledgerID, dataDir string) *oauth.Source {
	o := c.OAuth2
	scopes := o.Scopes
	if len(scopes) == 0 && !o.RefreshToken.IsSet() && o.Tenant != "" {
		scopes = []string{"https://outlook.office365.com/.default"} // Microsoft app-only (POP.AccessAsApp)
	}
	return oauth.New(oauth.Config{
		Account: c.Name, TokenURL: o.TokenURL, ClientID: o.ClientID, Scopes: scopes,
		ClientSecret: reveal(o.ClientSecret), RefreshToken: reveal(o.RefreshToken),
		StorePath: tokenPath(dataDir, ledgerID),
		Hint:      "pophook oauth login " + c.Name + " gets a new one",
	})
}

// tokenPath is where an account's OAuth2 tokens are kept.
func tokenPath(dataDir, ledgerID string) string {
	sum := sha256.Sum256([]byte(ledgerID))
	return filepath.Join(dataDir, "oauth", hex.EncodeToString(sum[:12])+".json")
}

// reveal reads a configured secret at every use; nil when it is not set.
func reveal(s config.Secret) func() (string, error) {
	if !s.IsSet() {
		return nil
	}
	return s.Reveal
}

// maildirCheck tests a Maildir's path without creating it.
func maildirCheck(path string) (string, error) { return maildir.Check(path) }

// source reads a configured secret at every use; nil when it is not set.
func source(s config.Secret) webhook.Source {
	if !s.IsSet() {
		return nil
	}
	return s.Reveal
}

type app struct {
	cfg    *config.Config
	log    *slog.Logger
	ledger *state.Ledger
	jobs   []*worker.Job
	sinks  map[string]sinks.Sink
	// observers see every job event after it is logged (progress,
	// metrics); set before the jobs run.
	observers []func(worker.Event)
	// retries counts sink retries in the metrics, once they exist.
	retries *atomic.Pointer[*web.Metrics]
	// halt stops the daemon with a cause (a damaged ledger); set by run.
	halt atomic.Pointer[context.CancelCauseFunc]
}

// open creates what pophook needs on disk (the data dir, its ledger and
// spool, the Maildirs) and the jobs.
func (w *wiring) open(ctx context.Context) (*app, error) {
	for _, name := range sortedKeys(w.maildirs) {
		s, err := maildir.New(w.maildirs[name], w.log.With("sink", name))
		if err != nil {
			return nil, err
		}
		w.built[name] = s
	}
	ledger, err := state.Open(w.cfg.DataDir, 2*time.Second)
	if err != nil {
		return nil, err
	}
	if err := w.resolveHosts(ctx, true, nil); err != nil {
		ledger.Close()
		return nil, err
	}
	a := &app{cfg: w.cfg, log: w.log, ledger: ledger, sinks: w.built, retries: w.retries}
	spool := filepath.Join(w.cfg.DataDir, "spool")
	if err := cleanSpool(spool); err != nil {
		a.close()
		return nil, err
	}
	fingerprints := map[string]string{}
	for name, sc := range w.cfg.Sinks {
		fp, err := sinkFingerprint(ledger, sc)
		if err != nil {
			a.close()
			return nil, err
		}
		fingerprints[name] = fp
	}
	logEvents := worker.LogEvents(w.log)
	for _, acct := range w.accounts {
		if !w.cfg.Shard.Owns(acct.LedgerID()) {
			continue // another replica's (POPHOOK_SHARD)
		}
		events := func(e worker.Event) {
			logEvents(e)
			if e.Kind == worker.EventRunDone && e.Err != nil {
				if h := hint(acct, e.Err); h != "" {
					w.log.Warn("what to do: "+h, "account", acct.Name)
				}
				// Every account shares the ledger: once it is found
				// damaged nothing may go on (see state.Ledger.Err).
				if errors.Is(e.Err, state.ErrCorrupt) {
					if halt := a.halt.Load(); halt != nil {
						(*halt)(ledger.Err())
					}
				}
			}
			for _, o := range a.observers {
				o(e)
			}
		}
		j := &worker.Job{Account: acct, Sinks: map[string]sinks.Sink{}, SinkConfig: map[string]string{},
			Ledger: ledger, SpoolDir: spool, Logger: w.log, OnEvent: events}
		for _, s := range acct.Sinks {
			j.Sinks[s] = w.built[s]
			j.SinkConfig[s] = fingerprints[s]
		}
		if w.log.Enabled(context.Background(), slog.LevelDebug) {
			j.Trace = &traceWriter{log: w.log.With("account", acct.Name)}
		}
		a.jobs = append(a.jobs, j)
	}
	if w.cfg.Shard.Count > 1 {
		w.log.Info("POPHOOK_SHARD: this instance fetches its share of the accounts", "shard", w.cfg.Shard.String(),
			"accounts", len(a.jobs), "of", len(w.accounts))
	}
	return a, nil
}

// close ends what the sinks hold open (SMTP sessions) and the ledger.
func (a *app) close() {
	for _, s := range a.sinks {
		if c, ok := s.(io.Closer); ok {
			c.Close()
		}
	}
	a.ledger.Close()
}

// sinkFingerprint condenses everything a sink is configured with, secrets
// included (through the ledger's keyed fingerprint, never stored as they
// are), so that a rejection recorded under one configuration is offered
// again once the configuration changes.
func sinkFingerprint(l *state.Ledger, sc *config.Sink) (string, error) {
	shown, err := json.Marshal(sc) // secrets redacted; their values follow
	if err != nil {
		return "", err
	}
	parts := []string{string(shown), sc.URL}
	for _, s := range []config.Secret{sc.Secret, sc.Headers, sc.Password} {
		v, err := s.Reveal()
		if err != nil {
			return "", err
		}
		parts = append(parts, v)
	}
	return l.Fingerprint(parts...), nil
}

// cleanSpool makes the spool directory and removes what a killed process
// left in it: spool files are only ever needed by the run that wrote them.
func cleanSpool(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}
