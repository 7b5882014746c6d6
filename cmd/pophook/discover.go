package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pophook/pophook/internal/atomicfile"
	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/discover"
	"github.com/pophook/pophook/worker"
	"github.com/pophook/pophook/worker/pop3"
)

// An account with no HOST and an address for USERNAME has its server
// looked up at the first run (see package discover). The server is part of
// how the ledger names a mailbox, so what was found is kept in the data
// dir and used from then on: a later lookup that found another server
// (the first one down for a day) would make every kept message new again.

// lookupTimeout bounds one account's lookup.
const lookupTimeout = 30 * time.Second

// discovered is what an earlier lookup found.
type discovered struct {
	Address string `json:"address"`
	Host    string `json:"host"`
	Port    int    `json:"port"`
	TLS     string `json:"tls"`
	Via     string `json:"via"`
}

func discoveredPath(dataDir, address string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(address)))
	return filepath.Join(dataDir, "discovered", hex.EncodeToString(sum[:12])+".json")
}

// lookupFunc finds an account's server; discoverServer is the real one.
type lookupFunc func(context.Context, *config.Account) (discover.Found, []discover.Step, error)

// keptServer reads what an earlier lookup found for the address; ok is
// false when nothing was kept.
func keptServer(dataDir, address string) (d discovered, ok bool, err error) {
	path := discoveredPath(dataDir, address)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return discovered{}, false, nil
	}
	if err != nil {
		return discovered{}, false, err
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Host == "" {
		return discovered{}, false, fmt.Errorf("%s is damaged: remove it to look the server up again", path)
	}
	d.Via = "kept from the first lookup (" + d.Via + ")"
	return d, true, nil
}

// serverFor returns the server of an account without HOST: the one kept
// from an earlier lookup, or a new lookup's (kept in the data dir if keep).
// tried is what the lookup tried; nil when the kept server was used.
func serverFor(ctx context.Context, dataDir string, c *config.Account, lookup lookupFunc, keep bool, log *slog.Logger) (d discovered, tried []discover.Step, err error) {
	d, ok, err := keptServer(dataDir, c.Username)
	if err != nil || ok {
		return d, nil, err
	}
	// Bounded so that a DNS server that never answers cannot hold
	// start-up for the minute and a half every step's timeout adds up to;
	// refusals and missing names fail at once.
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	found, tried, err := lookup(lctx, c)
	cancel()
	if err != nil {
		pin := "POPHOOK_ACCOUNT_" + strings.ToUpper(c.Name) + "_HOST"
		if errors.Is(err, discover.ErrNotFound) {
			// The steps go to the log one per line (check shows them as
			// a list); the error stays one readable line.
			for _, st := range tried {
				log.Warn("server lookup", "account", c.Name, "tried", st.String())
			}
			return d, tried, fmt.Errorf("no POP3 server found for %s: none of the %d places tried answered; set %s", c.Username, len(tried), pin)
		}
		return d, tried, fmt.Errorf("no POP3 server found for %s: %w; set %s", c.Username, err, pin)
	}
	d = discovered{Address: c.Username, Host: found.Host, Port: found.Port, TLS: found.TLS.String(), Via: found.Via}
	log.Info("found the account's POP3 server; pin it with these variables", "account", c.Name, "found", found.Pin(), "via", found.Via)
	if keep {
		if err := writeJSON(discoveredPath(dataDir, c.Username), d); err != nil {
			return d, tried, fmt.Errorf("keeping the server found: %w", err)
		}
	}
	return d, tried, nil
}

// resolveHosts fills in the server of every account without a HOST. keep
// writes what it found into the data dir (run and once); check only shows
// it. steps, if not nil, receives what was tried per account.
func (w *wiring) resolveHosts(ctx context.Context, keep bool, steps map[string][]discover.Step) error {
	var problems []string
	for _, p := range w.pending {
		c, a := p.config, p.account
		d, tried, err := serverFor(ctx, w.cfg.DataDir, c, w.discover, keep, w.log)
		if steps != nil {
			steps[c.Name] = tried
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("account %s: %v", c.Name, err))
			continue
		}
		if err := w.setServer(a, c, d); err != nil {
			problems = append(problems, err.Error())
		}
		if steps != nil && len(steps[c.Name]) == 0 {
			steps[c.Name] = []discover.Step{{What: d.Via, Host: d.Host, Port: d.Port}}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// withKeptServers fills in HOST for accounts whose server was looked up,
// for the ledger command: the ledger names a mailbox by server and user.
// An account never looked up keeps an empty HOST and so has no records.
func withKeptServers(dataDir string, accts []config.Account) []config.Account {
	out := slices.Clone(accts)
	for i := range out {
		if out[i].Host == "" {
			if d, ok, _ := keptServer(dataDir, out[i].Username); ok {
				out[i].Host, out[i].Port = d.Host, d.Port
			}
		}
	}
	return out
}

// discoverServer looks the server up with verified TLS, trusting the
// account's CA file as the login will.
func discoverServer(ctx context.Context, c *config.Account) (discover.Found, []discover.Step, error) {
	cfg, err := pop3.TLSConfig("", c.TLSCAFile, false)
	if err != nil {
		return discover.Found{}, nil, err
	}
	return discover.Discover(ctx, nil, discover.ProbeTLS(nil, cfg.RootCAs), c.Username) // nil roots: the system's
}

// setServer points the account at the server found. The OAuth2 token
// store is named after the mailbox, server included, so it is made here
// rather than when the account was wired without a server.
func (w *wiring) setServer(a *worker.Account, c *config.Account, d discovered) error {
	a.Host, a.Port = d.Host, d.Port
	switch d.TLS {
	case "implicit":
		a.TLS = pop3.TLSImplicit
	case "starttls":
		a.TLS = pop3.TLSStartTLS
	default:
		return fmt.Errorf("account %s: the server found uses TLS %q", c.Name, d.TLS)
	}
	cfg, err := pop3.TLSConfig(d.Host, c.TLSCAFile, c.TLSSkipVerify)
	if err != nil {
		return err
	}
	a.TLSConfig = cfg
	if c.OAuth2 != nil {
		a.Credential = oauthSource(c, a.LedgerID(), w.cfg.DataDir)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}
