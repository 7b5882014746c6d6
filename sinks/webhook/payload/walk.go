package payload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

const (
	maxDepth = 20   // nesting of multiparts
	maxParts = 1000 // leaf parts described in one message
)

// part describes one leaf of the MIME tree (a message/rfc822 part is a
// leaf: its inside is not walked).
type part struct {
	leaf        int    // depth-first number of the leaf, from 0
	path        string // IMAP section number ("1", "2.1")
	mediaType   string // lower case, no parameters
	charset     string // as declared, "" when none
	disposition string // "attachment", "inline" or "" when absent or invalid
	filename    string
	contentID   string // without angle brackets
	alternative bool   // a direct child of multipart/alternative
	resource    bool   // inside a part of multipart/related other than its root

	// Filled in by the first pass.
	size    int64
	sum     []byte
	b64     bool   // canonical base64: the content may be copied as it is
	subject string // message/rfc822: its Subject, decoded
}

// walker goes depth first through the MIME tree of a message, streaming:
// it calls visit with each leaf and a reader of its transfer-decoded body.
// Structure comes from go-message's textproto (header blocks, multipart
// boundaries) under headerFilter; everything it could not read is passed
// to report (nil in the later passes, which only re-read).
type walker struct {
	report func(string)
	visit  func(p *part, body io.Reader) error
	hint   func() string // charset hint for raw 8-bit in part headers
	rawErr func() error  // the error reading the raw message, if any
	// onHeader, if set, sees the top-level header before the body is walked.
	onHeader func(textproto.Header)
	leaves   int
	capped   bool
	// filters holds a part filter for each depth of multipart, reused
	// from one multipart to the next: a message of many small multiparts
	// would otherwise allocate its buffers anew for every one.
	filters []*headerFilter
	// s, if set, lends the readers and buffers of the walk.
	s *scratch
}

// partFilter returns the part filter for a multipart at depth, reset to
// read body.
func (w *walker) partFilter(depth int, body io.Reader, boundary string, where func(int) string) *headerFilter {
	filters := &w.filters
	if w.s != nil {
		filters = &w.s.filters
	}
	for len(*filters) <= depth {
		*filters = append(*filters, nil)
	}
	f := (*filters)[depth]
	if f == nil {
		f = newPartFilter(body, boundary, where, w.report)
		(*filters)[depth] = f
		return f
	}
	f.reset(body, boundary, where, w.report)
	return f
}

// errStop ends a walk early without error.
var errStop = errors.New("stop")

// fatalError is a visitor's failure that ends the walk (writing the output
// failed), as opposed to a body that could not be read to its end.
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

func (w *walker) problem(format string, args ...any) {
	if w.report != nil {
		w.report(fmt.Sprintf(format, args...))
	}
}

func (w *walker) problems(prefix string, ps []string) {
	for _, p := range ps {
		w.problem("%s: %s", prefix, p)
	}
}

// walkMessage reads the top-level header from r and walks the body. It
// returns the top-level header.
func (w *walker) walkMessage(r io.Reader) (textproto.Header, error) {
	var br *bufio.Reader
	if s := w.s; s != nil {
		s.crlf.reset(r)
		s.topBR.Reset(&s.crlf)
		s.top.resetTop(s.topBR, w.report)
		s.walkBR.Reset(&s.top)
		br = s.walkBR
	} else {
		br = bufio.NewReaderSize(newTopFilter(newCRLFReader(r), w.report), 8<<10)
	}
	h, err := textproto.ReadHeader(br)
	if err != nil && !errors.Is(err, io.EOF) {
		w.problem("header: %v", err)
	}
	if w.onHeader != nil {
		w.onHeader(h)
	}
	err = w.walkEntity(h, br, nil, ctx{})
	if err == errStop {
		err = nil
	}
	if rerr := w.rawErr(); rerr != nil {
		return h, rerr
	}
	return h, err
}

