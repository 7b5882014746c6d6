package payload

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/quotedprintable"
	"strings"
	"sync"
	"testing"
)

var benchMixOnce = sync.OnceValue(func() [][]byte {
	r := rand.New(rand.NewPCG(7, 7))
	// Sizes of the attachments, in bytes: most mail is small, some carries
	// documents and photos (the bench/ mailbox averages ~80 kB).
	sizes := []int{0, 0, 0, 2 << 10, 8 << 10, 24 << 10, 60 << 10, 150 << 10, 400 << 10, 1200 << 10}
	var msgs [][]byte
	for i := range 40 {
		var m bytes.Buffer
		fmt.Fprintf(&m, "Return-Path: <s%d@example.org>\r\nReceived: from mx.example.org by mail.example.com; Thu, 3 Dec 2026 10:00:00 +0000\r\n"+
			"From: =?UTF-8?B?5byg5LiJ?= <s%d@example.org>\r\nTo: Bob <bob@example.com>, carol@example.com\r\nSubject: =?UTF-8?Q?Re:_report_%d_=E6=8A=A5=E5=91=8A?=\r\n"+
			"Date: Thu, 3 Dec 2026 10:00:%02d +0800\r\nMessage-ID: <%d@example.org>\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/mixed; boundary=\"mix%d\"\r\n\r\n", i, i, i, i%60, i, i)
		fmt.Fprintf(&m, "--mix%d\r\nContent-Type: multipart/alternative; boundary=\"alt%d\"\r\n\r\n", i, i)
		var text strings.Builder
		for range 5 + r.IntN(60) {
			text.WriteString("Hello, this is a line of the report with some words in it, 你好世界 and more.\n")
		}
		var qp bytes.Buffer
		qw := quotedprintable.NewWriter(&qp)
		qw.Write([]byte(strings.ReplaceAll(text.String(), "\n", "\r\n")))
		qw.Close()
		fmt.Fprintf(&m, "--alt%d\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n", i, qp.String())
		html := "<html><body><p>" + strings.ReplaceAll(text.String(), "\n", "<br>\n") + "</p></body></html>"
		qp.Reset()
		qw = quotedprintable.NewWriter(&qp)
		qw.Write([]byte(strings.ReplaceAll(html, "\n", "\r\n")))
		qw.Close()
		fmt.Fprintf(&m, "--alt%d\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n--alt%d--\r\n", i, qp.String(), i)
		for k := range 1 + i%3 {
			n := sizes[(i+k)%len(sizes)]
			if n == 0 {
				continue
			}
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			enc := base64.StdEncoding.EncodeToString(data)
			fmt.Fprintf(&m, "--mix%d\r\nContent-Type: application/pdf; name=\"doc%d.pdf\"\r\nContent-Disposition: attachment; filename=\"doc%d.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", i, k, k)
			for len(enc) > 76 {
				m.WriteString(enc[:76] + "\r\n")
				enc = enc[76:]
			}
			m.WriteString(enc + "\r\n")
		}
		fmt.Fprintf(&m, "--mix%d--\r\n", i)
		msgs = append(msgs, m.Bytes())
	}
	return msgs
})

func benchMix() [][]byte { return benchMixOnce() }

// BenchmarkWriteMix builds the payloads of a generated mailbox: 40
// messages of text and HTML (quoted-printable) with zero to three base64
// attachments from 2 KiB to 1.2 MiB, as in the bench/ mailbox.
func BenchmarkWriteMix(b *testing.B) {
	msgs := benchMix()
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if err := Write(io.Discard, io.NewSectionReader(bytes.NewReader(m), 0, int64(len(m))), Meta{ID: "k"}, Options{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
