package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchCAFile writes a self-signed CA certificate in PEM to a file and
// returns its path.
func benchCAFile(b *testing.B) string {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pophook bench CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkLoad1000Accounts loads a configuration of 1000 accounts that
// share one CA file and deliver to one webhook and one maildir sink, with
// the variables of one switched-off account left in the environment (they
// are warned about).
func BenchmarkLoad1000Accounts(b *testing.B) {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") {
			b.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	ca := benchCAFile(b)
	const n = 1000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("acct%04d", i)
	}
	env := map[string]string{
		"POPHOOK_DATA_DIR":              b.TempDir(),
		"POPHOOK_LOG_LEVEL":             "info",
		"POPHOOK_CONCURRENCY":           "16",
		"POPHOOK_ACCOUNTS":              strings.Join(names, ","),
		"POPHOOK_SINKS":                 "helpdesk,archive",
		"POPHOOK_SINK_HELPDESK_TYPE":    "webhook",
		"POPHOOK_SINK_HELPDESK_URL":     "https://helpdesk.example.com/hooks/mail",
		"POPHOOK_SINK_HELPDESK_SECRET":  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwIf2Ot1vRE/w=",
		"POPHOOK_SINK_HELPDESK_TIMEOUT": "20s",
		"POPHOOK_SINK_ARCHIVE_TYPE":     "maildir",
		"POPHOOK_SINK_ARCHIVE_PATH":     b.TempDir(),
		// a switched-off account: warned about, not read
		"POPHOOK_ACCOUNT_RETIRED_HOST":     "pop.old.example.com",
		"POPHOOK_ACCOUNT_RETIRED_USERNAME": "retired@old.example.com",
	}
	for i, name := range names {
		v := accountPrefix(name)
		env[v+"_HOST"] = "pop.example.com"
		env[v+"_USERNAME"] = name + "@example.com"
		env[v+"_PASSWORD"] = "pw-" + name
		env[v+"_TLS_CA_FILE"] = ca
		env[v+"_SCHEDULE"] = "@every 5m"
		if i%2 == 0 {
			env[v+"_SINKS"] = "helpdesk,archive"
		} else {
			env[v+"_SINKS"] = "helpdesk"
		}
	}
	for k, v := range env {
		b.Setenv(k, v)
	}

	b.ReportAllocs()
	for b.Loop() {
		cfg, warnings, err := Load()
		if err != nil {
			b.Fatal(err)
		}
		if len(cfg.Accounts) != n || len(warnings) != 2 {
			b.Fatalf("%d accounts, warnings %q", len(cfg.Accounts), warnings)
		}
	}
}
