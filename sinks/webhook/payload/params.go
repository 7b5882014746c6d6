package payload

import (
	"fmt"
	"mime"
	"sort"
	"strconv"
	"strings"
)

// parseParams parses a Content-Type or Content-Disposition value into its
// lower-cased type and parameters. mime.ParseMediaType does it for
// well-formed values; it drops RFC 2231 parameters in charsets other than
// UTF-8 and refuses the whole value for one bad parameter, so those values
// go through lenientParams instead. ok is false when the value needed the
// lenient reading for being malformed (not for a legitimate RFC 2231
// charset).
func parseParams(v string) (typ string, params map[string]string, ok bool) {
	typ, params, ok, _ = parseParamsReport(v)
	return typ, params, ok
}

// parseParamsReport is parseParams that also says, by parameter name,
// which RFC 2231 values could not be decoded cleanly (U+FFFD, or bytes
// whose charset had to be guessed).
func parseParamsReport(v string) (typ string, params map[string]string, ok bool, problems map[string]string) {
	t, p, err := mime.ParseMediaType(v)
	if err == nil && !strings.Contains(v, "*=") {
		return t, p, true, nil
	}
	t, p, problems = lenientParams(v)
	return t, p, err == nil, problems
}

// lenientParams reads "type; a=b; c="d e"; f*0*=utf-8”%E2..." as well as
// it can: unquoted values may hold spaces, a missing closing quote ends the
// value at the end of the string, a missing type ("filename=x") gives "",
// the first of duplicate parameters wins, and RFC 2231 continuations and
// charsets are decoded.
func lenientParams(v string) (string, map[string]string, map[string]string) {
	typ := v
	rest := ""
	if i := strings.IndexByte(v, ';'); i >= 0 {
		typ, rest = v[:i], v[i+1:]
	}
	typ = strings.ToLower(strings.TrimSpace(typ))
	if f := strings.Fields(typ); len(f) > 1 && strings.Contains(f[0], "/") && !strings.Contains(f[0], "=") {
		typ = f[0] // "text/plain charset=x"
		rest = strings.Join(f[1:], " ") + ";" + rest
	} else if strings.Contains(typ, "=") { // parameters without a type
		typ, rest = "", v
	}
	raw := map[string]string{}
	var order []string
	for i := 0; i < len(rest); {
		for i < len(rest) && (rest[i] == ';' || rest[i] == ' ' || rest[i] == '\t') {
			i++
		}
		if i >= len(rest) {
			break
		}
		j := i
		for j < len(rest) && rest[j] != '=' && rest[j] != ';' {
			j++
		}
		name := strings.ToLower(strings.TrimSpace(rest[i:j]))
		if j >= len(rest) || rest[j] == ';' {
			i = j
			continue
		}
		j++ // '='
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t') {
			j++
		}
		var val string
		if j < len(rest) && rest[j] == '"' {
			var sb strings.Builder
			j++
			for j < len(rest) && rest[j] != '"' {
				if rest[j] == '\\' && j+1 < len(rest) {
					j++
				}
				sb.WriteByte(rest[j])
				j++
			}
			j++ // closing quote
			val = sb.String()
			for j < len(rest) && rest[j] != ';' { // junk after the quote
				j++
			}
		} else {
			k := j
			for k < len(rest) && rest[k] != ';' {
				k++
			}
			val = strings.TrimSpace(rest[j:k])
			j = k
		}
		i = j
		if name == "" {
			continue
		}
		if _, dup := raw[name]; !dup {
			raw[name] = val
			order = append(order, name)
		}
	}
	params, problems := assemble2231(raw, order)
	return typ, params, problems
}

// assemble2231 joins RFC 2231 continuations (name*0, name*1*, ...) and
// decodes extended values (name*=charset'lang'%XX) in any charset.
// problems describes, by parameter, a value that did not decode cleanly.
func assemble2231(raw map[string]string, order []string) (out, problems map[string]string) {
	out = map[string]string{}
	type seg struct {
		n       int
		ext     bool
		val     string
		present bool
	}
	ext := map[string][]seg{}
	for _, k := range order {
		v := raw[k]
		star := strings.IndexByte(k, '*')
		if star < 0 {
			out[k] = v
			continue
		}
		base, suf := k[:star], k[star+1:]
		s := seg{val: v, present: true}
		switch {
		case suf == "": // name*=
			s.ext = true
		case strings.HasSuffix(suf, "*"):
			s.ext = true
			suf = suf[:len(suf)-1]
			fallthrough
		default:
			n, err := strconv.Atoi(suf)
			if err != nil || n > 1000 {
				continue
			}
			s.n = n
		}
		ext[base] = append(ext[base], s)
	}
	for base, segs := range ext {
		sort.SliceStable(segs, func(i, j int) bool { return segs[i].n < segs[j].n })
		var b []byte
		cs := ""
		for i, s := range segs {
			val := s.val
			if s.ext {
				if i == 0 {
					if q := strings.IndexByte(val, '\''); q >= 0 {
						cs = val[:q]
						val = val[q+1:]
						if q2 := strings.IndexByte(val, '\''); q2 >= 0 {
							val = val[q2+1:]
						}
					}
				}
				b = append(b, percentDecode(val)...)
			} else {
				b = append(b, val...)
			}
		}
		if cs == "" {
			out[base] = string(b)
			continue
		}
		var problem string
		out[base], problem = decodeCharsetString(b, cs)
		if problem != "" {
			if problems == nil {
				problems = map[string]string{}
			}
			problems[base] = problem
		}
	}
	return out, problems
}

// decodeCharsetString decodes b in the named charset, falling back to a
// guess for an unknown one. It is for short values (parameters); problem
// is "" when b decoded cleanly.
func decodeCharsetString(b []byte, cs string) (s, problem string) {
	n := normalizeCharset(cs)
	if n == "utf-8" || n == "us-ascii" {
		s, used := guess(b, "")
		if used != "utf-8" && !isASCII(b) {
			return s, fmt.Sprintf("RFC 2231 value labelled %q is not %s; read as %s", clip(cs, 40), n, used)
		}
		return s, ""
	}
	if c, ok := lookupCharset(n); ok {
		s, bad := c.decode(b)
		if bad > 0 {
			return s, fmt.Sprintf("%d undecodable sequences in %s RFC 2231 value replaced with U+FFFD", bad, c.name)
		}
		return s, ""
	}
	s, used := guess(b, "")
	if isASCII(b) {
		return s, ""
	}
	return s, fmt.Sprintf("unknown charset %q in RFC 2231 value; read as %s", clip(cs, 40), used)
}

func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b = append(b, h<<4|l)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return b
}

// paramText decodes a name or filename parameter: RFC 2047 words inside
// it (non-standard but what most mailers send) and raw 8-bit bytes.
func paramText(v, hint string) (string, []string) {
	s, probs := decodeWords(v, hint)
	return strings.TrimSpace(s), probs
}

func describeParams(what, v string) string {
	return fmt.Sprintf("malformed %s %q; read leniently", what, clip(v, 60))
}
