package payload

import (
	"bufio"
	"io"
	"sync"
)

// scratch holds the buffers of one Write, taken from scratchPool and given
// back when the payload is written: a mailbox of small messages would
// otherwise allocate them anew for every message (they were most of the
// json sink's allocations). The passes over a message run one after
// another, so they share one set. Whatever grew beyond a modest size for
// an unusual message is dropped rather than kept in the pool.
type scratch struct {
	bw      *bufio.Writer // the JSON output
	copyBuf []byte        // part bodies, in every pass
	crlf    crlfReader
	topBR   *bufio.Reader // under the top-level header filter
	walkBR  *bufio.Reader // above it, for textproto
	top     headerFilter
	filters []*headerFilter // part filters, one per depth of multipart
	b64     base64Reader
	qp      *qpReader
	text    []byte // captured text and html bodies, reused
	html    []byte
}

// Sizes above which a grown buffer is not kept for the next message.
const (
	maxKeptBody = 256 << 10 // captured text and html bodies
	maxKeptLine = 64 << 10  // line and output buffers of the readers
)

var scratchPool = sync.Pool{New: func() any {
	return &scratch{
		bw:      bufio.NewWriterSize(nil, 32<<10),
		copyBuf: make([]byte, 32<<10),
		topBR:   bufio.NewReaderSize(nil, 32<<10), // raw is read 16 KiB at a time (crlfReader)
		walkBR:  bufio.NewReaderSize(nil, 8<<10),
	}
}}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// put gives s back to the pool, without the references to this message's
// readers and writer and without any buffer that grew too large.
func (s *scratch) put() {
	s.bw.Reset(nil)
	s.crlf.reset(nil)
	if cap(s.crlf.buf) > maxKeptLine {
		s.crlf.buf = nil
	}
	s.topBR.Reset(nil)
	s.walkBR.Reset(nil)
	s.top.release()
	for _, f := range s.filters {
		f.br.Reset(nil)
		f.release()
	}
	s.b64.release()
	if s.qp != nil {
		s.qp.release()
	}
	if cap(s.text) > maxKeptBody {
		s.text = nil
	}
	if cap(s.html) > maxKeptBody {
		s.html = nil
	}
	s.text, s.html = s.text[:0], s.html[:0]
	scratchPool.Put(s)
}

// decoder returns the transfer decoder of a part body, reusing the
// scratch's readers (a walk visits one leaf at a time).
func (s *scratch) decoder(cte string, r io.Reader) (decoder, bool) {
	if s == nil {
		return transferDecoder(cte, r)
	}
	switch kind := transferKind(cte); kind {
	case cteBase64:
		s.b64.reset(r)
		return &s.b64, false
	case cteQP:
		if s.qp == nil {
			s.qp = newQPReader(r)
		} else {
			s.qp.reset(r)
		}
		return s.qp, false
	default:
		return plainReader{r}, kind == cteUnknown
	}
}
