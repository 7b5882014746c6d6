package receiver

// The standard library has no JSON Schema validator. These tests check
// docs/example-payload.json against docs/webhook.schema.json in two
// independent ways: a strict decode into Go types that mirror the schema
// (and are checked to mirror it), and a small validator for exactly the
// keywords the schema uses (it refuses any other keyword, so nothing in the
// schema goes unchecked).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pophook/pophook/internal/testutil/jsonschema"
)

type event struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      message   `json:"data"`
}

type message struct {
	ID            string       `json:"id"`
	Account       string       `json:"account"`
	Mailbox       string       `json:"mailbox"`
	UIDL          string       `json:"uidl"`
	Size          int64        `json:"size"`
	SHA256        string       `json:"sha256"`
	MessageID     string       `json:"message_id"`
	InReplyTo     string       `json:"in_reply_to"`
	References    []string     `json:"references"`
	Date          string       `json:"date"`
	Subject       string       `json:"subject"`
	From          *address     `json:"from"`
	ReplyTo       []address    `json:"reply_to"`
	To            []address    `json:"to"`
	Cc            []address    `json:"cc"`
	OrigRecipient string       `json:"original_recipient"`
	MailboxHash   string       `json:"mailbox_hash"`
	Headers       []header     `json:"headers"`
	Text          string       `json:"text"`
	HTML          string       `json:"html"`
	TextFromHTML  bool         `json:"text_from_html"`
	StrippedText  string       `json:"stripped_text"`
	StrippedSig   string       `json:"stripped_signature"`
	Attachments   []attachment `json:"attachments"`
	AutoSubmitted bool         `json:"auto_submitted"`
	ParseErrors   []string     `json:"parse_errors"`
	Raw           []byte       `json:"raw,omitempty"` // base64 in JSON
}

