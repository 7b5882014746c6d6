// Package discover knows mail providers' POP3 settings (the presets that
// POPHOOK_ACCOUNT_<A>_PROVIDER names) and finds the POP3 server of an
// address whose account gives no HOST.
//
// Presets are data: Lookup, Resolve, ByDomain and Presets do no I/O and
// belong in configuration parsing. Discover is network I/O (DNS and TLS
// connections) and does not: the caller runs it when an account is about
// to be used, or from `pophook check`, with a context that bounds it.
//
// Discover tries, in order, and takes the first server that answers:
//
//  1. DNS SRV _pop3s._tcp.DOMAIN (implicit TLS), then _pop3._tcp.DOMAIN
//     (STARTTLS), as RFC 6186 describes: each target in priority order,
//     higher weight first within a priority. A target "." means the
//     service is not offered. A target outside DOMAIN is skipped unless it
//     is a preset's server: unsigned DNS could otherwise send the
//     password to a host of an attacker's choosing, whose certificate
//     would verify (RFC 6186 section 6). Check shows the step, so the
//     operator can pin such a target with HOST.
//  2. The preset for DOMAIN (ByDomain), probed like the rest: the probe
//     proves the server is reachable with verified TLS from where pophook
//     runs (a firewall, a proxy or TLS interception show here, not at the
//     first fetch), and every Found is proved the same way. A provider
//     known to offer no POP3 (iCloud) ends discovery with ErrNoPOP.
//  3. pop.DOMAIN, pop3.DOMAIN and mail.DOMAIN on port 995 with implicit
//     TLS, then the same names on port 110 with STARTTLS (skipping names
//     that do not exist in DNS).
//
// A probe connects, verifies TLS (never skipped), reads the greeting and
// hangs up without logging in (ProbeTLS). Every attempt is a Step, in
// order, for check's output and for the error when nothing answers.
//
// The result is deterministic for the same DNS answers, but a server that
// is down can make the next one win. The host is part of the ledger's
// name for a mailbox, so the caller should remember what was found (or
// have the operator pin it: Found.Pin) rather than rediscover on every
// run.
package discover

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pophook/pophook/worker/pop3"
)

// StepTimeout bounds each DNS lookup and each probe, within the context
// given to Discover. With every step timing out, discovery could take
// about a minute and a half (2 lookups, up to 8 SRV targets, the preset, 6
// guesses); bound it with the context (30 seconds is plenty in practice:
// refusals and missing names fail at once).
const StepTimeout = 5 * time.Second

// maxSRVTargets is the most targets probed per SRV name, so a hostile or
// broken DNS answer cannot stretch discovery without end.
const maxSRVTargets = 4

// Resolver looks up SRV records; *net.Resolver (net.DefaultResolver)
// is one.
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

// Prober checks that host:port speaks POP3 with TLS as mode says, with
// the certificate verified. It returns nil if so. ProbeTLS is the one to
// use outside tests.
type Prober func(ctx context.Context, host string, port int, mode pop3.TLSMode) error

// Step is one thing Discover tried: an SRV lookup that gave no server to
// probe (Host is then ""), an SRV target it would not use, or a probe of
// a server.
type Step struct {
	What string // "SRV _pop3s._tcp.example.com", "provider gmail", "guess"
	Host string
	Port int
	TLS  pop3.TLSMode
	Err  error // nil: this step found the server
}

// String is the step as check shows it.
func (s Step) String() string {
	var b strings.Builder
	b.WriteString(s.What)
	if s.Host != "" {
		fmt.Fprintf(&b, ": %s TLS=%s", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), s.TLS)
	}
	if s.Err != nil {
		b.WriteString(": ")
		b.WriteString(s.Err.Error())
	} else {
		b.WriteString(": ok")
	}
	return b.String()
}

// Found is the server Discover settled on.
type Found struct {
	Host string
	Port int
	TLS  pop3.TLSMode
	// Preset is the preset these settings are, if any: the domain's
	// preset, or the one whose server this is (a custom domain at a
	// provider). Its Auth and OAuth then apply to the account.
	Preset string
	Via    string // the What of the step that found it
}

// Vars are the variable assignments, without the account's prefix
// (POPHOOK_ACCOUNT_<A>_), that pin the result: PROVIDER when a preset
// applies, then HOST, PORT and TLS.
func (f Found) Vars() []string {
	var v []string
	if f.Preset != "" {
		v = append(v, "PROVIDER="+f.Preset)
	}
	return append(v, "HOST="+f.Host, "PORT="+strconv.Itoa(f.Port), "TLS="+f.TLS.String())
}