// ctx is what a part inherits from the multiparts around it.
type ctx struct {
	alternative bool // direct child of multipart/alternative
	resource    bool
	digest      bool // child of multipart/digest: default type message/rfc822
}

func pathString(path []int) string {
	if len(path) == 0 {
		return "1"
	}
	var sb strings.Builder
	for i, n := range path {
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(strconv.Itoa(n))
	}
	return sb.String()
}

// contentType returns the media type and parameters of a header, with
// RFC 2045's default for a missing or unreadable one, and the parameters
// that did not decode cleanly (for paramProblems).
func (w *walker) contentType(h textproto.Header, where string, c ctx) (string, map[string]string, map[string]string) {
	v := h.Get("Content-Type")
	def := "text/plain"
	if c.digest {
		def = "message/rfc822"
	}
	if strings.TrimSpace(v) == "" {
		return def, map[string]string{}, nil
	}
	t, params, ok, probs := parseParamsReport(v)
	if !ok {
		w.problem("%s: %s", where, describeParams("Content-Type", v))
	}
	if params == nil {
		params = map[string]string{}
	}
	if i := strings.IndexByte(t, '/'); i <= 0 || i == len(t)-1 || strings.ContainsAny(t, " \t\"") || !isASCIIStr(t) {
		w.problem("%s: invalid Content-Type %q; read as %s", where, clip(v, 60), def)
		return def, params, probs
	}
	return t, params, probs
}

func (w *walker) walkEntity(h textproto.Header, body io.Reader, path []int, c ctx) error {
	where := "part " + pathString(path)
	if len(path) == 0 {
		where = "message"
	}
	mt, params, probs := w.contentType(h, where, c)
	if strings.HasPrefix(mt, "multipart/") {
		if len(path) >= maxDepth {
			w.paramProblems(where, "Content-Type", probs)
			w.problem("%s: multipart nested deeper than %d; not read", where, maxDepth)
			return nil
		}
		boundary := params["boundary"]
		if boundary == "" {
			w.problem("%s: %s without boundary; read as text/plain", where, mt)
			mt, params = "text/plain", map[string]string{}
		} else {
			w.paramProblems(where, "Content-Type", probs)
			return w.walkMultipart(mt, params, body, path, c)
		}
	}
	// A leaf: the problems of its parameters (its file name among them)
	// concern the part, "part 1" for a message that is a single part, as
	// its other problems do.
	w.paramProblems("part "+pathString(path), "Content-Type", probs)
	return w.walkLeaf(h, mt, params, body, path, c)
}

func (w *walker) walkMultipart(mt string, params map[string]string, body io.Reader, path []int, c ctx) error {
	where := "message"
	if len(path) > 0 {
		where = "part " + pathString(path)
	}
	sub := strings.TrimPrefix(mt, "multipart/")
	childWhere := func(n int) string { return "part " + pathString(append(path[:len(path):len(path)], n)) }
	f := w.partFilter(len(path), body, params["boundary"], childWhere)
	mr := textproto.NewMultipartReader(f, params["boundary"])
	start := trimID(params["start"])
	n := 0
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if err := w.rawErr(); err != nil {
				return err
			}
			if strings.Contains(err.Error(), "EOF") {
				if n == 0 {
					w.problem("%s: %s has no parts (boundary %q not found)", where, mt, clip(params["boundary"], 70))
				} else {
					w.problem("%s: %s ends without its closing boundary", where, mt)
				}
			} else {
				w.problem("%s: %s: %v", where, mt, err)
			}
			return nil
		}
		n++
		root := n == 1
		if start != "" {
			root = trimID(p.Header.Get("Content-Id")) == start
		}
		cc := ctx{
			alternative: sub == "alternative",
			resource:    c.resource || (sub == "related" && !root),
			digest:      sub == "digest",
		}
		if err := w.walkEntity(p.Header, p, append(path[:len(path):len(path)], n), cc); err != nil {
			return err
		}
	}
	if n == 0 {
		w.problem("%s: %s has no parts", where, mt)
	}
	return nil
}

