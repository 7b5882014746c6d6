//go:build unix

package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/postfixtest"
)

// rejecting is a JSON receiver that rejects messages whose payload holds a
// marker, and can be down.
type rejecting struct {
	receiver
	mu     sync.Mutex
	marker string
}

func (rj *rejecting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rj.mu.Lock()
	marker := rj.marker
	rj.mu.Unlock()
	if marker != "" {
		var buf bytes.Buffer
		buf.ReadFrom(r.Body)
		if strings.Contains(buf.String(), marker) {
			http.Error(w, "unprocessable", http.StatusUnprocessableEntity)
			return
		}
		r.Body = readCloser{bytes.NewReader(buf.Bytes())}
	}
	rj.receiver.ServeHTTP(w, r)
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// TestFanOut: one account, three real sinks (a webhook, a Maildir, a
// Postfix relay). A sink down for a run gets its messages at the next run
// and only it does; nothing is deleted before all three have a message; a
// rejection by one sink does not hold back the others.
func TestFanOut(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	p := postfixtest.Start(t, postfixtest.Options{})
	hook := &rejecting{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	dir := t.TempDir()
	mdir := filepath.Join(dir, "Maildir")
	env := dovecotEnv(d, filepath.Join(dir, "data"), mdir,
		"POPHOOK_SINKS=archive,hook,relay", "POPHOOK_ACCOUNT_SUPPORT_SINKS=archive,hook,relay",
		"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL="+srv.URL, "POPHOOK_SINK_HOOK_BUDGET=1s",
		"POPHOOK_SINK_RELAY_TYPE=smtp", "POPHOOK_SINK_RELAY_HOST="+p.Host, "POPHOOK_SINK_RELAY_PORT="+strconv.Itoa(p.Port),
		"POPHOOK_SINK_RELAY_TLS_CA_FILE="+p.CAFile(), "POPHOOK_SINK_RELAY_FROM=pophook@pophook.test",
		"POPHOOK_SINK_RELAY_TO=tickets@pophook.test")
	relayed := func() int { p.WaitQueueEmpty(t, 30*time.Second); return len(p.Messages(t, "tickets@pophook.test")) }
	hooked := func() int { hook.receiver.mu.Lock(); defer hook.receiver.mu.Unlock(); return len(hook.byKey) }
	for i := range 3 {
		d.Deliver(t, "alice", []byte("Subject: fan "+strconv.Itoa(i)+"\nMessage-ID: <fan-"+strconv.Itoa(i)+"@x>\n\nbody\n"))
	}

	// Run 1: the webhook is down. The Maildir and the relay take all three,
	// nothing is deleted.
	hook.set(true)
	if out, code := runBin(t, env, "once"); code != 1 || !strings.Contains(out, "sink hook failed") {
		t.Fatalf("run 1: exit %d:\n%s", code, out)
	}
	if n := len(maildirIDs(t, mdir)); n != 3 || relayed() != 3 || hooked() != 0 || d.Count(t, "alice") != 3 {
		t.Fatalf("after run 1: maildir %d, relay %d, webhook %d, on server %d", n, relayed(), hooked(), d.Count(t, "alice"))
	}

	// Run 2: the webhook is back and rejects a fourth message. The first
	// three go to the webhook only and are deleted; the fourth reaches the
	// Maildir and the relay and stays on the server.
	hook.set(false)
	hook.mu.Lock()
	hook.marker = "fan 3"
	hook.mu.Unlock()
	d.Deliver(t, "alice", []byte("Subject: fan 3\nMessage-ID: <fan-3@x>\n\nbody\n"))
	out, code := runBin(t, env, "once")
	if code != 1 || !strings.Contains(out, "sink hook rejected it") {
		t.Fatalf("run 2: exit %d:\n%s", code, out)
	}
	if n := len(maildirIDs(t, mdir)); n != 4 || relayed() != 4 || hooked() != 3 {
		t.Errorf("after run 2: maildir %d (want 4), relay %d (want 4), webhook %d (want 3)", n, relayed(), hooked())
	}
	if n := d.Count(t, "alice"); n != 1 {
		t.Errorf("%d on the server after run 2, want only the rejected one", n)
	}
	hook.receiver.mu.Lock()
	defer hook.receiver.mu.Unlock()
	for k := range hook.byKey {
		if strings.HasSuffix(k, "#dup") {
			t.Errorf("the webhook got %s twice", strings.TrimSuffix(k, "#dup"))
		}
	}
}
