package payload

import (
	"errors"
	"io"
	"mime"
	"net/mail"
	"regexp"
	"strings"
	"unicode/utf8"
)

// address is one mailbox of From, To, Cc or Reply-To.
type address struct{ Name, Address string }

var errNoCharset = errors.New("charset left to pophook")

// addressParser is net/mail's parser with encoded-word decoding turned off:
// encoded words are quoted before parsing (see quoteWords) and decoded by
// decodeWords afterwards, which knows every charset and falls back word by
// word.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(string, io.Reader) (io.Reader, error) { return nil, errNoCharset },
}}

// parseAddressList reads an address header: net/mail first; when it
// refuses the value (comments, a missing '>', raw 8-bit names, "<>",
// routes...), a tolerant reader keeps what can be read and the failure is
// returned as a problem.
func parseAddressList(v, hint string) ([]address, []string) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var problems []string
	list, err := addressParser.ParseList(quoteWords(v))
	var out []address
	if err == nil {
		for _, a := range list {
			name, probs := decodeWords(a.Name, hint)
			problems = append(problems, probs...)
			out = append(out, address{Name: cleanName(name), Address: a.Address})
		}
		return out, problems
	}
	out, probs := lenientAddresses(v, hint)
	problems = append(problems, probs...)
	problems = append(problems, "could not parse address list ("+strings.TrimPrefix(err.Error(), "mail: ")+"); best effort used")
	return out, problems
}

var wordRE = regexp.MustCompile(`^=\?[^?\s"]+\?[bBqQ]\?[^?\s]*\?=`)

// quoteWords wraps each encoded word standing outside quotes, comments and
// angle brackets in double quotes, so net/mail leaves it alone.
func quoteWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	var sb strings.Builder
	inQuote, depth, angle := false, 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQuote:
			if c == '\\' && i+1 < len(v) {
				sb.WriteByte(c)
				i++
				c = v[i]
			} else if c == '"' {
				inQuote = false
			}
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case angle:
			if c == '>' {
				angle = false
			}
		case c == '"':
			inQuote = true
		case c == '(':
			depth++
		case c == '<':
			angle = true
		case c == '=' && strings.HasPrefix(v[i:], "=?"):
			if loc := wordRE.FindStringIndex(v[i:]); loc != nil {
				sb.WriteByte('"')
				sb.WriteString(v[i : i+loc[1]])
				sb.WriteByte('"')
				i += loc[1] - 1
				continue
			}
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// lenientAddresses splits on commas and semicolons outside quotes, comments
// and angle brackets, drops group names, and reads each item as
// "name <addr>", "addr (name)", "addr" or a bare name.
func lenientAddresses(v, hint string) ([]address, []string) {
	var out []address
	var problems []string
	for _, item := range splitAddresses(v) {
		for _, a := range lenientAddress(item) {
			if a.Name == "" && a.Address == "" {
				continue
			}
			dn, probs := decodeWords(a.Name, hint)
			problems = append(problems, probs...)
			if !utf8.ValidString(a.Address) {
				var used string
				a.Address, used = guess([]byte(a.Address), hint)
				problems = append(problems, "8-bit address read as "+used)
			}
			out = append(out, address{Name: cleanName(dn), Address: a.Address})
		}
	}
	return out, problems
}

func splitAddresses(v string) []string {
	var items []string
	inQuote, depth, angle := false, 0, false
	start := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case depth > 0:
			switch c {
			case '\\':
				i++
			case '(':
				depth++
			case ')':
				depth--
			}
		case c == '(':
			depth++
		case angle:
			if c == '>' {
				angle = false
			}
		case c == '"':
			inQuote = true
		case c == '<':
			angle = true
		case c == ',' || c == ';':
			items = append(items, v[start:i])
			start = i + 1
		case c == ':':
			// A group: "name: a, b;" -- drop the group's name.
			start = i + 1
		}
	}
	return append(items, v[start:])
}

var dotSpaceRE = regexp.MustCompile(`\s*([.@])\s*`)