// paramProblems reports parameters that did not decode cleanly, naming
// the file name as such: it is what receivers see of them.
func (w *walker) paramProblems(where, field string, probs map[string]string) {
	names := make([]string, 0, len(probs))
	for name := range probs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "filename" || name == "name" {
			w.problem("%s: file name: %s", where, probs[name])
		} else {
			w.problem("%s: %s parameter %s: %s", where, field, clip(name, 40), probs[name])
		}
	}
}

func trimID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "<")
	s = strings.TrimSuffix(s, ">")
	return strings.TrimSpace(s)
}

func (w *walker) walkLeaf(h textproto.Header, mt string, params map[string]string, body io.Reader, path []int, c ctx) error {
	if w.leaves >= maxParts {
		if !w.capped {
			w.problem("more than %d parts; the rest not listed", maxParts)
			w.capped = true
		}
		return nil
	}
	where := "part " + pathString(path)
	hint := ""
	if w.hint != nil {
		hint = w.hint()
	}
	p := &part{
		leaf:        w.leaves,
		path:        pathString(path),
		mediaType:   mt,
		charset:     strings.TrimSpace(params["charset"]),
		alternative: c.alternative,
		resource:    c.resource,
		contentID:   trimID(h.Get("Content-Id")),
	}
	if !utf8.ValidString(p.contentID) {
		p.contentID = strings.ToValidUTF8(p.contentID, "\uFFFD")
		w.problem("%s: Content-ID: invalid UTF-8 replaced with U+FFFD", where)
	}
	w.leaves++
	var dparams map[string]string
	if v := h.Get("Content-Disposition"); strings.TrimSpace(v) != "" {
		d, dp, ok, probs := parseParamsReport(v)
		w.paramProblems(where, "Content-Disposition", probs)
		switch {
		case d == "attachment" || d == "inline":
			p.disposition = d
		case strings.HasPrefix(d, "attachment") || strings.HasPrefix(d, "inline"):
			p.disposition = strings.TrimRight(strings.SplitN(d, " ", 2)[0], ",")
			ok = false
		default:
			if d != "" { // RFC 2183: an unknown type is treated as attachment
				w.problem("%s: unknown Content-Disposition %q; treated as attachment", where, clip(d, 40))
				p.disposition = "attachment"
			}
			ok = ok && d != ""
		}
		if !ok {
			w.problem("%s: %s", where, describeParams("Content-Disposition", v))
		}
		dparams = dp
	}
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	if name == "" && mt != "text/plain" && mt != "text/html" { // how some mailers name inline images
		if loc := strings.TrimSpace(h.Get("Content-Location")); loc != "" && !strings.Contains(loc, "://") {
			name = loc
		}
	}
	if name != "" {
		fn, probs := paramText(name, hint)
		w.problems(where+": file name", probs)
		p.filename = cleanFilename(fn)
	}
	dec, unknown := w.s.decoder(h.Get("Content-Transfer-Encoding"), body)
	if unknown {
		w.problem("%s: unknown Content-Transfer-Encoding %q; body left undecoded", where, clip(h.Get("Content-Transfer-Encoding"), 40))
	}
	if err := w.visit(p, dec); err != nil {
		var fe fatalError
		if err == errStop || errors.As(err, &fe) {
			return err
		}
		if rerr := w.rawErr(); rerr != nil {
			return rerr
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) { // reported by the multipart
			w.problem("%s: %v", where, err)
		}
	}
	if msg := dec.problem(); msg != "" {
		w.problem("%s: %s", where, msg)
	}
	return nil
}

// cleanFilename keeps the last path element of a file name and drops
// control characters, so a receiver can store it as it is.
func cleanFilename(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if i := strings.LastIndexAny(s, `/\`); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
