package receiver

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testSecret is the example secret of .env.example; its key is the base64
// after "whsec_".
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// sign builds the signature straight from the Standard Webhooks spec, not
// from the code under test: base64(HMAC-SHA256(key, id.timestamp.body)).
func sign(t *testing.T, secret, id string, timestamp int64, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(timestamp, 10) + "." + string(body)))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// request is a delivery as pophook sends it, signed with secret at time at.
func request(t *testing.T, secret, id string, at time.Time, body []byte) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/hooks/mail", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "pophook/test")
	r.Header.Set("Idempotency-Key", id)
	r.Header.Set("webhook-id", id)
	r.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	r.Header.Set("webhook-signature", sign(t, secret, id, at.Unix(), body))
	return r
}

// recorder collects what the handler stored.
type recorder struct {
	mu     sync.Mutex
	stored map[string][][]byte
	fail   error // returned by store while set
}

func (s *recorder) store(id string, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.stored == nil {
		s.stored = make(map[string][][]byte)
	}
	s.stored[id] = append(s.stored[id], payload)
	return nil
}

func (s *recorder) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.stored[id])
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

const id1 = "ph1_30d2f09625d29cfe21c34ac141aec2260ff9b971"

var body1 = []byte(`{"type":"message.received","timestamp":"2026-11-27T05:00:07Z","data":{"id":"` + id1 + `"}}`)

func TestVerifyAccepts(t *testing.T) {
	now := time.Now()
	r := request(t, testSecret, id1, now, body1)
	if err := Verify(testSecret, r.Header, body1, now); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	// Within the tolerance either way (clock skew between the hosts).
	for _, skew := range []time.Duration{-Tolerance + time.Second, Tolerance - time.Second} {
		if err := Verify(testSecret, r.Header, body1, now.Add(skew)); err != nil {
			t.Errorf("skew %s refused: %v", skew, err)
		}
	}
}

func TestVerifySeveralSignatures(t *testing.T) {
	now := time.Now()
	r := request(t, testSecret, id1, now, body1)
	valid := r.Header.Get("webhook-signature")
	other := sign(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("another key")), id1, now.Unix(), body1)
	for _, header := range []string{
		other + " " + valid,
		valid + " " + other,
		"v1a,c29tZXRoaW5nIGVsc2U= " + valid, // another scheme: skipped
		"v1,not-base64!! " + valid,
	} {
		r.Header.Set("webhook-signature", header)
		if err := Verify(testSecret, r.Header, body1, now); err != nil {
			t.Errorf("%q: %v", header, err)
		}
	}
	r.Header.Set("webhook-signature", other+" v2,"+strings.TrimPrefix(valid, "v1,"))
	if err := Verify(testSecret, r.Header, body1, now); !errors.Is(err, ErrSignature) {
		t.Errorf("no valid v1 signature: got %v, want ErrSignature", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	now := time.Now()
	wrongSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("not the secret"))
	tests := []struct {
		name string
		req  *http.Request
		body []byte
		now  time.Time
		want error
	}{
		{"tampered body", request(t, testSecret, id1, now, body1), append(bytes.Clone(body1), ' '), now, ErrSignature},
		{"wrong secret", request(t, wrongSecret, id1, now, body1), body1, now, ErrSignature},
		{"old timestamp", request(t, testSecret, id1, now.Add(-Tolerance-time.Second), body1), body1, now, ErrTimestamp},
		{"future timestamp", request(t, testSecret, id1, now.Add(Tolerance+time.Second), body1), body1, now, ErrTimestamp},
	}
	for _, tt := range tests {
		if err := Verify(testSecret, tt.req.Header, tt.body, tt.now); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}

	// The id and the timestamp are signed too.
	r := request(t, testSecret, id1, now, body1)
	r.Header.Set("webhook-id", "ph1_another")
	if err := Verify(testSecret, r.Header, body1, now); !errors.Is(err, ErrSignature) {
		t.Errorf("changed id: got %v", err)
	}
	r = request(t, testSecret, id1, now, body1)
	r.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix()+1, 10))
	if err := Verify(testSecret, r.Header, body1, now); !errors.Is(err, ErrSignature) {
		t.Errorf("changed timestamp: got %v", err)
	}
	r.Header.Set("webhook-timestamp", "yesterday")
	if err := Verify(testSecret, r.Header, body1, now); !errors.Is(err, ErrTimestamp) {
		t.Errorf("unreadable timestamp: got %v", err)
	}

	for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		r := request(t, testSecret, id1, now, body1)
		r.Header.Del(name)
		if err := Verify(testSecret, r.Header, body1, now); !errors.Is(err, ErrHeaders) {
			t.Errorf("without %s: got %v, want ErrHeaders", name, err)
		}
	}

	for _, secret := range []string{"", "whsec_", "whsec_%%%"} {
		if err := Verify(secret, request(t, testSecret, id1, now, body1).Header, body1, now); !errors.Is(err, ErrSecret) {
			t.Errorf("secret %q: got %v, want ErrSecret", secret, err)
		}
	}
}

