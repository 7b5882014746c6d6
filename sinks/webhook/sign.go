package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// sign sets the Standard Webhooks headers for one attempt: webhook-id (the
// idempotency key, the same on every attempt), webhook-timestamp (now, in
// Unix seconds) and webhook-signature, "v1," + base64 of HMAC-SHA256 over
// "id.timestamp.body". The body is streamed from the staged file or the
// spool, never held in memory. Without a secret it does nothing.
func (d *delivery) sign(h http.Header) error {
	if d.creds.key == nil {
		return nil
	}
	ts := strconv.FormatInt(d.now().Unix(), 10)
	mac := hmac.New(sha256.New, d.creds.key)
	io.WriteString(mac, d.msg.Key+"."+ts+".")
	if _, err := io.Copy(mac, io.NewSectionReader(d.body, 0, d.size)); err != nil {
		return fmt.Errorf("webhook %s: reading the request body to sign it: %w", d.shown, err)
	}
	h.Set("Webhook-Id", d.msg.Key)
	h.Set("Webhook-Timestamp", ts)
	h.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return nil
}

// resign signs a retry afresh (retryablehttp's PrepareRetry): the request
// is a shallow copy of the previous attempt's, whose header map the
// transport may still hold, so the headers are copied first.
func (d *delivery) resign(req *http.Request) error {
	req.Header = req.Header.Clone()
	return d.sign(req.Header)
}
