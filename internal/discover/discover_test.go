package discover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pophook/pophook/worker/pop3"
)

// stubResolver answers SRV lookups from a table, without the network.
// Names not in the table do not exist (NXDOMAIN).
type stubResolver struct {
	answers map[string]srvAnswer // "_pop3s._tcp.example.com"
	block   bool                 // wait for the context to end instead

	mu      sync.Mutex
	queries []string
}

type srvAnswer struct {
	recs []*net.SRV
	err  error
}

func (r *stubResolver) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	q := "_" + service + "._" + proto + "." + name
	r.mu.Lock()
	r.queries = append(r.queries, q)
	r.mu.Unlock()
	if r.block {
		<-ctx.Done()
		return "", nil, &net.DNSError{Err: ctx.Err().Error(), Name: q, IsTimeout: true}
	}
	a, ok := r.answers[q]
	if !ok {
		return "", nil, &net.DNSError{Err: "no such host", Name: q, IsNotFound: true}
	}
	return q + ".", a.recs, a.err
}

// stubProber accepts the servers in ok ("host:port/tls") and refuses the
// rest; hosts in absent fail as DNS names that do not exist. It records
// every probe in order.
type stubProber struct {
	ok     map[string]bool
	absent map[string]bool
	block  bool // wait for the context to end instead

	mu     sync.Mutex
	probes []string
}

func key(host string, port int, mode pop3.TLSMode) string {
	return net.JoinHostPort(host, strconv.Itoa(port)) + "/" + mode.String()
}

func (p *stubProber) probe(ctx context.Context, host string, port int, mode pop3.TLSMode) error {
	k := key(host, port, mode)
	p.mu.Lock()
	p.probes = append(p.probes, k)
	p.mu.Unlock()
	switch {
	case p.block:
		<-ctx.Done()
		return ctx.Err()
	case p.absent[host]:
		return fmt.Errorf("pop3: dial %s: %w", k, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true})
	case p.ok[k]:
		return nil
	}
	return errors.New("connection refused")
}

func (p *stubProber) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.probes)
}

func srv(target string, port, prio, weight uint16) *net.SRV {
	return &net.SRV{Target: target, Port: port, Priority: prio, Weight: weight}
}

func okSet(keys ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// logSteps puts what Discover tried into the -v output.
func logSteps(t *testing.T, steps []Step) {
	t.Helper()
	var b strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&b, "  %d. %s\n", i+1, s)
	}
	t.Logf("steps:\n%s", b.String())
}

// whats is the What and the error of every step, for comparing.
func whats(steps []Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.What
		if s.Host != "" {
			out[i] += " " + key(s.Host, s.Port, s.TLS)
		}
		if s.Err != nil {
			out[i] += " !"
		}
	}
	return out
}

func TestSRVWins(t *testing.T) {
	r := &stubResolver{answers: map[string]srvAnswer{
		"_pop3s._tcp.example.com": {recs: []*net.SRV{srv("mail.example.com.", 995, 0, 1)}},
	}}
	p := &stubProber{ok: okSet("mail.example.com:995/implicit", "pop.example.com:995/implicit")}
	f, steps, err := Discover(t.Context(), r, p.probe, "support@example.com")
	logSteps(t, steps)
	if err != nil {
		t.Fatal(err)
	}
	want := Found{Host: "mail.example.com", Port: 995, TLS: pop3.TLSImplicit, Via: "SRV _pop3s._tcp.example.com"}
	if f != want {
		t.Errorf("found %+v, want %+v", f, want)
	}
	if f.Pin() != "HOST=mail.example.com PORT=995 TLS=implicit" {
		t.Errorf("Pin() = %q", f.Pin())
	}
	if got := whats(steps); !slices.Equal(got, []string{"SRV _pop3s._tcp.example.com mail.example.com:995/implicit"}) {
		t.Errorf("steps %q", got)
	}
	if len(r.queries) != 1 {
		t.Errorf("queries %q: the first SRV answer should end it", r.queries)
	}
}

