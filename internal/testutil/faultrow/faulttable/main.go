// Command faulttable turns the FAULTROW lines of `go test -v` output (see
// package faultrow) into the table of docs/faults.md. It reads the test
// output on standard input and writes markdown on standard output; it
// exits 1 when the output holds a failed test or no row at all, so that a
// table is only ever made from a run whose checks all passed.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/pophook/pophook/internal/testutil/faultrow"
)

// areas orders the table's sections.
var areas = []string{"network", "sink", "process", "input", "auth", "security"}

func main() {
	rows, failed, err := read(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faulttable:", err)
		os.Exit(1)
	}
	if len(failed) > 0 {
		fmt.Fprintf(os.Stderr, "faulttable: %d tests failed (%s); no table from a failing run\n", len(failed), strings.Join(failed, ", "))
		os.Exit(1)
	}
	if len(rows) == 0 {
		fmt.Fprintln(os.Stderr, "faulttable: no FAULTROW lines in the input (was it go test -v output?)")
		os.Exit(1)
	}
	write(os.Stdout, rows)
}

func read(r io.Reader) (rows []faultrow.Row, failed []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "--- FAIL: "); ok {
			failed = append(failed, strings.Fields(name)[0])
			continue
		}
		i := strings.Index(line, faultrow.Prefix)
		if i < 0 {
			continue
		}
		var row faultrow.Row
		if err := json.Unmarshal([]byte(line[i+len(faultrow.Prefix):]), &row); err != nil {
			return nil, nil, fmt.Errorf("a row that is not JSON: %q: %w", line, err)
		}
		rows = append(rows, row)
	}
	return rows, failed, sc.Err()
}

func write(w io.Writer, rows []faultrow.Row) {
	rank := func(area string) int {
		if i := slices.Index(areas, area); i >= 0 {
			return i
		}
		return len(areas)
	}
	slices.SortStableFunc(rows, func(a, b faultrow.Row) int {
		return cmp.Or(cmp.Compare(rank(a.Area), rank(b.Area)), cmp.Compare(a.Test, b.Test))
	})
	var total faultrow.Row
	fmt.Fprintln(w, "| area | fault | how it is made | rounds | messages | lost | repeated | deleted early | result | test |")
	fmt.Fprintln(w, "|---|---|---|--:|--:|--:|--:|--:|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %d | %d | %d | %s | `%s` |\n", r.Area, cell(r.Fault), cell(r.Injection),
			r.Rounds, r.Messages, r.Lost, r.Repeated, r.EarlyDele, cell(r.Result), r.Test)
		total.Rounds += r.Rounds
		total.Messages += r.Messages
		total.Lost += r.Lost
		total.Repeated += r.Repeated
		total.EarlyDele += r.EarlyDele
	}
	fmt.Fprintf(w, "| **all** | %d faults | | %d | %d | %d | %d | %d | | |\n", len(rows), total.Rounds, total.Messages, total.Lost, total.Repeated, total.EarlyDele)
}

// cell keeps a value inside its table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.Join(strings.Fields(s), " ")
}
