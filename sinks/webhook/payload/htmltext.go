package payload

import (
	"html"
	"strings"
)

// htmlToText renders the HTML body of a message that has no text/plain
// body, so that receivers (and stripReply) always have text to work on.
//
// It is deliberately small: a tokenizer of its own rather than
// golang.org/x/net/html, which is not otherwise a dependency and builds a
// whole tree. Its output is at most max bytes (cut reports a longer
// rendering); every step is linear in the input, whatever the markup,
// because a mail body is written by a stranger. Script, style, head and
// title are dropped; block elements and <br> break lines; <p> and
// headings are set off by a blank line; blockquote contents are prefixed
// with "> ", the way plain-text mailers mark quotes, which is what lets
// stripReply find quoted history in HTML-only replies; entities are
// decoded with the standard library; white space collapses except in
// <pre>. bad counts the character references that named no character
// (&#0;, surrogates) and became U+FFFD.
func htmlToText(s string, max int) (text string, bad int, cut bool) {
	r := htmlRenderer{src: s, max: max, lineStart: true}
	r.run()
	return r.finish(), r.bad, r.cut
}

type tagKind uint8

const (
	tagInline tagKind = iota
	tagBlock
	tagPara  // a block set off by a blank line
	tagBreak // <br>
	tagQuote // <blockquote>
	tagPre
	tagCell // <td>, <th>: cells on one line, apart
	tagSkip // contents dropped up to the closing tag
	tagHead
	tagBody
)

var tagKinds = map[string]tagKind{
	"address": tagBlock, "article": tagBlock, "aside": tagBlock, "center": tagBlock, "dd": tagBlock,
	"details": tagBlock, "dialog": tagBlock, "dir": tagBlock, "div": tagBlock, "dl": tagBlock, "dt": tagBlock,
	"fieldset": tagBlock, "figcaption": tagBlock, "figure": tagBlock, "footer": tagBlock, "form": tagBlock,
	"header": tagBlock, "hgroup": tagBlock, "hr": tagBlock, "li": tagBlock, "main": tagBlock, "menu": tagBlock,
	"nav": tagBlock, "ol": tagBlock, "section": tagBlock, "summary": tagBlock, "table": tagBlock,
	"tbody": tagBlock, "tfoot": tagBlock, "thead": tagBlock, "tr": tagBlock, "ul": tagBlock, "caption": tagBlock,
	"html": tagBlock, "legend": tagBlock, "option": tagBlock,
	"p": tagPara, "h1": tagPara, "h2": tagPara, "h3": tagPara, "h4": tagPara, "h5": tagPara, "h6": tagPara,
	"br": tagBreak, "blockquote": tagQuote, "pre": tagPre, "td": tagCell, "th": tagCell,
	"script": tagSkip, "style": tagSkip, "title": tagSkip, "template": tagSkip, "noscript": tagSkip,
	"xml": tagSkip, "head": tagHead, "body": tagBody,
}

// maxQuoteMarks bounds the "> " prefix of nested blockquotes: each <br>
// costs four bytes of input, and an unbounded prefix per line would let a
// small message render into a large one.
const maxQuoteMarks = 8

type htmlRenderer struct {
	src string
	max int

	out       strings.Builder
	quote     int  // blockquote depth
	pre       int  // <pre> depth
	lineStart bool // nothing written on the current line yet
	space     bool // white space seen since the last word
	bad       int
	cut       bool
	noHeadEnd bool // a search for </head> or <body> already failed
	mso       bool // in a paragraph of Word's, which has no margins
}

