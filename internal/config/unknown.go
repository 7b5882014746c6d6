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
func unknownVariables(p *Problems, accounts []string, sinks map[string]*Sink) (warnings []string) {
	anyType := map[string]string{}
	for name := range sinks {
		anyType[name] = ""
	}
	known := Variables(accounts, sinkTypesOf(sinks))
	candidates := Variables(accounts, anyType) // for suggestions

	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") && !slices.Contains(known, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if text, mistake := describeUnknown(name, accounts, sinks, candidates); mistake {
			p.addf(name, "%s", text)
		} else {
			warnings = append(warnings, problemLine(name, text))
		}
	}
	return warnings
}

// describeUnknown says what is wrong with an unknown variable and whether
// it is a mistake that stops start-up.
func describeUnknown(name string, accounts []string, sinks map[string]*Sink, candidates []string) (string, bool) {
	guess := closest(name, candidates)
	if guess == name {
		guess = "" // a variable of another sink type: nothing to suggest
	}
	hint := ""
	if guess != "" {
		hint = "; did you mean " + guess + "?"
	}
	for sinkName, s := range sinks {
		if suffix, ok := strings.CutPrefix(name, sinkPrefix(sinkName)+"_"); ok {
			if s.Type != "" && slices.Contains(sinkSuffixes(""), suffix) {
				return fmt.Sprintf("not used by a %s sink%s", s.Type, hint), true
			}
			return "not a variable of sink " + strings.ToLower(sinkName) + hint, true
		}
	}
	for _, a := range accounts {
		if _, ok := strings.CutPrefix(name, accountPrefix(a)+"_"); ok {
			return "not a variable of account " + a + hint, true
		}
	}
	if guess != "" {
		return "not a pophook variable" + hint, true
	}
	if owner := ownerName(name, envPrefix+"_ACCOUNT_", suffixes(accountEnv{})); owner != "" {
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

// closest returns the candidate within two edits of name, if any.
func closest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sortProblems orders problems as the variables they name are listed by
// Variables (global, then account by account, then sink by sink), so the
// report reads like the configuration whatever order the checks ran in.
func sortProblems(p Problems, order []string) {
	rank := func(line string) int {
		name, _, _ := strings.Cut(line, ":")
		if i := slices.Index(order, name); i >= 0 {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(p, func(a, b string) int { return rank(a) - rank(b) })
}
