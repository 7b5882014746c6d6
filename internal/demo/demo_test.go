package demo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pophook/pophook/worker"
)

// runDemo runs the demo into a buffer and returns its output.
func runDemo(t *testing.T, opts Options) (string, error) {
	t.Helper()
	var buf bytes.Buffer
	start := time.Now()
	err := Run(context.Background(), &buf, opts)
	t.Logf("Run took %s", time.Since(start).Round(time.Millisecond))
	return buf.String(), err
}

// dataDir is the temporary data dir the output names.
func dataDir(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ledger +(.+)/ledger\.db$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output names no ledger:\n%s", out)
	}
	return m[1]
}

func TestRun(t *testing.T) {
	out, err := runDemo(t, Options{Version: "1.2.3"})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	if !utf8.ValidString(out) || strings.ContainsRune(out, utf8.RuneError) {
		t.Errorf("the output is not clean UTF-8:\n%s", out)
	}
	// Every subject and sender, decoded from GBK, ISO-2022-JP, Q and
	// quoted-printable, on a line of its own that the signature verified.
	for _, want := range []string{
		`"Order #10482 has not arrived yet"  from Jane Cooper <jane.cooper@example.com>`,
		`"关于十一月发票抬头的问题"  from 王芳 <wangfang@example.cn>`,
		`"お見積もりのお願い（年間サポート契約）"  from 山田 太郎 <yamada@example.jp>`,
		`"Invoice INV-2026-0042 for November"  from Northwind Supplies Accounts <accounts@northwind.example.com>  [attached: INV-2026-0042.pdf, 830 bytes]`,
		`"Automatic reply: [Ticket #4471] Your replacement is on its way"  from Tom Becker <tom.becker@example.com>  [auto-submitted]`,
		`"Scanned document from OFFICE-MFP-3F"  from OFFICE-MFP-3F <scanner@office.example.com>  [attached: SCAN0001.pdf, 228 bytes; 2 parse errors]`,
		`"Re: [Ticket #4468] Password reset link expired"  from Priya Raman <priya.raman@example.com>  [stripped]`,
		`"November product updates: faster exports, dark mode"  from Example Cloud News <news@example.com>  [html only; auto-submitted]`,
		`"Charged twice for invoice INV-2026-0038"  from Marco Rossi <marco@studio-rossi.example.com>  [for support+billing@example.com]`,
		`"Feature request: export tickets as CSV"  from Lena Fischer <lena.fischer@example.com>` + "\n",
		`"Follow-up: onboarding call on Thursday"  from José Álvarez <jose.alvarez@example.com>` + "\n",
		`"Re: [Ticket #4471] Your replacement is on its way"  from Chen Wei <chen.wei@example.cn>  [stripped]`,
	} {
		if !strings.Contains(out, "  signature ok  "+want) {
			t.Errorf("no line\n  signature ok  %s\nin\n%s", want, out)
		}
	}
	for _, want := range []string{
		"fetched 12, delivered 12 in ",
		"then the connection dropped at QUIT, as if pophook had been killed there",
		"so all 12 are still on the server.",
		"the receiver has 12 messages, the Maildir 12 files",
		"Second pass: the same job again, with the same ledger. It knows what was delivered.\n  fetched 0, delivered 0, deleted 12; the receiver got 0 new requests, the Maildir holds 12 files",
		"      | Thanks, the new link worked and I'm back in. You can close the ticket.\n      |\n      | Priya\n",
		"      - message: multipart/mixed ends without its closing boundary\n",
		`original_recipient support+billing@example.com, mailbox_hash "billing"`,
		"Checks: OK. Each of the 12 messages reached the receiver exactly once",
		"Next steps, with your own mailbox:\n  1. cp .env.example .env",
		"pophook check", "pophook once", "README.md", "docs/webhook.md",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "signature ok"); n != 12 {
		t.Errorf("%d lines say signature ok, want 12", n)
	}
	if strings.Contains(out, "level=") {
		t.Errorf("the job logged a warning:\n%s", out)
	}
	if _, err := os.Stat(dataDir(t, out)); !os.IsNotExist(err) {
		t.Errorf("the data dir is still there (%v)", err)
	}
}

