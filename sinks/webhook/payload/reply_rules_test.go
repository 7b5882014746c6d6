package payload

import (
	"strings"
	"testing"
)

// TestStripReplyRules pins each rule of stripReply on a minimal case; the
// labelled replies (reply_test.go) test them on whole messages.
func TestStripReplyRules(t *testing.T) {
	for _, c := range []struct {
		name, in, from string
		forwarded      bool
		reply, sig     string
	}{
		{name: "no quote", in: "Hello\n\nthere\n", reply: "Hello\n\nthere"},
		{name: "empty", in: "", reply: ""},
		{name: "only quotes", in: "> a\n> b\n", reply: ""},
		{name: "leading blank lines dropped", in: "\n\n  \nHi\n", reply: "Hi"},
		{name: "separator variants", in: "ok\n----- Original Message -----\nFrom: x\n", reply: "ok"},
		{name: "QQ separator with no-break spaces", in: "ok\n------------------\u00a0原始邮件\u00a0------------------\nx\n", reply: "ok"},
		{name: "Outlook Express", in: "ok\n\n-----Original Message----- \n x\n", reply: "ok"},
		{name: "reply above this line", in: "Thanks!\n\n##- Please type your reply above this line -##\n\nTicket 4711 was updated\n", reply: "Thanks!"},
		{name: "header block needs a subject", in: "ok\nFrom: a\nTo: b\nCc: c\nmore\n", reply: "ok\nFrom: a\nTo: b\nCc: c\nmore"},
		{name: "header block in bold", in: "ok\n\n*From:* Anna <a@x>\n*Sent:* Friday\n*To:* Bob\n*Subject:* Re: x\n\nold\n", reply: "ok"},
		{name: "header block with full-width colons", in: "好的\n发件人：张三\n发送时间：2026-11-27\n收件人：李四\n主题：回复：x\n旧\n", reply: "好的"},
		{name: "strong attribution without quotes cuts", in: "ok\n\nOn Fri, Nov 27, 2026 at 10:00 Bob <b@x> wrote:\nold text\n", reply: "ok"},
		{name: "weak attribution without quotes is text", in: "Here is what Bob wrote:\nthe text he sent\n", reply: "Here is what Bob wrote:\nthe text he sent"},
		{name: "weak attribution with quotes goes", in: "ok\n\nBob wrote:\n> old\n", reply: "ok"},
		{name: "'On' sentence without date is weak", in: "On Monday my colleague wrote:\nthe draft below\n", reply: "On Monday my colleague wrote:\nthe draft below"},
		{name: "attribution over three lines", in: "ok\n\nOn Fri, Nov 27, 2026 at 10:00 AM\nA Very Long Support Team Name\n<support-team@example.com> wrote:\n> old\n", reply: "ok"},
		{name: "attribution wrap stops at a quote", in: "On Friday\n> old\nnew\n", reply: "On Friday\n> old\nnew"},
		{name: "bottom post", in: "On 1/2/26, Bob wrote:\n> q\n\nanswer\n", reply: "answer"},
		{name: "inline keeps inner quotes", in: "Bob wrote:\n> q1\na1\n> q2\na2\n> rest\n", reply: "> q1\na1\n> q2\na2"},
		{name: "indented quote marks", in: "ok\n   > old\n", reply: "ok"},
		{name: "four spaces is not a quote mark", in: "ok\n    > code\n", reply: "ok\n    > code"},
		{name: "forward marker keeps everything, no signature",
			in: "see below\n-- \nMark\n---------- Forwarded message ---------\nFrom: x\n\nbody\n-- \nJane\n", reply: "see below\n-- \nMark\n---------- Forwarded message ---------\nFrom: x\n\nbody\n-- \nJane"},
		{name: "forwarded subject turns a header block into a forward", forwarded: true,
			in: "fyi\n\nFrom: Jane <j@x>\nSent: today\nTo: me\nSubject: help\n\nbody\n", reply: "fyi\n\nFrom: Jane <j@x>\nSent: today\nTo: me\nSubject: help\n\nbody"},
		{name: "rule above the header block is not the reply's", in: "ok\n\n________________________________\nFrom: a <a@x>\nSent: x\nTo: y\nSubject: z\n", reply: "ok"},
		{name: "a box of rules is", in: "ok\n\n-----------\nAcme\n-----------\n\nFrom: a <a@x>\nSent: x\nTo: y\nSubject: z\n", reply: "ok\n\n-----------\nAcme\n-----------"},
		{name: "rule inside the text stays", in: "a\n==========\nb\n", reply: "a\n==========\nb"},
		{name: "signature delimiter", in: "text\n-- \nAnna\n", reply: "text", sig: "-- \nAnna"},
		{name: "delimiter without the space", in: "text\n--\nAnna\n", reply: "text", sig: "--\nAnna"},
		{name: "the last delimiter counts", in: "a\n--\nb\n\n-- \nAnna\n", reply: "a\n--\nb", sig: "-- \nAnna"},
		{name: "a delimiter far from the end is no signature", in: "a\n-- \n" + strings.Repeat("line\n", 16), reply: "a\n-- \n" + strings.TrimSuffix(strings.Repeat("line\n", 16), "\n")},
		{name: "mobile line", in: "ok\n\nSent from my iPhone\n", reply: "ok", sig: "Sent from my iPhone"},
		{name: "mobile line before a delimiter", in: "ok\nSent from my iPad\n-- \nAnna\n", reply: "ok", sig: "Sent from my iPad\n-- \nAnna"},
		{name: "mobile words far from the end are text", in: "Sent from my iPhone\nthen\nmore\nlines\nhere\n", reply: "Sent from my iPhone\nthen\nmore\nlines\nhere"},
		{name: "发自 in a sentence is text", in: "这是发自内心的感谢\n", reply: "这是发自内心的感谢"},
		{name: "Japanese mobile line", in: "了解です\n\nAndroidから送信\n", reply: "了解です", sig: "Androidから送信"},
		{name: "sender's address as the last line", from: "a@x.cn", in: "好的\n\na@x.cn\n", reply: "好的", sig: "a@x.cn"},
		{name: "another address is text", from: "a@x.cn", in: "请联系\n\nb@x.cn\n", reply: "请联系\n\nb@x.cn"},
	} {
		reply, sig := stripReply(c.in, c.from, c.forwarded)
		if reply != c.reply || sig != c.sig {
			t.Errorf("%s: stripReply(%q) = %q, %q; want %q, %q", c.name, c.in, reply, sig, c.reply, c.sig)
		}
	}
}