func (r *htmlRenderer) run() {
	s := r.src
	for i := 0; i < len(s) && !r.cut; {
		lt := strings.IndexByte(s[i:], '<')
		if lt < 0 {
			r.text(s[i:])
			return
		}
		r.text(s[i : i+lt])
		i += lt
		switch {
		case strings.HasPrefix(s[i:], "<!--"):
			end := strings.Index(s[i+4:], "-->")
			if end < 0 {
				return
			}
			i += 4 + end + 3
			continue
		case strings.HasPrefix(s[i:], "<!") || strings.HasPrefix(s[i:], "<?"):
			end := strings.IndexByte(s[i:], '>')
			if end < 0 {
				return
			}
			i += end + 1
			continue
		}
		p := i + 1
		closing := p < len(s) && s[p] == '/'
		if closing {
			p++
		}
		if p >= len(s) || !isASCIILetter(s[p]) {
			r.text("<") // a lone "<" is text, as in a browser
			i++
			continue
		}
		start := p
		for p < len(s) && (isASCIILetter(s[p]) || s[p] >= '0' && s[p] <= '9' || s[p] == ':' || s[p] == '-') {
			p++
		}
		var nameBuf [16]byte
		name := nameBuf[:0]
		if p-start <= len(nameBuf) {
			for _, c := range []byte(s[start:p]) {
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				name = append(name, c)
			}
		}
		end := tagEnd(s, p)
		if end < 0 {
			return // a tag left open at the end is dropped, as by browsers
		}
		i = end + 1
		kind, known := tagKinds[string(name)]
		if !known {
			continue
		}
		switch kind {
		case tagBreak:
			r.newline()
		case tagBlock:
			r.block()
		case tagPara:
			// Word and Outlook write every line as <p class=MsoNormal>
			// with no margins, and blank lines as <p>&nbsp;</p>: a blank
			// line around each would double every line break.
			if !closing {
				r.mso = name[0] == 'p' && strings.Contains(s[p:end], "Mso")
			}
			r.block()
			if !r.mso {
				r.blankLine()
			}
		case tagCell:
			r.space = true
		case tagQuote:
			r.block()
			if closing {
				r.quote = max(r.quote-1, 0)
			} else {
				r.quote++
			}
		case tagPre:
			r.block()
			if closing {
				r.pre = max(r.pre-1, 0)
			} else {
				r.pre++
			}
		case tagSkip:
			if !closing {
				i = r.skipTo(i, "</"+string(name))
			}
		case tagHead:
			if !closing && !r.noHeadEnd {
				if j := r.headEnd(i); j >= 0 {
					i = j
				} else {
					r.noHeadEnd = true
				}
			}
		}
	}
}

func isASCIILetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// tagScan bounds how far a quoted attribute value is followed in search
// of its closing quote: past it, the tag ends at the first '>', so that a
// stray quote cannot make every later tag scan to the end of the body.
const tagScan = 256

// tagEnd returns the index of the '>' that ends the tag whose name ends at
// p, skipping '>' inside quoted attribute values; -1 when there is none.
func tagEnd(s string, p int) int {
	var q byte
	qStart := 0
	var prev byte // last byte outside white space, for "=" before a quote
	for k := p; k < len(s); k++ {
		c := s[k]
		if q != 0 {
			if c == q {
				q, prev = 0, c
			} else if k-qStart > tagScan {
				if gt := strings.IndexByte(s[p:], '>'); gt >= 0 {
					return p + gt
				}
				return -1
			}
			continue
		}
		switch c {
		case '>':
			return k
		case '"', '\'':
			if prev == '=' {
				q, qStart = c, k
			}
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			prev = c
		}
	}
	return -1
}

// skipTo returns the index after the closing tag that starts with close
// (case-insensitive), or the end of the input when there is none.
func (r *htmlRenderer) skipTo(i int, close string) int {
	if j := indexFold(r.src, i, close); j >= 0 {
		if gt := strings.IndexByte(r.src[j:], '>'); gt >= 0 {
			return j + gt + 1
		}
	}
	return len(r.src)
}

// headEnd returns where the body starts after <head>: after </head>, or
// at <body> when </head> is missing; -1 when neither follows.
func (r *htmlRenderer) headEnd(i int) int {
	s := r.src
	for j := i; ; {
		lt := strings.IndexByte(s[j:], '<')
		if lt < 0 {
			return -1
		}
		j += lt
		switch {
		case hasPrefixFold(s[j:], "</head"):
			if gt := strings.IndexByte(s[j:], '>'); gt >= 0 {
				return j + gt + 1
			}
			return -1
		case hasPrefixFold(s[j:], "<body"):
			return j
		}
		j++
	}
}