func TestRunKeep(t *testing.T) {
	out, err := runDemo(t, Options{Keep: true})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out)
	}
	dir := dataDir(t, out)
	t.Cleanup(func() { os.RemoveAll(dir) })
	if !strings.Contains(out, "The data dir stays for you to look at: "+dir+"\n") {
		t.Errorf("the output does not say where the data dir is:\n%s", out)
	}
	files, err := readMaildir(filepath.Join(dir, "Maildir"))
	if err != nil || len(files) != 12 {
		t.Errorf("the kept Maildir holds %d files (%v), want 12", len(files), err)
	}
}

// A receiver that refuses one message makes the demo fail, naming what
// went wrong: that message never arrived and is still on the server.
func TestRunFailsWhenAMessageIsMissing(t *testing.T) {
	samples, err := loadSamples()
	if err != nil {
		t.Fatal(err)
	}
	pdf := samples[3]
	out, err := runDemo(t, Options{rejectMessageID: pdf.messageID})
	if err == nil {
		t.Fatalf("Run succeeded with a message refused:\n%s", out)
	}
	for _, want := range []string{
		"first pass: delivered 11 of 12 messages, deleted 0, 12 left on the server",
		"sink helpdesk rejected it",
		"receiver: 11 distinct Idempotency-Keys, want 12",
		"receiver: " + pdf.name + " (Message-ID " + pdf.messageID + ") arrived 0 times, want once",
		"POP3 mailbox: 1 message left on the server, want none",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "Maildir") {
		t.Errorf("the Maildir got every message, yet the error blames it:\n%v", err)
	}
	for _, want := range []string{`refused  "Invoice INV-2026-0042 for November"`, "level=WARN", "Checks: FAILED"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Next steps") {
		t.Errorf("a failed demo suggests next steps:\n%s", out)
	}
}

// A cancelled context stops the demo at once, with an error.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	if err := Run(ctx, &buf, Options{}); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Run = %v, want context canceled", err)
	}
	if _, err := os.Stat(dataDir(t, buf.String())); !os.IsNotExist(err) {
		t.Errorf("the data dir is still there (%v)", err)
	}
}

