package payload

import (
	"fmt"
	"slices"
	"testing"
)

// TestProblemList: each problem once, maxProblems listed, the rest counted
// once each however often they recur, and invalid UTF-8 made valid.
func TestProblemList(t *testing.T) {
	var l problemList
	for range 3 {
		for i := range maxProblems + 50 {
			l.add(fmt.Sprintf("part %d: problem", i))
		}
	}
	l.add("header X: caf\xe9")
	l.add("header X: caf\xe9")
	got := l.list()
	if len(got) != maxProblems+1 {
		t.Fatalf("%d entries, want %d", len(got), maxProblems+1)
	}
	if got[0] != "part 0: problem" || got[maxProblems-1] != fmt.Sprintf("part %d: problem", maxProblems-1) {
		t.Errorf("listed %q ... %q", got[0], got[maxProblems-1])
	}
	if want := "51 more problems not listed"; got[maxProblems] != want {
		t.Errorf("last entry %q, want %q", got[maxProblems], want)
	}

	// Beyond what it remembers, the list counts every further problem:
	// its memory stays bounded.
	l = problemList{}
	for i := range maxProblems + maxUnlisted + 10 {
		l.add(fmt.Sprintf("p%d", i))
		l.add(fmt.Sprintf("p%d", i))
	}
	if len(l.unlisted) != maxUnlisted || len(l.seen) != maxProblems {
		t.Errorf("remembers %d unlisted and %d listed problems, want %d and %d", len(l.unlisted), len(l.seen), maxUnlisted, maxProblems)
	}
	if want := fmt.Sprintf("%d more problems not listed", maxUnlisted+20); l.list()[maxProblems] != want {
		t.Errorf("last entry %q, want %q", l.list()[maxProblems], want)
	}

	l = problemList{}
	l.add("header X: caf\xe9")
	if !slices.Equal(l.list(), []string{"header X: caf?"}) {
		t.Errorf("%q", l.list())
	}
}
