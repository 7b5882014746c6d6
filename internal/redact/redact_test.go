package redact

import (
	"encoding/base64"
	"testing"
)

func TestScrub(t *testing.T) {
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00s3cret-pass"))
	values := Wire("s3cret-pass", "\x00alice\x00s3cret-pass", "abc")
	for in, want := range map[string]string{
		"-ERR bad password s3cret-pass":                                       "-ERR bad password xxxxx",
		"-ERR [AUTH] you sent " + plain:                                       "-ERR [AUTH] you sent xxxxx",
		"-ERR " + base64.RawStdEncoding.EncodeToString([]byte("s3cret-pass")): "-ERR xxxxx",
		"-ERR abc is short, so it stays":                                      "-ERR abc is short, so it stays",
		"nothing secret here":                                                 "nothing secret here",
	} {
		if got := Scrub(in, values...); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
	// A secret that contains another is replaced whole.
	if got := Scrub("token tok-1234-extra", "tok-1234", "tok-1234-extra"); got != "token xxxxx" {
		t.Errorf("nested: %q", got)
	}
}
