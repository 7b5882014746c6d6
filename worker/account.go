package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// Account is one mailbox to fetch, typed: cmd builds it from the
// configuration, the worker never reads the environment.
type Account struct {
	Name string // for logs and messages ("support")
	Host string
	Port int

	TLS pop3.TLSMode
	// TLSConfig verifies the server (pop3.TLSConfig builds one with an
	// extra CA file); nil means the system roots and Host as server name.
	TLSConfig *tls.Config
	// AllowInsecureAuth lets credentials cross a connection without TLS.
	AllowInsecureAuth bool

	Username   string
	Credential Credential
	Mechanism  pop3.Mechanism // pop3.MechAuto when unset

	Schedule       string   // for the scheduler: cron spec or @every
	Sinks          []string // names of the sinks every message goes to
	Keep           Keep
	SkipExisting   bool  // the first run records what is there without sending it
	MaxMessageSize int64 // bytes; 0 is no limit
}

// Credential gives the secret to log in with at the moment of use: a
// password read again from its file, or an OAuth2 access token refreshed
// when it expires.
type Credential interface {
	Secret(ctx context.Context) (string, error)
}

// ErrCredentialRefused is wrapped by a Credential's error when the secret
// itself was refused before any login (an OAuth2 provider revoked the
// refresh token): the job backs off as for a wrong password.
var ErrCredentialRefused = errors.New("the credential was refused")

// A Credential may also implement Fingerprint, identifying what is
// configured when the secret it returns changes by itself (an access
// token every hour), so that a back-off ends only when the configuration
// does; and Invalidate, so that a refused login gets one fresh secret
// before it counts as a failure.
type (
	fingerprinter interface{ Fingerprint() string }
	invalidator   interface{ Invalidate() }
)

// CredentialFunc adapts a function to Credential.
type CredentialFunc func(ctx context.Context) (string, error)

// Secret calls f.
func (f CredentialFunc) Secret(ctx context.Context) (string, error) { return f(ctx) }

// Keep says when a message that every sink has taken is deleted from the
// server. The zero value deletes it at once.
type Keep struct {
	Forever bool          // never delete
	After   time.Duration // if > 0, delete only once first seen longer ago than this
}

// ShouldDelete reports whether a message delivered to all its sinks, first
// seen at firstSeen, is to be deleted at now.
func (k Keep) ShouldDelete(firstSeen, now time.Time) bool {
	return !k.Forever && (k.After <= 0 || now.Sub(firstSeen) > k.After)
}

// Addr is the server's host:port.
func (a *Account) Addr() string {
	host := a.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(a.Port)
}

// LedgerID names the account's mailbox in the ledger (server and user, so
// renaming the account does not send its mailbox again).
func (a *Account) LedgerID() string { return state.AccountID(a.Host, a.Username) }

func (a *Account) mechanism() pop3.Mechanism {
	if a.Mechanism == "" {
		return pop3.MechAuto
	}
	return a.Mechanism
}
