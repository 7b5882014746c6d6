package payload

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// Meta is what the job knows about a message besides its bytes.
type Meta struct {
	ID, Account, Mailbox, UIDL string // ID = the idempotency key
	Size                       int64
	SHA256                     string
	Timestamp                  time.Time // for the "timestamp" field; zero means now
}

// Options tune the payload.
type Options struct {
	// InlineLimit: attachments whose decoded size is <= this get base64
	// "content"; above it "content" is omitted (metadata stays). 0 means
	// DefaultInlineLimit; <0 means never inline.
	InlineLimit int64
	// IncludeRaw adds "raw": base64 of the whole message.
	IncludeRaw bool
}

// DefaultInlineLimit is the InlineLimit used when Options leaves it 0.
const DefaultInlineLimit = 10 << 20

const (
	maxBody     = 4 << 20 // text and html bodies are cut here
	maxProblems = 100     // parse_errors listed; the rest are counted
)

// Write streams the JSON payload of DESIGN.md section 4 for the raw
// message (raw.Size() bytes, exactly as fetched, CRLF) to w.
//
// It never fails because of malformed mail: whatever cannot be decoded is
// left empty or best effort and listed in parse_errors; it returns an error
// only if reading raw or writing w fails. Memory stays bounded whatever the
// message size: raw is read two or three times (structure and digests;
// the chosen bodies when the first pass did not keep them; attachment
// content when some is inlined), bodies are streamed into digests and
// base64 straight into w (an attachment in canonical base64, as mailers
// write it, is copied without its line breaks instead of decoded and
// encoded again), and text and html are cut at 4 MiB each. The buffers
// of the passes come from a pool, not from each message.
//
// Choices a receiver may rely on: text and html use "\n" line endings;
// text is rendered from html when the message has no text/plain body
// (text_from_html); content_id is given without angle brackets (as in a
// "cid:" URL); message_id, in_reply_to and references keep theirs, with
// the comments and white space of the obsolete syntax removed, so that
// they compare with the ids other mailers copy into their replies (the
// header as written stays in headers); a nested message/rfc822 without a
// file name is named after its subject + ".eml"; the date keeps the
// sender's offset. Every value that needed U+FFFD for bytes that could not
// be decoded is named in parse_errors.
func Write(w io.Writer, raw *io.SectionReader, meta Meta, opts Options) error {
	sc := getScratch()
	defer sc.put()
	a, err := analyze(raw, meta.Mailbox, sc)
	if err != nil {
		return err
	}
	limit := opts.InlineLimit
	if limit == 0 {
		limit = DefaultInlineLimit
	}
	sc.bw.Reset(w)
	j := &jsonWriter{w: sc.bw}
	ts := meta.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	j.raw(`{"type":"message.received","timestamp":`)
	j.str(ts.UTC().Format(time.RFC3339))
	j.raw(`,"data":{"id":`)
	j.str(meta.ID)
	j.raw(`,"account":`)
	j.str(meta.Account)
	j.raw(`,"mailbox":`)
	j.str(meta.Mailbox)
	j.raw(`,"uidl":`)
	j.str(meta.UIDL)
	j.raw(`,"size":` + strconv.FormatInt(meta.Size, 10) + `,"sha256":`)
	j.str(meta.SHA256)
	j.raw(`,"message_id":`)
	j.str(a.messageID)
	j.raw(`,"in_reply_to":`)
	j.str(a.inReplyTo)
	j.raw(`,"references":`)
	j.strs(a.references)
	j.raw(`,"date":`)
	j.str(a.date)
	j.raw(`,"subject":`)
	j.str(a.subject)
	j.raw(`,"from":`)
	if a.from == nil {
		j.raw("null")
	} else {
		j.address(*a.from)
	}
	for _, f := range []struct {
		name string
		list []address
	}{{"reply_to", a.replyTo}, {"to", a.to}, {"cc", a.cc}} {
		j.raw(`,"` + f.name + `":[`)
		for i, ad := range f.list {
			if i > 0 {
				j.raw(",")
			}
			j.address(ad)
		}
		j.raw("]")
	}
	j.raw(`,"original_recipient":`)
	j.str(a.originalRecipient)
	j.raw(`,"mailbox_hash":`)
	j.str(a.mailboxHash)
	j.raw(`,"headers":[`)
	for i, h := range a.headers {
		if i > 0 {
			j.raw(",")
		}
		j.raw(`{"name":`)
		j.str(h[0])
		j.raw(`,"value":`)
		j.str(h[1])
		j.raw("}")
	}
	j.raw(`],"text":`)
	j.str(a.text)
	j.raw(`,"html":`)
	j.str(a.html)
	j.raw(`,"text_from_html":` + strconv.FormatBool(a.textFromHTML) + `,"stripped_text":`)
	j.str(a.strippedText)
	j.raw(`,"stripped_signature":`)
	j.str(a.strippedSig)
	j.raw(`,"attachments":[`)
	if err := a.writeAttachments(j, raw, limit); err != nil {
		return err
	}
	j.raw(`],"auto_submitted":` + strconv.FormatBool(a.autoSubmitted) + `,"parse_errors":`)
	j.strs(a.problems.list())
	if opts.IncludeRaw {
		j.raw(`,"raw":"`)
		enc := base64.NewEncoder(base64.StdEncoding, j)
		rr := &errReader{r: io.NewSectionReader(raw, 0, raw.Size())}
		if _, err := io.CopyBuffer(enc, rr, a.copyBuffer()); err != nil {
			if rr.err != nil {
				return fmt.Errorf("payload: reading message: %w", rr.err)
			}
			return err
		}
		enc.Close()
		j.raw(`"`)
	}
	j.raw("}}")
	if err := j.w.Flush(); err != nil {
		return err
	}
	return j.err
}

