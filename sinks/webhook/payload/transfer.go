package payload

import (
	"bufio"
	"bytes"
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
	switch kind := transferKind(cte); kind {
	case cteBase64:
		return &base64Reader{src: r}, false
	case cteQP:
		return newQPReader(r), false
	default:
		return plainReader{r}, kind == cteUnknown
	}
}

type cteKind int

const (
	ctePlain cteKind = iota
	cteBase64
	cteQP
	cteUnknown
)

// transferKind reads a Content-Transfer-Encoding value (see transferDecoder).
func transferKind(cte string) cteKind {
	v := strings.ToLower(strings.TrimSpace(cte))
	if i := strings.IndexAny(v, "; \t"); i >= 0 && !strings.HasPrefix(v, "quoted") {
		v = v[:i]
	}
	v = strings.Trim(v, "\"'")
	switch {
	case v == "base64" || v == "x-base64":
		return cteBase64
	case strings.HasPrefix(v, "quoted") && strings.Contains(v, "printable"), v == "qp":
		return cteQP
	case v == "", v == "7bit", v == "8bit", v == "binary", v == "7-bit", v == "8-bit",
		v == "8bits", v == "7bits", v == "plain", v == "text", v == "none",
		strings.HasPrefix(v, "text/"):
		return ctePlain
	}
	return cteUnknown
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
//
// Whole lines of clean base64 (what nearly every mailer writes) are
// decoded in bulk by encoding/base64; the tolerant byte loop serves the
// rest. The reader also tells whether the body was canonical base64 (see
// canonical), which the attachment content may then copy as it is.
type base64Reader struct {
	src     io.Reader
	in      [8192]byte
	r, w    int    // in[r:w]: read, not yet looked at (an unfinished line)
	clean   []byte // alphabet characters read and not yet decoded
	out     []byte // decoded and not yet returned
	outBuf  []byte
	eof     bool
	junk    int
	partial int

	odd    bool // something the bulk decoder refused, or padding inside
	padded bool // a quantum with padding was seen
	failed bool // src failed (not io.EOF)
}

// reset makes b read src, keeping its buffers.
func (b *base64Reader) reset(src io.Reader) {
	b.release()
	b.src = src
	b.r, b.w = 0, 0
	b.clean, b.outBuf = b.clean[:0], b.outBuf[:0]
	b.eof, b.junk, b.partial = false, 0, 0
	b.odd, b.padded, b.failed = false, false, false
}

// release drops the source and any buffer grown beyond the usual size.
func (b *base64Reader) release() {
	b.src = nil
	b.out = nil
	if cap(b.clean) > maxKeptLine {
		b.clean = nil
	}
	if cap(b.outBuf) > maxKeptLine {
		b.outBuf = nil
	}
}

// canonical reports, once the body was read to its end, whether it was
// canonical base64: only alphabet characters and line breaks, whole
// quanta, padding only at the very end and with zero bits, so that
// encoding the decoded bytes gives back its characters without the line
// breaks.
func (b *base64Reader) canonical() bool {
	return b.eof && !b.odd && !b.failed && b.junk == 0 && b.partial == 0 && len(b.clean) == 0
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

// Read decodes whole lines at a time: the bytes after the last line break
// of a chunk wait for the next one (unless the chunk is one long line),
// so that the lines a mailer wrote reach the bulk decoder whole.
func (b *base64Reader) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.eof {
			return 0, io.EOF
		}
		if b.r > 0 {
			b.w = copy(b.in[:], b.in[b.r:b.w])
			b.r = 0
		}
		n, err := b.src.Read(b.in[b.w:])
		b.w += n
		end := b.w
		if err == nil {
			if i := bytes.LastIndexByte(b.in[:b.w], '\n'); i >= 0 {
				end = i + 1
			} else if b.w < len(b.in) {
				continue
			}
		}
		out := b.chunk(b.outBuf[:0], b.in[:end])
		b.r = end
		if err != nil {
			if len(b.clean) > 0 {
				b.partial++
			}
			out = b.decode(out, true)
			b.eof = true
			if err != io.EOF {
				b.failed = true
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

// chunk appends the bytes of seg decoded: in bulk when seg is whole
// quanta of clean base64 and nothing waits from before, else byte by byte.
func (b *base64Reader) chunk(out, seg []byte) []byte {
	if len(seg) == 0 {
		return out
	}
	if len(b.clean) == 0 {
		max := base64.StdEncoding.DecodedLen(len(seg))
		out = slices.Grow(out, max)
		if m, err := base64.StdEncoding.Decode(out[len(out):len(out)+max], seg); err == nil {
			b.checkPadding(seg, m)
			return out[:len(out)+m]
		}
	}
	b.odd = true
	return b.filter(out, seg)
}

// checkPadding notes padding in a segment the bulk decoder took (m bytes
// decoded): data after a padded quantum, or padding bits that are not
// zero, make the body not canonical.
func (b *base64Reader) checkPadding(seg []byte, m int) {
	if b.padded && m > 0 {
		b.odd = true
	}
	// The last four characters other than line breaks.
	var q [4]byte
	k := 4
	for i := len(seg) - 1; i >= 0 && k > 0; i-- {
		if c := seg[i]; c != '\r' && c != '\n' {
			k--
			q[k] = c
		}
	}
	if k > 0 || q[3] != '=' {
		if k == 0 && b.padded {
			b.odd = true
		}
		return
	}
	if b.padded {
		b.odd = true
	}
	b.padded = true
	if q[2] == '=' {
		b.odd = b.odd || b64index[q[1]]&0x0F != 0
	} else {
		b.odd = b.odd || b64index[q[2]]&0x03 != 0
	}
}

// filter keeps only the alphabet characters of seg (line breaks, blanks
// and junk dropped, junk counted), decoding at padding, and decodes the
// whole quanta; an incomplete rest waits in b.clean.
func (b *base64Reader) filter(out, seg []byte) []byte {
	n := len(seg)
	// Keep the alphabet characters, writing in place (no append in the
	// per-byte loop).
	w := len(b.clean)
	b.clean = slices.Grow(b.clean, n)[:w+n]
	for _, c := range seg {
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
	return b.decode(out, false)
}

// writeClean copies the rest of the body to w without its line breaks:
// for a body that canonical reported canonical when first read, the
// base64 of its decoded bytes, without decoding and encoding them again.
func (b *base64Reader) writeClean(w io.Writer, buf []byte) {
	for {
		n, err := b.src.Read(buf)
		k := 0
		for in := buf[:n]; len(in) > 0; {
			i := bytes.IndexByte(in, '\n')
			line := in
			if i >= 0 {
				line, in = in[:i], in[i+1:]
			} else {
				in = nil
			}
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			if bytes.IndexByte(line, '\r') >= 0 {
				for _, c := range line {
					if c != '\r' {
						buf[k] = c
						k++
					}
				}
				continue
			}
			k += copy(buf[k:], line)
		}
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
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

// reset makes q read r, keeping its buffers.
func (q *qpReader) reset(r io.Reader) {
	q.br.Reset(r)
	q.line, q.join, q.buf, q.out = q.line[:0], q.join[:0], q.buf[:0], nil
	q.err, q.invalid = nil, 0
}

// release drops the source and any buffer grown beyond the usual size.
func (q *qpReader) release() {
	q.br.Reset(nil)
	q.out = nil
	if cap(q.line) > maxKeptLine {
		q.line = nil
	}
	if cap(q.join) > maxKeptLine {
		q.join = nil
	}
	if cap(q.buf) > maxKeptLine {
		q.buf = nil
	}
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
