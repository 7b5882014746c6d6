package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// unknownVariables warns about every POPHOOK_ variable in the environment
// that Load does not read: a typo, a variable of an account or sink that is
// not listed, or one that does not apply to the sink's type. A typo would
// otherwise silently leave a default in force.
func unknownVariables(accounts []string, sinks map[string]*Sink) []string {
	anyType := map[string]string{}
	for name := range sinks {
		anyType[name] = ""
	}
	known := Variables(accounts, sinkTypesOf(sinks))
	candidates := Variables(accounts, anyType) // for suggestions

	var warnings []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix+"_") || slices.Contains(known, name) {
			continue
		}
		warnings = append(warnings, describeUnknown(name, sinks, candidates))
	}
	slices.Sort(warnings)
	return warnings
}

func describeUnknown(name string, sinks map[string]*Sink, candidates []string) string {
	for sinkName, s := range sinks {
		if suffix, ok := strings.CutPrefix(name, sinkPrefix(sinkName)+"_"); ok && s.Type != "" &&
			slices.Contains(sinkSuffixes(""), suffix) {
			return fmt.Sprintf("%s is not used by a %s sink", name, s.Type)
		}
	}
	if owner := ownerName(name, envPrefix+"_ACCOUNT_", suffixes(accountEnv{})); owner != "" {
		return fmt.Sprintf("%s: account %q is not listed in %s_ACCOUNTS", name, owner, envPrefix)
	}
	if owner := ownerName(name, envPrefix+"_SINK_", sinkSuffixes("")); owner != "" {
		return fmt.Sprintf("%s: sink %q is not listed in %s_SINKS", name, owner, envPrefix)
	}
	if guess := closest(name, candidates); guess != "" {
		return fmt.Sprintf("%s is not a pophook variable (typo? did you mean %s?)", name, guess)
	}
	return fmt.Sprintf("%s is not a pophook variable (typo?)", name)
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
