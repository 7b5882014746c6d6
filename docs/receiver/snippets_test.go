package receiver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gbkMessage is a message as format raw sends it: GBK text with an 8-bit
// transfer encoding, not valid UTF-8 (您好，请查收附件。).
var gbkMessage = []byte("From: =?GBK?B?1cXI/Q==?= <zhang@example.cn>\r\nSubject: x\r\n" +
	"Content-Type: text/plain; charset=GBK\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
	"\xc4\xfa\xba\xc3\xa3\xac\xc7\xeb\xb2\xe9\xca\xd5\xb8\xbd\xbc\xfe\xa1\xa3\r\n")

// TestVerifyNotUTF8 checks what docs/webhook.md says of Verify: it works on
// the bytes, so a body that is not UTF-8 verifies like any other.
func TestVerifyNotUTF8(t *testing.T) {
	now := time.Now()
	r := request(t, testSecret, id1, now, gbkMessage)
	if err := Verify(testSecret, r.Header, gbkMessage, now); err != nil {
		t.Fatalf("GBK body refused: %v", err)
	}
	if err := Verify(testSecret, r.Header, []byte(strings.ToValidUTF8(string(gbkMessage), "\uFFFD")), now); err == nil {
		t.Fatal("the body decoded as UTF-8 verified too: the signature would not cover the bytes")
	}
}

// TestDocSnippets runs the Python and Node.js verifiers that
// docs/webhook.md shows, where the interpreters are installed: on the
// documented test vector, on a GBK message, and on a forged signature.
func TestDocSnippets(t *testing.T) {
	doc, err := os.ReadFile("../webhook.md")
	if err != nil {
		t.Fatal(err)
	}
	vector, err := os.ReadFile("../example-payload.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range []struct {
		file, lang, interp, harness string
	}{
		{"verify.py", "python", "python3", `
import sys
_body = open(sys.argv[1], "rb").read()
_now = float(sys.argv[5])
time.time = lambda: _now
print(verify(sys.argv[6], {"webhook-id": sys.argv[2], "webhook-timestamp": sys.argv[3], "webhook-signature": sys.argv[4]}, _body))
`},
		{"verify.js", "js", "node", `
const [bodyFile, id, ts, sig, now, secret] = process.argv.slice(2);
Date.now = () => Number(now) * 1000;
console.log(verify(secret, { "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig }, require("node:fs").readFileSync(bodyFile)));
`},
	} {
		t.Run(sn.file, func(t *testing.T) {
			open := "<!-- snippet: " + sn.file + " -->\n```" + sn.lang + "\n"
			_, rest, ok := strings.Cut(string(doc), open)
			code, _, closed := strings.Cut(rest, "```\n")
			if !ok || !closed {
				t.Fatalf("webhook.md has no %s snippet", sn.file)
			}
			interp, err := exec.LookPath(sn.interp)
			if err != nil && os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, and under CI=true every snippet must run", sn.interp)
			}
			if err != nil {
				t.Skipf("%s is not installed, so docs/webhook.md's %s is not run (apt-get install %s)", sn.interp, sn.file, map[string]string{"node": "nodejs", "python3": "python3"}[sn.interp])
			}
			dir := t.TempDir()
			script := filepath.Join(dir, sn.file)
			if err := os.WriteFile(script, []byte(code+sn.harness), 0o644); err != nil {
				t.Fatal(err)
			}
			now := time.Now().Unix()
			vectorTS, _ := strconv.ParseInt(vectorTimestamp, 10, 64)
			for _, c := range []struct {
				name      string
				body      []byte
				id, ts    string
				signature string
				now       int64
				want      string
			}{
				{"test vector", vector, vectorID, vectorTimestamp, vectorSignature, vectorTS + 60, "true"},
				{"GBK message", gbkMessage, id1, strconv.FormatInt(now, 10), sign(t, testSecret, id1, now, gbkMessage), now, "true"},
				{"forged", gbkMessage, id1, strconv.FormatInt(now, 10), sign(t, testSecret, id1, now, vector), now, "false"},
				{"too old", vector, vectorID, vectorTimestamp, vectorSignature, vectorTS + 600, "false"},
			} {
				body := filepath.Join(dir, "body")
				if err := os.WriteFile(body, c.body, 0o644); err != nil {
					t.Fatal(err)
				}
				out, err := exec.Command(interp, script, body, c.id, c.ts, c.signature, strconv.FormatInt(c.now, 10), testSecret).CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v\n%s", c.name, err, out)
				}
				if got := strings.ToLower(strings.TrimSpace(string(out))); got != c.want {
					t.Errorf("%s: %s says %s, want %s", c.name, sn.file, got, c.want)
				}
			}
		})
	}
}
