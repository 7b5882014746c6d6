package payload

import (
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message/textproto"
)

// recipientHeaders are the headers that name the address a message was
// delivered to, in the order they are trusted: Delivered-To is added by
// the delivering MTA (Postfix, Exim, Dovecot, Gmail), X-Original-To by
// Postfix before alias expansion, Envelope-To by Exim.
var recipientHeaders = []string{"Delivered-To", "X-Original-To", "Envelope-To"}

// originalRecipient returns the address this mailbox received the message
// for, and the header it came from ("" for the account's address). Each
// hop that delivers adds its Delivered-To on top, so the top-most one is
// the delivery into this mailbox, and the first occurrence is the one to
// take. The address is kept exactly as written: local parts are case
// sensitive, and a help desk matching it against its own configuration
// should decide about case itself.
func originalRecipient(h textproto.Header, mailbox string) (addr, header string) {
	for _, k := range recipientHeaders {
		for _, v := range h.Values(k) {
			if a := envelopeAddress(v); a != "" {
				return a, k
			}
		}
	}
	if isAddress(mailbox) {
		return mailbox, ""
	}
	return "", ""
}

// envelopeAddress reads the first address of an envelope header value:
// "support+acme@example.com", "<support+acme@example.com>", with comments
// or, in Envelope-To, a list.
func envelopeAddress(v string) string {
	v, _ = stripComments(v)
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	v = strings.TrimSpace(v)
	if lt := strings.IndexByte(v, '<'); lt >= 0 {
		v = v[lt+1:]
		if gt := strings.IndexByte(v, '>'); gt >= 0 {
			v = v[:gt]
		}
	}
	v = strings.TrimSpace(v)
	if strings.ContainsAny(v, " \t") {
		return ""
	}
	return v
}

// isAddress: local@domain without white space, as a POP3 user name often
// is.
func isAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	return at > 0 && at < len(s)-1 && !strings.ContainsAny(s, " \t\r\n<>") && utf8.ValidString(s)
}

// mailboxHash returns the tag of a sub-address: what follows the first
// "+" of the local part (support+acme@example.com gives "acme"), as
// Postfix's recipient_delimiter, Gmail and Fastmail use it. Other
// delimiters ("-" in qmail) are configuration pophook does not know.
func mailboxHash(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	local := addr[:at]
	if len(local) >= 2 && local[0] == '"' && local[len(local)-1] == '"' {
		local = local[1 : len(local)-1]
	}
	_, tag, ok := strings.Cut(local, "+")
	if !ok {
		return ""
	}
	return tag
}
