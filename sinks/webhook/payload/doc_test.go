package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDocExample keeps docs/example-payload.json what Write makes of
// docs/example-message.eml, byte for byte (indented by two spaces, as
// json.Indent does). PAYLOAD_UPDATE_DOCS=1 rewrites the file; then update
// the test vector in docs/webhook.md and docs/receiver.
func TestDocExample(t *testing.T) {
	const dir = "../../../docs/"
	eml, err := os.ReadFile(dir + "example-message.eml")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(dir + "example-payload.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Timestamp time.Time `json:"timestamp"`
		Data      struct {
			ID, Account, Mailbox, UIDL string
		} `json:"data"`
	}
	if err := json.Unmarshal(want, &doc); err != nil {
		t.Fatal(err)
	}
	d := doc.Data
	sum := sha256.Sum256(eml)
	meta := Meta{ID: d.ID, Account: d.Account, Mailbox: d.Mailbox, UIDL: d.UIDL, Timestamp: doc.Timestamp,
		Size: int64(len(eml)), SHA256: hex.EncodeToString(sum[:])}
	var out, got bytes.Buffer
	if err := Write(&out, io.NewSectionReader(bytes.NewReader(eml), 0, int64(len(eml))), meta, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := json.Indent(&got, out.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	got.WriteByte('\n')
	if bytes.Equal(got.Bytes(), want) {
		return
	}
	if os.Getenv("PAYLOAD_UPDATE_DOCS") != "" {
		if err := os.WriteFile(dir+"example-payload.json", got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote docs/example-payload.json (%d bytes)", got.Len())
		return
	}
	t.Errorf("docs/example-payload.json is not the payload of docs/example-message.eml; run with PAYLOAD_UPDATE_DOCS=1. Write gives:\n%s", got.Bytes())
}

// TestDocClaims checks the examples docs/webhook.md gives of the
// help-desk fields against what Write does, and that the figures it
// quotes are the pinned ones.
func TestDocClaims(t *testing.T) {
	md, err := os.ReadFile("../../../docs/webhook.md")
	if err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(string(md)), " ")
	for _, s := range []string{
		fmt.Sprintf("on %d labelled replies", pinnedReplies),
		fmt.Sprintf("%d come out exactly right", pinnedStripped),
	} {
		if !strings.Contains(flat, s) {
			t.Errorf("webhook.md does not say %q", s)
		}
	}

	one := func(header ...string) *doc {
		d, _ := render(t, header[0], []byte(crlfJoin(header...)), Options{})
		return d
	}
	d := one("Content-Type: text/html; charset=utf-8", "",
		`<div>Hi,</div><div><br></div><div>the link returns a 404.</div>`,
		`<div>On Thu, Nov 26, 2026 at 4:12 PM Acme &lt;support@example.com&gt; wrote:</div>`,
		`<blockquote>Please download the report.</blockquote>`)
	if m := d.Data; m.Text != "Hi,\n\nthe link returns a 404.\nOn Thu, Nov 26, 2026 at 4:12 PM Acme <support@example.com> wrote:\n> Please download the report." ||
		!m.TextFromHTML || m.StrippedText != "Hi,\n\nthe link returns a 404." {
		t.Errorf("HTML example: text %q, text_from_html %v, stripped_text %q", m.Text, m.TextFromHTML, m.StrippedText)
	}
	d = one("Content-Type: text/plain; charset=utf-8", "", "您好，问题已经解决了，谢谢！", "", "王芳", "",
		"发件人: Acme Support <support@example.com>", "发送时间: 2026年11月27日 10:00", "收件人: 王芳 <wangfang@example.cn>",
		"主题: 答复: 发票问题", "", "王女士您好，……")
	if m := d.Data; m.StrippedText != "您好，问题已经解决了，谢谢！\n\n王芳" || m.StrippedSig != "" {
		t.Errorf("Outlook example: %q %q", m.StrippedText, m.StrippedSig)
	}
	d = one("Content-Type: text/plain; charset=utf-8", "", "Got it, thanks!", "", "Sent from my iPhone", "",
		"> On Nov 27, 2026, at 10:00, Acme Support <support@example.com> wrote:", ">", "> Your refund has been processed.")
	if m := d.Data; m.StrippedText != "Got it, thanks!" || m.StrippedSig != "Sent from my iPhone" {
		t.Errorf("iPhone example: %q %q", m.StrippedText, m.StrippedSig)
	}
	d = one("Delivered-To: support+t4711@example.com", "Received: from mx.example.org by mail.example.com; Fri, 27 Nov 2026 12:59:04 +0800",
		"Delivered-To: sales@example.org", "To: Acme Sales <sales@example.org>", "", "x")
	if m := d.Data; m.OrigRecipient != "support+t4711@example.com" || m.MailboxHash != "t4711" {
		t.Errorf("Delivered-To example: %q %q", m.OrigRecipient, m.MailboxHash)
	}
	d = one("Message-ID: <1234   @   local(blah)  .machine .example>", "", "x")
	if m := d.Data; m.MessageID != "<1234@local.machine.example>" || m.Headers[0]["value"] != "<1234   @   local(blah)  .machine .example>" {
		t.Errorf("Message-ID example: %q, header %q", m.MessageID, m.Headers[0]["value"])
	}
	for _, c := range []struct{ msg, want string }{
		{crlfJoin("Subject: "+bWord("gbk", []byte("\xff\xfe")), "", "x"),
			"header Subject: 2 undecodable bytes in gb18030 encoded word replaced with U+FFFD"},
		{attachmentMsg("Content-Type: application/pdf", "Content-Disposition: attachment; filename*=shift_jis''%FFa.pdf"),
			"part 2: file name: 1 undecodable sequences in shift_jis RFC 2231 value replaced with U+FFFD"},
		{crlfJoin("From: caf\x81 <a@example.com>", "", "x"),
			"header From: unencoded 8-bit text read as windows-1252 (1 undecodable bytes replaced with U+FFFD)"},
	} {
		d, _ := render(t, c.want, []byte(c.msg), Options{})
		if !slices.Contains(d.Data.ParseErrors, c.want) {
			t.Errorf("parse_errors %q lack %q", d.Data.ParseErrors, c.want)
		}
		if !strings.Contains(string(md), c.want) {
			t.Errorf("webhook.md does not show %q", c.want)
		}
	}
}