// Pin is Vars for a log line: "HOST=pop.example.com PORT=995 TLS=implicit".
func (f Found) Pin() string { return strings.Join(f.Vars(), " ") }

// Errors Discover returns or records in Steps.
var (
	// ErrNotAddress: the user name has no mail domain to discover from.
	ErrNotAddress = errors.New("not a mail address")
	// ErrNotFound: every step failed; the error lists them.
	ErrNotFound = errors.New("no POP3 server found")
	// ErrNoRecord: the SRV name does not exist.
	ErrNoRecord = errors.New("no SRV record")
	// ErrNotOffered: the SRV record's target is "." (RFC 2782: the
	// service is decidedly not available at this domain).
	ErrNotOffered = errors.New(`not offered (target ".")`)
	// ErrOutsideDomain: an SRV target outside the address's domain that
	// is not a preset's server; see the package documentation.
	ErrOutsideDomain = errors.New("target outside the address's domain, not trusted from unsigned DNS")
)

// Domain returns the mail domain of address (after the last '@'; a prefix
// such as Gmail's "recent:" does not matter), lower case, or an error
// wrapping ErrNotAddress.
func Domain(address string) (string, error) {
	at := strings.LastIndexByte(address, '@')
	if at < 0 {
		return "", fmt.Errorf("%q: %w (no @)", address, ErrNotAddress)
	}
	d := normalizeDomain(address[at+1:])
	if !validDomain(d) {
		return "", fmt.Errorf("%q: %w (%q is not a DNS domain name; internationalised domains must be given in their xn-- form)", address, ErrNotAddress, address[at+1:])
	}
	return d, nil
}

// validDomain accepts host names of at least two labels, letters, digits
// and '-' (not at either end of a label).
func validDomain(d string) bool {
	if len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Discover finds the POP3 server for address (a USERNAME that is a mail
// address) in the order the package documentation gives. It returns the
// first server that probe accepts and every step tried, in order. When
// nothing answers, the error wraps ErrNotFound and lists the steps; when
// the domain's provider has no POP3, it wraps ErrNoPOP; when ctx ends
// first, it wraps the context's error. A nil r is net.DefaultResolver, a
// nil probe ProbeTLS(nil, nil).
func Discover(ctx context.Context, r Resolver, probe Prober, address string) (Found, []Step, error) {
	domain, err := Domain(address)
	if err != nil {
		return Found{}, nil, fmt.Errorf("discover: %w", err)
	}
	if r == nil {
		r = net.DefaultResolver
	}
	if probe == nil {
		probe = ProbeTLS(nil, nil)
	}
	d := &discovery{ctx: ctx, r: r, probe: probe, domain: domain, tried: map[string]bool{}}
	f, err := d.run()
	if err != nil {
		return Found{}, d.steps, err
	}
	if p, ok := ByDomain(domain); ok && p.Host == f.Host {
		f.Preset = p.Name
	} else if p, ok := byHost(f.Host); ok {
		f.Preset = p.Name
	}
	return f, d.steps, nil
}

type discovery struct {
	ctx    context.Context
	r      Resolver
	probe  Prober
	domain string
	steps  []Step
	tried  map[string]bool // host:port/tls already probed
	absent map[string]bool // hosts DNS says do not exist
}

// candidate is a server to probe and the step that proposed it.
type candidate struct {
	what string
	host string
	port int
	tls  pop3.TLSMode
}

func (d *discovery) run() (Found, error) {
	for _, s := range []struct {
		service string
		mode    pop3.TLSMode
	}{{"pop3s", pop3.TLSImplicit}, {"pop3", pop3.TLSStartTLS}} {
		cands, err := d.srv(s.service, s.mode)
		if err != nil {
			return Found{}, err
		}
		if f, ok, err := d.try(cands); ok || err != nil {
			return f, err
		}
	}

	if n, ok := noPOPByDomain(d.domain); ok {
		d.steps = append(d.steps, Step{What: "provider " + n.Name, Err: noPOPError{n}})
		return Found{}, fmt.Errorf("discover %s: %w", d.domain, noPOPError{n})
	}
	if p, ok := ByDomain(d.domain); ok {
		if f, ok, err := d.try([]candidate{{"provider " + p.Name, p.Host, p.Port, p.TLS}}); ok || err != nil {
			return f, err
		}
	}

	var guesses []candidate
	for _, mode := range []pop3.TLSMode{pop3.TLSImplicit, pop3.TLSStartTLS} {
		port := 995
		if mode == pop3.TLSStartTLS {
			port = 110
		}
		for _, prefix := range []string{"pop.", "pop3.", "mail."} {
			guesses = append(guesses, candidate{"guess", prefix + d.domain, port, mode})
		}
	}
	if f, ok, err := d.try(guesses); ok || err != nil {
		return f, err
	}

	lines := make([]string, len(d.steps))
	for i, s := range d.steps {
		lines[i] = s.String()
	}
	return Found{}, fmt.Errorf("discover %s: %w; tried: %s", d.domain, ErrNotFound, strings.Join(lines, "; "))
}

// srv looks up _service._tcp.DOMAIN and returns the targets to probe, in
// order. A lookup that yields none is recorded as a step; only the
// context ending is an error.
func (d *discovery) srv(service string, mode pop3.TLSMode) ([]candidate, error) {
	what := "SRV _" + service + "._tcp." + d.domain
	if err := d.alive(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(d.ctx, StepTimeout)
	_, addrs, err := d.r.LookupSRV(ctx, service, "tcp", d.domain)
	cancel()
	if err != nil && len(addrs) == 0 {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			err = ErrNoRecord
		}
		d.steps = append(d.steps, Step{What: what, Err: err})
		return nil, d.alive()
	}
	// Go's resolver already orders by priority and shuffles by weight
	// (RFC 2782); a stable, deterministic order is better here, so that
	// check shows the same steps each time and the same server wins.
	recs := slices.Clone(addrs)
	recs = slices.DeleteFunc(recs, func(s *net.SRV) bool { return s == nil })
	slices.SortStableFunc(recs, func(a, b *net.SRV) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Weight, a.Weight))
	})
	var cands []candidate
	skipped := false
	for _, rec := range recs {
		target := normalizeDomain(rec.Target)
		switch {
		case target == "" || target == ".":
			continue
		case rec.Port == 0:
			d.steps = append(d.steps, Step{What: what, Host: target, TLS: mode, Err: errors.New("SRV record with port 0")})
			skipped = true
			continue
		case !d.trusted(target):
			d.steps = append(d.steps, Step{What: what, Host: target, Port: int(rec.Port), TLS: mode, Err: ErrOutsideDomain})
			skipped = true
			continue
		}
		if len(cands) < maxSRVTargets {
			cands = append(cands, candidate{what, target, int(rec.Port), mode})
		}
	}
	if len(cands) == 0 && !skipped {
		e := ErrNotOffered // only "." targets
		if len(recs) == 0 {
			e = ErrNoRecord
		}
		d.steps = append(d.steps, Step{What: what, Err: e})
	}
	return cands, nil
}

