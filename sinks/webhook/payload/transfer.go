package payload

import (
	"bufio"
	"encoding/base64"
	"io"
	"slices"
	"strings"
)

// transferDecoder returns a reader of the decoded body for a
// Content-Transfer-Encoding value. Senders write "7-bit", "8bits", "plain",
// "quoted printable", "text/html" and worse: anything that names no real
// encoding is read as identity. unknown is true when cte named nothing
// recognisable (x-uuencode, "7vladi.Pimenovit"); the body is then passed
// through undecoded.
func transferDecoder(cte string, r io.Reader) (dec decoder, unknown bool) {
	v := strings.ToLower(strings.TrimSpace(cte))
	if i := strings.IndexAny(v, "; \t"); i >= 0 && !strings.HasPrefix(v, "quoted") {
		v = v[:i]
	}
	v = strings.Trim(v, "\"'")
	switch {
	case v == "base64" || v == "x-base64":
		return &base64Reader{src: r}, false
	case strings.HasPrefix(v, "quoted") && strings.Contains(v, "printable"), v == "qp":
		return newQPReader(r), false
	case v == "", v == "7bit", v == "8bit", v == "binary", v == "7-bit", v == "8-bit",
		v == "8bits", v == "7bits", v == "plain", v == "text", v == "none",
		strings.HasPrefix(v, "text/"):
		return plainReader{r}, false
	}
	return plainReader{r}, true
}

// decoder reads a transfer-decoded body and tells, once read, what it had
// to skip or keep undecoded ("" when nothing).
type decoder interface {
	io.Reader
	problem() string
}

type plainReader struct{ io.Reader }

func (plainReader) problem() string { return "" }

// base64Reader decodes base64 tolerantly: characters outside the alphabet
// are skipped (and counted when they are not white space), padding ends a
// quantum wherever it appears (some senders encode line by line), and a
// truncated last quantum yields the bytes it holds.
type base64Reader struct {
	src     io.Reader
	in      [8192]byte
	clean   []byte // alphabet characters read and not yet decoded
	out     []byte // decoded and not yet returned
	outBuf  []byte
	eof     bool
	junk    int
	partial int
}

// b64index maps a byte to its base64 value, or 0xFF outside the alphabet.
var b64index = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	return t
}()

func (b *base64Reader) problem() string {
	switch {
	case b.junk > 0:
		return "invalid characters in base64 data skipped"
	case b.partial > 0:
		return "truncated base64 data"
	}
	return ""
}

// Read keeps only the alphabet characters of each chunk (line breaks,
// blanks and junk dropped, junk counted) and decodes whole quanta with
// encoding/base64 in one call: a byte-at-a-time decoder made the json
// payload three times slower than posting the raw message.
func (b *base64Reader) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		n, err := b.src.Read(b.in[:])
		out := b.outBuf[:0]
		// Keep the alphabet characters, writing in place (no append in
		// the per-byte loop).
		w := len(b.clean)
		b.clean = slices.Grow(b.clean, n)[:w+n]
		for _, c := range b.in[:n] {
			if b64index[c] != 0xFF {
				b.clean[w] = c
				w++
				continue
			}
			switch c {
			case '=':
				b.clean = b.clean[:w]
				out = b.decode(out, true)
				w = 0
				b.clean = b.clean[:n]
			case '\r', '\n', ' ', '\t':
			default:
				b.junk++
			}
		}
		b.clean = b.clean[:w]
		out = b.decode(out, false)
		if err != nil {
			if len(b.clean) > 0 {
				b.partial++
			}
			out = b.decode(out, true)
			b.eof = true
			if err != io.EOF {
				b.outBuf, b.out = out, out
				if len(out) == 0 {
					return 0, err
				}
				n := copy(p, b.out)
				b.out = b.out[n:]
				return n, nil
			}
		}
		b.outBuf, b.out = out, out
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// decode appends to out the bytes of the complete quanta in b.clean. With
// final (at '=' or the end of the data) it also decodes what an incomplete
// quantum holds and starts afresh; otherwise the incomplete rest waits for
// the next chunk.
func (b *base64Reader) decode(out []byte, final bool) []byte {
	full := len(b.clean) / 4 * 4
	if full > 0 {
		out = slices.Grow(out, full/4*3)
		// Only alphabet characters in whole quanta: this cannot fail.
		m, _ := base64.StdEncoding.Decode(out[len(out):len(out)+full/4*3], b.clean[:full])
		out = out[:len(out)+m]
	}
	rest := b.clean[full:]
	if !final {
		b.clean = b.clean[:copy(b.clean, rest)]
		return out
	}
	v := func(i int) byte { return b64index[rest[i]] }
	switch len(rest) {
	case 2:
		out = append(out, v(0)<<2|v(1)>>4)
	case 3:
		out = append(out, v(0)<<2|v(1)>>4, v(1)<<4|v(2)>>2)
	}
	b.clean = b.clean[:0]
	return out
}

