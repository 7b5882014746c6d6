// Package faultrow is how fault-injection tests report their result for
// docs/faults.md: each test calls Report once per fault it covers, and
// the report command (bench/faults.sh) runs the tests with -v, collects
// the rows and writes the table. A row is logged as one line starting
// with Prefix followed by the row as JSON.
//
// Rounds, Messages and the three counts are what the test observed, not
// what it intended: a row must come from the same run that checked the
// invariants, after the checks, so a failing test reports no row (Report
// refuses when the test has already failed).
package faultrow

import (
	"encoding/json"
	"os"
	"strconv"
	"testing"
)

// Prefix starts every row line in the -v output.
const Prefix = "FAULTROW "

// Row is one line of the table in docs/faults.md.
type Row struct {
	Area      string `json:"area"`       // "network", "sink", "process", "input", "auth", "security"
	Fault     string `json:"fault"`      // what went wrong, in words
	Injection string `json:"injection"`  // how the test makes it happen
	Rounds    int    `json:"rounds"`     // runs of pophook (or attempts) under the fault
	Messages  int    `json:"messages"`   // distinct messages that went through
	Lost      int    `json:"lost"`       // messages neither on the server nor delivered
	Repeated  int    `json:"repeated"`   // deliveries made more than once (each under the same key)
	EarlyDele int    `json:"early_dele"` // messages deleted before every sink had them
	Result    string `json:"result"`     // the outcome in words: "no loss; every run ended within 40s"
	Test      string `json:"test"`       // filled in by Report
}

// Report logs the row. It must be called after the test's checks.
func Report(t testing.TB, r Row) {
	t.Helper()
	if t.Failed() {
		t.Log("faultrow: the test failed, so it reports no row")
		return
	}
	r.Test = t.Name()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(Prefix + string(b))
}

// Rounds returns how many rounds a fault test runs: PHTEST_FAULT_ROUNDS
// when set (the long run that docs/faults.md reports), else short, the
// number CI runs.
func Rounds(t testing.TB, short int) int {
	t.Helper()
	s := os.Getenv("PHTEST_FAULT_ROUNDS")
	if s == "" {
		return short
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("PHTEST_FAULT_ROUNDS=%q: want a positive number", s)
	}
	return n
}