// check names each kind of failure it looks for.
func TestCheck(t *testing.T) {
	samples, err := loadSamples()
	if err != nil {
		t.Fatal(err)
	}
	good := func() observed {
		o := observed{samples: samples, fetched: [2]int{12, 0}}
		o.first = worker.Result{Account: accountName, Delivered: 12}
		o.left1 = 12
		o.second = worker.Result{Account: accountName, Deleted: 12}
		o.after1 = tally{requests: 12, byKey: map[string]int{}, byMsgID: map[string]int{}}
		for i, s := range samples {
			key := "ph1_" + strconv.Itoa(i)
			o.after1.byKey[key] = 1
			o.after1.byMsgID[s.messageID] = 1
			o.maildir = append(o.maildir, maildirFile{name: "1796000000.K" + key + ".host,S=100", messageID: s.messageID})
		}
		o.after2 = o.after1
		return o
	}
	if err := check(good()); err != nil {
		t.Fatalf("a good run fails: %v", err)
	}
	for _, tc := range []struct {
		name  string
		spoil func(*observed)
		want  string
	}{
		{"repeat at the receiver", func(o *observed) {
			o.after2.requests++
			o.after2.byKey = maps.Clone(o.after2.byKey)
			o.after2.byKey["ph1_3"]++
			o.after2.byMsgID = maps.Clone(o.after2.byMsgID)
			o.after2.byMsgID[samples[3].messageID]++
		}, "Idempotency-Key ph1_3 arrived 2 times"},
		{"second pass sent", func(o *observed) { o.fetched[1], o.second.Delivered = 1, 1 },
			"second pass: fetched 1 and delivered 1 messages, want none"},
		{"second pass did not delete", func(o *observed) { o.second.Deleted = 11 },
			"second pass: deleted 11 messages, want the 12 delivered before the dropped QUIT"},
		{"missing in the Maildir", func(o *observed) { o.maildir = o.maildir[1:] },
			"Maildir: " + samples[0].name + " (Message-ID " + samples[0].messageID + ") is there 0 times"},
		{"bad signature", func(o *observed) { o.after2.errs = []string{"signature: no valid signature"} },
			"receiver refused a request: signature: no valid signature"},
		{"left on the server", func(o *observed) { o.left = 2 },
			"POP3 mailbox: 2 messages left on the server"},
	} {
		o := good()
		tc.spoil(&o)
		if err := check(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: check = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// verify follows the Standard Webhooks specification; the signature here
// is computed independently of it.
func TestVerify(t *testing.T) {
	secret, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"type":"message.received"}`)
	headers := func(secret string, at time.Time, body []byte) http.Header {
		key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		ts := strconv.FormatInt(at.Unix(), 10)
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte("ph1_abc." + ts + "." + string(body)))
		h := http.Header{}
		h.Set("webhook-id", "ph1_abc")
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", "v0,xyz v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		return h
	}
	if err := verify(secret, headers(secret, now, body), body, now); err != nil {
		t.Errorf("a good signature: %v", err)
	}
	other, _ := newSecret()
	for name, h := range map[string]http.Header{
		"another secret": headers(other, now, body),
		"another body":   headers(secret, now, []byte(`{"type":"ping"}`)),
		"too old":        headers(secret, now.Add(-10*time.Minute), body),
		"no headers":     {},
	} {
		if err := verify(secret, h, body, now); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// The samples are what the demo promises: twelve messages with distinct
// Message-IDs, the Chinese one in GBK and the Japanese one in
// ISO-2022-JP, and a PDF attachment that is a well-formed PDF.
func TestSamples(t *testing.T) {
	samples, err := loadSamples()
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 12 {
		t.Errorf("%d samples, want 12", len(samples))
	}
	byName := map[string][]byte{}
	for _, s := range samples {
		byName[s.name] = s.data
		if bytes.Contains(s.data, []byte("\r")) {
			t.Errorf("%s has CR line endings; the server adds them", s.name)
		}
	}
	gbk := byName["02-invoice-title-gbk.eml"]
	if !bytes.Contains(gbk, []byte(`charset="gbk"`)) || !bytes.Contains(gbk, []byte("Subject: =?GBK?B?")) {
		t.Errorf("the Chinese sample is not in GBK:\n%s", gbk)
	}
	jp := byName["03-quote-request-iso2022jp.eml"]
	if !bytes.Contains(jp, []byte("charset=ISO-2022-JP")) || !bytes.Contains(jp, []byte("Subject: =?ISO-2022-JP?B?")) ||
		!bytes.Contains(jp, []byte("\x1b$B")) {
		t.Errorf("the Japanese sample is not in ISO-2022-JP:\n%q", jp)
	}
	if v := headerValue(byName["05-out-of-office.eml"], "auto-submitted"); v != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", v)
	}

	// The PDF: base64 between the part's header and the closing boundary.
	msg := string(byName["04-invoice-with-pdf.eml"])
	_, b64, _ := strings.Cut(msg, "Content-Transfer-Encoding: base64\n\n")
	b64, _, _ = strings.Cut(b64, "\n--")
	pdf, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(b64, "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	checkPDF(t, pdf)
}

// checkPDF checks a PDF's structure: header, trailer, that startxref
// points at the xref table, that each object's offset in it points at that
// object, and that the stream's /Length is right.
func checkPDF(t *testing.T, pdf []byte) {
	t.Helper()
	if !bytes.HasPrefix(pdf, []byte("%PDF-1.")) || !bytes.HasSuffix(pdf, []byte("%%EOF\n")) {
		t.Fatalf("no PDF header or trailer")
	}
	m := regexp.MustCompile(`startxref\n(\d+)\n%%EOF\n$`).FindSubmatch(pdf)
	if m == nil {
		t.Fatal("no startxref")
	}
	xref, _ := strconv.Atoi(string(m[1]))
	if !bytes.HasPrefix(pdf[xref:], []byte("xref\n0 6\n0000000000 65535 f \n")) {
		t.Fatalf("startxref %d does not point at the xref table", xref)
	}
	entries := regexp.MustCompile(`(\d{10}) 00000 n \n`).FindAllSubmatch(pdf[xref:], -1)
	if len(entries) != 5 {
		t.Fatalf("%d objects in the xref table, want 5", len(entries))
	}
	for i, e := range entries {
		off, _ := strconv.Atoi(string(e[1]))
		if want := strconv.Itoa(i+1) + " 0 obj\n"; !bytes.HasPrefix(pdf[off:], []byte(want)) {
			t.Errorf("object %d: offset %d points at %q", i+1, off, pdf[off:min(off+12, len(pdf))])
		}
	}
	sm := regexp.MustCompile(`/Length (\d+) >>\nstream\n`).FindSubmatchIndex(pdf)
	if sm == nil {
		t.Fatal("no content stream")
	}
	length, _ := strconv.Atoi(string(pdf[sm[2]:sm[3]]))
	if !bytes.HasPrefix(pdf[sm[1]+length:], []byte("endstream")) {
		t.Errorf("the stream's /Length %d is wrong", length)
	}
}
