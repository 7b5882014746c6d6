package maildir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/sinktest"
)

func TestConformance(t *testing.T) {
	// Files in tmp/ without a name where the system allows them, and
	// named ones everywhere else.
	for _, unnamed := range []bool{true, false} {
		t.Run(map[bool]string{true: "unnamed", false: "named"}[unnamed], func(t *testing.T) {
			conformance(t, unnamed)
		})
	}
}

func conformance(t *testing.T, unnamed bool) {
	sinktest.Run(t, sinktest.Target{
		New: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			dir := filepath.Join(t.TempDir(), "Maildir")
			s, err := New(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if unnamed && !s.unnamed {
				t.Skip("files without a name (O_TMPFILE) are not supported here")
			}
			s.unnamed = unnamed
			return s, func() [][]byte { return sinktest.Maildir(t, dir) }
		},
		Stored:  sinktest.LF,
		Dedupes: true,
		Faulty: func(t *testing.T, f sinktest.Fault) (sinks.Sink, func() [][]byte) {
			if f != sinktest.Unavailable {
				// A Maildir never rejects, does not retry within a
				// delivery, and cannot stall; a full disk (temporary) is
				// TestDiskFull, on a tmpfs.
				return nil, nil
			}
			dir := filepath.Join(t.TempDir(), "Maildir")
			s, err := New(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			s.unnamed = unnamed
			// tmp/ replaced by a file: no write can succeed until someone
			// repairs the Maildir (permission bits would not stop root).
			tmp := filepath.Join(dir, "tmp")
			if err := os.Remove(tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tmp, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return s, func() [][]byte { return sinktest.Maildir(t, dir) }
		},
	})
}
