package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pophook/pophook/worker"
)

// progress shows, on a terminal, how far each account's fetch has got:
// one line rewritten in place, at most a few times a second, so a first
// sync of thousands of messages does not look hung. Off a terminal it
// shows nothing: the log lines say what happened.
type progress struct {
	w    io.Writer
	mu   sync.Mutex
	acct map[string]*fetchProgress
	last time.Time
	wide int // width of the last line, to blank it
}

type fetchProgress struct {
	count, done int
	size, bytes int64
}

// newProgress returns nil when w is not a terminal.
func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &progress{w: w, acct: map[string]*fetchProgress{}}
}

// observe is a job event hook.
func (p *progress) observe(e worker.Event) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case worker.EventPlanned:
		p.acct[e.Account] = &fetchProgress{count: e.Count, size: e.Size}
	case worker.EventFetched:
		if a := p.acct[e.Account]; a != nil {
			a.done++
			a.bytes += e.Size
		}
	case worker.EventRunDone:
		delete(p.acct, e.Account)
	default:
		return
	}
	if e.Kind == worker.EventFetched && time.Since(p.last) < 250*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.draw()
}

func (p *progress) draw() {
	var parts []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range p.acct {
			if !yield(k) {
				return
			}
		}
	}) {
		a := p.acct[name]
		parts = append(parts, fmt.Sprintf("%s %d/%d messages, %s/%s", name, a.done, a.count, mib(a.bytes), mib(a.size)))
	}
	line := strings.Join(parts, " · ")
	pad := max(0, p.wide-len(line))
	fmt.Fprintf(p.w, "\r%s%s\r", line, strings.Repeat(" ", pad))
	p.wide = len(line)
}

// finish blanks the line.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wide > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.wide))
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
