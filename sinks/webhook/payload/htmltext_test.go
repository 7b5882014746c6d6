package payload

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestHTMLToText(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
		bad            int
	}{
		{"dropped elements",
			"<html><head><title>T</title><style>p{color:red}</style><script>alert('<p>x</p>')</script></head>" +
				"<body><p>Hello</p><script type=x>var a = '</scr' + 'ipt';</script><noscript>no</noscript></body></html>",
			"Hello", 0},
		{"entities and no-break spaces",
			"<div>&lt;b&gt; &amp; caf&eacute; &#20320;&#x597D;&nbsp;&nbsp;x &copy</div>",
			"<b> & café 你好  x ©", 0},
		{"white space collapses",
			"<div>  one\n\t two   three \n</div>\n\n<div>four</div>",
			"one two three\nfour", 0},
		{"inline tags join words", "<p>Hel<b>lo</b> <i>wor</i>ld</p>", "Hello world", 0},
		{"br and blocks", "a<br>b<br><br>c<div>d</div>e<ul><li>f</li><li>g</li></ul>", "a\nb\n\nc\nd\ne\nf\ng", 0},
		{"paragraphs set off", "<p>one</p><p>two</p><h1>three</h1>four", "one\n\ntwo\n\nthree\n\nfour", 0},
		{"Word paragraphs are lines", `<p class=MsoNormal>one<o:p></o:p></p><p class="MsoNormal">two</p><p class=MsoNormal>&nbsp;</p><p class=MsoNormal>three</p>`,
			"one\ntwo\n\nthree", 0},
		{"blank lines collapse", "a<br><br><br><br>b<p></p><p></p><p>c</p>", "a\n\nb\n\nc", 0},
		{"table cells apart", "<table><tr><td>From</td><td>Anna</td></tr><tr><td>Date</td><td>today</td></tr></table>", "From Anna\nDate today", 0},
		{"pre keeps white space", "<pre>  a  b\n    c</pre>d", "  a  b\n    c\nd", 0},
		{"blockquote marks lines", "top<blockquote>q1<br>q2<blockquote>qq</blockquote>q3</blockquote>bottom",
			"top\n> q1\n> q2\n>> qq\n> q3\nbottom", 0},
		{"quoted '>' in an attribute", `<a title="a > b" href='x>y'>link</a> text`, "link text", 0},
		{"head without </head>", "<head><meta charset=utf-8><body>body text", "body text", 0},
		{"head never closed keeps the text", "<head>text after <b>head</b>", "text after head", 0},
		{"comment, doctype, conditional", "<!DOCTYPE html><!--[if mso]><p>hidden</p><![endif]-->shown<?xml x?>", "shown", 0},
		{"unterminated comment drops the rest", "a<!-- never closed <p>b</p>", "a", 0},
		{"tag open at the end is dropped", "a<div class=", "a", 0},
		{"lone < is text", "1 < 2 and 3 <4 <", "1 < 2 and 3 <4 <", 0},
		{"character references naming no character", "x&#0;y&#xD800;z&#x110000;", "x\uFFFDy\uFFFDz\uFFFD", 3},
		{"U+FFFD as written is not counted", "a\uFFFDb&#65533;", "a\uFFFDb\uFFFD", 0},
		{"upper-case tags", "<DIV>A</DIV><BR><P>B</P><SCRIPT>x</SCRIPT><STYLE>y</Style>", "A\n\nB", 0},
		{"empty", "", "", 0},
	} {
		got, bad, cut := htmlToText(c.in, 1<<20)
		if got != c.want || bad != c.bad || cut {
			t.Errorf("%s: htmlToText(%q) = %q, %d bad, cut %v; want %q, %d bad", c.name, c.in, got, bad, cut, c.want, c.bad)
		}
	}
}

func TestHTMLToTextCut(t *testing.T) {
	in := strings.Repeat("<div>0123456789</div>", 1000)
	got, _, cut := htmlToText(in, 5000)
	if !cut || len(got) > 5000 || len(got) < 4900 {
		t.Errorf("cut %v, %d bytes; want cut near 5000", cut, len(got))
	}
	// Nested blockquotes cannot make a small body render large.
	in = strings.Repeat("<blockquote>", 1000) + strings.Repeat("x<br>", 1000)
	got, _, _ = htmlToText(in, 1<<20)
	if len(got) > 1000*(maxQuoteMarks+3) {
		t.Errorf("%d bytes of input rendered as %d", len(in), len(got))
	}
}

// htmlWorstCases is markup made to defeat a naive tokenizer; in quadratic
// time 2 MiB of it would take minutes. BenchmarkHTMLToTextWorstCase
// measures it (these machines are too noisy for a time limit in a test);
// TestHTMLToTextWorstCases checks what it gives.
func htmlWorstCases(n int) map[string]string {
	fill := func(s string) string { return strings.Repeat(s, n/len(s)) }
	return map[string]string{
		"unclosed quotes":       fill(`<a x="> `),
		"mixed quotes":          fill(`<a x='>" `),
		"heads without end":     fill("<head>x"),
		"script without end":    "<script>" + fill("<p>x</p>"),
		"comment openings":      fill("<!--"),
		"lone brackets":         fill("< <"),
		"deep quotes":           fill("<blockquote>x<br>"),
		"tags only":             fill("<b>"),
		"entities":              fill("&amp;&#x41;&bogus;"),
		"long attribute values": fill(`<a title="` + strings.Repeat("y", 300) + `">`),
	}
}

func TestHTMLToTextWorstCases(t *testing.T) {
	for name, in := range htmlWorstCases(64 << 10) {
		if got, _, _ := htmlToText(in, maxBody); !utf8.ValidString(got) || len(got) > maxBody {
			t.Errorf("%s: %d bytes of text, valid UTF-8 %v", name, len(got), utf8.ValidString(got))
		}
	}
}

// go test ./sinks/webhook/payload -run '^$' -bench HTMLToTextWorstCase
func BenchmarkHTMLToTextWorstCase(b *testing.B) {
	for name, in := range htmlWorstCases(2 << 20) {
		b.Run(strings.ReplaceAll(name, " ", "_"), func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				htmlToText(in, maxBody)
			}
		})
	}
}

// FuzzHTMLToText: any markup renders within the bound, and the text of
// valid UTF-8 is valid UTF-8.
func FuzzHTMLToText(f *testing.F) {
	f.Add("<p>a<br>b</p><blockquote>q</blockquote>&amp;&#0;<pre> x </pre>")
	f.Add(`<a x="> <script>` + "\u00a0")
	f.Fuzz(func(t *testing.T, in string) {
		out, _, _ := htmlToText(in, 4096)
		if len(out) > 4096 {
			t.Fatalf("%d bytes, over the bound", len(out))
		}
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q", in)
		}
	})
}
