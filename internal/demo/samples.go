package demo

import (
	"bytes"
	"embed"
	"fmt"
	"path"
	"strings"

	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// The sample mailbox: invented but realistic messages, one file each, with
// LF line endings (the POP3 server sends CRLF). Among them: Chinese in GBK
// and Japanese in ISO-2022-JP, a PDF attachment, an auto-reply, a message
// cut short (broken MIME, an unreadable date), a reply quoting its history,
// an HTML-only newsletter and mail to a plus address.
//
//go:embed samples/*.eml
var sampleFS embed.FS

// sample is one message of the sample mailbox.
type sample struct {
	name      string // file name, without the directory
	data      []byte
	messageID string // the Message-ID header as written
}

// loadSamples returns the sample messages in file name order, each with
// its Message-ID, which must be present and unique.
func loadSamples() ([]sample, error) {
	ents, err := sampleFS.ReadDir("samples")
	if err != nil {
		return nil, err
	}
	var out []sample
	seen := map[string]string{}
	for _, e := range ents {
		data, err := sampleFS.ReadFile(path.Join("samples", e.Name()))
		if err != nil {
			return nil, err
		}
		id := headerValue(data, "Message-ID")
		if id == "" {
			return nil, fmt.Errorf("sample %s has no Message-ID", e.Name())
		}
		if other, dup := seen[id]; dup {
			return nil, fmt.Errorf("samples %s and %s share Message-ID %s", other, e.Name(), id)
		}
		seen[id] = e.Name()
		out = append(out, sample{name: e.Name(), data: data, messageID: id})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no sample messages embedded")
	}
	return out, nil
}

// mailbox returns the samples as the POP3 server's messages, with UIDLs of
// the kind Dovecot gives.
func mailbox(samples []sample) []pop3test.Message {
	msgs := make([]pop3test.Message, len(samples))
	for i, s := range samples {
		msgs[i] = pop3test.Message{UID: fmt.Sprintf("%08x6740f2a1", i+1), Data: s.data}
	}
	return msgs
}

// headerValue returns the unfolded value of the first header field called
// name in a message (CRLF or LF line endings), "" when there is none. It
// reads only the header and accepts a malformed one: a sample may be
// broken on purpose.
func headerValue(msg []byte, name string) string {
	var value []string
	found := false
	for line := range bytes.Lines(msg) {
		l := strings.TrimRight(string(line), "\r\n")
		switch {
		case l == "":
			return strings.Join(value, " ")
		case l[0] == ' ' || l[0] == '\t':
			if found {
				value = append(value, strings.TrimSpace(l))
			}
		case found:
			return strings.Join(value, " ")
		default:
			k, v, ok := strings.Cut(l, ":")
			if ok && strings.EqualFold(strings.TrimSpace(k), name) {
				found = true
				value = append(value, strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(value, " ")
}
