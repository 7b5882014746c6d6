package payload

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// crlfReader turns bare CR and bare LF line endings into CRLF, so that
// mail stored with Unix or old Mac line endings parses like mail as
// fetched. (It also changes line breaks inside parts sent as "binary",
// which mail transport does not carry intact anyway.)
type crlfReader struct {
	r      io.Reader
	in     [16 << 10]byte
	out    []byte
	buf    []byte
	prevCR bool
	err    error
}

func newCRLFReader(r io.Reader) *crlfReader {
	return &crlfReader{r: r, buf: make([]byte, 0, 2*(16<<10))}
}

// reset makes c read r, keeping its buffer.
func (c *crlfReader) reset(r io.Reader) {
	c.r, c.out, c.prevCR, c.err = r, nil, false, nil
	if c.buf == nil && r != nil {
		c.buf = make([]byte, 0, 2*(16<<10))
	}
}

func (c *crlfReader) Read(p []byte) (int, error) {
	if len(c.out) == 0 && c.err == nil && len(p) > 0 {
		// Mail as fetched has CRLF line endings only: read straight into
		// p and hand that out when it holds nothing to rewrite.
		n, err := c.r.Read(p[:min(len(p), len(c.in))])
		c.err = err
		switch {
		case n == 0 && err != nil:
			return 0, err
		case n == 0:
		case crlfOnly(p[:n], c.prevCR):
			c.prevCR = false
			return n, nil
		default:
			c.out = c.convert(copy(c.in[:], p[:n]))
		}
	}
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		n, err := c.r.Read(c.in[:])
		c.err = err
		c.out = c.convert(n)
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// crlfOnly reports whether b needs no rewriting: every CR followed by LF
// and every LF preceded by CR, within b, and b does not end in CR (its LF
// may follow) nor start with LF after a CR (that LF is dropped).
func crlfOnly(b []byte, prevCR bool) bool {
	if len(b) == 0 {
		return true
	}
	if (prevCR && b[0] == '\n') || b[len(b)-1] == '\r' {
		return false
	}
	lines := 0
	for in := b; ; {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			break
		}
		if i == 0 || in[i-1] != '\r' {
			return false
		}
		lines++
		in = in[i+1:]
	}
	return bytes.Count(b, cr) == lines
}

var cr = []byte("\r")

// convert rewrites the n bytes read into c.in and returns the result.
func (c *crlfReader) convert(n int) []byte {
	out := c.buf[:0]
	// Copy whole runs between line breaks at once: a byte-at-a-time
	// loop here was a third of the json payload's CPU time.
	for in := c.in[:n]; len(in) > 0; {
		i := nextBreak(in)
		if i < 0 {
			out = append(out, in...)
			c.prevCR = false
			break
		}
		out = append(out, in[:i]...)
		if i > 0 {
			c.prevCR = false
		}
		switch in[i] {
		case '\r':
			out = append(out, '\r', '\n')
			c.prevCR = true
		case '\n':
			if !c.prevCR {
				out = append(out, '\r', '\n')
			}
			c.prevCR = false
		}
		in = in[i+1:]
	}
	c.buf = out[:0]
	return out
}

// nextBreak returns the index of the first CR or LF in b, or -1.
func nextBreak(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	seg := b
	if i >= 0 {
		seg = b[:i]
	}
	if j := bytes.IndexByte(seg, '\r'); j >= 0 {
		return j
	}
	return i
}

// Limits on what a header block may hold in memory.
const (
	maxTopHeader  = 1 << 20
	maxPartHeader = 64 << 10
)

// headerFilter sits under go-message's textproto, which stops at the first
// malformed header line: it hands over header blocks that textproto reads
// whole, and boundary lines it recognises. Input lines end in CRLF (see
// crlfReader).
//
// For the top-level header (delim nil) it first skips blank lines and white
// space before the first field and one mbox "From " line. In every header
// block, a line that is neither a field nor a continuation is joined to
// the previous field when what follows still looks like a header, and ends
// the header otherwise (a body that starts without the blank line); a
// header block larger than its limit loses the rest of its fields. For a
// multipart body (delim "--boundary"), a delimiter line with junk after the
// boundary is cut back to the delimiter, and the header after a delimiter
// line is treated as above, ending early if the next delimiter comes first.
type headerFilter struct {
	br     *bufio.Reader
	delim  []byte
	top    bool
	where  func(child int) string
	report func(string)

	inHeader  bool
	first     bool // at the first line of a header block
	hasField  bool
	size      int // bytes of the current header block
	limit     int
	dropped   bool
	lineStart bool
	skipLine  bool   // discard the rest of an over-long line
	child     int    // parts seen (multipart) for error messages
	out       []byte // what Read hands out next
	obuf      []byte // owned storage for out (out may also alias br's buffer)
	line      []byte
	pending   []byte // a line to be read again in body state
	err       error
}

func newTopFilter(r io.Reader, report func(string)) *headerFilter {
	f := &headerFilter{}
	f.resetTop(bufio.NewReaderSize(r, 8<<10), report)
	return f
}