// qpReader decodes quoted-printable tolerantly: trailing white space is
// dropped, "=" at the end of a line joins it to the next, "=XX" in either
// case is a byte, and an "=" followed by anything else is kept as it is
// (mime/quotedprintable stops at the first such error and loses the rest).
type qpReader struct {
	br      *bufio.Reader
	line    []byte // held-back tail of a line longer than the buffer
	join    []byte // line + the next fragment
	buf     []byte
	out     []byte
	err     error
	invalid int
}

func newQPReader(r io.Reader) *qpReader {
	return &qpReader{br: bufio.NewReaderSize(r, 16<<10)}
}

func (q *qpReader) problem() string {
	if q.invalid > 0 {
		return "invalid quoted-printable escapes kept as they are"
	}
	return ""
}

func (q *qpReader) Read(p []byte) (int, error) {
	for len(q.out) == 0 {
		if q.err != nil {
			return 0, q.err
		}
		frag, err := q.br.ReadSlice('\n')
		if len(q.line) > 0 {
			q.join = append(append(q.join[:0], q.line...), frag...)
			frag, q.line = q.join, q.line[:0]
		}
		q.buf = q.buf[:0]
		if err == bufio.ErrBufferFull {
			// A very long line: decode all but a tail that could be
			// trailing white space or an escape cut in two.
			keep := len(frag)
			for keep > 0 && (frag[keep-1] == ' ' || frag[keep-1] == '\t' || frag[keep-1] == '\r') {
				keep--
			}
			if i := lastIndexByte(frag[max(0, keep-2):keep], '='); i >= 0 {
				keep = max(0, keep-2) + i
			}
			keep = max(keep, len(frag)-80) // hold back little, whatever the line
			q.buf = q.decode(q.buf, frag[:keep])
			q.line = append(q.line, frag[keep:]...)
		} else {
			q.err = err
			q.buf = q.decodeLine(q.buf, frag)
		}
		q.out = q.buf
	}
	n := copy(p, q.out)
	q.out = q.out[n:]
	return n, nil
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// decodeLine decodes one whole line (with its line ending, if any).
func (q *qpReader) decodeLine(out, line []byte) []byte {
	hasNL := len(line) > 0 && line[len(line)-1] == '\n'
	body := line
	if hasNL {
		body = body[:len(body)-1]
	}
	for len(body) > 0 && (body[len(body)-1] == ' ' || body[len(body)-1] == '\t' || body[len(body)-1] == '\r') {
		body = body[:len(body)-1]
	}
	soft := len(body) > 0 && body[len(body)-1] == '='
	if soft {
		body = body[:len(body)-1]
	}
	out = q.decode(out, body)
	if hasNL && !soft {
		out = append(out, '\r', '\n')
	}
	return out
}

func (q *qpReader) decode(out, b []byte) []byte {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '=' && i+2 < len(b) {
			h, ok1 := unhex(b[i+1])
			l, ok2 := unhex(b[i+2])
			if ok1 && ok2 {
				out = append(out, h<<4|l)
				i += 2
				continue
			}
		}
		if c == '=' {
			q.invalid++
		}
		out = append(out, c)
	}
	return out
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeBase64String and decodeQ serve RFC 2047 encoded words.
func decodeBase64String(s string) ([]byte, bool) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, true
	}
	if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err == nil {
		return b, true
	}
	// Last resort: the tolerant stream decoder.
	r := &base64Reader{src: strings.NewReader(s)}
	b, _ := io.ReadAll(r)
	return b, false
}

func decodeQ(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_':
			out = append(out, ' ')
		case c == '=' && i+2 < len(s):
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				out = append(out, h<<4|l)
				i += 2
			} else {
				out = append(out, c)
			}
		default:
			out = append(out, c)
		}
	}
	return out
}