// Targets are probed by priority, then higher weight first; the first
// that answers wins, and the others are steps.
func TestSRVOrder(t *testing.T) {
	r := &stubResolver{answers: map[string]srvAnswer{
		"_pop3s._tcp.example.com": {recs: []*net.SRV{
			srv("c.example.com", 995, 20, 0),
			srv("b.example.com", 995, 10, 5),
			srv("a.example.com", 9950, 10, 50),
		}},
	}}
	p := &stubProber{ok: okSet("b.example.com:995/implicit", "c.example.com:995/implicit")}
	f, steps, err := Discover(t.Context(), r, p.probe, "x@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if f.Host != "b.example.com" {
		t.Errorf("found %+v, want b.example.com", f)
	}
	want := []string{"a.example.com:9950/implicit", "b.example.com:995/implicit"}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("probes %q, want %q", got, want)
	}
	if len(steps) != 2 || steps[0].Err == nil || steps[1].Err != nil {
		t.Errorf("steps %v", steps)
	}
}

// A target "." says the service is not offered: no probe, a step, and on
// to _pop3._tcp, whose servers are probed with STARTTLS.
func TestSRVNotOffered(t *testing.T) {
	r := &stubResolver{answers: map[string]srvAnswer{
		"_pop3s._tcp.example.com": {recs: []*net.SRV{srv(".", 0, 0, 0)}},
		"_pop3._tcp.example.com":  {recs: []*net.SRV{srv("pop.example.com.", 110, 0, 0)}},
	}}
	p := &stubProber{ok: okSet("pop.example.com:110/starttls", "pop.example.com:995/implicit")}
	f, steps, err := Discover(t.Context(), r, p.probe, "x@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if f.Host != "pop.example.com" || f.Port != 110 || f.TLS != pop3.TLSStartTLS {
		t.Errorf("found %+v", f)
	}
	if !errors.Is(steps[0].Err, ErrNotOffered) || steps[0].Host != "" {
		t.Errorf("first step %v, want not offered", steps[0])
	}
	if got := p.got(); !slices.Equal(got, []string{"pop.example.com:110/starttls"}) {
		t.Errorf("probes %q", got)
	}
	if f.Pin() != "HOST=pop.example.com PORT=110 TLS=starttls" {
		t.Errorf("Pin() = %q", f.Pin())
	}
}

// Without SRV records, the preset for the domain is probed and wins; a
// prefix such as Gmail's recent: does not hide the domain.
func TestPresetByDomain(t *testing.T) {
	r := &stubResolver{}
	p := &stubProber{ok: okSet("pop.gmail.com:995/implicit")}
	f, steps, err := Discover(t.Context(), r, p.probe, "recent:someone@GMail.com")
	logSteps(t, steps)
	if err != nil {
		t.Fatal(err)
	}
	want := Found{Host: "pop.gmail.com", Port: 995, TLS: pop3.TLSImplicit, Preset: "gmail", Via: "provider gmail"}
	if f != want {
		t.Errorf("found %+v, want %+v", f, want)
	}
	if f.Pin() != "PROVIDER=gmail HOST=pop.gmail.com PORT=995 TLS=implicit" {
		t.Errorf("Pin() = %q", f.Pin())
	}
	wantSteps := []string{"SRV _pop3s._tcp.gmail.com !", "SRV _pop3._tcp.gmail.com !", "provider gmail pop.gmail.com:995/implicit"}
	if got := whats(steps); !slices.Equal(got, wantSteps) {
		t.Errorf("steps %q, want %q", got, wantSteps)
	}
	if !errors.Is(steps[0].Err, ErrNoRecord) {
		t.Errorf("SRV step error %v, want ErrNoRecord", steps[0].Err)
	}
	if want := []string{"_pop3s._tcp.gmail.com", "_pop3._tcp.gmail.com"}; !slices.Equal(r.queries, want) {
		t.Errorf("queries %q, want %q", r.queries, want)
	}
}

// A preset that does not answer (a firewall) is a step, and the guesses
// follow, without probing the same server twice.
func TestPresetFailsThenGuesses(t *testing.T) {
	p := &stubProber{ok: okSet("mail.163.com:995/implicit")}
	f, _, err := Discover(t.Context(), &stubResolver{}, p.probe, "a@163.com")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pop.163.com:995/implicit", "pop3.163.com:995/implicit", "mail.163.com:995/implicit"}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("probes %q, want %q (pop.163.com once)", got, want)
	}
	if f.Preset != "" || f.Via != "guess" {
		t.Errorf("found %+v: a guessed server is no preset's", f)
	}
}

