package payload

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// refBase64 is the tolerant decoding base64Reader implements, byte by
// byte: alphabet characters kept, padding ends a quantum, the rest
// skipped, a last incomplete quantum gives what it holds.
func refBase64(in []byte) []byte {
	var out, q []byte
	flush := func() {
		v := func(i int) byte { return b64index[q[i]] }
		switch len(q) {
		case 2:
			out = append(out, v(0)<<2|v(1)>>4)
		case 3:
			out = append(out, v(0)<<2|v(1)>>4, v(1)<<4|v(2)>>2)
		}
		q = q[:0]
	}
	for _, c := range in {
		switch {
		case b64index[c] != 0xFF:
			q = append(q, c)
			if len(q) == 4 {
				out = append(out, b64index[q[0]]<<2|b64index[q[1]]>>4, b64index[q[1]]<<4|b64index[q[2]]>>2, b64index[q[2]]<<6|b64index[q[3]])
				q = q[:0]
			}
		case c == '=':
			flush()
		}
	}
	flush()
	return out
}

// checkBase64 decodes in with base64Reader (read whole and byte by byte)
// and checks it against refBase64, and that a body it calls canonical is
// the encoding of what it decoded, line breaks aside.
func checkBase64(t *testing.T, in []byte) {
	t.Helper()
	want := refBase64(in)
	for _, one := range []bool{false, true} {
		var src io.Reader = bytes.NewReader(in)
		if one {
			src = iotest.OneByteReader(src)
		}
		r := &base64Reader{src: src}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%q (one byte %v): decoded %x, %v; want %x", clip(string(in), 80), one, got, err, want)
		}
		stripped := strings.NewReplacer("\r", "", "\n", "").Replace(string(in))
		if r.canonical() && base64.StdEncoding.EncodeToString(got) != stripped {
			t.Fatalf("%q (one byte %v): canonical, but its content would change", clip(string(in), 80), one)
		}
		var w bytes.Buffer
		if r.canonical() {
			c := &base64Reader{src: bytes.NewReader(in)}
			c.writeClean(&w, make([]byte, 64))
			if w.String() != stripped {
				t.Fatalf("%q: writeClean wrote %q", clip(string(in), 80), clip(w.String(), 80))
			}
		}
	}
}

func TestBase64Canonical(t *testing.T) {
	for _, s := range []string{
		"", "\r\n", "QUJD", "QUJD\r\nREVG", "QUJDRA==", "QUJDRB==", "QUJDREU=", "QUJDREV=", "QQ==QUI=", "QQ==\r\nQUI=",
		"QUJ D\r\nRE VG", "QUJ\r\nDREVG", "QUJD*REVG", "QUJDR", "QUJDRE", "QUJD\nREVG\n", "QUJD\rREVG", "QQ=\r\n=",
		"QUJD=\r\n=", "A", "AB", "ABC", "ABCD====", "-_-_", "QUJD\r\n\r\nREVG", "QQ==\r\n\r\n", "=QUJD", "QUJD\tREVG",
	} {
		checkBase64(t, []byte(s))
	}
	for _, n := range []int{0, 1, 2, 3, 56, 57, 58, 6000, 6001, 6002, 100000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*131 + i>>8)
		}
		enc := base64.StdEncoding.EncodeToString(data)
		var wire strings.Builder
		for len(enc) > 76 {
			wire.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		wire.WriteString(enc)
		checkBase64(t, []byte(wire.String()))
		r := &base64Reader{src: strings.NewReader(wire.String())}
		io.Copy(io.Discard, r)
		if !r.canonical() {
			t.Errorf("%d bytes wrapped at 76: not canonical", n)
		}
		// The same with a character changed into padding, junk or a
		// non-zero padding bit: decoded as before, never canonical.
		if n > 0 {
			w := []byte(wire.String())
			for _, bad := range []byte{'=', '*', ' '} {
				v := bytes.Clone(w)
				v[len(v)/2] = bad
				checkBase64(t, v)
			}
		}
	}
}

// FuzzBase64Canonical: base64Reader decodes as refBase64 whatever the
// input, and what it calls canonical is copied unchanged.
func FuzzBase64Canonical(f *testing.F) {
	f.Add([]byte("QUJD\r\nREVG\r\nQQ=="))
	f.Add([]byte("QR=="))
	f.Add([]byte("QQ=\r\n="))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkBase64(t, in)
	})
}
