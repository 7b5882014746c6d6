package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNestedMessage(t *testing.T) {
	inner := crlfJoin("From: Inner <inner@example.com>", "Subject: =?utf-8?B?5oql5Lu3?= / Q3", "", "inner body")
	msg := crlfJoin("From: outer@example.com", "Subject: Fwd: quote", `Content-Type: multipart/mixed; boundary="o"`, "",
		"--o", "Content-Type: text/plain", "", "see below", "--o",
		"Content-Type: message/rfc822", "", inner, "--o",
		"Content-Type: message/rfc822; name=\"kept.eml\"", "Content-Transfer-Encoding: base64", "",
		b64Lines([]byte(inner)), "--o--")
	d, _ := render(t, "nested", []byte(msg), Options{})
	m := d.Data
	if m.Text != "see below" {
		t.Errorf("text %q (the nested message's body must not be taken)", m.Text)
	}
	var names, types []string
	for _, a := range m.Attachments {
		names, types = append(names, a.Filename), append(types, a.ContentType)
	}
	if !slices.Equal(names, []string{"报价 _ Q3.eml", "kept.eml"}) || !slices.Equal(types, []string{"message/rfc822", "message/rfc822"}) {
		t.Errorf("attachments %q %q", names, types)
	}
	sum := sha256.Sum256([]byte(inner))
	for _, a := range m.Attachments {
		if a.Size != int64(len(inner)) || a.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: size %d sha %s, want the inner message (%d)", a.Filename, a.Size, a.SHA256, len(inner))
		}
	}
}

func TestRelatedInlineImages(t *testing.T) {
	png := []byte("\x89PNG\r\n\x1a\nfake image data")
	msg := crlfJoin("From: a@example.com", "Subject: related",
		`Content-Type: multipart/related; boundary="r"; type="multipart/alternative"; start="<root@x>"`, "",
		"--r", "Content-Type: image/png", "Content-ID: <logo@x>", "Content-Transfer-Encoding: base64", "",
		b64Lines(png), "--r", "Content-ID: <root@x>", `Content-Type: multipart/alternative; boundary="a"`, "",
		"--a", "Content-Type: text/plain; charset=utf-8", "", "Hello [logo]", "--a",
		"Content-Type: text/html; charset=utf-8", "", `<p>Hello <img src="cid:logo@x"></p>`,
		"--a", "Content-Type: text/enriched", "", "<bold>Hello</bold>", "--a--",
		"--r", "Content-Type: text/css", "Content-ID: <style@x>", "", "p{}", "--r--")
	d, _ := render(t, "related", []byte(msg), Options{})
	m := d.Data
	if m.Text != "Hello [logo]" || m.HTML != `<p>Hello <img src="cid:logo@x"></p>` {
		t.Errorf("text %q html %q", m.Text, m.HTML)
	}
	if len(m.Attachments) != 2 {
		t.Fatalf("attachments %+v, want the image and the stylesheet (text/enriched is an alternative)", m.Attachments)
	}
	img := m.Attachments[0]
	if img.ContentID != "logo@x" || img.Disposition != "inline" || img.ContentType != "image/png" || img.Size != int64(len(png)) {
		t.Errorf("image %+v", img)
	}
	if img.Content == nil {
		t.Fatal("image content not inlined")
	}
	if b, _ := base64Decode(*img.Content); !bytes.Equal(b, png) {
		t.Errorf("image content %q", b)
	}
	if m.Attachments[1].ContentID != "style@x" {
		t.Errorf("second attachment %+v", m.Attachments[1])
	}
}