// analysis is what the first pass (and the second, if needed) found.
type analysis struct {
	problems problemList
	hint     string // the first charset the message declares beyond ASCII/UTF-8

	parts              []part
	textLeaf, htmlLeaf int // chosen parts, -1 when none
	rawText, rawHTML   []byte
	cutText, cutHTML   bool
	autoSubmitted      bool

	headers                    [][2]string
	messageID, inReplyTo, date string
	subject, text, html        string
	textFromHTML               bool
	strippedText, strippedSig  string
	originalRecipient          string
	mailboxHash                string
	references                 []string
	from                       *address
	replyTo, to, cc            []address

	s *scratch // buffers lent for the message
}

// copyBuffer returns the buffer the passes copy part bodies through: one
// for the message, not one per part.
func (a *analysis) copyBuffer() []byte { return a.s.copyBuf }

func analyze(raw *io.SectionReader, mailbox string, s *scratch) (*analysis, error) {
	a := &analysis{textLeaf: -1, htmlLeaf: -1, s: s}
	rr := &errReader{r: io.NewSectionReader(raw, 0, raw.Size())}
	w := &walker{
		s:      s,
		report: a.problems.add,
		hint:   func() string { return a.hint },
		rawErr: func() error { return rr.err },
	}
	var top textproto.Header
	w.onHeader = func(h textproto.Header) {
		top = h
		a.hint = headerHint(h)
	}
	w.visit = a.collect
	if _, err := w.walkMessage(rr); err != nil {
		return nil, fmt.Errorf("payload: reading message: %w", err)
	}
	text, html := a.choose()
	if (text >= 0 && text != a.textLeaf) || (html >= 0 && html != a.htmlLeaf) {
		if err := a.recapture(raw, text, html); err != nil {
			return nil, err
		}
	}
	a.textLeaf, a.htmlLeaf = text, html
	if text >= 0 {
		a.text = a.decodeBody(a.rawText, a.cutText, &a.parts[text])
	}
	if html >= 0 {
		a.html = a.decodeBody(a.rawHTML, a.cutHTML, &a.parts[html])
	}
	a.rawText, a.rawHTML = nil, nil
	if html >= 0 && strings.TrimSpace(a.text) == "" && strings.TrimSpace(a.html) != "" {
		a.textFromHTMLPart(&a.parts[html])
	}
	a.readHeader(top)
	a.originalRecipient, a.mailboxHash = a.recipient(top, mailbox)
	from := ""
	if a.from != nil {
		from = a.from.Address
	}
	a.strippedText, a.strippedSig = stripReply(a.text, from, forwardSubjectRE.MatchString(a.subject))
	return a, nil
}

