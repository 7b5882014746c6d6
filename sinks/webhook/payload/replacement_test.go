package payload

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// replaced is a decoded value of the payload and the prefix a parse error
// about it starts with.
type replaced struct {
	field, value, prefix string
}

// decodedValues lists the values of d that pophook decodes from the
// message, each with the prefix of the parse errors that concern it.
// Values it derives from others (stripped_text, mailbox_hash) and those
// given by the caller (id, account, mailbox, uidl) are not listed.
func decodedValues(d *doc) []replaced {
	m := d.Data
	var out []replaced
	add := func(field, value, prefix string) {
		out = append(out, replaced{field, value, prefix})
	}
	add("subject", m.Subject, "header Subject:")
	if m.From != nil {
		add("from", m.From.Name+" "+m.From.Address, "header From:")
	}
	for _, l := range []struct {
		name, key string
		list      []jsonAddress
	}{{"reply_to", "Reply-To", m.ReplyTo}, {"to", "To", m.To}, {"cc", "Cc", m.Cc}} {
		for _, a := range l.list {
			add(l.name, a.Name+" "+a.Address, "header "+l.key+":")
		}
	}
	add("message_id", m.MessageID, "header Message-Id:")
	add("in_reply_to", m.InReplyTo, "header In-Reply-To:")
	for _, r := range m.References {
		add("references", r, "header References:")
	}
	for _, h := range m.Headers {
		add("headers "+h["name"], h["value"], "header "+h["name"]+":")
	}
	add("original_recipient", m.OrigRecipient, "header ")
	add("text", m.Text, "part ")
	add("html", m.HTML, "part ")
	for _, a := range m.Attachments {
		add("attachment filename", a.Filename, "part ")
		add("attachment content_id", a.ContentID, "part ")
		add("attachment content_type", a.ContentType, "part ")
	}
	return out
}

// literalFFFD reports whether the message may hold U+FFFD as written (in
// UTF-8, quoted-printable or an HTML reference): then a U+FFFD in the
// payload need not be a replacement.
func literalFFFD(raw []byte) bool {
	low := bytes.ToLower(raw)
	for _, s := range []string{"\uFFFD", "=ef=bf=bd", "&#65533", "&#xfffd"} {
		if bytes.Contains(low, []byte(s)) {
			return true
		}
	}
	return false
}

// checkReplacements is run by render on every payload of the tests (the
// corpus and the fuzzer included): a decoded value holding U+FFFD that the
// message did not hold must be named in parse_errors.
func checkReplacements(t *testing.T, name string, raw []byte, d *doc) {
	t.Helper()
	errs := d.Data.ParseErrors
	if literalFFFD(raw) || slices.ContainsFunc(errs, func(s string) bool { return strings.HasSuffix(s, "more problems not listed") }) {
		return
	}
	for _, v := range decodedValues(d) {
		if !strings.Contains(v.value, "\uFFFD") {
			continue
		}
		if !slices.ContainsFunc(errs, func(s string) bool { return hasPrefixFold(s, v.prefix) }) {
			t.Errorf("%s: %s %q holds U+FFFD, but no parse error starts with %q: %q", name, v.field, clip(v.value, 80), v.prefix, errs)
		}
	}
}

