package pop3_test

import (
	"context"
	"io"
	"runtime"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/worker/pop3"
)

// BenchmarkDovecotRetr fetches a few hundred messages of mixed sizes from
// a local Dovecot over TLS, pipelined and lock-step, in the same run so
// the two can be compared. It reports MB/s and allocations per message.
//
//	go test ./worker/pop3/ -run '^$' -bench DovecotRetr -benchmem
func BenchmarkDovecotRetr(b *testing.B) {
	d := dovecottest.Start(b, dovecottest.Options{})
	deliverMixed(b, d, 300)
	for _, mode := range []struct {
		name      string
		pipelined bool
	}{{"pipelined", true}, {"lockstep", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var msgs int
			var total int64
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				c := dovecotLogin(b, d, pop3.TLSImplicit, pop3.MechPlain, func(o *pop3.Options) { o.DisablePipelining = !mode.pipelined })
				list, err := c.Scan(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				nums := make([]int, len(list))
				for i, m := range list {
					nums[i] = m.Num
				}
				err = c.RetrEach(context.Background(), nums, func(_ int, body io.Reader, err error) error {
					if err != nil {
						return err
					}
					n, err := io.Copy(io.Discard, body)
					total += n
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				if c.Pipelined() != mode.pipelined {
					b.Fatalf("pipelined = %v", c.Pipelined())
				}
				msgs += len(nums)
				c.Quit(context.Background())
			}
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(msgs), "allocs/msg")
			b.SetBytes(total / int64(b.N))
			b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
