package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// unknownVariables checks every POPHOOK_ variable in the environment that
// Load does not read. A mistake there can cost mail (a misspelt
// SKIP_EXISTING or KEEP leaves the default in force, and mail is delivered
// and deleted), so these are problems that stop start-up:
//   - an unknown name under a listed account's or sink's prefix
//     (POPHOOK_ACCOUNT_SUPPORT_PASWORD, a webhook variable on a maildir
//     sink);
//   - any name within two edits of a variable pophook reads
//     (POPHOOK_ACOUNTS, POPHOOK_ACCOUNT_SUPORT_KEEP).
//
// The rest is only warned about: variables of an account or sink that is
// not listed (a way to switch one off) and POPHOOK_ names nowhere near a
// known one.
//
// known lists the variables Load reads (Variables for the accounts and the
// sinks' types).
func unknownVariables(p *Problems, accounts []string, sinks map[string]*Sink, known []string) (warnings []string) {
	isKnown := make(map[string]struct{}, len(known))
	for _, name := range known {
		isKnown[name] = struct{}{}
	}
	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := isKnown[name]; !ok && strings.HasPrefix(name, envPrefix+"_") {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)

	anyType := map[string]string{}
	for name := range sinks {
		anyType[name] = ""
	}
	u := unknown{
		accounts:   accounts,
		sinks:      sinks,
		candidates: Variables(accounts, anyType), // for suggestions
	}
	for _, a := range accounts {
		u.accountPrefixes = append(u.accountPrefixes, accountPrefix(a)+"_")
	}
	for _, name := range names {
		if text, mistake := u.describe(name); mistake {
			p.addf(name, "%s", text)
		} else {
			warnings = append(warnings, problemLine(name, text))
		}
	}
	return warnings
}

// unknown holds what describing an unknown variable needs.
type unknown struct {
	accounts        []string
	accountPrefixes []string // accountPrefix(accounts[i]) + "_"
	sinks           map[string]*Sink
	candidates      []string // every variable of the accounts, and of the sinks whatever their type
	dist            distance
}

// describe says what is wrong with an unknown variable and whether
// it is a mistake that stops start-up.
func (u *unknown) describe(name string) (string, bool) {
	guess := u.dist.closest(name, u.candidates)
	if guess == name {
		guess = "" // a variable of another sink type: nothing to suggest
	}
	hint := ""
	if guess != "" {
		hint = "; did you mean " + guess + "?"
	}
	for sinkName, s := range u.sinks {
		if suffix, ok := strings.CutPrefix(name, sinkPrefix(sinkName)+"_"); ok {
			if s.Type != "" && slices.Contains(sinkSuffixes(""), suffix) {
				return fmt.Sprintf("not used by a %s sink%s", s.Type, hint), true
			}
			return "not a variable of sink " + strings.ToLower(sinkName) + hint, true
		}
	}
	for i, prefix := range u.accountPrefixes {
		if strings.HasPrefix(name, prefix) {
			return "not a variable of account " + u.accounts[i] + hint, true
		}
	}
	if guess != "" {
		return "not a pophook variable" + hint, true
	}
	if owner := ownerName(name, envPrefix+"_ACCOUNT_", accountSuffixes()); owner != "" {
		return fmt.Sprintf("account %q is not listed in %s_ACCOUNTS, so this is not used", owner, envPrefix), false
	}
	if owner := ownerName(name, envPrefix+"_SINK_", sinkSuffixes("")); owner != "" {
		return fmt.Sprintf("sink %q is not listed in %s_SINKS, so this is not used", owner, envPrefix), false
	}
	return "not a pophook variable, ignored", false
}

// ownerName returns the account or sink name in a variable prefix<NAME>_<SUFFIX>
// for one of the given suffixes, or "". The longest suffix wins, so that
// POPHOOK_ACCOUNT_X_TLS_CA_FILE belongs to x, not to x_tls_ca.
func ownerName(name, prefix string, suffixes []string) string {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return ""
	}
	owner := ""
	longest := 0
	for _, s := range suffixes {
		if o, ok := strings.CutSuffix(rest, "_"+s); ok && o != "" && len(s) > longest {
			owner, longest = strings.ToLower(o), len(s)
		}
	}
	if !namePattern.MatchString(owner) {
		return ""
	}
	return owner
}

// distance computes edit distances, reusing its buffers.
type distance struct{ prev, cur []int }

func (d *distance) closest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if bestDist == 0 {
			break
		}
		if n := d.below(name, c, bestDist); n < bestDist {
			best, bestDist = c, n
		}
	}
	return best
}

// below returns the Levenshtein distance between a and b (ASCII) if it is
// less than bound, or else some number of at least bound, found sooner.
func (d *distance) below(a, b string, bound int) int {
	// A common prefix or suffix does not change the distance.
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	a, b = a[n:], b[n:]
	for len(a) > 0 && len(b) > 0 && a[len(a)-1] == b[len(b)-1] {
		a, b = a[:len(a)-1], b[:len(b)-1]
	}
	if diff := len(a) - len(b); diff >= bound || -diff >= bound {
		return bound // every length difference costs an edit
	}
	if cap(d.prev) < len(b)+1 {
		d.prev, d.cur = make([]int, len(b)+1), make([]int, len(b)+1)
	}
	prev, cur := d.prev[:len(b)+1], d.cur[:len(b)+1]
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= bound {
			return bound // no row has a smaller minimum than the one before
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sortProblems orders problems as the variables they name are listed by
// Variables (global, then account by account, then sink by sink), so the
// report reads like the configuration whatever order the checks ran in.
func sortProblems(p Problems, order []string) {
	index := make(map[string]int, len(order))
	for i, name := range order {
		if _, ok := index[name]; !ok {
			index[name] = i
		}
	}
	rank := func(line string) int {
		name, _, _ := strings.Cut(line, ":")
		if i, ok := index[name]; ok {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(p, func(a, b string) int { return rank(a) - rank(b) })
}
