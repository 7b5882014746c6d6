package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pophook/pophook/internal/testutil/testcorpus"
)

// doc is the payload as a receiver decodes it.
type doc struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      struct {
		ID            string              `json:"id"`
		Account       string              `json:"account"`
		Mailbox       string              `json:"mailbox"`
		UIDL          string              `json:"uidl"`
		Size          int64               `json:"size"`
		SHA256        string              `json:"sha256"`
		MessageID     string              `json:"message_id"`
		InReplyTo     string              `json:"in_reply_to"`
		References    []string            `json:"references"`
		Date          string              `json:"date"`
		Subject       string              `json:"subject"`
		From          *jsonAddress        `json:"from"`
		ReplyTo       []jsonAddress       `json:"reply_to"`
		To            []jsonAddress       `json:"to"`
		Cc            []jsonAddress       `json:"cc"`
		OrigRecipient string              `json:"original_recipient"`
		MailboxHash   string              `json:"mailbox_hash"`
		Headers       []map[string]string `json:"headers"`
		Text          string              `json:"text"`
		HTML          string              `json:"html"`
		TextFromHTML  bool                `json:"text_from_html"`
		StrippedText  string              `json:"stripped_text"`
		StrippedSig   string              `json:"stripped_signature"`
		Attachments   []jsonAttachment    `json:"attachments"`
		AutoSubmitted bool                `json:"auto_submitted"`
		ParseErrors   []string            `json:"parse_errors"`
		Raw           *string             `json:"raw"`
	} `json:"data"`
}

type jsonAddress struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type jsonAttachment struct {
	Filename    string  `json:"filename"`
	ContentType string  `json:"content_type"`
	Disposition string  `json:"disposition"`
	ContentID   string  `json:"content_id"`
	Size        int64   `json:"size"`
	SHA256      string  `json:"sha256"`
	Content     *string `json:"content"`
}

func metaFor(name string, data []byte) Meta {
	sum := sha256.Sum256(data)
	return Meta{
		ID: "key-" + name, Account: "support", Mailbox: "support@example.com", UIDL: "uidl-" + name,
		Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]),
		Timestamp: time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC),
	}
}

// render runs Write and checks what every payload must satisfy.
func render(t *testing.T, name string, data []byte, opts Options) (*doc, []byte) {
	t.Helper()
	var buf bytes.Buffer
	meta := metaFor(name, data)
	if err := Write(&buf, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), meta, opts); err != nil {
		t.Fatalf("%s: Write: %v", name, err)
	}
	out := buf.Bytes()
	if !json.Valid(out) {
		t.Fatalf("%s: invalid JSON:\n%s", name, out)
	}
	if !utf8.Valid(out) {
		t.Fatalf("%s: output is not UTF-8", name)
	}
	var generic any
	if err := json.Unmarshal(out, &generic); err != nil {
		t.Fatal(err)
	}
	walkStrings(generic, func(s string) {
		if !utf8.ValidString(s) {
			t.Errorf("%s: invalid UTF-8 in %q", name, s)
		}
	})
	var d doc
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatal(err)
	}
	checkShape(t, name, out)
	checkReplacements(t, name, data, &d)
	if d.Type != "message.received" || d.Timestamp != "2026-11-27T05:00:00Z" {
		t.Errorf("%s: type %q timestamp %q", name, d.Type, d.Timestamp)
	}
	if d.Data.Size != meta.Size || d.Data.SHA256 != meta.SHA256 || d.Data.ID != meta.ID ||
		d.Data.UIDL != meta.UIDL || d.Data.Account != meta.Account || d.Data.Mailbox != meta.Mailbox {
		t.Errorf("%s: meta fields not as given: %+v", name, d.Data)
	}
	for _, a := range d.Data.Attachments {
		if a.Content == nil {
			continue
		}
		b, err := base64Decode(*a.Content)
		if err != nil {
			t.Errorf("%s: attachment %q content: %v", name, a.Filename, err)
			continue
		}
		sum := sha256.Sum256(b)
		if int64(len(b)) != a.Size || hex.EncodeToString(sum[:]) != a.SHA256 {
			t.Errorf("%s: attachment %q: content does not match size %d / sha256", name, a.Filename, a.Size)
		}
	}
	return &d, out
}