// lenientAddress reads one item of an address list. It usually yields one
// address; "a@x b@y" (a list without commas) yields two.
func lenientAddress(item string) []address {
	item, comment := stripComments(item)
	item = strings.TrimSpace(item)
	var name, addr string
	if lt := lastUnquoted(item, '<'); lt >= 0 {
		addr = item[lt+1:]
		if gt := strings.IndexByte(addr, '>'); gt >= 0 {
			addr = addr[:gt]
		}
		if c := strings.LastIndexByte(addr, ':'); c >= 0 { // obsolete route
			addr = addr[c+1:]
		}
		addr = strings.Join(strings.Fields(strings.Trim(addr, "\"';, \t")), "")
		name = unquote(strings.TrimSpace(item[:lt]))
	} else {
		// Folding white space around dots and "@" is allowed in an
		// obsolete addr-spec ("jdoe@test . example").
		words := strings.Fields(dotSpaceRE.ReplaceAllString(item, "$1"))
		var addrs, rest []string
		for _, w := range words {
			if strings.Contains(w, "@") && !strings.HasPrefix(w, "\"") {
				addrs = append(addrs, strings.Trim(w, "\"';,<>"))
			} else {
				rest = append(rest, w)
			}
		}
		switch {
		case len(addrs) > 1:
			out := make([]address, 0, len(addrs))
			for _, a := range addrs {
				out = append(out, address{Address: checkAddr(a)})
			}
			return out
		case len(addrs) == 1:
			addr, name = addrs[0], unquote(strings.Join(rest, " "))
		case len(rest) == 1 && !strings.HasPrefix(rest[0], "\""):
			addr = rest[0] // a local address: "MAILER-DAEMON", "root"
		default:
			return nil // words without an address: a group name, a comment
		}
	}
	if name == "" {
		name = strings.TrimSpace(comment)
	}
	return []address{{Name: name, Address: checkAddr(addr)}}
}

// checkAddr drops an address nothing can be sent to ("@domain", "user@").
func checkAddr(a string) string {
	if at := strings.LastIndexByte(a, '@'); at == 0 || at == len(a)-1 {
		return ""
	}
	return a
}

// stripComments removes parenthesised comments outside quoted strings
// (also inside angle brackets, where CFWS may stand too), returning the
// text of the first one.
func stripComments(s string) (string, string) {
	if !strings.Contains(s, "(") {
		return s, ""
	}
	var sb, first strings.Builder
	inQuote, depth, seen := false, 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if depth > 0 {
			switch c {
			case '\\':
				if i+1 < len(s) {
					i++
					c = s[i]
				}
			case '(':
				depth++
			case ')':
				depth--
				if depth == 0 {
					seen = true
					continue
				}
			}
			if !seen {
				first.WriteByte(c)
			}
			continue
		}
		switch {
		case inQuote:
			if c == '\\' && i+1 < len(s) {
				sb.WriteByte(c)
				i++
				c = s[i]
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '(':
			depth = 1
			sb.WriteByte(' ')
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String(), first.String()
}

func lastUnquoted(s string, c byte) int {
	inQuote, at := false, -1
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == c && !inQuote:
			at = i
		}
	}
	return at
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
		if strings.Contains(s, "\\") {
			var sb strings.Builder
			for i := 0; i < len(s); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				sb.WriteByte(s[i])
			}
			s = sb.String()
		}
	}
	return strings.Trim(s, "\" \t")
}

// cleanName trims quotes and white space a display name keeps after decoding
// ("=?..?=" inside quotes).
func cleanName(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

// msgIDs returns the message identifiers in a Message-ID, In-Reply-To or
// References value, undecoded, with their angle brackets. Comments and
// folding white space inside an identifier (the obsolete syntax of
// RFC 5322 section 4.5.4) are removed: they are not part of it, and a
// mailer that copies the id into a reply may or may not keep them, so
// only the bare id compares. A value without any "<...>" is split on
// white space and commas. replaced reports bytes that were not UTF-8.
func msgIDs(v string) (ids []string, replaced bool) {
	for rest := v; ; {
		lt := strings.IndexByte(rest, '<')
		if lt < 0 {
			break
		}
		gt := strings.IndexByte(rest[lt:], '>')
		if gt < 0 {
			break
		}
		id, _ := stripComments(rest[lt : lt+gt+1])
		id = strings.Join(strings.Fields(id), "")
		if id != "<>" {
			ids = append(ids, id)
		}
		rest = rest[lt+gt+1:]
	}
	if len(ids) == 0 {
		ids = strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
	}
	for i, id := range ids {
		if !utf8.ValidString(id) {
			ids[i] = strings.ToValidUTF8(id, "\uFFFD")
			replaced = true
		}
	}
	return ids, replaced
}