// textFromHTMLPart renders the html body as the text of a message whose
// text/plain body is missing or empty: receivers that only read text
// (and stripped_text) would otherwise see nothing.
func (a *analysis) textFromHTMLPart(p *part) {
	where := "part " + p.path + ": text from HTML"
	text, bad, cut := htmlToText(a.html, maxBody)
	if bad > 0 {
		a.problems.add(fmt.Sprintf("%s: %d character references that name no character replaced with U+FFFD", where, bad))
	}
	if cut {
		a.problems.add(fmt.Sprintf("%s: longer than %d MiB; cut", where, maxBody>>20))
	}
	a.text, a.textFromHTML = text, true
}

// recipient finds original_recipient and mailbox_hash.
func (a *analysis) recipient(h textproto.Header, mailbox string) (string, string) {
	addr, key := originalRecipient(h, mailbox)
	if key != "" && !utf8.ValidString(addr) {
		var used string
		addr, used = guess([]byte(addr), a.hint)
		a.problems.add("header " + key + ": unencoded 8-bit text read as " + used) // as headers reports it
	}
	return addr, mailboxHash(addr)
}

// collect is the first pass's visitor: digest and size of every leaf, the
// first likely text and html bodies, the header of nested messages.
func (a *analysis) collect(p *part, body io.Reader) error {
	h := sha256.New()
	ws := []io.Writer{h}
	var tb, hb, mb *capBuffer
	if a.textLeaf < 0 && candidate(p, "text/plain", true) {
		a.textLeaf, tb = p.leaf, &capBuffer{max: maxBody, b: a.s.text[:0]}
		ws = append(ws, tb)
	}
	if a.htmlLeaf < 0 && candidate(p, "text/html", true) {
		a.htmlLeaf, hb = p.leaf, &capBuffer{max: maxBody, b: a.s.html[:0]}
		ws = append(ws, hb)
	}
	if isMessage(p.mediaType) {
		mb = &capBuffer{max: 64 << 10}
		ws = append(ws, mb)
	}
	var dst io.Writer = h
	if len(ws) > 1 {
		dst = io.MultiWriter(ws...)
	}
	n, err := io.CopyBuffer(dst, body, a.copyBuffer())
	p.size, p.sum = n, h.Sum(nil)
	if d, ok := body.(*base64Reader); ok {
		p.b64 = d.canonical()
	}
	if tb != nil {
		a.rawText, a.cutText = tb.b, tb.cut
		a.s.text = tb.b
	}
	if hb != nil {
		a.rawHTML, a.cutHTML = hb.b, hb.cut
		a.s.html = hb.b
	}
	if mb != nil {
		var probs []string
		p.subject, probs = nestedSubject(mb.b, a.hint)
		if p.filename == "" { // the subject names the attachment
			for _, pr := range probs {
				a.problems.add("part " + p.path + ": file name from the attached message's Subject: " + pr)
			}
		}
	}
	if a.hint == "" && p.charset != "" {
		if n := normalizeCharset(p.charset); n != "utf-8" && n != "us-ascii" {
			if _, ok := lookupCharset(n); ok {
				a.hint = n
			}
		}
	}
	a.parts = append(a.parts, *p)
	return err
}

func isMessage(mt string) bool { return mt == "message/rfc822" || mt == "message/global" }

// candidate reports whether p may be the text or html body: the wanted
// type, not an attachment and, strictly, without a file name and not a
// resource of multipart/related.
func candidate(p *part, mediaType string, strict bool) bool {
	if p.mediaType != mediaType || p.disposition == "attachment" {
		return false
	}
	return !strict || (p.filename == "" && !p.resource)
}

// choose picks the text and html bodies: the first candidate of each, depth
// first (message/* parts are not entered); when the strict rule finds
// neither, inline parts with a file name and related resources may serve.
func (a *analysis) choose() (text, html int) {
	first := func(mt string, strict bool) int {
		for i := range a.parts {
			if candidate(&a.parts[i], mt, strict) {
				return i
			}
		}
		return -1
	}
	text, html = first("text/plain", true), first("text/html", true)
	if text < 0 && html < 0 {
		text, html = first("text/plain", false), first("text/html", false)
	}
	return text, html
}

