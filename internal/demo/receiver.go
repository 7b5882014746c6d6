package demo

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// newSecret returns a fresh Standard Webhooks secret: "whsec_" and the
// base64 of 24 random bytes.
func newSecret() (string, error) {
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key), nil
}

// verify checks a Standard Webhooks signature the way any receiver would,
// from the specification rather than from pophook's own signing code:
// one of the "v1,<base64>" values of webhook-signature must be the
// HMAC-SHA256, keyed with the decoded secret, of id.timestamp.body, and
// the timestamp must be within five minutes of now. docs/receiver is the
// complete example for real receivers.
func verify(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return errors.New("the secret is not whsec_ followed by base64")
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("webhook-id, webhook-timestamp or webhook-signature missing")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not a Unix time", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("webhook-timestamp is %s off", d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(sigs) {
		version, value, _ := strings.Cut(sig, ",")
		got, err := base64.StdEncoding.DecodeString(value)
		if version == "v1" && err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no valid signature")
}

// payload is the part of the JSON payload (docs/webhook.md) the demo shows.
type payload struct {
	Type string `json:"type"`
	Data struct {
		ID                string   `json:"id"`
		MessageID         string   `json:"message_id"`
		Subject           string   `json:"subject"`
		From              *address `json:"from"`
		OriginalRecipient string   `json:"original_recipient"`
		MailboxHash       string   `json:"mailbox_hash"`
		Text              string   `json:"text"`
		TextFromHTML      bool     `json:"text_from_html"`
		StrippedText      string   `json:"stripped_text"`
		StrippedSignature string   `json:"stripped_signature"`
		Attachments       []struct {
			Filename string `json:"filename"`
			Size     int64  `json:"size"`
		} `json:"attachments"`
		AutoSubmitted bool     `json:"auto_submitted"`
		ParseErrors   []string `json:"parse_errors"`
	} `json:"data"`
}

type address struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

func (a *address) String() string {
	switch {
	case a == nil:
		return "(no sender)"
	case a.Name == "":
		return "<" + a.Address + ">"
	}
	return a.Name + " <" + a.Address + ">"
}

// stripped reports whether stripped_text left something out of text: a
// quoted history or a signature.
func (p *payload) stripped() bool {
	return p.Data.StrippedText != strings.TrimSpace(p.Data.Text)
}

// receiver stands in for a help desk: it verifies every request, keeps
// every payload, counts every delivery by Idempotency-Key and by
// Message-ID (repeats included, so the demo can prove there were none),
// prints a line per message and answers 204.
type receiver struct {
	secret string
	out    io.Writer
	// reject, when set, makes the receiver refuse (422) the message with
	// this Message-ID: the demo's own checks must then fail.
	reject string

	mu       sync.Mutex
	requests int            // every POST, whatever the answer
	byKey    map[string]int // verified deliveries by Idempotency-Key
	byMsgID  map[string]int // verified deliveries by data.message_id
	payloads []*payload     // in order of arrival
	errs     []string       // requests refused, and why
}

func newReceiver(secret string, out io.Writer, reject string) *receiver {
	return &receiver{secret: secret, out: out, reject: reject, byKey: map[string]int{}, byMsgID: map[string]int{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	if r.Method != http.MethodPost || err != nil {
		rc.refuse(w, http.StatusBadRequest, "a request that is not a readable POST")
		return
	}
	if err := verify(rc.secret, r.Header, body, time.Now()); err != nil {
		rc.refuse(w, http.StatusUnauthorized, "signature: "+err.Error())
		return
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil || p.Type != "message.received" {
		rc.refuse(w, http.StatusBadRequest, fmt.Sprintf("not a message.received payload (%v)", err))
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" || key != r.Header.Get("webhook-id") || key != p.Data.ID {
		rc.refuse(w, http.StatusBadRequest, fmt.Sprintf("Idempotency-Key %q, webhook-id %q and data.id %q differ", key, r.Header.Get("webhook-id"), p.Data.ID))
		return
	}
	if rc.reject != "" && p.Data.MessageID == rc.reject {
		fmt.Fprintf(rc.out, "       refused  %q (the receiver was told to)\n", p.Data.Subject)
		rc.refuse(w, http.StatusUnprocessableEntity, "") // not the receiver's fault: the demo's
		return
	}
	rc.byKey[key]++
	rc.byMsgID[p.Data.MessageID]++
	rc.payloads = append(rc.payloads, &p)
	fmt.Fprintf(rc.out, "  %3d  signature ok  %q  from %s%s\n", len(rc.payloads), p.Data.Subject, p.Data.From, tags(&p))
	w.WriteHeader(http.StatusNoContent)
}

// refuse answers an error and, with a reason, remembers it.
func (rc *receiver) refuse(w http.ResponseWriter, code int, reason string) {
	if reason != "" {
		rc.errs = append(rc.errs, reason)
	}
	http.Error(w, http.StatusText(code), code)
}

// tags lists what is worth noticing in a payload, for its line.
func tags(p *payload) string {
	var t []string
	if n := len(p.Data.Attachments); n > 0 {
		names := make([]string, n)
		for i, a := range p.Data.Attachments {
			names[i] = fmt.Sprintf("%s, %d bytes", a.Filename, a.Size)
		}
		t = append(t, "attached: "+strings.Join(names, "; "))
	}
	if p.Data.MailboxHash != "" {
		t = append(t, "for "+p.Data.OriginalRecipient)
	}
	if p.Data.TextFromHTML {
		t = append(t, "html only")
	}
	if p.stripped() {
		t = append(t, "stripped")
	}
	if p.Data.AutoSubmitted {
		t = append(t, "auto-submitted")
	}
	if n := len(p.Data.ParseErrors); n > 0 {
		t = append(t, plural(n, "parse error"))
	}
	if len(t) == 0 {
		return ""
	}
	return "  [" + strings.Join(t, "; ") + "]"
}

// tally is a copy of what the receiver counted.
type tally struct {
	requests int
	byKey    map[string]int
	byMsgID  map[string]int
	payloads []*payload
	errs     []string
}

func (rc *receiver) tally() tally {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	t := tally{requests: rc.requests, byKey: map[string]int{}, byMsgID: map[string]int{},
		payloads: append([]*payload(nil), rc.payloads...), errs: append([]string(nil), rc.errs...)}
	for k, v := range rc.byKey {
		t.byKey[k] = v
	}
	for k, v := range rc.byMsgID {
		t.byMsgID[k] = v
	}
	return t
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