func TestBounce(t *testing.T) {
	msg := crlfJoin("From: Mail Delivery System <postmaster@example.net>", "To: a@example.com", "Subject: Undelivered Mail",
		`Content-Type: multipart/report; report-type=delivery-status; boundary="r"`, "",
		"--r", "Content-Description: Notification", "Content-Type: text/plain; charset=us-ascii", "",
		"I'm sorry to have to inform you that your message could not be delivered.",
		"--r", "Content-Type: message/delivery-status", "", "Reporting-MTA: dns; mx.example.net", "",
		"Final-Recipient: rfc822; nobody@example.org", "Action: failed", "Status: 5.1.1",
		"--r", "Content-Type: text/rfc822-headers", "", "Subject: hello", "--r--")
	d, _ := render(t, "bounce", []byte(msg), Options{})
	m := d.Data
	if !m.AutoSubmitted {
		t.Error("a multipart/report bounce is not auto_submitted")
	}
	if !strings.Contains(m.Text, "could not be delivered") {
		t.Errorf("text %q", m.Text)
	}
	var types []string
	for _, a := range m.Attachments {
		types = append(types, a.ContentType)
	}
	if !slices.Equal(types, []string{"message/delivery-status", "text/rfc822-headers"}) {
		t.Errorf("attachments %q", types)
	}
}

func TestAutoSubmitted(t *testing.T) {
	for _, c := range []struct {
		header string
		want   bool
	}{
		{"Auto-Submitted: auto-replied", true},
		{"Auto-Submitted: auto-generated (warning-timeout)", true},
		{"Auto-Submitted: no", false},
		{"Precedence: bulk", true},
		{"Precedence: junk", true},
		{"Precedence: list", true},
		{"Precedence: auto_reply", true},
		{"Precedence: first-class", false},
		{"X-Autoreply: yes", true},
		{"X-Autorespond: vacation", true},
		{"X-Auto-Response-Suppress: OOF, DR", true},
		{"X-Auto-Response-Suppress: All", true},
		{"X-Auto-Response-Suppress: DR, RN", false},
		{"List-Unsubscribe: <mailto:leave@list.example>", true},
		{"List-Id: Support users <users.list.example>", true},
		{"Return-Path: <>", true},
		{"Return-Path: <a@example.com>", false},
		{"From: MAILER-DAEMON@mx.example.net", true},
		{"From: \"Mail Delivery Subsystem\" <mailer-daemon@googlemail.com>", true},
		{"X-Mailer: Outlook", false},
	} {
		msg := crlfJoin(c.header, "Subject: x", "", "body")
		d, _ := render(t, c.header, []byte(msg), Options{})
		if d.Data.AutoSubmitted != c.want {
			t.Errorf("%s: auto_submitted %v, want %v", c.header, d.Data.AutoSubmitted, c.want)
		}
	}
}

func TestHeadersAndIDs(t *testing.T) {
	msg := crlfJoin(
		"Received: from a by b;",
		"\tFri, 27 Nov 2026 04:59:00 +0000",
		"subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=",
		"Message-ID: <=?utf-8?Q?not-decoded?=@example.com>",
		"In-Reply-To: <prev@example.com> (message from Mary)",
		"References: <a@example.com>",
		"  <b@example.com> <c@example.com>",
		"From: \"Doe, John\" <john@example.com>",
		"To: Mary <mary@example.com>, undisclosed-recipients:;",
		"Cc: A (comment) <a@example.com>",
		"", "body")
	d, _ := render(t, "headers", []byte(msg), Options{})
	m := d.Data
	// Identifier fields are given as written: RFC 2047 forbids encoded
	// words in a msg-id, so "=?utf-8?Q?...?=" there is part of the id.
	want := []map[string]string{
		{"name": "Received", "value": "from a by b; Fri, 27 Nov 2026 04:59:00 +0000"},
		{"name": "subject", "value": "Grüße"},
		{"name": "Message-ID", "value": "<=?utf-8?Q?not-decoded?=@example.com>"},
	}
	for i, w := range want {
		if i >= len(m.Headers) || m.Headers[i]["name"] != w["name"] || m.Headers[i]["value"] != w["value"] {
			t.Errorf("header %d = %v, want %v", i, m.Headers[i], w)
		}
	}
	if len(m.Headers) != 8 {
		t.Errorf("%d headers, want 8", len(m.Headers))
	}
	if m.MessageID != "<=?utf-8?Q?not-decoded?=@example.com>" || m.InReplyTo != "<prev@example.com>" {
		t.Errorf("message_id %q in_reply_to %q", m.MessageID, m.InReplyTo)
	}
	if !slices.Equal(m.References, []string{"<a@example.com>", "<b@example.com>", "<c@example.com>"}) {
		t.Errorf("references %q", m.References)
	}
	if m.Subject != "Grüße" || m.From == nil || m.From.Name != "Doe, John" || len(m.To) != 1 || m.To[0].Name != "Mary" {
		t.Errorf("subject %q from %+v to %+v", m.Subject, m.From, m.To)
	}
	if len(m.Cc) != 1 || m.Cc[0].Address != "a@example.com" {
		t.Errorf("cc %+v", m.Cc)
	}
}