// TestVerifyDocumentedVector checks the test vector of docs/webhook.md:
// example-payload.json, as it is on disk, signed with the example secret.
func TestVerifyDocumentedVector(t *testing.T) {
	body, err := os.ReadFile("../example-payload.json")
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", vectorID)
	h.Set("webhook-timestamp", vectorTimestamp)
	h.Set("webhook-signature", vectorSignature)
	sec, _ := strconv.ParseInt(vectorTimestamp, 10, 64)
	if err := Verify(testSecret, h, body, time.Unix(sec, 0).Add(time.Minute)); err != nil {
		t.Fatalf("documented test vector: %v", err)
	}
	if got := sign(t, testSecret, vectorID, sec, body); got != vectorSignature {
		t.Fatalf("documented signature %s, computed %s", vectorSignature, got)
	}
}

const (
	vectorID        = "ph1_30d2f09625d29cfe21c34ac141aec2260ff9b971"
	vectorTimestamp = "1795755607" // 2026-11-27T05:00:07Z, the payload's timestamp
	vectorSignature = "v1,AhpHpBwGJs+GV391HJkW6Gcjw7l2ziVuOpXZN82WWWQ="
)

func TestHandlerStores(t *testing.T) {
	var rec recorder
	h := Handler(testSecret, rec.store)
	w := serve(h, request(t, testSecret, id1, time.Now(), body1))
	if w.Code/100 != 2 {
		t.Fatalf("valid delivery: status %d %s", w.Code, w.Body)
	}
	if rec.count(id1) != 1 || !bytes.Equal(rec.stored[id1][0], body1) {
		t.Fatalf("stored %q, want the body once", rec.stored[id1])
	}
}

func TestHandlerRejects(t *testing.T) {
	var rec recorder
	h := Handler(testSecret, rec.store)
	now := time.Now()
	wrongSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("not the secret"))

	tampered := request(t, testSecret, id1, now, body1)
	tampered.Body = io.NopCloser(bytes.NewReader(append(bytes.Clone(body1), '!')))

	mismatch := request(t, testSecret, id1, now, body1)
	mismatch.Header.Set("Idempotency-Key", "ph1_another")
	noKey := request(t, testSecret, id1, now, body1)
	noKey.Header.Del("Idempotency-Key")
	unsigned := request(t, testSecret, id1, now, body1)
	unsigned.Header.Del("webhook-signature")
	get := request(t, testSecret, id1, now, body1)
	get.Method = http.MethodGet

	tests := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"tampered body", tampered, http.StatusUnauthorized},
		{"wrong secret", request(t, wrongSecret, id1, now, body1), http.StatusUnauthorized},
		{"old timestamp", request(t, testSecret, id1, now.Add(-10*time.Minute), body1), http.StatusUnauthorized},
		{"unsigned", unsigned, http.StatusUnauthorized},
		{"Idempotency-Key differs", mismatch, http.StatusBadRequest},
		{"Idempotency-Key missing", noKey, http.StatusBadRequest},
		{"GET", get, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		if w := serve(h, tt.req); w.Code != tt.want {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, w.Code, tt.want, strings.TrimSpace(w.Body.String()))
		}
	}
	if n := rec.count(id1); n != 0 {
		t.Errorf("rejected requests stored %d times", n)
	}
}

func TestHandlerTooLarge(t *testing.T) {
	var rec recorder
	h := newHandler(testSecret, rec.store, int64(len(body1)-1))
	if w := serve(h, request(t, testSecret, id1, time.Now(), body1)); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", w.Code)
	}
	h = newHandler(testSecret, rec.store, int64(len(body1)))
	if w := serve(h, request(t, testSecret, id1, time.Now(), body1)); w.Code/100 != 2 {
		t.Fatalf("body at the cap: status %d", w.Code)
	}
}

