// Package payload writes the JSON body of the webhook sink (DESIGN.md
// section 4) for one fetched message, streaming, with every text field
// valid UTF-8 whatever the mail's charsets.
//
// MIME structure comes from github.com/emersion/go-message's textproto
// (header blocks, multipart boundaries), because it streams part bodies
// from the spool, so a 25 MiB attachment costs a few buffers; enmime is
// more forgiving but holds every part in memory (MIME-NOTES.md), which
// breaks the 64 MiB bound. go-message's strictness (it stops at a malformed
// header line) is met by a line filter under it, and the places where mail
// in the wild defeats the standard library's strict readers (RFC 2047
// words in unknown charsets or split mid-character, RFC 2231 names in GBK
// or Shift_JIS, addresses net/mail refuses, quoted-printable with bad
// escapes) get small tolerant readers here, with golang.org/x/text for the
// charsets and a UTF-7 decoder of our own.
package payload
