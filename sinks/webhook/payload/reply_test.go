package payload

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/text/encoding/htmlindex"
)

// replyCase is one labelled reply of testdata/replies: a body as a mail
// client writes it, and what a person reading it calls the sender's new
// part and signature. The labels follow the behaviour documented in
// docs/webhook.md (stripped_text): for an inline reply the new part runs
// from the first quoted line (or the greeting) to the last answer; a
// forwarded message is all new; a signature is what follows "-- ", a
// "Sent from my iPhone" style line, or Foxmail's address line. Closing
// words without a delimiter ("Best regards, Anna") belong to the reply.
//
// The cases marked "set: held-out" were written after the rules were
// frozen and run once; the others were written along with the rules, so
// their precision flatters them. Both count for the pins.
//
// File format: "key: value" lines (client, lang, format text|html, layout
// top|bottom|inline|new|forward, set, charset, from, subject, note), then
// sections
// "=== body", "=== reply" and optionally "=== signature", each running to
// the next "=== " line. Trailing spaces matter ("-- ").
type replyCase struct {
	file                                                 string
	client, lang, format, layout, charset, from, subject string
	heldOut                                              bool
	body, reply, signature                               string
}

func readReplyCases(t *testing.T) []replyCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "replies", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no labelled replies: %v", err)
	}
	var cases []replyCase
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c := replyCase{file: filepath.Base(f), charset: "utf-8", from: "customer@example.net", subject: "Re: your request"}
		sections := map[string]*strings.Builder{}
		var cur *strings.Builder
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			line := sc.Text()
			if name, ok := strings.CutPrefix(line, "=== "); ok {
				cur = &strings.Builder{}
				sections[name] = cur
				continue
			}
			if cur != nil {
				cur.WriteString(line + "\n")
				continue
			}
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				t.Fatalf("%s: header line %q", f, line)
			}
			switch k {
			case "client":
				c.client = v
			case "lang":
				c.lang = v
			case "format":
				c.format = v
			case "layout":
				c.layout = v
			case "charset":
				c.charset = v
			case "from":
				c.from = v
			case "subject":
				c.subject = v
			case "set":
				c.heldOut = v == "held-out"
			case "note":
			default:
				t.Fatalf("%s: unknown key %q", f, k)
			}
		}
		section := func(name string) string {
			if b := sections[name]; b != nil {
				return strings.TrimSuffix(b.String(), "\n")
			}
			return ""
		}
		c.body, c.reply, c.signature = section("body")+"\n", section("reply"), section("signature")
		if c.client == "" || c.lang == "" || (c.format != "text" && c.format != "html") || sections["body"] == nil || sections["reply"] == nil {
			t.Fatalf("%s: incomplete case %+v", f, c)
		}
		cases = append(cases, c)
	}
	return cases
}

// message builds the reply as its client sends it: one text/plain or
// text/html part in the case's charset.
func (c replyCase) message(t *testing.T) []byte {
	t.Helper()
	body := []byte(strings.ReplaceAll(c.body, "\n", "\r\n"))
	if c.charset != "utf-8" {
		e, err := htmlindex.Get(c.charset)
		if err != nil {
			t.Fatalf("%s: charset %s: %v", c.file, c.charset, err)
		}
		if body, err = e.NewEncoder().Bytes(body); err != nil {
			t.Fatalf("%s: cannot encode the body in %s: %v", c.file, c.charset, err)
		}
	}
	cte, text := "base64", b64Lines(body)
	if c.charset == "iso-2022-jp" {
		cte, text = "7bit", string(body)
	}
	mediaType := "text/plain"
	if c.format == "html" {
		mediaType = "text/html"
	}
	return []byte(crlfJoin(
		"From: Customer <"+c.from+">",
		"To: Acme Support <support@example.com>",
		"Subject: "+c.subject,
		"Date: Fri, 27 Nov 2026 12:00:00 +0800",
		"MIME-Version: 1.0",
		"Content-Type: "+mediaType+"; charset="+c.charset,
		"Content-Transfer-Encoding: "+cte,
		"",
		text,
	))
}

// Pinned results over testdata/replies: a change that makes fewer
// replies come out exactly right fails here. When a change gets more
// right, raise the pins.
//
// On their first run the 16 held-out replies scored 14 (stripped_text)
// and 16 (signature); the two misses led to the rules for Outlook
// forwards (by subject) and for the closing rule of a signature box. The
// one reply still wrong is an Outlook inline answer marked only by
// colour, which no rule on text can see.
const (
	pinnedReplies    = 95
	pinnedStripped   = 94
	pinnedSignatures = 95
)

