package demo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pophook/pophook/worker"
)

// observed is everything the demo's checks look at.
type observed struct {
	samples        []sample
	first, second  worker.Result
	left1          int           // messages on the server after the first pass (its QUIT dropped)
	fetched        [2]int        // messages retrieved by each pass
	after1, after2 tally         // the receiver after each pass
	maildir        []maildirFile // the Maildir at the end
	left           int           // messages still on the POP3 server
}

// maildirFile is one message file in the Maildir.
type maildirFile struct {
	name      string
	messageID string
}

// readMaildir lists the messages in dir's new/ and cur/.
func readMaildir(dir string) ([]maildirFile, error) {
	var out []maildirFile
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			data, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				return nil, err
			}
			out = append(out, maildirFile{name: e.Name(), messageID: headerValue(data, "Message-ID")})
		}
	}
	return out, nil
}

// check verifies that every sample reached each sink exactly once, that
// the second pass sent nothing, and that the mailbox is empty. Its error
// names every check that failed.
func check(o observed) error {
	var fails []string
	fail := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }
	n := len(o.samples)

	if o.first.Delivered != n || o.first.Deleted != 0 || o.left1 != n {
		fail("first pass: delivered %d of %d messages, deleted %d, %d left on the server; want all delivered and, with QUIT dropped, all left",
			o.first.Delivered, n, o.first.Deleted, o.left1)
	}
	for _, p := range o.first.Problems {
		fail("first pass: %s", p.Line(o.first.Account))
	}
	if o.fetched[1] != 0 || o.second.Delivered != 0 {
		fail("second pass: fetched %d and delivered %d messages, want none", o.fetched[1], o.second.Delivered)
	}
	if o.second.Deleted != o.first.Delivered {
		fail("second pass: deleted %d messages, want the %d delivered before the dropped QUIT", o.second.Deleted, o.first.Delivered)
	}
	if sent := o.after2.requests - o.after1.requests; sent != 0 {
		fail("second pass: the receiver got %d more requests, want none", sent)
	}

	r := o.after2
	for _, e := range r.errs {
		fail("receiver refused a request: %s", e)
	}
	if len(r.byKey) != n {
		fail("receiver: %d distinct Idempotency-Keys, want %d", len(r.byKey), n)
	}
	for _, key := range sortedKeys(r.byKey) {
		if c := r.byKey[key]; c != 1 {
			fail("receiver: Idempotency-Key %s arrived %d times", key, c)
		}
	}
	mdByID := map[string]int{}
	for _, f := range o.maildir {
		mdByID[f.messageID]++
	}
	for _, s := range o.samples {
		if c := r.byMsgID[s.messageID]; c != 1 {
			fail("receiver: %s (Message-ID %s) arrived %d times, want once", s.name, s.messageID, c)
		}
		if c := mdByID[s.messageID]; c != 1 {
			fail("Maildir: %s (Message-ID %s) is there %d times, want once", s.name, s.messageID, c)
		}
	}
	if len(o.maildir) != n {
		fail("Maildir: %d files, want %d", len(o.maildir), n)
	}
	// The Maildir sink names each file after the delivery's key: the
	// receiver and the Maildir got the same deliveries.
	for _, key := range sortedKeys(r.byKey) {
		c := 0
		for _, f := range o.maildir {
			if strings.Contains(f.name, ".K"+key+".") {
				c++
			}
		}
		if c != 1 {
			fail("Maildir: %d files for Idempotency-Key %s, want 1", c, key)
		}
	}
	if o.left != 0 {
		fail("POP3 mailbox: %s left on the server, want none", plural(o.left, "message"))
	}
	if len(fails) > 0 {
		return errors.New("the demo's checks failed:\n  " + strings.Join(fails, "\n  "))
	}
	return nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
