package receiver

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestWebhookDocQuotesTheCode keeps docs/webhook.md honest: the code and
// the example it shows are these files, verbatim, and its test vector is
// the one TestVerifyDocumentedVector checks. After changing a file, paste
// it again between the <!-- include: FILE --> fence in webhook.md.
func TestWebhookDocQuotesTheCode(t *testing.T) {
	doc, err := os.ReadFile("../webhook.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(doc)
	for file, lang := range map[string]string{
		"receiver.go":             "go",
		"example_test.go":         "go",
		"../example-payload.json": "json",
	} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(file, "../")
		if !strings.HasPrefix(name, "example-") {
			name = "receiver/" + name
		}
		quoted := "<!-- include: " + name + " -->\n```" + lang + "\n" + string(src) + "```\n"
		if !strings.Contains(md, quoted) {
			t.Errorf("webhook.md does not quote %s verbatim after <!-- include: %s -->", file, name)
		}
	}

	payload, err := os.ReadFile("../example-payload.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		testSecret, vectorID, vectorTimestamp, vectorSignature,
		fmt.Sprintf("%d,%03d octets", len(payload)/1000, len(payload)%1000),
	} {
		if !strings.Contains(md, s) {
			t.Errorf("webhook.md lacks the test vector's %q", s)
		}
	}
}
