package main

import (
	"strings"
	"testing"
)

func TestReadRowsAndFailures(t *testing.T) {
	out := `=== RUN   TestA
    a_test.go:10: FAULTROW {"area":"sink","fault":"x | y","rounds":3,"messages":5,"lost":0,"repeated":1,"test":"TestA"}
--- PASS: TestA (0.1s)
    b_test.go:20: FAULTROW {"area":"network","fault":"cut","rounds":2,"messages":4,"test":"TestB"}
--- FAIL: TestC (0.2s)
`
	rows, failed, err := read(strings.NewReader(out))
	if err != nil || len(rows) != 2 || len(failed) != 1 || failed[0] != "TestC" {
		t.Fatalf("rows %+v, failed %q, err %v", rows, failed, err)
	}
	var b strings.Builder
	write(&b, rows)
	table := b.String()
	if i, j := strings.Index(table, "| network |"), strings.Index(table, "| sink |"); i < 0 || j < 0 || i > j {
		t.Errorf("network rows should come before sink rows:\n%s", table)
	}
	if !strings.Contains(table, `x \| y`) || !strings.Contains(table, "| **all** | 2 faults | | 5 | 9 | 0 | 1 | 0 |") {
		t.Errorf("table:\n%s", table)
	}
	if _, _, err := read(strings.NewReader("    x.go:1: FAULTROW {not json\n")); err == nil {
		t.Error("a broken row was accepted")
	}
}
