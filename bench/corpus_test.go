package bench

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/encoding/ianaindex"
)

// TestCorpus checks, quickly, that the generated messages are what the
// benchmark claims: deterministic, near the target size, well-formed MIME
// whose headers and text parts decode to valid UTF-8 from every charset.
func TestCorpus(t *testing.T) {
	const n, target = 150, 12_000_000
	c := NewCorpus(7, n, target)
	var total int
	seen := map[string]int{}
	kinds := map[msgKind]int{}
	for i := range n {
		m := c.Message(i)
		if !bytes.Equal(m, NewCorpus(7, n, target).Message(i)) {
			t.Fatalf("message %d differs between two generations", i)
		}
		total += len(m)
		kinds[c.plans[i].kind]++
		seen[charsets[c.plans[i].cs].name]++
		checkMessage(t, i, m)
	}
	if total < target*8/10 || total > target*12/10 {
		t.Errorf("%d messages add up to %d bytes, want about %d", n, total, target)
	}
	for _, cs := range charsets {
		if seen[cs.name] == 0 {
			t.Errorf("no message in %s", cs.name)
		}
	}
	if kinds[kindPlain] == 0 || kinds[kindAlt] == 0 || kinds[kindAttach] == 0 {
		t.Errorf("message kinds: %v", kinds)
	}
	small := NewSmallCorpus(3, 20)
	for i := range small.Len() {
		m := small.Message(i)
		if len(m) < 1024 || len(m) > 16<<10 {
			t.Errorf("small message %d has %d bytes", i, len(m))
		}
		checkMessage(t, i, m)
	}
	big := BigMessage(1, 3<<20, 3)
	if d := len(big) - 3<<20; d < -64<<10 || d > 64<<10 {
		t.Errorf("BigMessage(3 MiB) has %d bytes", len(big))
	}
	checkMessage(t, -1, big)
}

var decoder = &mime.WordDecoder{CharsetReader: func(label string, in io.Reader) (io.Reader, error) {
	e, err := ianaindex.MIME.Encoding(label)
	if err != nil || e == nil {
		return nil, fmt.Errorf("charset %q: %v", label, err)
	}
	return e.NewDecoder().Reader(in), nil
}}

func checkMessage(t *testing.T, i int, m []byte) {
	t.Helper()
	for _, l := range bytes.Split(m, []byte("\n")) {
		if len(l) > 998 {
			t.Fatalf("message %d: a line of %d bytes", i, len(l))
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(m))
	if err != nil {
		t.Fatalf("message %d: %v", i, err)
	}
	for _, h := range []string{"From", "Subject"} {
		v, err := decoder.DecodeHeader(msg.Header.Get(h))
		if err != nil || !utf8.ValidString(v) || strings.Contains(v, "=?") {
			t.Fatalf("message %d: %s %q decodes to %q, %v", i, h, msg.Header.Get(h), v, err)
		}
	}
	checkPart(t, i, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
}

func checkPart(t *testing.T, i int, ctype, cte string, body io.Reader) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		t.Fatalf("message %d: Content-Type %q: %v", i, ctype, err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		parts := 0
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			parts++
			if name := p.Header.Get("Content-Type"); strings.Contains(name, "name=") {
				_, ps, err := mime.ParseMediaType(name)
				if err != nil {
					t.Fatalf("message %d: %q: %v", i, name, err)
				}
				if n, err := decoder.DecodeHeader(ps["name"]); err != nil || strings.Contains(n, "=?") {
					t.Fatalf("message %d: attachment name %q: %q %v", i, ps["name"], n, err)
				}
			}
			checkPart(t, i, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
		}
		if parts < 2 {
			t.Fatalf("message %d: %s with %d parts", i, mt, parts)
		}
		return
	}
	var r io.Reader = body
	switch strings.ToLower(cte) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body)
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("message %d: %s body (%s): %v", i, mt, cte, err)
	}
	if !strings.HasPrefix(mt, "text/") {
		return
	}
	label := params["charset"]
	e, err := ianaindex.MIME.Encoding(label)
	if err != nil {
		t.Fatalf("message %d: charset %q: %v", i, label, err)
	}
	text := raw
	if e != nil {
		if text, err = e.NewDecoder().Bytes(raw); err != nil {
			t.Fatalf("message %d: %s: %v", i, label, err)
		}
	}
	if !utf8.Valid(text) || bytes.ContainsRune(text, utf8.RuneError) {
		t.Fatalf("message %d: %s text does not decode cleanly", i, label)
	}
}