// stripReplyWorstCases are bodies of lines made to match the start of
// every rule; with time quadratic in the lines they would take minutes.
// BenchmarkStripReplyWorstCase measures them (these machines are too noisy
// for a time limit in a test); TestStripReplyWorstCases checks what they
// give.
func stripReplyWorstCases(size int) map[string]string {
	fill := func(s string) string { return strings.Repeat(s, size/len(s)) }
	return map[string]string{
		"empty lines":         fill("\n"),
		"quotes":              fill("> x\n"),
		"attribution starts":  fill("On 2026 x <\n"),
		"From lines":          fill("From: a\n"),
		"From and fields":     fill("From: a\nTo: b\n"),
		"delimiters":          fill("-- \n"),
		"mobile lines":        fill("Sent from my iPhone\n"),
		"one long line":       fill("x"),
		"rules":               fill("__________\n"),
		"quotes between text": fill("> q\na\n"),
	}
}

func TestStripReplyWorstCases(t *testing.T) {
	for name, in := range stripReplyWorstCases(64 << 10) {
		reply, sig := stripReply(in, "a@x", false)
		if i := strings.Index(in, reply); i < 0 || !strings.Contains(in[i+len(reply):], sig) {
			t.Errorf("%s: the reply and signature are not pieces of the text", name)
		}
	}
}

// go test ./sinks/webhook/payload -run '^$' -bench StripReplyWorstCase
// (1 MiB each: milliseconds in linear time, minutes in quadratic).
func BenchmarkStripReplyWorstCase(b *testing.B) {
	for name, in := range stripReplyWorstCases(1 << 20) {
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				stripReply(in, "a@x", false)
			}
		})
	}
}

// FuzzStripReply: the reply and the signature are pieces of the text, in
// that order.
func FuzzStripReply(f *testing.F) {
	f.Add("ok\n\nOn 1/2/26 Bob <b@x> wrote:\n> q\n", "b@x", false)
	f.Add("a\n-- \nsig\n发件人: x\n发送时间: y\n主题: z\n", "", true)
	f.Fuzz(func(t *testing.T, text, from string, forwarded bool) {
		reply, sig := stripReply(text, from, forwarded)
		i := strings.Index(text, reply)
		if i < 0 || (sig != "" && !strings.Contains(text[i+len(reply):], sig)) {
			t.Fatalf("stripReply(%q) = %q, %q: not pieces of the text", text, reply, sig)
		}
	})
}