// An unknown domain without SRV: pop., pop3., mail. with implicit TLS in
// that order.
func TestGuessOrder(t *testing.T) {
	p := &stubProber{ok: okSet("mail.example.org:995/implicit")}
	f, steps, err := Discover(t.Context(), &stubResolver{}, p.probe, "x@example.org")
	logSteps(t, steps)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pop.example.org:995/implicit", "pop3.example.org:995/implicit", "mail.example.org:995/implicit"}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("probes %q, want %q", got, want)
	}
	if f.Host != "mail.example.org" || f.Via != "guess" || len(steps) != 5 {
		t.Errorf("found %+v after %d steps", f, len(steps))
	}
}

// Nothing answers: the STARTTLS guesses on port 110 are tried too (not for
// names that do not exist), and the error lists every step.
func TestAllFail(t *testing.T) {
	r := &stubResolver{answers: map[string]srvAnswer{
		"_pop3._tcp.example.org": {err: &net.DNSError{Err: "server misbehaving", Name: "_pop3._tcp.example.org", IsTemporary: true}},
	}}
	p := &stubProber{absent: map[string]bool{"pop3.example.org": true}}
	_, steps, err := Discover(t.Context(), r, p.probe, "x@example.org")
	logSteps(t, steps)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("error %v, want ErrNotFound", err)
	}
	want := []string{
		"pop.example.org:995/implicit", "pop3.example.org:995/implicit", "mail.example.org:995/implicit",
		"pop.example.org:110/starttls", "mail.example.org:110/starttls",
	}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("probes %q, want %q", got, want)
	}
	if len(steps) != 2+len(want) {
		t.Fatalf("%d steps, want %d: %v", len(steps), 2+len(want), steps)
	}
	for _, s := range steps {
		if !strings.Contains(err.Error(), s.String()) {
			t.Errorf("error %q does not list step %q", err, s)
		}
	}
	if !strings.Contains(err.Error(), "server misbehaving") {
		t.Errorf("error %q: a failed SRV lookup is a step like the others", err)
	}
}

// An SRV target outside the domain is not probed (unsigned DNS could
// name any host whose certificate verifies), unless it is a preset's
// server; a custom domain at a provider then carries its preset.
func TestSRVOutsideDomain(t *testing.T) {
	r := &stubResolver{answers: map[string]srvAnswer{
		"_pop3s._tcp.example.com": {recs: []*net.SRV{
			srv("pop.attacker.example", 995, 0, 0),
			srv("outlook.office365.com.", 995, 10, 0),
		}},
	}}
	p := &stubProber{ok: okSet("pop.attacker.example:995/implicit", "outlook.office365.com:995/implicit")}
	f, steps, err := Discover(t.Context(), r, p.probe, "x@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.got(); !slices.Equal(got, []string{"outlook.office365.com:995/implicit"}) {
		t.Errorf("probes %q", got)
	}
	if !errors.Is(steps[0].Err, ErrOutsideDomain) || steps[0].Host != "pop.attacker.example" {
		t.Errorf("first step %v, want the outside target refused", steps[0])
	}
	if f.Preset != "office365" {
		t.Errorf("found %+v, want preset office365", f)
	}
	if want := "PROVIDER=office365 HOST=outlook.office365.com PORT=995 TLS=implicit"; f.Pin() != want {
		t.Errorf("Pin() = %q, want %q", f.Pin(), want)
	}

	// Subdomains of the domain are fine.
	r = &stubResolver{answers: map[string]srvAnswer{
		"_pop3s._tcp.example.com": {recs: []*net.SRV{srv("pop.eu.example.com", 995, 0, 0)}},
	}}
	p = &stubProber{ok: okSet("pop.eu.example.com:995/implicit")}
	if f, _, err := Discover(t.Context(), r, p.probe, "x@example.com"); err != nil || f.Host != "pop.eu.example.com" {
		t.Errorf("subdomain target: %+v %v", f, err)
	}
}

// At most maxSRVTargets targets per name are probed.
func TestSRVTargetLimit(t *testing.T) {
	var recs []*net.SRV
	for i := range 10 {
		recs = append(recs, srv(fmt.Sprintf("p%d.example.com", i), 995, uint16(i), 0))
	}
	r := &stubResolver{answers: map[string]srvAnswer{"_pop3s._tcp.example.com": {recs: recs}}}
	p := &stubProber{}
	Discover(t.Context(), r, p.probe, "x@example.com")
	n := 0
	for _, k := range p.got() {
		if strings.HasPrefix(k, "p") && !strings.HasPrefix(k, "pop") {
			n++
		}
	}
	if n != maxSRVTargets {
		t.Errorf("%d SRV targets probed, want %d: %q", n, maxSRVTargets, p.got())
	}
}