// checkShape checks that arrays are [] rather than null and every field of
// DESIGN.md section 4 is present.
func checkShape(t *testing.T, name string, out []byte) {
	t.Helper()
	var m struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "account", "mailbox", "uidl", "size", "sha256", "message_id", "in_reply_to",
		"references", "date", "subject", "from", "reply_to", "to", "cc", "original_recipient", "mailbox_hash",
		"headers", "text", "html", "text_from_html", "stripped_text", "stripped_signature",
		"attachments", "auto_submitted", "parse_errors"} {
		v, ok := m.Data[k]
		if !ok {
			t.Errorf("%s: field %q missing", name, k)
			continue
		}
		switch k {
		case "references", "reply_to", "to", "cc", "headers", "attachments", "parse_errors":
			if !bytes.HasPrefix(v, []byte("[")) {
				t.Errorf("%s: %q is %s, want an array", name, k, v)
			}
		}
	}
}

func walkStrings(v any, f func(string)) {
	switch v := v.(type) {
	case string:
		f(v)
	case []any:
		for _, e := range v {
			walkStrings(e, f)
		}
	case map[string]any:
		for k, e := range v {
			f(k)
			walkStrings(e, f)
		}
	}
}

var kindRE = regexp.MustCompile(`^(header [^:]+|part [0-9.]+|message|header)(: file name)?: `)

// problemKind reduces a parse error to its kind, for the counts.
func problemKind(s string) string {
	s = kindRE.ReplaceAllString(s, "")
	s = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(s, `"…"`)
	s = regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(s, "(…)")
	s = regexp.MustCompile(`(^|\s)[0-9]+(\s|$)`).ReplaceAllString(s, "${1}N$2")
	return s
}

// TestCorpus sends every corpus message through Write, as fetched (CRLF)
// and as stored (the file's own line endings).
func TestCorpus(t *testing.T) {
	files := testcorpus.Files(t)
	kinds := map[string]int{}
	withErrors := 0
	dump := os.Getenv("PAYLOAD_DUMP")
	for _, f := range files {
		d, out := render(t, f.Name, testcorpus.CRLF(f.Data), Options{})
		render(t, f.Name+" (as stored)", f.Data, Options{IncludeRaw: true, InlineLimit: 1})
		// With LF line endings (as most files are stored) the message must
		// read the same: only the raw bytes differ.
		lf := bytes.ReplaceAll(testcorpus.CRLF(f.Data), []byte("\r\n"), []byte("\n"))
		ds, _ := render(t, f.Name+" (LF)", lf, Options{IncludeRaw: true, InlineLimit: -1})
		ds.Data.ID, ds.Data.UIDL, ds.Data.Size, ds.Data.SHA256, ds.Data.Raw = d.Data.ID, d.Data.UIDL, d.Data.Size, d.Data.SHA256, nil
		for i := range d.Data.Attachments {
			d.Data.Attachments[i].Content = nil
		}
		if a, b := mustJSON(t, d.Data), mustJSON(t, ds.Data); a != b {
			t.Errorf("%s: CRLF and stored forms differ:\n%s\n%s", f.Name, a, b)
		}
		if len(d.Data.ParseErrors) > 0 {
			withErrors++
		}
		for _, e := range d.Data.ParseErrors {
			kinds[problemKind(e)]++
		}
		if dump != "" {
			p := filepath.Join(dump, strings.ReplaceAll(f.Name, "/", "__")+".json")
			var pretty bytes.Buffer
			json.Indent(&pretty, out, "", "  ")
			os.WriteFile(p, pretty.Bytes(), 0o644)
		}
	}
	var ks []string
	for k := range kinds {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		return kinds[ks[i]] > kinds[ks[j]] || kinds[ks[i]] == kinds[ks[j]] && ks[i] < ks[j]
	})
	t.Logf("%d messages, %d with parse errors", len(files), withErrors)
	for _, k := range ks {
		t.Logf("%4d  %s", kinds[k], k)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func base64Decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