// recapture is the second pass: it reads the chosen bodies the first pass
// did not keep.
func (a *analysis) recapture(raw *io.SectionReader, text, html int) error {
	rr := &errReader{r: io.NewSectionReader(raw, 0, raw.Size())}
	need := 0
	if text >= 0 && text != a.textLeaf {
		need++
	}
	if html >= 0 && html != a.htmlLeaf {
		need++
	}
	w := &walker{s: a.s, hint: func() string { return a.hint }, rawErr: func() error { return rr.err }}
	w.visit = func(p *part, body io.Reader) error {
		var dst, keep *[]byte
		var cut *bool
		switch {
		case p.leaf == text && text != a.textLeaf:
			dst, cut, keep = &a.rawText, &a.cutText, &a.s.text
		case p.leaf == html && html != a.htmlLeaf:
			dst, cut, keep = &a.rawHTML, &a.cutHTML, &a.s.html
		default:
			return nil
		}
		b := &capBuffer{max: maxBody, b: (*keep)[:0]}
		if _, err := io.CopyBuffer(b, body, a.copyBuffer()); err != nil && rr.err != nil {
			return err
		}
		*dst, *cut, *keep = b.b, b.cut, b.b
		if need--; need == 0 {
			return errStop
		}
		return nil
	}
	if _, err := w.walkMessage(rr); err != nil {
		return fmt.Errorf("payload: reading message: %w", err)
	}
	return nil
}

var metaCharsetRE = regexp.MustCompile(`(?i)<meta[^>]+charset\s*=\s*["']?\s*([-a-z0-9_.:]+)`)

// decodeBody turns a captured body into UTF-8 text with "\n" line endings.
func (a *analysis) decodeBody(b []byte, cut bool, p *part) string {
	where := "part " + p.path
	label := p.charset
	if label == "" && p.mediaType == "text/html" {
		head := b[:min(len(b), 4096)]
		if m := metaCharsetRE.FindSubmatch(head); m != nil {
			label = string(m[1])
		}
	}
	s, problem := decodeText(b, label, a.hint)
	if problem != "" {
		a.problems.add(where + ": " + problem)
	}
	if cut {
		a.problems.add(fmt.Sprintf("%s: %s body longer than %d MiB; cut", where, p.mediaType, maxBody>>20))
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
		a.problems.add(where + ": NUL characters removed")
	}
	return s
}

// decodeText decodes a body in its declared charset, checking what the
// bytes really are: 8-bit data labelled us-ascii (or not labelled), invalid
// UTF-8 and unknown charsets are read with guess and reported.
func decodeText(b []byte, label, hint string) (string, string) {
	n := normalizeCharset(label)
	switch n {
	case "", "us-ascii":
		if isASCII(b) {
			return string(b), ""
		}
		s, used := guess(b, hint)
		if n == "" {
			return s, "8-bit text without a charset; read as " + used
		}
		return s, fmt.Sprintf("charset %q but 8-bit text; read as %s", clip(label, 40), used)
	case "utf-8":
		if utf8.Valid(b) {
			return string(b), ""
		}
		s, used := guess(b, hint)
		return s, "invalid UTF-8; read as " + used
	}
	cs, ok := lookupCharset(n)
	if !ok {
		s, used := guess(b, hint)
		if isASCII(b) {
			return s, ""
		}
		return s, fmt.Sprintf("unknown charset %q; read as %s", clip(label, 40), used)
	}
	if singleByte(n) && !isASCII(b) && utf8.Valid(b) {
		// Latin-1 text is almost never valid UTF-8 by chance; UTF-8
		// labelled iso-8859-1 or windows-1252 is common.
		return string(b), fmt.Sprintf("text labelled %q is UTF-8; read as UTF-8", clip(label, 40))
	}
	s, bad := cs.decode(b)
	if bad > 0 {
		if n != "utf-7" && !isASCII(b) && utf8.Valid(b) {
			return string(b), fmt.Sprintf("text labelled %q is UTF-8; read as UTF-8", clip(label, 40))
		}
		return s, fmt.Sprintf("%d undecodable sequences in %s text replaced with U+FFFD", bad, cs.name)
	}
	return s, ""
}

// singleByte reports whether a normalised charset label is one of the
// ISO-8859 or windows-125x single-byte sets.
func singleByte(n string) bool {
	return strings.HasPrefix(n, "iso-8859-") || strings.HasPrefix(n, "iso8859-") ||
		strings.HasPrefix(n, "windows-125") || strings.HasPrefix(n, "cp125") || n == "latin1"
}

var wordCharsetRE = regexp.MustCompile(`=\?([^?\s*]+)[^?\s]*\?[bBqQ]\?`)

