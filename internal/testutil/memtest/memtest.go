// Package memtest measures heap use in tests that bound memory, by
// sampling runtime statistics rather than timing anything.
package memtest

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// HeapPeak samples HeapInuse every few milliseconds until the returned
// function is called, and that function returns the highest value seen,
// including a last sample taken when it is called.
func HeapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peak.Load() {
			peak.Store(ms.HeapInuse)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			sample()
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		sample()
		return peak.Load()
	}
}