// indexFold is strings.Index from i, ASCII case-insensitive, for a
// pattern starting with '<'.
func indexFold(s string, i int, pat string) int {
	for j := i; ; {
		lt := strings.IndexByte(s[j:], '<')
		if lt < 0 {
			return -1
		}
		j += lt
		if hasPrefixFold(s[j:], pat) {
			return j
		}
		j++
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// text writes a run of character data.
func (r *htmlRenderer) text(s string) {
	if s == "" {
		return
	}
	if r.pre > 0 {
		for {
			line, rest, more := strings.Cut(s, "\n")
			r.word(line)
			if !more {
				return
			}
			r.newline()
			s = rest
		}
	}
	for s != "" && !r.cut {
		j := 0
		for j < len(s) && isHTMLSpace(s[j]) {
			j++
		}
		if j > 0 {
			r.space = true
			s = s[j:]
			continue
		}
		for j < len(s) && !isHTMLSpace(s[j]) {
			j++
		}
		if r.space && !r.lineStart {
			r.write(" ")
		}
		r.space = false
		r.word(s[:j])
		s = s[j:]
	}
}

func isHTMLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// word writes text without white space to collapse, decoding entities.
// NO-BREAK SPACE becomes a plain space: receivers want text, and it keeps
// "&nbsp;" lines blank.
func (r *htmlRenderer) word(w string) {
	if w == "" {
		return
	}
	if strings.IndexByte(w, '&') >= 0 {
		r.bad += badRefs(w)
		w = html.UnescapeString(w)
	}
	w = strings.ReplaceAll(w, "\u00a0", " ")
	r.write(w)
}

func (r *htmlRenderer) write(s string) {
	if r.lineStart {
		if r.quote > 0 {
			r.out.WriteString(strings.Repeat(">", min(r.quote, maxQuoteMarks)))
			r.out.WriteByte(' ')
		}
		r.lineStart = false
	}
	if r.out.Len()+len(s) > r.max {
		r.cut = true
		return
	}
	r.out.WriteString(s)
}

func (r *htmlRenderer) newline() {
	if r.out.Len() >= r.max {
		r.cut = true
		return
	}
	r.out.WriteByte('\n')
	r.lineStart, r.space = true, false
}

// block ends the current line, if anything is on it.
func (r *htmlRenderer) block() {
	if !r.lineStart {
		r.newline()
	}
}

func (r *htmlRenderer) blankLine() {
	if r.out.Len() > 0 {
		r.newline()
	}
}

// finish trims trailing white space from every line, keeps at most one
// blank line in a row and drops blank lines at both ends.
func (r *htmlRenderer) finish() string {
	s := r.out.String()
	var sb strings.Builder
	sb.Grow(len(s))
	blank := 0
	for s != "" {
		line, rest, _ := strings.Cut(s, "\n")
		s = rest
		line = strings.TrimRight(line, " \t")
		if line == "" || strings.Trim(line, ">") == "" {
			blank++
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('\n')
			if blank > 0 {
				sb.WriteByte('\n')
			}
		}
		blank = 0
		sb.WriteString(line)
	}
	return sb.String()
}

// badRefs counts the numeric character references in s that name no
// character (NUL, surrogates, beyond U+10FFFF): html.UnescapeString turns
// them into U+FFFD, and parse_errors says so.
func badRefs(s string) int {
	bad := 0
	for {
		i := strings.Index(s, "&#")
		if i < 0 {
			return bad
		}
		s = s[i+2:]
		hex := len(s) > 0 && (s[0] == 'x' || s[0] == 'X')
		if hex {
			s = s[1:]
		}
		v, n := 0, 0
		for n < len(s) {
			c, d := s[n], -1
			switch {
			case c >= '0' && c <= '9':
				d = int(c - '0')
			case hex && c|0x20 >= 'a' && c|0x20 <= 'f':
				d = int(c|0x20-'a') + 10
			}
			if d < 0 {
				break
			}
			if v <= 0x10FFFF {
				if hex {
					v = v*16 + d
				} else {
					v = v*10 + d
				}
			}
			n++
		}
		if n > 0 && (v == 0 || v >= 0xD800 && v <= 0xDFFF || v > 0x10FFFF) {
			bad++
		}
		s = s[n:]
	}
}
