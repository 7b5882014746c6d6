package maildir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/sinks/sinktest"
)

func TestConformance(t *testing.T) {
	sinktest.Run(t, sinktest.Target{
		New: func(t *testing.T) (sinks.Sink, func() [][]byte) {
			dir := filepath.Join(t.TempDir(), "Maildir")
			s, err := New(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
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
