package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pophook/pophook/internal/discover"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker"
	"github.com/pophook/pophook/worker/pop3"
)

// pophook check connects to every account (or those named), logs in,
// reads STAT and quits; and probes every sink those accounts use. It
// fetches, delivers and deletes nothing, and creates nothing on disk.

type accountReport struct {
	Account      string   `json:"account"`
	Server       string   `json:"server"`
	Discovery    []string `json:"discovery,omitempty"` // what the server lookup tried, for an account without HOST
	Addresses    []string `json:"addresses,omitempty"`
	DNSMillis    int64    `json:"dns_ms"`
	ConnectMilli int64    `json:"connect_ms"`
	TLS          string   `json:"tls,omitempty"` // "TLS 1.3, TLS_AES_128_GCM_SHA256"; "" without TLS
	Certificate  *certReport
	Capabilities []string `json:"capabilities,omitempty"`
	Mechanism    string   `json:"mechanism,omitempty"`
	Login        string   `json:"login"` // "ok" or what went wrong
	Messages     int      `json:"messages"`
	Bytes        int64    `json:"bytes"`
	UIDL         bool     `json:"uidl"`
	Pipelining   bool     `json:"pipelining"`
	OK           bool     `json:"ok"`
	Error        string   `json:"error,omitempty"`
	Hint         string   `json:"hint,omitempty"`
}

type certReport struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"`
	Verified bool      `json:"verified"`
}

type sinkReport struct {
	Sink   string `json:"sink"`
	Type   string `json:"type"`
	OK     bool   `json:"ok"`
	Result string `json:"result"`
}

type checkReport struct {
	Accounts []accountReport `json:"accounts"`
	Sinks    []sinkReport    `json:"sinks"`
}

func (w *wiring) check(ctx context.Context, args []string, stdout io.Writer) error {
	asJSON := slices.Contains(args, "--json")
	ping := slices.Contains(args, "--ping")
	var names []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			names = append(names, a)
		} else if a != "--json" && a != "--ping" {
			return &exitError{code: 2, err: fmt.Errorf("check: unknown flag %s (check [--json] [--ping] [ACCOUNT...])", a)}
		}
	}
	var rep checkReport
	used := map[string]bool{}
	steps := map[string][]discover.Step{}
	lookupErr := w.resolveHosts(ctx, false, steps)
	for _, a := range w.accounts {
		if len(names) > 0 && !slices.Contains(names, a.Name) {
			continue
		}
		var r accountReport
		if a.Host == "" {
			r = accountReport{Account: a.Name, Server: "(not found)", Login: "not attempted", Error: errorFor(lookupErr, a.Name)}
		} else {
			r = checkAccount(ctx, a)
		}
		for _, st := range steps[a.Name] {
			r.Discovery = append(r.Discovery, st.String())
		}
		rep.Accounts = append(rep.Accounts, r)
		for _, s := range a.Sinks {
			used[s] = true
		}
	}
	for _, name := range sortedKeys(used) {
		rep.Sinks = append(rep.Sinks, w.checkSink(ctx, name, ping))
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printCheck(stdout, rep)
	}
	for _, a := range rep.Accounts {
		if !a.OK {
			return &exitError{code: 1, err: errors.New("check failed"), quiet: true}
		}
	}
	for _, s := range rep.Sinks {
		if !s.OK {
			return &exitError{code: 1, err: errors.New("check failed"), quiet: true}
		}
	}
	return nil
}

// timingDialer measures name resolution and the TCP connect apart.
type timingDialer struct {
	addrs        []string
	dns, connect time.Duration
}

func (d *timingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	d.dns = time.Since(start)
	if err != nil {
		return nil, err
	}
	d.addrs = ips
	var dialer net.Dialer
	start = time.Now()
	var last error
	for _, ip := range ips {
		c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
		if err == nil {
			d.connect = time.Since(start)
			return c, nil
		}
		last = err
	}
	return nil, last
}