// headerHint returns the first charset the top-level header's encoded
// words or Content-Type name beyond ASCII and UTF-8.
func headerHint(h textproto.Header) string {
	var cands []string
	if _, p, _ := parseParams(h.Get("Content-Type")); p != nil {
		cands = append(cands, p["charset"])
	}
	fs := h.Fields()
	for fs.Next() {
		for _, m := range wordCharsetRE.FindAllStringSubmatch(fs.Value(), -1) {
			cands = append(cands, m[1])
		}
	}
	for _, c := range cands {
		n := normalizeCharset(c)
		if n == "" || n == "utf-8" || n == "us-ascii" {
			continue
		}
		if _, ok := lookupCharset(n); ok {
			return n
		}
	}
	return ""
}

// readHeader fills the header fields of the payload from the top-level
// header.
func (a *analysis) readHeader(h textproto.Header) {
	fs := h.Fields()
	for fs.Next() {
		name := fs.Key()
		if raw, err := fs.Raw(); err == nil {
			if i := bytes.IndexByte(raw, ':'); i > 0 {
				name = string(bytes.TrimRight(raw[:i], " \t"))
			}
		}
		name = strings.ToValidUTF8(name, "?")
		var v string
		var probs []string
		if identifierFields[fs.Key()] {
			// Encoded words cannot stand in a message identifier (RFC 2047
			// section 5): what looks like one is part of the id.
			v, probs = validID(fs.Value())
		} else {
			v, probs = decodeWords(fs.Value(), a.hint)
		}
		a.headerProblems(fs.Key(), probs)
		a.headers = append(a.headers, [2]string{name, v})
	}
	var probs []string
	a.subject, probs = decodeWords(h.Get("Subject"), a.hint)
	a.headerProblems("Subject", probs)
	if ids := a.msgIDs(h.Get("Message-Id"), "Message-Id"); len(ids) > 0 {
		a.messageID = ids[0]
	}
	if ids := a.msgIDs(h.Get("In-Reply-To"), "In-Reply-To"); len(ids) > 0 {
		a.inReplyTo = ids[0]
	}
	a.references = []string{}
	for _, v := range h.Values("References") {
		a.references = append(a.references, a.msgIDs(v, "References")...)
	}
	if v := strings.TrimSpace(h.Get("Date")); v != "" {
		var problem string
		a.date, problem = parseDate(v)
		if problem != "" {
			a.problems.add("header Date: " + problem)
		}
	}
	from := a.addresses(h, "From")
	if len(from) > 0 {
		a.from = &from[0]
	}
	a.replyTo = a.addresses(h, "Reply-To")
	a.to = a.addresses(h, "To")
	a.cc = a.addresses(h, "Cc")
	a.autoSubmitted = autoSubmitted(h, a.from, a.parts)
}

// identifierFields hold message identifiers, whose value headers gives
// undecoded.
var identifierFields = map[string]bool{
	"Message-Id": true, "In-Reply-To": true, "References": true, "Resent-Message-Id": true, "Content-Id": true,
}

// validID returns an identifier field's value as written, with U+FFFD for
// bytes that are not UTF-8 (reported).
func validID(v string) (string, []string) {
	if utf8.ValidString(v) {
		return v, nil
	}
	return strings.ToValidUTF8(v, "\uFFFD"), []string{"invalid UTF-8 replaced with U+FFFD"}
}

func (a *analysis) msgIDs(v, key string) []string {
	ids, replaced := msgIDs(v)
	if replaced {
		a.headerProblems(key, []string{"invalid UTF-8 replaced with U+FFFD"})
	}
	return ids
}

func (a *analysis) addresses(h textproto.Header, key string) []address {
	out := []address{}
	for _, v := range h.Values(key) {
		list, probs := parseAddressList(v, a.hint)
		a.headerProblems(key, probs)
		out = append(out, list...)
	}
	return out
}

func (a *analysis) headerProblems(key string, probs []string) {
	for _, p := range probs {
		a.problems.add("header " + key + ": " + p)
	}
}

