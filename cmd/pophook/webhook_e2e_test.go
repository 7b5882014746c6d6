package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/testcorpus"
)

// receiver is a real HTTP server standing in for a help desk: it stores
// each payload by Idempotency-Key and counts every request.
type receiver struct {
	mu       sync.Mutex
	requests int
	byKey    map[string][]byte
	down     bool
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	if rc.down {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	}
	if err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if rc.byKey == nil {
		rc.byKey = map[string][]byte{}
	}
	if _, dup := rc.byKey[key]; dup {
		rc.byKey[key+"#dup"] = body
	} else {
		rc.byKey[key] = body
	}
	w.WriteHeader(http.StatusAccepted)
}

func (rc *receiver) set(down bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.down = down
}

// TestDovecotToWebhook: Dovecot -> pophook once -> webhook. With the
// receiver down the messages stay on the server; once it is back each is
// delivered exactly once, as JSON whose sha256 matches the message.
func TestDovecotToWebhook(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	subjects := []string{"hello", "=?GBK?B?1tDOxLLiytQ=?=", "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?="}
	want := []string{"hello", "中文测试", "日本語"}
	digests := map[string]bool{}
	for i, s := range subjects {
		msg := []byte(fmt.Sprintf("From: Sender <s@example.org>\nTo: support@example.com\nSubject: %s\nMessage-ID: <w%d@example.org>\n\nbody %d\n", s, i, i))
		d.Deliver(t, "alice", msg)
		sum := sha256.Sum256(testcorpus.CRLF(msg)) // as Dovecot serves it
		digests[hex.EncodeToString(sum[:])] = true
	}
	rc := &receiver{down: true}
	srv := httptest.NewUnstartedServer(rc)
	srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_SINKS=hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=hook",
		"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL="+srv.URL+"/hooks/mail",
		"POPHOOK_SINK_HOOK_TIMEOUT=5s", "POPHOOK_SINK_HOOK_BUDGET=2s")
	out, code := runBin(t, env, "once")
	if code != 1 || !strings.Contains(out, "503") {
		t.Fatalf("with the receiver down: exit %d, want 1 naming the 503:\n%s", code, out)
	}
	if n := d.Count(t, "alice"); n != 3 {
		t.Fatalf("%d on the server with the receiver down, want 3", n)
	}

	rc.set(false)
	out, code = runBin(t, env, "once")
	if code != 0 {
		t.Fatalf("receiver back: exit %d:\n%s", code, out)
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Errorf("%d left on the server", n)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.byKey) != 3 {
		t.Fatalf("receiver stored %d payloads (keys %v), want 3 distinct", len(rc.byKey), keys(rc.byKey))
	}
	got := map[string]bool{}
	for key, body := range rc.byKey {
		var p struct {
			Type string `json:"type"`
			Data struct {
				ID      string `json:"id"`
				Account string `json:"account"`
				Size    int64  `json:"size"`
				SHA256  string `json:"sha256"`
				Subject string `json:"subject"`
				Raw     string `json:"raw"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatalf("payload is not JSON: %v", err)
		}
		if p.Type != "message.received" || p.Data.ID != key || p.Data.Account != "support" {
			t.Errorf("payload header fields: %+v", p)
		}
		got[p.Data.Subject] = true
		if !digests[p.Data.SHA256] {
			t.Errorf("payload sha256 %s matches no message as fetched", p.Data.SHA256)
		}
	}
	for _, s := range want {
		if !got[s] {
			t.Errorf("no payload with subject %q (got %v)", s, got)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestWebhookPermanentRejectionKeepsMessage: a 422 for one message is a
// permanent rejection: that message stays on the server, the others are
// delivered and deleted, and the next run does not post it again at once.
func TestWebhookPermanentRejectionKeepsMessage(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: fine\nMessage-ID: <ok1@x>\n\nok\n"))
	d.Deliver(t, "alice", []byte("Subject: poison\nMessage-ID: <bad@x>\n\nno\n"))
	d.Deliver(t, "alice", []byte("Subject: fine too\nMessage-ID: <ok2@x>\n\nok\n"))
	var mu sync.Mutex
	posts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		var p struct {
			Data struct {
				Subject string `json:"subject"`
			} `json:"data"`
		}
		json.Unmarshal(body, &p)
		posts[p.Data.Subject]++
		if p.Data.Subject == "poison" {
			http.Error(w, "unprocessable: no ticket for you", http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_SINKS=hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=hook",
		"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL="+srv.URL)
	for run := 1; run <= 2; run++ {
		out, code := runBin(t, env, "once")
		if code != 1 || !strings.Contains(out, "422") {
			t.Fatalf("run %d: exit %d, want 1 naming the 422:\n%s", run, code, out)
		}
		if n := d.Count(t, "alice"); n != 1 {
			t.Fatalf("run %d: %d on the server, want the rejected one only", run, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if posts["poison"] != 1 || posts["fine"] != 1 || posts["fine too"] != 1 {
		t.Errorf("posts %v: want each once (the rejected one waits for its slow retry)", posts)
	}
}
