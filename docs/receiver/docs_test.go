package receiver

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode"
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

// TestWebhookDocAnchors checks that every link to a section of webhook.md
// names a heading, slugged as GitHub does (lower case, punctuation
// dropped, spaces to hyphens).
func TestWebhookDocAnchors(t *testing.T) {
	doc, err := os.ReadFile("../webhook.md")
	if err != nil {
		t.Fatal(err)
	}
	slugs := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := strings.Map(func(r rune) rune {
			switch {
			case r == ' ':
				return '-'
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				return unicode.ToLower(r)
			}
			return -1
		}, title)
		slugs[slug] = true
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(string(doc), -1) {
		if !slugs[m[1]] {
			t.Errorf("webhook.md links to #%s, which is no heading", m[1])
		}
	}
}