// autoSubmitted tells auto-replies, bounces and bulk mail (RFC 3834 and
// the headers mailers use in practice), so that a help desk does not
// answer them.
func autoSubmitted(h textproto.Header, from *address, parts []part) bool {
	token := func(k string) string {
		v := strings.ToLower(strings.TrimSpace(h.Get(k)))
		if i := strings.IndexAny(v, ";( \t"); i >= 0 {
			v = v[:i]
		}
		return v
	}
	if v := token("Auto-Submitted"); v != "" && v != "no" {
		return true
	}
	for _, k := range []string{"Precedence", "X-Precedence"} {
		switch token(k) {
		case "bulk", "junk", "list", "auto_reply", "auto-reply":
			return true
		}
	}
	for _, k := range []string{"X-Autoreply", "X-Autorespond", "X-Autogenerated"} {
		if v := token(k); h.Has(k) && v != "no" && v != "false" {
			return true
		}
	}
	for _, v := range strings.Split(strings.ToLower(h.Get("X-Auto-Response-Suppress")), ",") {
		switch strings.TrimSpace(v) {
		case "all", "oof", "autoreply":
			return true
		}
	}
	// Mailing lists and bulk senders: RFC 3834 asks responders not to
	// answer them.
	if h.Has("List-Id") || h.Has("List-Unsubscribe") {
		return true
	}
	if rp := strings.TrimSpace(h.Get("Return-Path")); rp == "<>" || rp == "< >" {
		return true
	}
	if mt, _, _ := parseParams(h.Get("Content-Type")); mt == "multipart/report" {
		return true
	}
	for i := range parts {
		switch parts[i].mediaType {
		case "message/delivery-status", "message/global-delivery-status", "message/disposition-notification":
			return true
		}
	}
	if from != nil {
		local := strings.ToLower(from.Address)
		if i := strings.IndexByte(local, '@'); i >= 0 {
			local = local[:i]
		}
		if local == "mailer-daemon" {
			return true
		}
	}
	return false
}

// nestedSubject reads the Subject of a message/rfc822 part from the start
// of its body.
func nestedSubject(b []byte, hint string) (string, []string) {
	br := bufio.NewReader(newTopFilter(newCRLFReader(bytes.NewReader(b)), nil))
	h, _ := textproto.ReadHeader(br)
	s, probs := decodeWords(h.Get("Subject"), hint)
	return strings.TrimSpace(s), probs
}

// writeAttachments writes the attachment objects: every leaf that is not
// the text or html body, except the other renderings of a
// multipart/alternative. Contents to inline are streamed in a third pass.
func (a *analysis) writeAttachments(j *jsonWriter, raw *io.SectionReader, limit int64) error {
	var atts []*part
	inline := false
	for i := range a.parts {
		p := &a.parts[i]
		if i == a.textLeaf || i == a.htmlLeaf {
			continue
		}
		if p.alternative && p.filename == "" && p.disposition != "attachment" {
			switch p.mediaType {
			case "text/plain", "text/html", "text/enriched", "text/richtext", "text/watch-html":
				continue
			}
		}
		atts = append(atts, p)
		inline = inline || (limit >= 0 && p.size <= limit)
	}
	next := 0
	write := func(p *part, body io.Reader) error {
		if next > 0 {
			j.raw(",")
		}
		next++
		j.attachment(p)
		if body == nil {
			j.raw("}")
			return j.err
		}
		j.raw(`,"content":"`)
		if d, ok := body.(*base64Reader); ok && p.b64 {
			// Canonical base64: its characters are the content.
			d.writeClean(j, a.copyBuffer())
			j.raw(`"}`)
			return j.err
		}
		enc := base64.NewEncoder(base64.StdEncoding, j)
		io.CopyBuffer(enc, body, a.copyBuffer()) // a body cut short was reported by the first pass
		enc.Close()
		j.raw(`"}`)
		return j.err
	}
	if !inline {
		for _, p := range atts {
			if err := write(p, nil); err != nil {
				return err
			}
		}
		return nil
	}
	rr := &errReader{r: io.NewSectionReader(raw, 0, raw.Size())}
	w := &walker{s: a.s, hint: func() string { return a.hint }, rawErr: func() error { return rr.err }}
	w.visit = func(p *part, body io.Reader) error {
		for next < len(atts) && atts[next].leaf <= p.leaf {
			q := atts[next]
			var b io.Reader
			if q.leaf == p.leaf && limit >= 0 && q.size <= limit {
				b = body
			}
			if err := write(q, b); err != nil {
				return fatalError{err}
			}
		}
		if next == len(atts) {
			return errStop
		}
		return nil
	}
	if _, err := w.walkMessage(rr); err != nil {
		if rr.err != nil {
			return fmt.Errorf("payload: reading message: %w", err)
		}
		return err
	}
	for next < len(atts) {
		if err := write(atts[next], nil); err != nil {
			return err
		}
	}
	return nil
}