// TestReplyPrecision runs every labelled reply through Write and counts
// those whose stripped_text is exactly the labelled new part (trailing
// white space aside) and whose stripped_signature is the labelled one.
// With -v it prints the precision by client and by language.
func TestReplyPrecision(t *testing.T) {
	cases := readReplyCases(t)
	type tally struct{ n, text, sig int }
	byClient, byLang := map[string]*tally{}, map[string]*tally{}
	var all, heldOut tally
	for _, c := range cases {
		d, _ := render(t, c.file, c.message(t), Options{})
		m := d.Data
		if m.TextFromHTML != (c.format == "html") {
			t.Errorf("%s: text_from_html %v for a %s reply", c.file, m.TextFromHTML, c.format)
		}
		textOK := trimRight(m.StrippedText) == trimRight(c.reply)
		sigOK := normSig(m.StrippedSig) == normSig(c.signature)
		if !textOK {
			t.Logf("%s (%s, %s): stripped_text\n got: %q\nwant: %q", c.file, c.client, c.lang, m.StrippedText, c.reply)
		}
		if !sigOK {
			t.Logf("%s (%s, %s): stripped_signature\n got: %q\nwant: %q", c.file, c.client, c.lang, m.StrippedSig, c.signature)
		}
		tallies := []*tally{get(byClient, c.client), get(byLang, c.lang), &all}
		if c.heldOut {
			tallies = append(tallies, &heldOut)
		}
		for _, tl := range tallies {
			tl.n++
			if textOK {
				tl.text++
			}
			if sigOK {
				tl.sig++
			}
		}
	}
	pct := func(a, b int) string { return fmt.Sprintf("%5.1f%%", 100*float64(a)/float64(b)) }
	table := func(title string, m map[string]*tally) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Logf("%-15s %7s %14s %14s", title, "replies", "stripped_text", "signature")
		for _, k := range keys {
			tl := m[k]
			t.Logf("%-15s %7d %6d %s %6d %s", k, tl.n, tl.text, pct(tl.text, tl.n), tl.sig, pct(tl.sig, tl.n))
		}
	}
	table("client", byClient)
	table("language", byLang)
	t.Logf("%-15s %7d %6d %s %6d %s", "all", all.n, all.text, pct(all.text, all.n), all.sig, pct(all.sig, all.n))
	if heldOut.n > 0 {
		t.Logf("%-15s %7d %6d %s %6d %s", "held-out", heldOut.n, heldOut.text, pct(heldOut.text, heldOut.n), heldOut.sig, pct(heldOut.sig, heldOut.n))
	}

	if all.n < pinnedReplies {
		t.Errorf("%d labelled replies, want at least %d", all.n, pinnedReplies)
	}
	if all.text < pinnedStripped {
		t.Errorf("stripped_text right for %d of %d replies; it was %d: a regression", all.text, all.n, pinnedStripped)
	}
	if all.sig < pinnedSignatures {
		t.Errorf("stripped_signature right for %d of %d replies; it was %d: a regression", all.sig, all.n, pinnedSignatures)
	}
	if all.text > pinnedStripped || all.sig > pinnedSignatures {
		t.Logf("better than pinned (%d, %d): raise pinnedStripped and pinnedSignatures", all.text, all.sig)
	}
}

func get[T any](m map[string]*T, k string) *T {
	if m[k] == nil {
		m[k] = new(T)
	}
	return m[k]
}

func trimRight(s string) string { return strings.TrimRightFunc(s, unicode.IsSpace) }

// normSig compares signatures line by line without trailing white space,
// which HTML renderings do not keep ("-- " becomes "--").
func normSig(s string) string {
	lines := strings.Split(trimRight(s), "\n")
	for i, l := range lines {
		lines[i] = trimRight(l)
	}
	return strings.Join(lines, "\n")
}

// TestReplyCoverage keeps the labelled set honest about what it claims:
// every client of the help-desk contract in the languages it is used in,
// plain-text and HTML-only replies, and the layouts.
func TestReplyCoverage(t *testing.T) {
	have := map[string]bool{}
	for _, c := range readReplyCases(t) {
		have[c.client+"/"+c.lang+"/"+c.format] = true
		have[c.client+"/"+c.lang] = true
		have["layout/"+c.layout] = true
	}
	var missing []string
	for _, client := range []string{"Gmail", "Outlook", "Outlook web", "Apple Mail", "Thunderbird"} {
		for _, lang := range []string{"en", "zh", "ja"} {
			for _, format := range []string{"text", "html"} {
				if k := client + "/" + lang + "/" + format; !have[k] {
					missing = append(missing, k)
				}
			}
		}
	}
	for _, client := range []string{"QQ Mail", "Foxmail", "NetEase"} {
		for _, lang := range []string{"zh", "en"} {
			if k := client + "/" + lang; !have[k] {
				missing = append(missing, k)
			}
		}
		if k := client + "/zh/html"; !have[k] {
			missing = append(missing, k)
		}
	}
	for _, layout := range []string{"top", "bottom", "inline", "new", "forward"} {
		if !have["layout/"+layout] {
			missing = append(missing, "layout "+layout)
		}
	}
	if len(missing) > 0 {
		t.Errorf("labelled replies lack %q", missing)
	}
}

// containsFoldASCII says what lower-casing the line and searching did,
// whatever the line holds (upper-case and other Unicode letters,
// invalid UTF-8).
func FuzzContainsFoldASCII(f *testing.F) {
	for _, s := range []string{"Reply ABOVE this line", "above thıs line", "ABOVE THİS LINE", "above this lin", "\xffabove this line", "KELVIN \u212a above  this line"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := strings.Contains(strings.ToLower(s), "above this line")
		if got := containsFoldASCII(s, "above this line"); got != want {
			t.Errorf("containsFoldASCII(%q) = %v, lower-casing says %v", s, got, want)
		}
	})
}

// hasWideSpace finds what searching for each wide space in turn finds.
func FuzzHasWideSpace(f *testing.F) {
	for _, s := range []string{"a\u00a0b", "こんにちは\u3000世界", "ｶﾀｶﾅ", "\xc2", "\xe3\x80", "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := strings.Contains(s, "\u00a0") || strings.Contains(s, "\u3000")
		if got := hasWideSpace(s); got != want {
			t.Errorf("hasWideSpace(%q) = %v, want %v", s, got, want)
		}
	})
}
