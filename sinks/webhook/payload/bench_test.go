package payload

import (
	"bytes"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"testing"
)

// BenchmarkWrite builds the payload of a message with a 2 MiB base64
// attachment (inlined, as under the default limit) and a text body.
func BenchmarkWrite(b *testing.B) {
	var msg bytes.Buffer
	msg.WriteString("From: a@example.org\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf\r\n" +
		"Content-Disposition: attachment; filename=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	raw := make([]byte, 2<<20)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 76 {
		msg.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	msg.WriteString(enc + "\r\n--b--\r\n")
	data := msg.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Write(io.Discard, io.NewSectionReader(bytes.NewReader(data), 0, int64(len(data))), Meta{ID: "k"}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
