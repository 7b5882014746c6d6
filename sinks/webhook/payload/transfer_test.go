package payload

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAllDecoder(t *testing.T, cte, in string) (string, string) {
	t.Helper()
	d, unknown := transferDecoder(cte, iotest.OneByteReader(strings.NewReader(in)))
	if unknown {
		t.Fatalf("%q unknown", cte)
	}
	b, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), d.problem()
}

func TestQuotedPrintable(t *testing.T) {
	long := strings.Repeat("a=3D", 10000) // one line of 40000 characters
	for _, c := range []struct{ in, want, problem string }{
		{"caf=C3=A9 =\r\nau lait  \r\nx=3d=3D\r\n", "café au lait\r\nx==\r\n", ""},
		{"50% =ZZ off=\r\n", "50% =ZZ off", "invalid quoted-printable escapes kept as they are"},
		{"a=\r\n", "a", ""},
		{"trailing = \r\n", "trailing ", ""},
		{long + "=\r\n" + "b\r\n", strings.Repeat("a=", 10000) + "b\r\n", ""},
		{strings.Repeat(" ", 40000) + "x\r\n", strings.Repeat(" ", 40000) + "x\r\n", ""},
	} {
		got, problem := readAllDecoder(t, "Quoted-Printable", c.in)
		if got != c.want || problem != c.problem {
			t.Errorf("QP %q = %q (%q), want %q (%q)", clip(c.in, 40), clip(got, 40), problem, clip(c.want, 40), c.problem)
		}
	}
}

func TestBase64Tolerant(t *testing.T) {
	for _, c := range []struct{ in, want, problem string }{
		{"aGVsbG8gd29y\r\nbGQ=\r\n", "hello world", ""},
		{"aGVs bG8=\taGk=", "hellohi", ""}, // line-by-line padding, white space
		{"aGVsbG8*!gd29ybGQ", "hello world", "invalid characters in base64 data skipped"},
		{"aGVsbG8gd29ybG", "hello worl", "truncated base64 data"},
	} {
		got, problem := readAllDecoder(t, "BASE64", c.in)
		if got != c.want || problem != c.problem {
			t.Errorf("base64 %q = %q (%q), want %q (%q)", c.in, got, problem, c.want, c.problem)
		}
	}
	for _, cte := range []string{"7-bit", "8bits", "plain", "text/html", " 7BIT ", "binary"} {
		if got, _ := readAllDecoder(t, cte, "=41 x"); got != "=41 x" {
			t.Errorf("%q: %q", cte, got)
		}
	}
	if _, unknown := transferDecoder("x-uuencode", strings.NewReader("")); !unknown {
		t.Error("x-uuencode taken as known")
	}
}

// FuzzBase64Reader: whatever the data, line length and read sizes, the
// tolerant decoder gives back exactly what encoding/base64 encoded, and
// reports no problem.
func FuzzBase64Reader(f *testing.F) {
	f.Add([]byte("hello, world"), uint8(76), uint8(7))
	f.Add([]byte{}, uint8(4), uint8(1))
	f.Add([]byte{0xff, 0x00, 0x10}, uint8(1), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, lineLen, chunk uint8) {
		enc := base64.StdEncoding.EncodeToString(data)
		var wire strings.Builder
		step := int(lineLen%80) + 1
		for i := 0; i < len(enc); i += step {
			wire.WriteString(enc[i:min(i+step, len(enc))])
			wire.WriteString("\r\n")
		}
		r := &base64Reader{src: iotest.OneByteReader(strings.NewReader(wire.String()))}
		if chunk%2 == 0 {
			r = &base64Reader{src: strings.NewReader(wire.String())}
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) || r.problem() != "" {
			t.Fatalf("decoded %x (err %v, problem %q), want %x", got, err, r.problem(), data)
		}
	})
}