// TestReplacementsReported builds, for every decoded value, a message
// where it cannot be decoded, and checks that the value holds U+FFFD and a
// parse error names it.
func TestReplacementsReported(t *testing.T) {
	bad := "\xff\xfe" // in no position valid GB18030, Shift_JIS or UTF-8
	word := func(cs string) string { return bWord(cs, []byte("ab"+bad)) }
	for _, c := range []struct {
		name   string
		msg    string
		field  string // as in decodedValues
		prefix string
	}{
		{"subject, encoded word", crlfJoin("Subject: "+word("gb2312"), "", "x"), "subject", "header Subject: "},
		{"subject, raw 8-bit", crlfJoin("Subject: caf\x81", "", "x"), "subject", "header Subject: "},
		{"subject, us-ascii word with 8-bit", crlfJoin("Subject: =?us-ascii?Q?caf=81?=", "", "x"), "subject", "header Subject: "},
		{"display name, From", crlfJoin("From: "+word("shift_jis")+" <a@example.com>", "", "x"), "from", "header From: "},
		{"display name, raw 8-bit", crlfJoin("From: caf\x81 <a@example.com>", "", "x"), "from", "header From: "},
		{"display name, To", crlfJoin("To: "+word("gbk")+" <a@example.com>", "", "x"), "to", "header To: "},
		{"display name, Cc", crlfJoin("Cc: "+word("big5")+" <a@example.com>", "", "x"), "cc", "header Cc: "},
		{"display name, Reply-To", crlfJoin("Reply-To: "+word("euc-kr")+" <a@example.com>", "", "x"), "reply_to", "header Reply-To: "},
		{"other header", crlfJoin("X-Note: "+word("gb18030"), "", "x"), "headers X-Note", "header X-Note: "},
		{"Message-ID", crlfJoin("Message-ID: <a"+bad+"@example.com>", "", "x"), "message_id", "header Message-Id: "},
		{"Message-ID in headers", crlfJoin("Message-ID: <a"+bad+"@example.com>", "", "x"), "headers Message-ID", "header Message-Id: "},
		{"In-Reply-To", crlfJoin("In-Reply-To: <a"+bad+"@example.com>", "", "x"), "in_reply_to", "header In-Reply-To: "},
		{"References", crlfJoin("References: <b@example.com> <a"+bad+"@example.com>", "", "x"), "references", "header References: "},
		{"Delivered-To", crlfJoin("Delivered-To: caf\x81@example.com", "", "x"), "original_recipient", "header Delivered-To: "},
		{"text body", crlfJoin("Content-Type: text/plain; charset=gbk", "", "ab"+bad), "text", "part 1: "},
		{"html body", crlfJoin("Content-Type: text/html; charset=shift_jis", "", "<p>ab"+bad+"</p>"), "html", "part 1: "},
		{"text from HTML", crlfJoin("Content-Type: text/html; charset=utf-8", "", "<p>a&#0;b</p>"), "text", "part 1: text from HTML: "},
		{"file name, encoded word", attachmentMsg(`Content-Type: application/pdf; name="` + word("gbk") + `.pdf"`), "attachment filename", "part 2: file name: "},
		{"file name, RFC 2231", attachmentMsg("Content-Type: application/pdf", "Content-Disposition: attachment; filename*=shift_jis''%FF%FEa.pdf"),
			"attachment filename", "part 2: file name: "},
		{"file name, RFC 2231 not UTF-8", attachmentMsg("Content-Type: application/pdf", "Content-Disposition: attachment; filename*=utf-8''caf%81.pdf"),
			"attachment filename", "part 2: file name: "},
		{"file name, raw 8-bit", attachmentMsg("Content-Type: application/pdf", "Content-Disposition: attachment; filename=\"caf\x81.pdf\""),
			"attachment filename", "part 2: file name: "},
		{"file name of a single-part message, RFC 2231 in an unknown charset",
			crlfJoin("Content-Type: application/pdf; name*0*=x-unknown''caf%81; name*1=.pdf", "", "%PDF"), "attachment filename", "part 1: file name: "},
		{"file name of a single-part message, encoded word", crlfJoin(`Content-Type: application/pdf; name="`+word("gbk")+`.pdf"`, "", "%PDF"),
			"attachment filename", "part 1: file name: "},
		{"file name from an attached message's subject", attachmentMsg("Content-Type: message/rfc822"), "attachment filename", "part 2: file name from the attached message's Subject: "},
		{"Content-ID", attachmentMsg("Content-Type: image/png", "Content-ID: <img"+bad+"@x>"), "attachment content_id", "part 2: Content-ID: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, _ := render(t, c.name, []byte(c.msg), Options{})
			var found bool
			for _, v := range decodedValues(d) {
				if v.field == c.field && strings.Contains(v.value, "\uFFFD") {
					found = true
				}
			}
			if !found {
				t.Errorf("no U+FFFD in %s: %+v", c.field, d.Data)
			}
			if !slices.ContainsFunc(d.Data.ParseErrors, func(s string) bool { return strings.HasPrefix(s, c.prefix) && strings.Contains(s, "U+FFFD") }) {
				t.Errorf("parse_errors %q: none starts with %q and says U+FFFD", d.Data.ParseErrors, c.prefix)
			}
		})
	}
}

// attachmentMsg is a message whose second part has the given header and,
// for message/rfc822, an undecodable subject.
func attachmentMsg(header ...string) string {
	lines := []string{"Subject: x", `Content-Type: multipart/mixed; boundary="b"`, "", "--b", "", "body", "--b"}
	lines = append(lines, header...)
	lines = append(lines, "", "Subject: "+bWord("gbk", []byte("\xff\xfe")), "", "inner", "--b--")
	return crlfJoin(lines...)
}
