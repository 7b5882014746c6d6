package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/discover"
	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/worker/pop3"
)

// An account without HOST gets its server from the lookup once; what was
// found is kept, and later runs use it without looking again (the server
// is part of the mailbox's identity in the ledger).
func TestDiscoveredServerIsKept(t *testing.T) {
	const user = "alice@pophook.test" // an address: that is what lookup needs
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{user: "alice-secret"}})
	d.Deliver(t, user, []byte("Subject: x\n\nbody\n"))
	dir := t.TempDir()
	for _, kv := range dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_ACCOUNT_SUPPORT_HOST=", "POPHOOK_ACCOUNT_SUPPORT_PORT=", "POPHOOK_ACCOUNT_SUPPORT_USERNAME="+user, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD=alice-secret") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	lookups := 0
	wireIt := func() *wiring {
		cfg, _, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		w, err := wire(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		w.discover = func(ctx context.Context, c *config.Account) (discover.Found, []discover.Step, error) {
			lookups++
			return discover.Found{Host: d.Host, Port: d.TLSPort, TLS: pop3.TLSImplicit, Via: "srv"},
				[]discover.Step{{What: "SRV _pop3s._tcp.pophook.test", Host: d.Host, Port: d.TLSPort, TLS: pop3.TLSImplicit}}, nil
		}
		return w
	}
	// check looks it up and keeps nothing.
	var report strings.Builder
	if err := wireIt().check(context.Background(), nil, &report); err != nil {
		t.Fatalf("check: %v\n%s", err, report.String())
	}
	t.Logf("check:\n%s", report.String())
	if !strings.Contains(report.String(), "SRV _pop3s._tcp.pophook.test") {
		t.Error("check does not show how the server was found")
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Error("check wrote to the data dir")
	}
	for run := range 2 {
		w := wireIt()
		a, err := w.open(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := a.jobs[0].Account.Host; got != d.Host {
			t.Errorf("run %d: host %q", run, got)
		}
		if err := a.once(context.Background(), nil, io.Discard); err != nil {
			t.Errorf("run %d: %v", run, err)
		}
		a.close()
	}
	if lookups != 2 { // check, then the first run; the second used what was kept
		t.Errorf("%d lookups, want 2", lookups)
	}
	if d.Count(t, user) != 0 {
		t.Error("the message was not fetched from the server found")
	}
	// The ledger command names the mailbox by the server kept.
	cfg, _, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	var list strings.Builder
	if err := ledgerCommand(context.Background(), cfg, []string{"list"}, &list); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list.String(), "support ") || strings.Contains(list.String(), user) {
		t.Errorf("pophook ledger list does not know the account by its discovered server:\n%s", list.String())
	}
	// A lookup that finds nothing names the account and says to set HOST.
	w := wireIt()
	os.RemoveAll(filepath.Join(dir, "data", "discovered"))
	w.discover = func(context.Context, *config.Account) (discover.Found, []discover.Step, error) {
		return discover.Found{}, nil, errors.New("nothing answered")
	}
	if _, err := w.open(context.Background()); err == nil || !strings.Contains(err.Error(), "set POPHOOK_ACCOUNT_SUPPORT_HOST") {
		t.Errorf("nothing found: %v", err)
	}
}
