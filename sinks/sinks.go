// Package sinks is the vocabulary every sink shares with the job that
// calls it: the Sink interface, the Message it is handed, the three ways a
// delivery can fail, and the retry policy every sink applies within one
// delivery (retry.go). Each sink lives in a package of its own and asserts
// at compile time that it satisfies Sink.
package sinks

import (
	"context"
	"errors"
	"io"
)

// Sink takes one message.
//
// Deliver returns nil once the message is safely in the sink's hands. On
// failure its error says, through the markers below, what the job should
// do: Reject (this message, never: keep it on the server and retry on a
// slow schedule), Unavailable (the sink cannot work at all now: stop
// using it for this run), or, unmarked, a temporary failure (stop using
// it for this run; the message waits for the next one). A sink applies
// its own retries within a bounded time (see Retry) and is safe for
// concurrent use, since one sink may serve several accounts at once.
type Sink interface {
	Deliver(ctx context.Context, m *Message) error
}

// Flusher is implemented by sinks whose deliveries become durable only
// when Flush returns: the Maildir sink syncs a batch of files and their
// directory together rather than one message at a time. The worker calls
// Flush with the keys of the messages the sink took since its last Flush
// before it records them in the ledger, and so before any DELE; an error
// means those deliveries may not survive a crash, and they are not
// recorded.
type Flusher interface {
	Flush(ctx context.Context, keys []string) error
}

// Checker is implemented by sinks that can test their receiver without
// handing it a message, for pophook check. It says what it found, in one
// line, or why the receiver cannot work. ping allows a test that the
// receiver sees (a signed webhook ping event).
type Checker interface {
	Check(ctx context.Context, ping bool) (string, error)
}

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
	// Reader, as often as it retries; nothing is held in memory.
	Raw io.ReaderAt
}

// Reader returns a fresh reader of the whole raw message.
func (m *Message) Reader() *io.SectionReader { return io.NewSectionReader(m.Raw, 0, m.Size) }

// Outcome classifies a delivery's result.
type Outcome int

const (
	// OutcomeDelivered: the sink has the message.
	OutcomeDelivered Outcome = iota
	// OutcomeTemporary: it may work later without anyone changing anything (a
	// network error, a full disk, a 503). The default for any unmarked
	// error.
	OutcomeTemporary
	// OutcomeRejected: the sink will not take this message however often it is
	// asked (HTTP 4xx, SMTP 5xx at RCPT or DATA). The message stays on
	// the server and is offered again on a slow schedule.
	OutcomeRejected
	// OutcomeUnavailable: the sink cannot take any message until someone fixes
	// something (refused credentials, a redirect, an untrusted
	// certificate, a read-only Maildir). It is not the message's fault,
	// so no message goes on the slow schedule.
	OutcomeUnavailable
)

func (o Outcome) String() string {
	switch o {
	case OutcomeDelivered:
		return "delivered"
	case OutcomeTemporary:
		return "temporary"
	case OutcomeRejected:
		return "rejected"
	case OutcomeUnavailable:
		return "unavailable"
	}
	return "unknown"
}

// Classify tells what err from Deliver means. A nil error is Delivered;
// an error marked by Reject or Unavailable is that (the outermost marker
// wins); anything else is Temporary.
func Classify(err error) Outcome {
	if err == nil {
		return OutcomeDelivered
	}
	var m *marked
	if errors.As(err, &m) {
		return m.outcome
	}
	return OutcomeTemporary
}

// Reject marks err as a rejection of this message.
func Reject(err error) error { return mark(err, OutcomeRejected) }

// Unavailable marks err as the whole sink being unable to work now.
func Unavailable(err error) error { return mark(err, OutcomeUnavailable) }

func mark(err error, o Outcome) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, outcome: o}
}

type marked struct {
	err     error
	outcome Outcome
}

func (e *marked) Error() string { return e.err.Error() }
func (e *marked) Unwrap() error { return e.err }
