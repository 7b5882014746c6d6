// Package receiver is a small webhook receiver for pophook: it checks the
// Standard Webhooks signature, drops repeats by their idempotency key and
// answers 2xx only once the message is stored. It is the example of
// docs/webhook.md, uses only the standard library, and is meant to be read
// and copied.
package receiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Tolerance is how far webhook-timestamp may be from the receiver's clock,
// in either direction, before a request is refused as a possible replay.
const Tolerance = 5 * time.Minute

// MaxBodyBytes caps the body Handler reads. A JSON payload is larger than
// the message it carries (attachments and raw are base64), so leave room
// above POPHOOK_ACCOUNT_<NAME>_MAX_MESSAGE_SIZE (default 64 MiB).
const MaxBodyBytes = 256 << 20

// Errors returned by Verify.
var (
	ErrSecret    = errors.New(`receiver: the secret is not "whsec_" followed by base64`)
	ErrHeaders   = errors.New("receiver: webhook-id, webhook-timestamp or webhook-signature missing")
	ErrTimestamp = errors.New("receiver: webhook-timestamp unreadable or too far from now")
	ErrSignature = errors.New("receiver: no valid signature")
)

// Verify checks the Standard Webhooks signature of one request: body must
// be the request body exactly as received, before any parsing. It returns
// nil when one of the "v1,<base64>" signatures in webhook-signature is the
// HMAC-SHA256, keyed with the decoded secret, of
// webhook-id + "." + webhook-timestamp + "." + body, and the timestamp is
// within Tolerance of now.
func Verify(secret string, header http.Header, body []byte, now time.Time) error {
	key, err := decodeSecret(secret)
	if err != nil {
		return err
	}

	id := header.Get("webhook-id")
	timestamp := header.Get("webhook-timestamp")
	signatures := header.Get("webhook-signature")
	if id == "" || timestamp == "" || signatures == "" {
		return ErrHeaders
	}

	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrTimestamp, timestamp)
	}
	if age := now.Sub(time.Unix(seconds, 0)); age > Tolerance || age < -Tolerance {
		return fmt.Errorf("%w: %s off", ErrTimestamp, age)
	}

	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	want := mac.Sum(nil)

	// Several signatures, separated by spaces, appear while a secret is
	// rotated; other versions than v1 are for other schemes: skip them.
	for _, signature := range strings.Fields(signatures) {
		version, value, _ := strings.Cut(signature, ",")
		if version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrSignature
}

// decodeSecret returns the HMAC key of a Standard Webhooks secret: the
// bytes whose base64 follows "whsec_" (not the text of the secret).
func decodeSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return nil, ErrSecret
	}
	return key, nil
}

// Handler returns an http.Handler for pophook's webhook sink, whatever its
// format (json, raw or form): it reads the body (at most MaxBodyBytes),
// verifies it with secret, and calls store with the delivery id and the
// body, once per id. It answers
//
//   - 204 when store succeeded, and again for every repeat of that id
//     (200 with the body "ok" for format form, which pophook reads the
//     way Request Tracker's mail gateway answers: only "ok" is a receipt);
//   - 401 when the signature does not verify, 400 for a malformed request,
//     413 for a body over the cap, 405 for a method other than POST
//     (pophook keeps the message and shows the rejection in its logs);
//   - 500 when store failed, and 503 while the same id is being stored by
//     another request (pophook tries again).
//
// The ids of stored messages are kept in memory only, so a restart forgets
// them: a production receiver should also keep the id with the message it
// stores (a unique key) and treat "already there" as success.
//
// Handler panics if secret is not a Standard Webhooks secret or store is
// nil, so a configuration mistake shows at start-up.
func Handler(secret string, store func(id string, payload []byte) error) http.Handler {
	return newHandler(secret, store, MaxBodyBytes)
}

func newHandler(secret string, store func(id string, payload []byte) error, maxBody int64) *handler {
	if _, err := decodeSecret(secret); err != nil {
		panic(err)
	}
	if store == nil {
		panic("receiver: Handler needs a store function")
	}
	return &handler{secret: secret, store: store, maxBody: maxBody, ids: make(map[string]bool)}
}

type handler struct {
	secret  string
	store   func(id string, payload []byte) error
	maxBody int64

	mu  sync.Mutex
	ids map[string]bool // id -> true once stored, false while being stored
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	case err != nil:
		http.Error(w, "cannot read the body", http.StatusBadRequest)
		return
	}

	if err := Verify(h.secret, r.Header, body, time.Now()); err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	// webhook-id is covered by the signature; pophook sends the same value
	// as Idempotency-Key. Dedupe on the signed one.
	id := r.Header.Get("webhook-id")
	if r.Header.Get("Idempotency-Key") != id {
		http.Error(w, "Idempotency-Key differs from webhook-id", http.StatusBadRequest)
		return
	}

	h.mu.Lock()
	stored, seen := h.ids[id]
	if !seen {
		h.ids[id] = false // being stored
	}
	h.mu.Unlock()
	switch {
	case stored: // a repeat: acknowledge it again, store nothing
		acknowledge(w, r)
		return
	case seen: // the same delivery is being stored right now
		w.Header().Set("Retry-After", "1")
		http.Error(w, "this delivery is being stored", http.StatusServiceUnavailable)
		return
	}

	if err := h.storeOnce(id, body); err != nil {
		http.Error(w, "cannot store the message", http.StatusInternalServerError)
		return
	}
	acknowledge(w, r)
}

// acknowledge answers a delivery that is stored. With format form, pophook
// takes a 2xx for a receipt only when the body starts with "ok" (the
// convention of mail gateways); the other formats want no body.
func acknowledge(w http.ResponseWriter, r *http.Request) {
	if mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mediaType == "multipart/form-data" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// storeOnce calls store and records the outcome for id: stored, or
// forgotten so that pophook's next attempt is stored afresh (also when
// store panics).
func (h *handler) storeOnce(id string, payload []byte) error {
	ok := false
	defer func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if ok {
			h.ids[id] = true
		} else {
			delete(h.ids, id)
		}
	}()
	if err := h.store(id, payload); err != nil {
		return err
	}
	ok = true
	return nil
}