// A provider without POP3 ends discovery with a clear error instead of
// guesses.
func TestNoPOPDomain(t *testing.T) {
	p := &stubProber{}
	_, steps, err := Discover(t.Context(), &stubResolver{}, p.probe, "someone@icloud.com")
	if !errors.Is(err, ErrNoPOP) || !strings.Contains(err.Error(), "IMAP only") {
		t.Fatalf("error %v, want ErrNoPOP explaining iCloud", err)
	}
	if len(p.got()) != 0 {
		t.Errorf("probes %q, want none", p.got())
	}
	if last := steps[len(steps)-1]; last.What != "provider icloud" || !errors.Is(last.Err, ErrNoPOP) {
		t.Errorf("last step %v", last)
	}
}

func TestContextDeadline(t *testing.T) {
	for _, tc := range []struct {
		name      string
		r         *stubResolver
		p         *stubProber
		wantSteps int
	}{
		{"dns", &stubResolver{block: true}, &stubProber{}, 1},
		{"probe", &stubResolver{}, &stubProber{block: true}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The deadline also covers the quick steps before the blocking
			// stub: long enough for them to finish on a loaded machine.
			const deadline = time.Second
			ctx, cancel := context.WithTimeout(t.Context(), deadline)
			defer cancel()
			start := time.Now()
			_, steps, err := Discover(ctx, tc.r, tc.p.probe, "x@example.org")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want the deadline", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s after a %s deadline", d, deadline)
			}
			if len(steps) != tc.wantSteps {
				t.Errorf("%d steps, want %d: %v", len(steps), tc.wantSteps, steps)
			}
			if len(tc.p.got()) > 1 {
				t.Errorf("probes after the deadline: %q", tc.p.got())
			}
		})
	}

	// Each probe has its own StepTimeout within the context.
	var deadline time.Time
	probe := func(ctx context.Context, host string, port int, mode pop3.TLSMode) error {
		deadline, _ = ctx.Deadline()
		return nil
	}
	Discover(t.Context(), &stubResolver{}, probe, "x@example.org")
	if left := time.Until(deadline); left <= 0 || left > StepTimeout {
		t.Errorf("probe deadline %s away, want within %s", left, StepTimeout)
	}
}

func TestDomain(t *testing.T) {
	for in, want := range map[string]string{
		"a@example.com":                         "example.com",
		"recent:a@GMail.COM.":                   "gmail.com",
		"\"a@b\"@mail.example.org":              "mail.example.org",
		"a@xn--bcher-kva.example":               "xn--bcher-kva.example",
		"a@[192.0.2.1]":                         "",
		"a@localhost":                           "",
		"a@bücher.example":                      "",
		"support":                               "",
		"a@":                                    "",
		"a@-bad-.example":                       "",
		"a@exa mple.com":                        "",
		"a@example..com":                        "",
		"a@" + strings.Repeat("a", 64) + ".com": "",
	} {
		got, err := Domain(in)
		if got != want || (want == "") != errors.Is(err, ErrNotAddress) {
			t.Errorf("Domain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, steps, err := Discover(t.Context(), &stubResolver{}, (&stubProber{}).probe, "support")
	if !errors.Is(err, ErrNotAddress) || steps != nil {
		t.Errorf("Discover(support): %v, %v", steps, err)
	}
}

func TestStepString(t *testing.T) {
	for _, tc := range []struct {
		s    Step
		want string
	}{
		{Step{What: "SRV _pop3s._tcp.example.com", Err: ErrNoRecord}, "SRV _pop3s._tcp.example.com: no SRV record"},
		{Step{What: "guess", Host: "pop.example.com", Port: 995, TLS: pop3.TLSImplicit, Err: errors.New("connection refused")},
			"guess: pop.example.com:995 TLS=implicit: connection refused"},
		{Step{What: "provider gmail", Host: "pop.gmail.com", Port: 995}, "provider gmail: pop.gmail.com:995 TLS=implicit: ok"},
		{Step{What: "guess", Host: "::1", Port: 110, TLS: pop3.TLSStartTLS}, "guess: [::1]:110 TLS=starttls: ok"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}
