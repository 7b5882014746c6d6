package webhook

import (
	"context"
	"testing"
)

// BenchmarkStageJSON stages the json request body of a small message, as
// every delivery does before its first attempt.
func BenchmarkStageJSON(b *testing.B) {
	s, err := New(Options{URL: "http://127.0.0.1:1/", Format: FormatJSON, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	m := message("k", sample)
	b.SetBytes(m.Size)
	b.ReportAllocs()
	for b.Loop() {
		_, _, _, cleanup, err := s.stage(context.Background(), m)
		if err != nil {
			b.Fatal(err)
		}
		cleanup()
	}
}