func topWhere(int) string { return "header" }

// resetTop makes f the top-level filter reading br, keeping its buffers.
func (f *headerFilter) resetTop(br *bufio.Reader, report func(string)) {
	line, obuf := f.line[:0], f.obuf[:0]
	*f = headerFilter{
		br: br, top: true, inHeader: true, first: true,
		limit: maxTopHeader, lineStart: true, report: report, where: topWhere,
	}
	f.line, f.obuf = line, obuf
}

// release drops what f refers to of the message it read, and its buffers
// if an over-long line grew them.
func (f *headerFilter) release() {
	f.report, f.where, f.out, f.pending = nil, nil, nil, nil
	if cap(f.line) > 4<<10 {
		f.line = nil
	}
	if cap(f.obuf) > 4<<10 {
		f.obuf = nil
	}
}

func newPartFilter(r io.Reader, boundary string, where func(int) string, report func(string)) *headerFilter {
	return &headerFilter{
		br: bufio.NewReaderSize(r, 8<<10), delim: []byte("--" + boundary), limit: maxPartHeader,
		lineStart: true, report: report, where: where,
	}
}

// reset makes a part filter made by newPartFilter read the multipart body
// r, keeping its buffers (those of an over-long line excepted).
func (f *headerFilter) reset(r io.Reader, boundary string, where func(int) string, report func(string)) {
	f.br.Reset(r)
	f.report = report
	f.delim = append(append(f.delim[:0], "--"...), boundary...)
	f.where = where
	f.inHeader, f.first, f.hasField, f.size, f.dropped = false, false, false, 0, false
	f.lineStart, f.skipLine, f.child = true, false, 0
	f.out, f.pending, f.err = nil, nil, nil
	if cap(f.line) > 4<<10 {
		f.line = nil
	}
	if cap(f.obuf) > 4<<10 {
		f.obuf = nil
	}
}

func (f *headerFilter) problem(format string, args ...any) {
	if f.report != nil {
		f.report(f.where(f.child) + ": " + fmt.Sprintf(format, args...))
	}
}

// Read hands out what the filter makes of its input. Once it has something
// for p, it goes on with the body lines of a multipart that are already
// buffered, up to the next delimiter line: handing them out one line per
// call made every layer above pay its cost per line. It stops short of
// anything that would read more input or could report a problem, so that
// problems are reported in the same order as line by line.
func (f *headerFilter) Read(p []byte) (int, error) {
	n := 0
	for {
		for len(f.out) == 0 {
			if f.err != nil {
				if n > 0 {
					return n, nil
				}
				return 0, f.err
			}
			if n > 0 && !f.bufferedBodyLine() {
				return n, nil
			}
			if f.inHeader {
				f.headerLine()
				continue
			}
			if f.delim == nil && f.pending == nil { // top-level body: pass through
				return f.br.Read(p)
			}
			if !f.bodyRun() {
				f.bodyLine()
			}
		}
		c := copy(p[n:], f.out)
		f.out = f.out[c:]
		n += c
		if n == len(p) {
			return n, nil
		}
	}
}

// bodyRun hands out at once the whole lines of a multipart body already in
// the buffer up to the next line that starts with "-" (and so may be a
// delimiter line): what bodyLine would hand out line by line. It reports
// false, doing nothing, when there is no such run.
func (f *headerFilter) bodyRun() bool {
	if f.pending != nil || f.skipLine || !f.lineStart {
		return false
	}
	b, _ := f.br.Peek(f.br.Buffered())
	if len(b) == 0 || b[0] == '-' {
		return false
	}
	if k := bytes.Index(b, nlDash); k >= 0 {
		b = b[:k+1]
	} else if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
		b = b[:k+1]
	} else {
		return false
	}
	f.out = b // read before br is used again, as ReadSlice's lines are
	f.br.Discard(len(b))
	return true
}

var nlDash = []byte("\n-")

// bufferedBodyLine reports whether the next line is a multipart body line
// that bodyLine passes on as it is, already whole in the buffer: not a
// delimiter line, nothing pending or being skipped.
func (f *headerFilter) bufferedBodyLine() bool {
	if f.inHeader || f.delim == nil || f.pending != nil || f.skipLine {
		return false
	}
	b, _ := f.br.Peek(f.br.Buffered())
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return false
	}
	return !f.lineStart || !f.isDelim(b[:i+1])
}

// bodyLine passes one line (or a fragment of a long one) of a multipart
// body, rewriting delimiter lines.
func (f *headerFilter) bodyLine() {
	var line []byte
	var err error
	if f.pending != nil {
		line, f.pending = f.pending, nil
	} else {
		line, err = f.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			f.err = err
		}
	}
	if f.skipLine {
		f.skipLine = err == bufio.ErrBufferFull
		f.lineStart = !f.skipLine
		return
	}
	if f.lineStart && f.isDelim(line) {
		rest := line[len(f.delim):]
		f.skipLine = err == bufio.ErrBufferFull
		if bytes.HasPrefix(rest, []byte("--")) {
			f.set(f.delim, []byte("--\r\n"))
		} else {
			f.set(f.delim, crlf)
			f.child++
			f.inHeader, f.first, f.hasField, f.size, f.dropped = true, true, false, 0, false
		}
		f.lineStart = !f.skipLine
		return
	}
	f.out = line
	f.lineStart = len(line) > 0 && line[len(line)-1] == '\n'
}