func TestHandlerDedupes(t *testing.T) {
	var rec recorder
	h := Handler(testSecret, rec.store)
	// A repeat after a crash is signed afresh (new timestamp), same id.
	first := time.Now().Add(-time.Minute)
	for i, at := range []time.Time{first, first, time.Now()} {
		if w := serve(h, request(t, testSecret, id1, at, body1)); w.Code/100 != 2 {
			t.Fatalf("delivery %d: status %d, want 2xx for a repeat too", i, w.Code)
		}
	}
	if n := rec.count(id1); n != 1 {
		t.Fatalf("stored %d times, want once", n)
	}
	// Another id is another message.
	const id2 = "ph1_0000000000000000000000000000000000000002"
	if w := serve(h, request(t, testSecret, id2, time.Now(), body1)); w.Code/100 != 2 || rec.count(id2) != 1 {
		t.Fatalf("second message: status %d, stored %d", w.Code, rec.count(id2))
	}
}

func TestHandlerStoreFailure(t *testing.T) {
	rec := recorder{fail: errors.New("disk full")}
	h := Handler(testSecret, rec.store)
	if w := serve(h, request(t, testSecret, id1, time.Now(), body1)); w.Code/100 != 5 {
		t.Fatalf("store failed: status %d, want 5xx so that pophook retries", w.Code)
	}
	// The failure is not remembered as stored: the retry goes through.
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	if w := serve(h, request(t, testSecret, id1, time.Now(), body1)); w.Code/100 != 2 {
		t.Fatalf("retry: status %d", w.Code)
	}
	if n := rec.count(id1); n != 1 {
		t.Fatalf("stored %d times, want once", n)
	}
}

func TestHandlerStorePanics(t *testing.T) {
	calls := 0
	h := Handler(testSecret, func(string, []byte) error {
		calls++
		if calls == 1 {
			panic("store crashed")
		}
		return nil
	})
	func() {
		defer func() { _ = recover() }() // net/http would drop the connection
		serve(h, request(t, testSecret, id1, time.Now(), body1))
	}()
	if w := serve(h, request(t, testSecret, id1, time.Now(), body1)); w.Code/100 != 2 || calls != 2 {
		t.Fatalf("after a panic in store: status %d, calls %d; want the retry stored", w.Code, calls)
	}
}

// While one request stores a delivery, a concurrent repeat of it is told
// to come back (503, which pophook retries) instead of storing it twice.
func TestHandlerConcurrentRepeat(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var rec recorder
	h := Handler(testSecret, func(id string, payload []byte) error {
		close(entered)
		<-release
		return rec.store(id, payload)
	})
	srv := httptest.NewServer(h)
	defer srv.Close()

	post := func() (int, error) {
		r := request(t, testSecret, id1, time.Now(), body1)
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/hooks/mail", bytes.NewReader(body1))
		if err != nil {
			return 0, err
		}
		req.Header = r.Header
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	first := make(chan int)
	go func() {
		code, err := post()
		if err != nil {
			t.Error(err)
		}
		first <- code
	}()
	<-entered
	code, err := post()
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable {
		t.Errorf("concurrent repeat: status %d, want 503", code)
	}
	close(release)
	if code := <-first; code/100 != 2 {
		t.Errorf("first delivery: status %d", code)
	}
	if n := rec.count(id1); n != 1 {
		t.Errorf("stored %d times, want once", n)
	}
}

func TestHandlerPanicsOnBadConfig(t *testing.T) {
	for _, tt := range []struct {
		secret string
		store  func(string, []byte) error
	}{
		{"", func(string, []byte) error { return nil }},
		{"whsec_!!", func(string, []byte) error { return nil }},
		{testSecret, nil},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Handler(%q, store==nil: %v) did not panic", tt.secret, tt.store == nil)
				}
			}()
			Handler(tt.secret, tt.store)
		}()
	}
}

// TestHandlerFormAnswersOK: pophook counts a 2xx to format form as
// delivered only when the body starts with "ok".
func TestHandlerFormAnswersOK(t *testing.T) {
	var rec recorder
	h := Handler(testSecret, rec.store)
	for i := 0; i < 2; i++ { // the delivery, then a repeat
		r := request(t, testSecret, id1, time.Now(), body1)
		r.Header.Set("Content-Type", "multipart/form-data; boundary=xyz")
		w := serve(h, r)
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), "ok") {
			t.Fatalf("attempt %d: %d %q, want 200 and a body starting with ok", i+1, w.Code, w.Body)
		}
	}
	if rec.count(id1) != 1 {
		t.Errorf("stored %d times, want once", rec.count(id1))
	}
}
