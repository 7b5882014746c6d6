package payload

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// decodeWords decodes the RFC 2047 encoded words in an unstructured header
// value, word by word: white space between two encoded words is dropped,
// and adjacent words in the same charset are joined before they are
// decoded, so a character split across two words (a common fault with
// GBK and UTF-8) survives. A word in an unknown charset, or one that is
// not valid base64, is decoded as well as it can be and reported; it does
// not spoil the rest. Unencoded 8-bit text is read with guess (hint: the
// charset the message declares elsewhere).
//
// It is written out rather than taken from mime.WordDecoder, which decodes
// each word on its own and gives up on the whole value at the first word
// it cannot decode.
func decodeWords(s, hint string) (string, []string) {
	if isASCIIStr(s) && !strings.Contains(s, "=?") {
		return s, nil
	}
	var (
		sb          strings.Builder
		problems    []string
		pending     []byte // decoded bytes of adjacent words in pendCS
		pendCS      string
		havePending bool
		pendBad     bool // a word of the run was not valid base64
	)
	flush := func() {
		if !havePending {
			return
		}
		sb.WriteString(decodeWordBytes(pending, pendCS, hint, &problems))
		if pendBad {
			problems = append(problems, fmt.Sprintf("malformed base64 in %s encoded word", pendCS))
		}
		pending, pendCS, havePending, pendBad = nil, "", false, false
	}
	lastWasWord := false
	for i := 0; i < len(s); {
		j := strings.Index(s[i:], "=?")
		if j < 0 {
			flush()
			writeLiteral(&sb, s[i:], hint, &problems)
			break
		}
		j += i
		cs, enc, text, end, ok := parseWord(s, j)
		if !ok { // not an encoded word: copy "=?" through
			flush()
			writeLiteral(&sb, s[i:j+2], hint, &problems)
			i = j + 2
			lastWasWord = false
			continue
		}
		if between := s[i:j]; !lastWasWord || strings.TrimSpace(between) != "" {
			flush()
			writeLiteral(&sb, between, hint, &problems)
		}
		var b []byte
		if enc == 'B' || enc == 'b' {
			b, ok = decodeBase64String(text)
		} else {
			b = decodeQ(text)
		}
		ncs := normalizeCharset(cs)
		if havePending && ncs != pendCS {
			flush()
		}
		pending = append(pending, b...)
		pendCS, havePending, pendBad = ncs, true, pendBad || !ok
		i = end
		lastWasWord = true
	}
	flush()
	return sb.String(), problems
}

func writeLiteral(sb *strings.Builder, lit, hint string, problems *[]string) {
	if isASCIIStr(lit) {
		sb.WriteString(lit)
		return
	}
	out, cs := guess([]byte(lit), hint)
	if cs != "utf-8" {
		*problems = append(*problems, fmt.Sprintf("unencoded 8-bit text read as %s", cs))
	}
	sb.WriteString(out)
}

// decodeWordBytes turns the joined bytes of encoded words in one charset
// into UTF-8.
func decodeWordBytes(b []byte, cs, hint string, problems *[]string) string {
	switch cs {
	case "utf-8":
		if utf8.Valid(b) {
			return string(b)
		}
		out, used := guess(b, hint)
		*problems = append(*problems, fmt.Sprintf("invalid UTF-8 in encoded word; read as %s", used))
		return out
	case "us-ascii":
		if isASCII(b) {
			return string(b)
		}
		out, used := guess(b, hint)
		*problems = append(*problems, fmt.Sprintf("8-bit bytes in us-ascii encoded word; read as %s", used))
		return out
	}
	if c, ok := lookupCharset(cs); ok {
		out, bad := c.decode(b)
		if bad > 0 {
			*problems = append(*problems, fmt.Sprintf("%d undecodable bytes in %s encoded word replaced with U+FFFD", bad, cs))
		}
		return out
	}
	out, used := guess(b, hint)
	*problems = append(*problems, fmt.Sprintf("unknown charset %q in encoded word; read as %s", clip(cs, 40), used))
	return out
}

const maxWord = 2048

// parseWord parses an encoded word "=?charset?E?text?=" starting at s[i].
func parseWord(s string, i int) (cs string, enc byte, text string, end int, ok bool) {
	rest := s[i+2:]
	q1 := strings.IndexByte(rest[:min(len(rest), 80)], '?')
	if q1 <= 0 || q1 > 75 || strings.ContainsAny(rest[:q1], " \t\"") {
		return "", 0, "", 0, false
	}
	if len(rest) < q1+3 || rest[q1+2] != '?' {
		return "", 0, "", 0, false
	}
	enc = rest[q1+1]
	if enc != 'B' && enc != 'b' && enc != 'Q' && enc != 'q' {
		return "", 0, "", 0, false
	}
	body := rest[q1+3:]
	// Words are at most 75 characters; senders exceed that, but a bound
	// keeps a header full of "=?" linear.
	e := strings.Index(body[:min(len(body), maxWord)], "?=")
	if e < 0 {
		return "", 0, "", 0, false
	}
	text = body[:e]
	if strings.ContainsAny(text, "\r\n") {
		return "", 0, "", 0, false
	}
	// Q text may not hold white space; senders put it there anyway, so
	// accept it unless it holds something that looks like the next word.
	if strings.Contains(text, "=?") {
		return "", 0, "", 0, false
	}
	return rest[:q1], enc, text, i + 2 + q1 + 3 + e + 2, true
}

// clip shortens s to at most n bytes (on a rune boundary) for error
// messages, keeping them short and valid UTF-8.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !startsRune(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func startsRune(c byte) bool { return c&0xC0 != 0x80 }
