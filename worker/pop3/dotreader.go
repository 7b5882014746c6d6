package pop3

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// bodyReader streams a multi-line response body (RFC 1939 section 3): it
// removes the byte-stuffed leading dot of each line, stops at the lone "."
// line and passes every other byte through unchanged, CRLF included. It
// holds no more than the bufio.Reader's buffer, however long the lines or
// the message are.
//
// A terminating line of ".\n" (bare LF) is accepted as well as ".\r\n":
// some servers store and serve LF-only mail and would otherwise never end.
type bodyReader struct {
	br        *bufio.Reader
	limit     int64 // 0: none
	n         int64
	lineStart bool
	done      bool
	err       error // sticky
}

func newBodyReader(br *bufio.Reader, limit int64) *bodyReader {
	return &bodyReader{br: br, limit: limit, lineStart: true}
}

// Read implements io.Reader. It returns io.EOF after the terminating line
// has been consumed, io.ErrUnexpectedEOF if the stream ends before it, and
// ErrMessageTooLarge once the body passes the limit.
func (d *bodyReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n := 0
	for n < len(p) && !d.done {
		if d.lineStart {
			end, err := d.atLineStart()
			if err != nil {
				d.err = err
				break
			}
			if end {
				d.done = true
				break
			}
		}
		// Copy up to the end of the line or of what is buffered,
		// whichever comes first, so a line never needs to fit in memory.
		if d.br.Buffered() == 0 {
			if _, err := d.br.Peek(1); err != nil {
				d.err = unexpected(err)
				break
			}
		}
		chunk, _ := d.br.Peek(min(d.br.Buffered(), len(p)-n))
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			chunk = chunk[:i+1]
			d.lineStart = true
		}
		copy(p[n:], chunk)
		n += len(chunk)
		_, _ = d.br.Discard(len(chunk))
	}
	d.n += int64(n)
	if d.limit > 0 && d.n > d.limit {
		d.err = fmt.Errorf("%w (%d bytes)", ErrMessageTooLarge, d.limit)
		return 0, d.err
	}
	if n > 0 {
		return n, nil
	}
	if d.done {
		return 0, io.EOF
	}
	return 0, d.err
}

// atLineStart handles a dot at the start of a line: it reports whether the
// line is the terminator and otherwise removes the stuffed dot.
func (d *bodyReader) atLineStart() (end bool, err error) {
	d.lineStart = false
	b, err := d.br.Peek(1)
	if err != nil {
		return false, unexpected(err)
	}
	if b[0] != '.' {
		return false, nil
	}
	// Peek as much of ".\r\n" as is there without waiting for bytes that
	// a well-behaved stream will deliver anyway.
	b, err = d.br.Peek(2)
	if err != nil {
		return false, unexpected(err)
	}
	switch {
	case b[1] == '\n':
		_, _ = d.br.Discard(2)
		return true, nil
	case b[1] == '\r':
		b, err = d.br.Peek(3)
		if err != nil {
			return false, unexpected(err)
		}
		if b[2] == '\n' {
			_, _ = d.br.Discard(3)
			return true, nil
		}
	}
	_, _ = d.br.Discard(1) // the stuffed dot
	return false, nil
}

// drain discards the rest of the body so the next reply can be read.
func (d *bodyReader) drain() error {
	if d.done {
		return nil
	}
	d.limit = 0
	_, err := io.Copy(io.Discard, d)
	return err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