// trusted reports whether an SRV target may be used without DNSSEC: the
// domain itself, a name under it, or a preset's server.
func (d *discovery) trusted(target string) bool {
	if target == d.domain || strings.HasSuffix(target, "."+d.domain) {
		return true
	}
	_, ok := byHost(target)
	return ok
}

// try probes the candidates in order and returns the first that answers.
// ok is false when none did; err is set only when the context ended.
func (d *discovery) try(cands []candidate) (f Found, ok bool, err error) {
	for _, c := range cands {
		key := net.JoinHostPort(c.host, strconv.Itoa(c.port)) + "/" + c.tls.String()
		if d.tried[key] || d.absent[c.host] {
			continue
		}
		if err := d.alive(); err != nil {
			return Found{}, false, err
		}
		d.tried[key] = true
		ctx, cancel := context.WithTimeout(d.ctx, StepTimeout)
		perr := d.probe(ctx, c.host, c.port, c.tls)
		cancel()
		d.steps = append(d.steps, Step{What: c.what, Host: c.host, Port: c.port, TLS: c.tls, Err: perr})
		if perr == nil {
			return Found{Host: c.host, Port: c.port, TLS: c.tls, Via: c.what}, true, nil
		}
		if err := d.alive(); err != nil {
			return Found{}, false, err
		}
		var dnsErr *net.DNSError
		if errors.As(perr, &dnsErr) && dnsErr.IsNotFound {
			if d.absent == nil {
				d.absent = map[string]bool{}
			}
			d.absent[c.host] = true
		}
	}
	return Found{}, false, nil
}

// alive returns the context's error, wrapped, once it has ended.
func (d *discovery) alive() error {
	if d.ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("discover %s: stopped after %d steps: %w", d.domain, len(d.steps), context.Cause(d.ctx))
}