type address struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Disposition string `json:"disposition"`
	ContentID   string `json:"content_id"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	Content     []byte `json:"content,omitempty"` // base64 in JSON
}

func readJSON(t *testing.T, path string) (raw []byte, value any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &value); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return raw, value
}

func TestSchemaFile(t *testing.T) {
	_, v := readJSON(t, "../webhook.schema.json")
	schema := v.(map[string]any)
	if got := schema["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v, want draft 2020-12", got)
	}
	for _, key := range []string{"$id", "title", "description", "type", "required", "properties", "$defs"} {
		if _, ok := schema[key]; !ok {
			t.Errorf("schema has no %q", key)
		}
	}
	props := schema["properties"].(map[string]any)
	if c := props["type"].(map[string]any)["const"]; c != "message.received" {
		t.Errorf(`properties.type.const = %v`, c)
	}
	// Room to grow: the envelope and data accept properties added later.
	defs := schema["$defs"].(map[string]any)
	for _, obj := range []map[string]any{schema, defs["message"].(map[string]any), defs["attachment"].(map[string]any)} {
		if ap, ok := obj["additionalProperties"]; ok && ap == false {
			t.Errorf("%v forbids additional properties", obj["description"])
		}
	}
}

// TestTypesMirrorSchema keeps the Go types above honest: same property
// names, and exactly the schema's required ones without omitempty.
func TestTypesMirrorSchema(t *testing.T) {
	_, v := readJSON(t, "../webhook.schema.json")
	schema := v.(map[string]any)
	defs := schema["$defs"].(map[string]any)
	for _, tt := range []struct {
		def string
		typ reflect.Type
	}{
		{"", reflect.TypeFor[event]()},
		{"message", reflect.TypeFor[message]()},
		{"address", reflect.TypeFor[address]()},
		{"header", reflect.TypeFor[header]()},
		{"attachment", reflect.TypeFor[attachment]()},
	} {
		obj := schema
		if tt.def != "" {
			obj = defs[tt.def].(map[string]any)
		}
		var props, required []string
		for name := range obj["properties"].(map[string]any) {
			props = append(props, name)
		}
		for _, name := range obj["required"].([]any) {
			required = append(required, name.(string))
		}
		var fields, always []string
		for f := range tt.typ.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			fields = append(fields, name)
			if opts != "omitempty" {
				always = append(always, name)
			}
		}
		for _, s := range [][]string{props, required, fields, always} {
			slices.Sort(s)
		}
		if !slices.Equal(props, fields) {
			t.Errorf("%s: schema properties %v, Go fields %v", tt.typ.Name(), props, fields)
		}
		if !slices.Equal(required, always) {
			t.Errorf("%s: schema requires %v, Go fields without omitempty %v", tt.typ.Name(), required, always)
		}
	}
}

func TestExampleDecodesStrictly(t *testing.T) {
	raw, _ := readJSON(t, "../example-payload.json")
	if !utf8.Valid(raw) {
		t.Fatal("example-payload.json is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var e event
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	d := e.Data
	if e.Type != "message.received" || e.Timestamp.IsZero() || e.Timestamp.Location() != time.UTC {
		t.Errorf("envelope: type %q, timestamp %v", e.Type, e.Timestamp)
	}
	if d.ID != vectorID {
		t.Errorf("data.id %q differs from the documented test vector's %q", d.ID, vectorID)
	}
	if d.From == nil || d.From.Name != "张三" {
		t.Errorf("from = %+v, want 张三", d.From)
	}
	if !strings.Contains(d.Subject, "报价") {
		t.Errorf("subject %q is not the decoded Chinese subject", d.Subject)
	}
	if _, err := time.Parse(time.RFC3339, d.Date); err != nil {
		t.Errorf("date: %v", err)
	}
	if d.InReplyTo == "" || len(d.References) == 0 || d.MessageID == "" {
		t.Error("the example should show the threading headers")
	}
	if strings.Contains(d.Text, "\r") || strings.Contains(d.HTML, "\r") {
		t.Error("text and html must use \\n line breaks")
	}
	// The example is a reply to a ticket address with a +tag, Outlook
	// style: the quoted request comes after a header block.
	if d.OrigRecipient != "support+t4711@example.com" || d.MailboxHash != "t4711" {
		t.Errorf("original_recipient %q, mailbox_hash %q", d.OrigRecipient, d.MailboxHash)
	}
	if d.TextFromHTML || !strings.HasPrefix(d.Text, d.StrippedText) || d.StrippedText == d.Text ||
		strings.Contains(d.StrippedText, "发件人") || !strings.HasSuffix(d.StrippedText, "张三") {
		t.Errorf("stripped_text %q is not the reply at the top of text %q", d.StrippedText, d.Text)
	}
	var original string
	for _, h := range d.Headers {
		if h.Name == "Message-ID" {
			original = h.Value
		}
	}
	if original != d.MessageID {
		t.Errorf("headers carry Message-ID %q, message_id is %q", original, d.MessageID)
	}
	if len(d.Attachments) != 1 {
		t.Fatalf("%d attachments, want 1", len(d.Attachments))
	}
	a := d.Attachments[0]
	sum := sha256.Sum256(a.Content)
	if a.Filename != "报价.pdf" || int64(len(a.Content)) != a.Size || hex.EncodeToString(sum[:]) != a.SHA256 {
		t.Errorf("attachment %q: size %d / sha256 %s do not match its %d content bytes", a.Filename, a.Size, a.SHA256, len(a.Content))
	}
	if !bytes.HasPrefix(a.Content, []byte("%PDF-")) {
		t.Error("attachment content is not a PDF")
	}

	// The payload describes docs/example-message.eml, byte for byte.
	eml, err := os.ReadFile("../example-message.eml")
	if err != nil {
		t.Fatal(err)
	}
	sum = sha256.Sum256(eml)
	if int64(len(eml)) != d.Size || hex.EncodeToString(sum[:]) != d.SHA256 {
		t.Errorf("example-message.eml: %d octets sha256 %x; the payload says %d, %s", len(eml), sum, d.Size, d.SHA256)
	}
	if bytes.Count(eml, []byte("\n")) != bytes.Count(eml, []byte("\r\n")) {
		t.Error("example-message.eml must keep CRLF line endings")
	}
}

func TestExampleValidatesAgainstSchema(t *testing.T) {
	_, schema := readJSON(t, "../webhook.schema.json")
	_, example := readJSON(t, "../example-payload.json")
	v := jsonschema.New(schema.(map[string]any))
	if errs := v.Validate(example); len(errs) > 0 {
		t.Fatalf("example-payload.json does not match the schema:\n%s", strings.Join(errs, "\n"))
	}
}

// TestValidatorHasTeeth makes sure the validator would catch a broken
// payload, so that the test above means something.
func TestValidatorHasTeeth(t *testing.T) {
	_, schema := readJSON(t, "../webhook.schema.json")
	v := jsonschema.New(schema.(map[string]any))
	mutations := map[string]func(d map[string]any){
		"wrong type":           func(d map[string]any) { d["size"] = "2326" },
		"negative size":        func(d map[string]any) { d["size"] = -1.0 },
		"fractional size":      func(d map[string]any) { d["size"] = 1.5 },
		"missing subject":      func(d map[string]any) { delete(d, "subject") },
		"null references":      func(d map[string]any) { d["references"] = nil },
		"upper-case sha256":    func(d map[string]any) { d["sha256"] = strings.ToUpper(d["sha256"].(string)) },
		"bad date":             func(d map[string]any) { d["date"] = "Fri, 27 Nov 2026 12:59:00 +0800" },
		"address extra field":  func(d map[string]any) { d["from"].(map[string]any)["x"] = "" },
		"from as string":       func(d map[string]any) { d["from"] = "zhang@example.cn" },
		"bad disposition":      func(d map[string]any) { att(d)["disposition"] = "attached" },
		"attachment no sha256": func(d map[string]any) { delete(att(d), "sha256") },
		"content not base64":   func(d map[string]any) { att(d)["content"] = "%%%" },
		"bad id":               func(d map[string]any) { d["id"] = "ph1/../x" },
		"bad account":          func(d map[string]any) { d["account"] = "Support" },
		"header without value": func(d map[string]any) { delete(d["headers"].([]any)[0].(map[string]any), "value") },
		"text_from_html text":  func(d map[string]any) { d["text_from_html"] = "false" },
		"no stripped_text":     func(d map[string]any) { delete(d, "stripped_text") },
		"null signature":       func(d map[string]any) { d["stripped_signature"] = nil },
		"no mailbox_hash":      func(d map[string]any) { delete(d, "mailbox_hash") },
		"recipient as array":   func(d map[string]any) { d["original_recipient"] = []any{"support@example.com"} },
	}
	for name, mutate := range mutations {
		_, example := readJSON(t, "../example-payload.json")
		mutate(example.(map[string]any)["data"].(map[string]any))
		if errs := v.Validate(example); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	// Null from and added fields are fine.
	_, example := readJSON(t, "../example-payload.json")
	d := example.(map[string]any)["data"].(map[string]any)
	d["from"] = nil
	d["date"] = ""
	d["some_future_field"] = true
	att(d)["another_future_field"] = 1.0
	delete(att(d), "content")
	d["raw"] = "UmV0dXJuLVBhdGg6IDw+DQoNCg=="
	if errs := v.Validate(example); len(errs) > 0 {
		t.Errorf("valid variant refused:\n%s", strings.Join(errs, "\n"))
	}
}

func att(d map[string]any) map[string]any {
	return d["attachments"].([]any)[0].(map[string]any)
}
