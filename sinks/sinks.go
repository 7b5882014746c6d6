// Package sinks holds what every sink shares with the job that calls it:
// the message it is handed and how it says a failure is permanent. The
// Sink interface itself is declared by its user, package worker.
package sinks

import (
	"errors"
	"io"
)

// Message is one fetched message handed to a sink.
type Message struct {
	Account string // account name from the configuration ("support")
	Mailbox string // the account's user name on the server
	UIDL    string // the server's unique id
	// Key is the idempotency key: the same on every attempt to deliver
	// this message, derived from server, user, UIDL, size and digest.
	Key    string
	Size   int64  // octets as fetched (CRLF line endings, dot-stuffing removed)
	SHA256 string // hex digest of those octets

	// Raw holds the message exactly as fetched. A sink reads it with
	// io.NewSectionReader(m.Raw, 0, m.Size), as often as it retries;
	// nothing is held in memory.
	Raw io.ReaderAt
}

// Reader returns a fresh reader of the whole raw message.
func (m *Message) Reader() *io.SectionReader { return io.NewSectionReader(m.Raw, 0, m.Size) }

// Permanent marks err as a permanent rejection: the sink will not take
// this message however often it is asked (HTTP 4xx, SMTP 5xx). The message
// stays on the server and is retried on a slow schedule. Any error not
// marked permanent is temporary.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