func TestInlineLimitAndRaw(t *testing.T) {
	small, big := strings.Repeat("s", 100), strings.Repeat("b", 5000)
	msg := crlfJoin("Subject: x", `Content-Type: multipart/mixed; boundary="b"`, "",
		"--b", "Content-Type: text/plain", "", "body",
		"--b", "Content-Type: application/octet-stream; name=small.bin", "Content-Transfer-Encoding: base64", "", b64Lines([]byte(small)),
		"--b", "Content-Type: application/octet-stream; name=big.bin", "Content-Transfer-Encoding: base64", "", b64Lines([]byte(big)),
		"--b--")
	for _, c := range []struct {
		limit int64
		want  []bool
	}{{0, []bool{true, true}}, {1000, []bool{true, false}}, {5000, []bool{true, true}}, {-1, []bool{false, false}}} {
		d, _ := render(t, "limit", []byte(msg), Options{InlineLimit: c.limit, IncludeRaw: true})
		var got []bool
		for _, a := range d.Data.Attachments {
			got = append(got, a.Content != nil)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("InlineLimit %d: content present %v, want %v", c.limit, got, c.want)
		}
		if d.Data.Raw == nil {
			t.Fatal("raw missing")
		}
		if raw, _ := base64Decode(*d.Data.Raw); string(raw) != msg {
			t.Error("raw is not the message")
		}
	}
	d, _ := render(t, "noraw", []byte(msg), Options{})
	if d.Data.Raw != nil {
		t.Error("raw present without IncludeRaw")
	}
}

func TestLongBodyCut(t *testing.T) {
	line := strings.Repeat("x", 99) + "\r\n"
	body := strings.Repeat(line, (maxBody/len(line))+100)
	msg := "Subject: long\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
	d, _ := render(t, "long", []byte(msg), Options{})
	if n := len(d.Data.Text); n > maxBody || n < maxBody-maxBody/50 {
		t.Errorf("text is %d bytes, want it cut near %d", n, maxBody)
	}
	if !slices.ContainsFunc(d.Data.ParseErrors, func(s string) bool { return strings.Contains(s, "cut") }) {
		t.Errorf("parse_errors %q lack the cut", d.Data.ParseErrors)
	}
}

type failingReaderAt struct{ n int64 }

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.n {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, bytes.Repeat([]byte("a"), int(min(int64(len(p)), f.n-off))))
	return n, nil
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("connection reset")
	}
	return len(p), nil
}

func TestIOErrors(t *testing.T) {
	raw := io.NewSectionReader(failingReaderAt{n: 100}, 0, 1000)
	if err := Write(io.Discard, raw, Meta{}, Options{}); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Write with a failing reader: %v", err)
	}
	msg := []byte(crlfJoin("Subject: x", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64", "",
		b64Lines(bytes.Repeat([]byte("z"), 200<<10))))
	err := Write(&failingWriter{n: 100 << 10}, io.NewSectionReader(bytes.NewReader(msg), 0, int64(len(msg))), Meta{}, Options{})
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("Write with a failing writer: %v", err)
	}
}

// FuzzWrite feeds arbitrary bytes: the output must always be valid JSON.
func FuzzWrite(f *testing.F) {
	f.Add([]byte(crlfJoin("Subject: =?gbk?B?1cXI/Q==?=", `Content-Type: multipart/mixed; boundary="b"`, "", "--b", "", "x", "--b--")))
	f.Add([]byte("From x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		render(t, "fuzz", data, Options{IncludeRaw: true})
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%d bytes took %v", len(data), d)
		}
	})
}