func checkAccount(ctx context.Context, a *worker.Account) accountReport {
	r := accountReport{Account: a.Name, Server: a.Addr()}
	fail := func(err error) accountReport {
		r.Error, r.Hint = err.Error(), hint(a, err)
		if r.Login == "" {
			r.Login = "not attempted"
		}
		return r
	}
	secret, err := a.Credential.Secret(ctx)
	if err != nil {
		return fail(fmt.Errorf("reading the credential: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	d := &timingDialer{}
	c, info, err := worker.Dial(ctx, a, secret, worker.DialOptions{Dialer: d})
	r.Addresses, r.DNSMillis, r.ConnectMilli = d.addrs, d.dns.Milliseconds(), d.connect.Milliseconds()
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) && len(cv.UnverifiedCertificates) > 0 {
		cert := cv.UnverifiedCertificates[0]
		r.Certificate = &certReport{Subject: cert.Subject.String(), Issuer: cert.Issuer.String(), NotAfter: cert.NotAfter.UTC(), SHA256: fingerprint(cert)}
	}
	if err != nil {
		var pe *pop3.Error
		if errors.As(err, &pe) && pe.Login || errors.Is(err, pop3.ErrMechanism) {
			r.Login = "refused: " + err.Error()
			if pe != nil && pe.Vague {
				r.Login += " (the server gave no reason: a wrong password, or a mailbox it cannot open)"
			}
		}
		return fail(err)
	}
	defer c.Close()
	r.Login = "ok"
	r.Mechanism = string(info.Mechanism)
	if info.TLSVersion != "" {
		r.TLS = info.TLSVersion + ", " + info.CipherSuite
	}
	if cert := info.Certificate; cert != nil {
		r.Certificate = &certReport{Subject: cert.Subject.String(), Issuer: cert.Issuer.String(), NotAfter: cert.NotAfter.UTC(),
			SHA256: info.CertificateSHA256(), Verified: a.TLSConfig == nil || !a.TLSConfig.InsecureSkipVerify}
	}
	for k := range info.Capabilities {
		r.Capabilities = append(r.Capabilities, k)
	}
	sort.Strings(r.Capabilities)
	r.UIDL, r.Pipelining = info.Capabilities.Has("UIDL"), info.Capabilities.Has("PIPELINING")
	n, size, err := c.Stat(ctx)
	if err != nil {
		return fail(fmt.Errorf("STAT: %w", err))
	}
	r.Messages, r.Bytes = n, size
	if !r.UIDL {
		// CAPA may not list it; ask.
		if _, err := c.UIDL(ctx); err == nil {
			r.UIDL = true
		} else {
			return fail(fmt.Errorf("%w: %w", pop3.ErrNoUIDL, err))
		}
	}
	c.Quit(ctx) // nothing was marked for deletion
	r.OK = true
	return r
}

func (w *wiring) checkSink(ctx context.Context, name string, ping bool) sinkReport {
	r := sinkReport{Sink: name, Type: w.cfg.Sinks[name].Type}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var res string
	var err error
	if path, ok := w.maildirs[name]; ok {
		res, err = maildirCheck(path)
	} else if c, ok := w.built[name].(sinks.Checker); ok {
		res, err = c.Check(ctx, ping)
	} else {
		res = "no check available"
	}
	if err != nil {
		r.Result = err.Error()
		if sinks.Classify(err) == sinks.OutcomeUnavailable {
			r.Result += " (unavailable: no message can go there until this is fixed)"
		}
		return r
	}
	r.OK, r.Result = true, res
	return r
}

func printCheck(w io.Writer, rep checkReport) {
	status := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "FAILED"
	}
	for _, a := range rep.Accounts {
		fmt.Fprintf(w, "account %s (%s): %s\n", a.Account, a.Server, status(a.OK))
		for i, st := range a.Discovery {
			label := "              "
			if i == 0 {
				label = "  lookup      "
			}
			fmt.Fprintf(w, "%s%s\n", label, st)
		}
		if len(a.Addresses) > 0 {
			fmt.Fprintf(w, "  dns         %s (%d ms)\n", strings.Join(a.Addresses, ", "), a.DNSMillis)
			fmt.Fprintf(w, "  connect     %d ms\n", a.ConnectMilli)
		}
		if a.TLS != "" {
			fmt.Fprintf(w, "  tls         %s\n", a.TLS)
		}
		if c := a.Certificate; c != nil {
			verified := "verified"
			if !c.Verified {
				verified = "NOT verified"
			}
			fmt.Fprintf(w, "  certificate %s, issued by %s, expires %s, %s\n", c.Subject, c.Issuer, c.NotAfter.Format(time.DateOnly), verified)
			fmt.Fprintf(w, "              sha256 %s\n", c.SHA256)
		}
		if len(a.Capabilities) > 0 {
			fmt.Fprintf(w, "  capa        %s\n", strings.Join(a.Capabilities, " "))
		}
		login := a.Login
		if a.Mechanism != "" {
			login += " (" + a.Mechanism + ")"
		}
		fmt.Fprintf(w, "  login       %s\n", login)
		if a.OK {
			fmt.Fprintf(w, "  mailbox     %d message(s), %d bytes; UIDL %s, pipelining %s\n", a.Messages, a.Bytes, yes(a.UIDL), yes(a.Pipelining))
		}
		if a.Error != "" && !strings.HasPrefix(a.Login, "refused") {
			fmt.Fprintf(w, "  error       %s\n", a.Error)
		}
		if a.Hint != "" {
			fmt.Fprintf(w, "  → %s\n", a.Hint)
		}
	}
	for _, s := range rep.Sinks {
		fmt.Fprintf(w, "sink %s (%s): %s: %s\n", s.Sink, s.Type, status(s.OK), s.Result)
	}
}

// errorFor picks the line of a multi-account error about one account.
func errorFor(err error, account string) string {
	if err == nil {
		return ""
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if rest, ok := strings.CutPrefix(line, "account "+account+": "); ok {
			return rest // the report's heading names the account
		}
	}
	return err.Error()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
