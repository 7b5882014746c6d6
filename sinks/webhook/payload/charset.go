package payload

import (
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

// A charset turns bytes of one character set into UTF-8. Its result is
// always valid UTF-8; bad reports how many bytes or sequences could not be
// decoded (each became U+FFFD).
type charset struct {
	name   string
	decode func([]byte) (s string, bad int)
}

// charsetAliases maps labels senders use to what they mean in practice:
// GB2312 and GBK text is decoded as GB18030 (a superset), Shift_JIS as
// CP932, EUC-KR as CP949 (the WHATWG decoders in x/text already do the
// latter two), Big5 with the Hong Kong extensions.
var charsetAliases = map[string]string{
	"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "ms936": "gb18030",
	"x-gbk": "gb18030", "euc-cn": "gb18030", "x-euc-cn": "gb18030", "gb_2312-80": "gb18030",
	"csgb2312": "gb18030", "chinese": "gb18030", "windows-936": "gb18030", "gb2312-80": "gb18030",
	"cp932": "shift_jis", "ms932": "shift_jis", "windows-932": "shift_jis", "sjis": "shift_jis",
	"shift-jis": "shift_jis", "x-sjis": "shift_jis", "ms_kanji": "shift_jis", "csshiftjis": "shift_jis",
	"cp949": "euc-kr", "ms949": "euc-kr", "uhc": "euc-kr", "windows-949": "euc-kr", "x-windows-949": "euc-kr",
	"ks_c_5601": "euc-kr", "ks_c_5601-1989": "euc-kr", "ksc5601": "euc-kr", "ksc_5601": "euc-kr",
	"big5-hkscs": "big5", "cp950": "big5", "ms950": "big5", "x-x-big5": "big5", "cn-big5": "big5", "big-5": "big5",
	"iso-2022-jp-1": "iso-2022-jp", "iso-2022-jp-2": "iso-2022-jp", "iso-2022-jp-3": "iso-2022-jp",
	"csiso2022jp": "iso-2022-jp", "x-euc-jp": "euc-jp", "eucjp": "euc-jp",
	"utf8": "utf-8", "unicode-1-1-utf-8": "utf-8", "x-unicode20utf8": "utf-8",
	"unicode-1-1-utf-7": "utf-7", "csunicode11utf7": "utf-7", "utf7": "utf-7",
	"ascii": "us-ascii", "ansi_x3.4-1968": "us-ascii", "iso646-us": "us-ascii", "us": "us-ascii",
	"iso_646.irv:1991": "us-ascii", "cp367": "us-ascii", "csascii": "us-ascii", "646": "us-ascii",
}

// normalizeCharset lower-cases a charset label and strips what senders wrap
// around it: quotes, spaces, an RFC 2231 language suffix.
func normalizeCharset(label string) string {
	s := strings.ToLower(strings.TrimSpace(label))
	s = strings.Trim(s, "\"' \t")
	if i := strings.IndexByte(s, '*'); i >= 0 { // RFC 2231 "utf-8*en"
		s = s[:i]
	}
	if a, ok := charsetAliases[s]; ok {
		return a
	}
	return s
}

// lookupCharset returns the decoder for a label. ok is false for a label no
// decoder exists for; us-ascii and utf-8 are not handled here (see
// decodeText, which checks what the bytes really are).
func lookupCharset(label string) (charset, bool) {
	name := normalizeCharset(label)
	switch name {
	case "utf-7":
		return charset{name, decodeUTF7}, true
	case "gb18030":
		return xcharset(name, simplifiedchinese.GB18030), true
	case "shift_jis":
		return xcharset(name, japanese.ShiftJIS), true
	case "euc-jp":
		return xcharset(name, japanese.EUCJP), true
	case "iso-2022-jp":
		return xcharset(name, japanese.ISO2022JP), true
	case "euc-kr":
		return xcharset(name, korean.EUCKR), true
	case "big5":
		return xcharset(name, traditionalchinese.Big5), true
	case "hz-gb-2312":
		return xcharset(name, simplifiedchinese.HZGB2312), true
	case "", "unknown", "unknown-8bit", "x-unknown", "default", "none", "x-user-defined", "charset":
		return charset{}, false
	}
	if e, err := htmlindex.Get(name); err == nil && e != nil {
		if n, _ := htmlindex.Name(e); n != "replacement" {
			return xcharset(name, e), true
		}
	}
	if e, err := ianaindex.MIME.Encoding(name); err == nil && e != nil {
		return xcharset(name, e), true
	}
	if e, err := ianaindex.IANA.Encoding(name); err == nil && e != nil {
		return xcharset(name, e), true
	}
	return charset{}, false
}

func xcharset(name string, e encoding.Encoding) charset {
	return charset{name, func(b []byte) (string, int) {
		out, err := e.NewDecoder().Bytes(b)
		if err != nil { // x/text decoders replace rather than fail; be safe
			return strings.ToValidUTF8(string(b), "\uFFFD"), 1
		}
		s := string(out)
		bad := strings.Count(s, "\uFFFD")
		return strings.ToValidUTF8(s, "\uFFFD"), bad
	}}
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// isASCIIStr is isASCII for strings.
func isASCIIStr(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

var (
	windows1252, _ = lookupCharset("windows-1252")
	gb18030, _     = lookupCharset("gb18030")
)

// guess decodes 8-bit bytes whose charset is unknown, undeclared or wrong:
// UTF-8 when they are valid UTF-8, else the hint (the charset the rest of
// the message declares) when it decodes them cleanly, else GB18030 when
// they look like Chinese (runs of GB2312-range byte pairs), else
// windows-1252. It returns the charset used, followed by how many bytes
// became U+FFFD when windows-1252 has no character for some (0x81, 0x8D,
// 0x8F, 0x90, 0x9D), so that every caller's problem says so.
func guess(b []byte, hint string) (string, string) {
	if utf8.Valid(b) {
		return string(b), "utf-8"
	}
	if hint != "" {
		if cs, ok := lookupCharset(hint); ok {
			if s, bad := cs.decode(b); bad == 0 {
				return s, cs.name
			}
		}
	}
	if looksGB(b) {
		if s, bad := gb18030.decode(b); bad == 0 {
			return s, "gb18030"
		}
	}
	s, bad := windows1252.decode(b)
	if bad > 0 {
		return s, fmt.Sprintf("windows-1252 (%d undecodable bytes replaced with U+FFFD)", bad)
	}
	return s, "windows-1252"
}

// looksGB reports whether every run of 8-bit bytes in b is made of byte
// pairs in the GB2312 range (0xA1-0xFE) and there is at least one run of
// two characters or more: Latin-1 text has lone accented letters between
// ASCII ones, Chinese text has runs of pairs.
func looksGB(b []byte) bool {
	long := false
	for i := 0; i < len(b); {
		if b[i] < 0x80 {
			i++
			continue
		}
		j := i
		for j < len(b) && b[j] >= 0x80 {
			if b[j] < 0xA1 || b[j] == 0xFF {
				return false
			}
			j++
		}
		if (j-i)%2 != 0 {
			return false
		}
		if j-i >= 4 {
			long = true
		}
		i = j
	}
	return long
}

// decodeUTF7 decodes RFC 2152 UTF-7. x/text has no UTF-7; it is short.
func decodeUTF7(b []byte) (string, int) {
	var sb strings.Builder
	sb.Grow(len(b))
	bad := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '+' {
			if c >= 0x80 {
				bad++
				sb.WriteRune(utf8.RuneError)
				continue
			}
			sb.WriteByte(c)
			continue
		}
		i++
		if i < len(b) && b[i] == '-' {
			sb.WriteByte('+')
			continue
		}
		// Collect modified base64 up to the first non-base64 character.
		var bits uint32
		nbits := 0
		var units []uint16
		for ; i < len(b); i++ {
			v := b64val(b[i])
			if v < 0 {
				break
			}
			bits = bits<<6 | uint32(v)
			nbits += 6
			if nbits >= 16 {
				nbits -= 16
				units = append(units, uint16(bits>>uint(nbits)))
				bits &= 1<<uint(nbits) - 1
			}
		}
		for _, r := range utf16.Decode(units) {
			if r == utf8.RuneError {
				bad++
			}
			sb.WriteRune(r)
		}
		if i < len(b) && b[i] != '-' {
			i-- // the terminating character is text; '-' is absorbed
		}
	}
	return sb.String(), bad
}

func b64val(c byte) int {
	switch {
	case c >= 'A' && c <= 'Z':
		return int(c - 'A')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 26
	case c >= '0' && c <= '9':
		return int(c-'0') + 52
	case c == '+':
		return 62
	case c == '/':
		return 63
	}
	return -1
}