// isDelim reports whether line starts with the delimiter followed by the
// end of the line, white space or "-" (what textproto also accepts).
func (f *headerFilter) isDelim(line []byte) bool {
	if f.delim == nil || !bytes.HasPrefix(line, f.delim) {
		return false
	}
	if len(line) == len(f.delim) {
		return true
	}
	switch line[len(f.delim)] {
	case ' ', '\t', '\r', '\n', '-':
		return true
	}
	return false
}

// readLine reads one whole line for a header block, cut at the block's
// limit. It returns nil at the end of input.
func (f *headerFilter) readLine() []byte {
	f.line = f.line[:0]
	for {
		frag, err := f.br.ReadSlice('\n')
		if len(f.line)+len(frag) <= f.limit {
			f.line = append(f.line, frag...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			f.err = err
			if len(f.line) == 0 {
				return nil
			}
		}
		return f.line
	}
}

type lineClass int

const (
	clBlank lineClass = iota
	clCont
	clField
	clDelim
	clOther
	clEOF
)

func (f *headerFilter) classify(line []byte) lineClass {
	if line == nil {
		return clEOF
	}
	t := bytes.TrimRight(line, "\r\n")
	switch {
	case len(t) == 0:
		return clBlank
	case f.isDelim(line):
		return clDelim
	case t[0] == ' ' || t[0] == '\t':
		if len(bytes.TrimSpace(t)) == 0 && !f.hasField {
			return clBlank
		}
		return clCont
	}
	colon := bytes.IndexByte(t, ':')
	if colon <= 0 {
		return clOther
	}
	key := bytes.TrimRight(t[:colon], " \t")
	if len(key) == 0 {
		return clOther
	}
	for _, c := range key {
		if c < 33 || c > 126 {
			return clOther
		}
	}
	return clField
}

// peekClass classifies the next line without consuming it.
func (f *headerFilter) peekClass() lineClass {
	b, err := f.br.Peek(512)
	if len(b) == 0 && err != nil {
		return clEOF
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	}
	return f.classify(b)
}

func (f *headerFilter) headerLine() {
	line := f.readLine()
	if f.first && f.top {
		// Skip blank lines and white space before the first field, and
		// one mbox "From " separator line.
		for line != nil && len(bytes.TrimSpace(line)) == 0 {
			line = f.readLine()
		}
		if line != nil {
			line = append(f.line[:0], bytes.TrimLeft(line, " \t")...)
		}
		if bytes.HasPrefix(line, []byte("From ")) && !bytes.HasPrefix(bytes.TrimLeft(line[5:], " \t"), []byte(":")) {
			line = f.readLine()
		}
	}
	cl := f.classify(line)
	if cl == clCont && !f.hasField {
		line = append(f.line[:0], bytes.TrimLeft(line, " \t")...)
		cl = f.classify(line)
	}
	f.first = false
	switch cl {
	case clEOF:
		f.inHeader = false
		if f.hasField || f.top {
			f.set(crlf)
		}
		return
	case clBlank:
		f.inHeader = false
		f.set(crlf)
		return
	case clDelim:
		f.endHeader(line, false)
		return
	case clOther:
		next := f.peekClass()
		if f.hasField && (next == clField || next == clCont || next == clBlank) {
			f.problem("header line without a colon joined to the previous field")
			line = append([]byte{' '}, line...)
			cl = clCont
			break
		}
		f.endHeader(line, true)
		return
	}
	if len(line) == 0 || line[len(line)-1] != '\n' {
		line = append(line, '\r', '\n')
	}
	if f.dropped || f.size+len(line) > f.limit {
		if !f.dropped {
			f.problem("header larger than %d KiB; the rest of its fields dropped", f.limit>>10)
		}
		f.dropped = true
		return
	}
	f.size += len(line)
	f.hasField = f.hasField || cl == clField
	f.set(line)
}

// endHeader ends a header block that had no blank line: line is read again
// as the first body line.
func (f *headerFilter) endHeader(line []byte, report bool) {
	if report {
		f.problem("no blank line after the header")
	}
	f.inHeader = false
	if f.delim == nil {
		// Top level: the body is read straight from br after this line.
		f.set(crlf, line)
	} else {
		f.set(crlf)
		f.pending = append([]byte(nil), line...)
	}
	f.lineStart = true
}

var crlf = []byte("\r\n")

// set makes the concatenation of bs the next output, in owned storage.
func (f *headerFilter) set(bs ...[]byte) {
	f.obuf = f.obuf[:0]
	for _, b := range bs {
		f.obuf = append(f.obuf, b...)
	}
	f.out = f.obuf
}