// problemList collects parse errors, each once, up to maxProblems; the
// rest are counted. Memory stays bounded whatever the message holds: the
// problems not listed are remembered only as hashes, at most
// maxUnlisted of them, and beyond that counted with their repeats.
type problemList struct {
	l        []string
	seen     map[string]bool // the problems listed
	unlisted map[uint64]struct{}
	dropped  int
}

const maxUnlisted = 4096

var problemSeed = maphash.MakeSeed()

func (l *problemList) add(s string) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	if len(l.l) >= maxProblems {
		if l.seen[s] {
			return
		}
		h := maphash.String(problemSeed, s)
		if _, dup := l.unlisted[h]; dup {
			return
		}
		if l.unlisted == nil {
			l.unlisted = map[uint64]struct{}{}
		}
		if len(l.unlisted) < maxUnlisted {
			l.unlisted[h] = struct{}{}
		}
		l.dropped++
		return
	}
	if l.seen[s] {
		return
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	l.seen[s] = true
	l.l = append(l.l, s)
}

func (l *problemList) list() []string {
	out := append([]string{}, l.l...)
	if l.dropped > 0 {
		out = append(out, fmt.Sprintf("%d more problems not listed", l.dropped))
	}
	return out
}

// capBuffer keeps the first max bytes written to it.
type capBuffer struct {
	b   []byte
	max int
	cut bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	room := c.max - len(c.b)
	if len(p) > room {
		c.b = append(c.b, p[:max(room, 0)]...)
		c.cut = true
	} else {
		c.b = append(c.b, p...)
	}
	return len(p), nil
}

// errReader remembers the error of the raw message's reader, to tell a
// failing spool from a malformed message.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// jsonWriter writes JSON tokens; the first write error sticks.
type jsonWriter struct {
	w   *bufio.Writer
	err error
}

func (j *jsonWriter) Write(p []byte) (int, error) {
	if j.err != nil {
		return 0, j.err
	}
	n, err := j.w.Write(p)
	j.err = err
	return n, err
}

func (j *jsonWriter) raw(s string) {
	if j.err == nil {
		_, j.err = j.w.WriteString(s)
	}
}

const hexDigits = "0123456789abcdef"

// str writes s as a JSON string. Invalid UTF-8 becomes U+FFFD; U+2028 and
// U+2029 are escaped for JavaScript receivers.
func (j *jsonWriter) str(s string) {
	if j.err != nil {
		return
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	w := j.w
	w.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			i++
			continue
		}
		if c < 0x80 {
			w.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				w.WriteByte('\\')
				w.WriteByte(c)
			case '\n':
				w.WriteString(`\n`)
			case '\r':
				w.WriteString(`\r`)
			case '\t':
				w.WriteString(`\t`)
			default:
				w.WriteString(`\u00`)
				w.WriteByte(hexDigits[c>>4])
				w.WriteByte(hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			w.WriteString(s[start:i])
			w.WriteString(`\u202`)
			w.WriteByte(hexDigits[r&0xF])
			start = i + size
		}
		i += size
	}
	w.WriteString(s[start:])
	_, j.err = w.WriteString(`"`)
}

func (j *jsonWriter) strs(l []string) {
	j.raw("[")
	for i, s := range l {
		if i > 0 {
			j.raw(",")
		}
		j.str(s)
	}
	j.raw("]")
}

func (j *jsonWriter) address(a address) {
	j.raw(`{"name":`)
	j.str(a.Name)
	j.raw(`,"address":`)
	j.str(a.Address)
	j.raw("}")
}

// attachment writes an attachment object up to (not including) its
// content and closing brace.
func (j *jsonWriter) attachment(p *part) {
	name := p.filename
	if name == "" && isMessage(p.mediaType) {
		name = strings.NewReplacer("/", "_", `\`, "_").Replace(p.subject)
		if name == "" {
			name = "message"
		}
		name += ".eml"
	}
	disp := p.disposition
	if disp == "" {
		disp = "attachment"
		if p.contentID != "" {
			disp = "inline"
		}
	}
	j.raw(`{"filename":`)
	j.str(name)
	j.raw(`,"content_type":`)
	j.str(p.mediaType)
	j.raw(`,"disposition":`)
	j.str(disp)
	j.raw(`,"content_id":`)
	j.str(p.contentID)
	j.raw(`,"size":` + strconv.FormatInt(p.size, 10) + `,"sha256":`)
	j.str(hex.EncodeToString(p.sum))
}
