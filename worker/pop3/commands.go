package pop3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Capabilities maps each CAPA tag, upper case, to its arguments.
type Capabilities map[string][]string

// Has reports whether the server listed the capability.
func (c Capabilities) Has(name string) bool {
	_, ok := c[strings.ToUpper(name)]
	return ok
}

// SASL lists the SASL mechanisms offered, upper case.
func (c Capabilities) SASL() []string { return c["SASL"] }

// HasSASL reports whether mechanism is offered.
func (c Capabilities) HasSASL(mechanism string) bool {
	for _, m := range c["SASL"] {
		if strings.EqualFold(m, mechanism) {
			return true
		}
	}
	return false
}

// capa refreshes the capabilities. A server without CAPA (-ERR) has none;
// that is not an error.
func (c *Client) capa(ctx context.Context) error {
	caps := Capabilities{}
	err := c.exchange(ctx, func() error {
		c.send("CAPA", "")
		if err := c.flush(); err != nil {
			return err
		}
		if _, err := c.readReply("CAPA"); err != nil {
			return err
		}
		return c.readLines("CAPA", func(line string) error {
			if len(caps) >= 256 {
				return fmt.Errorf("%w: too many capabilities", ErrProtocol)
			}
			f := strings.Fields(line)
			if len(f) > 0 {
				args := f[1:]
				if strings.EqualFold(f[0], "SASL") {
					for i := range args {
						args[i] = strings.ToUpper(args[i])
					}
				}
				caps[strings.ToUpper(f[0])] = args
			}
			return nil
		})
	})
	if err != nil && !isReply(err) {
		return err
	}
	c.caps, c.capaOK = caps, err == nil
	return nil
}

// Capa asks the server for its capabilities again.
func (c *Client) Capa(ctx context.Context) (Capabilities, error) {
	err := c.capa(ctx)
	return c.caps, err
}

// Stat returns the number of messages and their total size in octets.
func (c *Client) Stat(ctx context.Context) (count int, size int64, err error) {
	text, err := c.cmd(ctx, "STAT", "")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(text)
	if len(f) < 2 {
		return 0, 0, c.fail(fmt.Errorf("pop3: STAT: %w: %q", ErrProtocol, text))
	}
	count, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || count < 0 || size < 0 {
		return 0, 0, c.fail(fmt.Errorf("pop3: STAT: %w: %q", ErrProtocol, text))
	}
	return count, size, nil
}

// MessageInfo describes one message in the maildrop.
type MessageInfo struct {
	Num  int    // message number in this session, from 1
	Size int64  // size in octets as the server counts it (CRLF, stuffed)
	UID  string // unique id from UIDL; "" when not asked for
}

// ListOne returns the size of message num.
func (c *Client) ListOne(ctx context.Context, num int) (int64, error) {
	text, err := c.cmd(ctx, "LIST "+strconv.Itoa(num), "")
	if err != nil {
		return 0, err
	}
	n, size, err := parseListing(text)
	if err != nil || n != num {
		return 0, c.fail(fmt.Errorf("pop3: LIST %d: %w: %q", num, ErrProtocol, text))
	}
	return size, nil
}

// UIDLOne returns the unique id of message num.
func (c *Client) UIDLOne(ctx context.Context, num int) (string, error) {
	text, err := c.cmd(ctx, "UIDL "+strconv.Itoa(num), "")
	if err != nil {
		return "", err
	}
	n, uid, err := parseUIDL(text)
	if err != nil || n != num {
		return "", c.fail(fmt.Errorf("pop3: UIDL %d: %w: %q", num, ErrProtocol, text))
	}
	return uid, nil
}

// List returns every message with its size.
func (c *Client) List(ctx context.Context) ([]MessageInfo, error) {
	return c.scan(ctx, "LIST")
}

// UIDL returns every message with its unique id (Size is left zero).
func (c *Client) UIDL(ctx context.Context) ([]MessageInfo, error) {
	return c.scan(ctx, "UIDL")
}

// Listing returns every message with its unique id from UIDL alone; Size
// is -1 until AddSizes fills it. Sizes cost the server a second listing
// that an idle poll of a large mailbox does not need. A server without
// UIDL yields ErrNoUIDL (wrapping its *Error).
// expect, when known, is about how many messages the server will list:
// a listing of 100,000 is then gathered without growing its slice.
func (c *Client) Listing(ctx context.Context, expect int) ([]MessageInfo, error) {
	out, err := c.scanInto(ctx, make([]MessageInfo, 0, min(max(expect, 0), c.opts.MaxListEntries)), "UIDL")
	var pe *Error
	if errors.As(err, &pe) && pe.Command == "UIDL" {
		return nil, fmt.Errorf("%w: %w", ErrNoUIDL, err)
	}
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].UID == "" {
			return nil, c.fail(fmt.Errorf("pop3: UIDL: %w: no unique id for message %d", ErrProtocol, out[i].Num))
		}
		out[i].Size = -1
	}
	return out, nil
}

// AddSizes sets the size of every message of list (from Listing) from one
// LIST. A LIST that names a message list does not hold, names one twice
// or leaves one out is a protocol error.
func (c *Client) AddSizes(ctx context.Context, list []MessageInfo) error {
	moved := map[int]int{} // see findNum
	for i, m := range list {
		list[i].Size = -1
		if m.Num != i+1 {
			moved[m.Num] = i
		}
	}
	n := 0
	err := c.listing(ctx, []string{"LIST"}, func(_ int, line string) error {
		num, size, err := parseListing(line)
		if err != nil {
			return err
		}
		j, ok := findNum(list, moved, num)
		switch {
		case !ok:
			return fmt.Errorf("LIST names message %d that UIDL did not", num)
		case list[j].Size >= 0:
			return fmt.Errorf("message %d listed twice", num)
		}
		list[j].Size = size
		n++
		return nil
	})
	if err != nil {
		return err
	}
	if n != len(list) {
		for _, m := range list {
			if m.Size < 0 {
				return c.fail(fmt.Errorf("pop3: LIST: %w: no size for message %d", ErrProtocol, m.Num))
			}
		}
	}
	return nil
}

// Scan returns every message with its size and unique id, sending LIST
// and UIDL together when the server pipelines. A server without UIDL
// yields ErrNoUIDL (wrapping its *Error); List is the fallback.
func (c *Client) Scan(ctx context.Context) ([]MessageInfo, error) {
	out, err := c.scan(ctx, "LIST", "UIDL")
	var pe *Error
	if errors.As(err, &pe) && pe.Command == "UIDL" {
		return nil, fmt.Errorf("%w: %w", ErrNoUIDL, err)
	}
	if err != nil {
		return nil, err
	}
	for _, m := range out {
		if m.UID == "" {
			return nil, c.fail(fmt.Errorf("pop3: UIDL: %w: no unique id for message %d", ErrProtocol, m.Num))
		}
	}
	return out, nil
}

// scan merges the listings of LIST and UIDL by message number, in the
// order the first command lists them, bounded by MaxListEntries. A message
// listed twice, or named by the second listing and not the first, is a
// protocol violation.
func (c *Client) scan(ctx context.Context, cmds ...string) ([]MessageInfo, error) {
	return c.scanInto(ctx, nil, cmds...)
}

// scanInto is scan appending to out.
func (c *Client) scanInto(ctx context.Context, out []MessageInfo, cmds ...string) ([]MessageInfo, error) {
	moved := map[int]int{} // see findNum
	err := c.listing(ctx, cmds, func(i int, line string) error {
		var m MessageInfo
		var err error
		if cmds[i] == "LIST" {
			m.Num, m.Size, err = parseListing(line)
		} else {
			m.Num, m.UID, err = parseUIDL(line)
		}
		if err != nil {
			return err
		}
		j, seen := findNum(out, moved, m.Num)
		switch {
		case i == 0 && seen:
			return fmt.Errorf("message %d listed twice", m.Num)
		case i == 0 && len(out) >= c.opts.MaxListEntries:
			return fmt.Errorf("more than %d messages", c.opts.MaxListEntries)
		case i == 0:
			if m.Num != len(out)+1 {
				moved[m.Num] = len(out)
			}
			out = append(out, m)
		case !seen:
			return fmt.Errorf("%s names message %d that %s did not", cmds[i], m.Num, cmds[0])
		case out[j].UID != "":
			return fmt.Errorf("message %d listed twice", m.Num)
		default:
			out[j].UID = m.UID
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// findNum returns the index of message num in list. Servers number
// messages 1, 2, 3...: a message is found at index Num-1 without a map,
// which a listing of 100,000 would otherwise spend most of its time on.
// Only a message found elsewhere goes in moved.
func findNum(list []MessageInfo, moved map[int]int, num int) (int, bool) {
	if num >= 1 && num <= len(list) && list[num-1].Num == num {
		return num - 1, true
	}
	j, ok := moved[num]
	return j, ok
}

// listing sends the multi-line listing commands (pipelined if possible)
// and feeds each line to fn with the index of its command. The first
// -ERR is returned after every reply has been read.
func (c *Client) listing(ctx context.Context, cmds []string, fn func(i int, line string) error) error {
	var replyErr error
	err := c.pipeline(ctx, len(cmds), func(i int) (string, string) { return cmds[i], "" },
		func(i int, discard bool) error {
			if _, err := c.readReply(cmds[i]); err != nil {
				if isReply(err) {
					if replyErr == nil {
						replyErr = err
					}
					return nil
				}
				return err
			}
			return c.readLines(cmds[i], func(line string) error {
				if discard || replyErr != nil {
					return nil
				}
				if err := fn(i, line); err != nil {
					return fmt.Errorf("%w: %w", ErrProtocol, err)
				}
				return nil
			})
		})
	if err != nil {
		return err
	}
	return replyErr
}

func parseListing(s string) (num int, size int64, err error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("malformed listing %q", s)
	}
	num, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || num < 1 || size < 0 {
		return 0, 0, fmt.Errorf("malformed listing %q", s)
	}
	return num, size, nil
}

func parseUIDL(s string) (num int, uid string, err error) {
	// The usual "n uid" without splitting into a slice; anything else
	// (extra blanks, tabs) the general way.
	if n, u, ok := strings.Cut(s, " "); ok && u != "" && !strings.ContainsAny(u, " \t\r\n\v\f") && !strings.ContainsAny(n, "\t\r\n\v\f") {
		if num, err := strconv.Atoi(n); err == nil && num >= 1 {
			return num, u, nil
		}
	}
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, "", fmt.Errorf("malformed unique-id listing %q", s)
	}
	num, err = strconv.Atoi(f[0])
	if err != nil || num < 1 {
		return 0, "", fmt.Errorf("malformed unique-id listing %q", s)
	}
	return num, f[1], nil
}

// Retr streams message num into w and returns the number of bytes
// written: the message as stored, dot-stuffing removed, CRLF kept.
func (c *Client) Retr(ctx context.Context, num int, w io.Writer) (int64, error) {
	return c.retrOne(ctx, "RETR "+strconv.Itoa(num), w)
}

// Top streams the headers of message num and the first lines of its body.
func (c *Client) Top(ctx context.Context, num, lines int, w io.Writer) (int64, error) {
	return c.retrOne(ctx, "TOP "+strconv.Itoa(num)+" "+strconv.Itoa(lines), w)
}

func (c *Client) retrOne(ctx context.Context, command string, w io.Writer) (int64, error) {
	var n int64
	err := c.exchange(ctx, func() error {
		c.send(command, "")
		if err := c.flush(); err != nil {
			return err
		}
		if _, err := c.readReply(command); err != nil {
			return err
		}
		return c.readBody(command, func(body io.Reader) error {
			var err error
			n, err = io.Copy(w, body)
			return err
		})
	})
	return n, err
}

// readBody hands the body that follows a +OK to fn, then reads and drops
// whatever fn left, so the session stays in step. If the stream itself
// failed (cut, oversized, timed out) the connection is closed; if only fn
// failed, its error comes back as a *CallerError and the session is usable.
func (c *Client) readBody(command string, fn func(body io.Reader) error) error {
	body := newBodyReader(c.br, c.opts.MaxMessageSize)
	var ferr error
	if fn != nil {
		ferr = fn(body)
	}
	if body.err == nil {
		body.drain()
	}
	if body.err != nil {
		return c.fail(fmt.Errorf("pop3: %s: %w", command, body.err))
	}
	c.tracef("S: [%d octets of message body]", body.n)
	if ferr != nil {
		return &CallerError{ferr}
	}
	return nil
}

// CallerError carries an error from the caller's writer or callback. The
// protocol stream was kept in step, so the session is still usable.
type CallerError struct{ Err error }

func (e *CallerError) Error() string { return e.Err.Error() }
func (e *CallerError) Unwrap() error { return e.Err }

// Dele marks message num for deletion. Deletion takes effect only when
// Quit succeeds.
func (c *Client) Dele(ctx context.Context, num int) error {
	_, err := c.cmd(ctx, "DELE "+strconv.Itoa(num), "")
	return err
}

// Rset unmarks every message marked for deletion in this session.
func (c *Client) Rset(ctx context.Context) error {
	_, err := c.cmd(ctx, "RSET", "")
	return err
}

// Noop does nothing but keep the session alive.
func (c *Client) Noop(ctx context.Context) error {
	_, err := c.cmd(ctx, "NOOP", "")
	return err
}

// Quit ends the session. Only a nil error means the server committed the
// deletions; on any error nothing may have been deleted. The connection is
// closed either way.
func (c *Client) Quit(ctx context.Context) error {
	_, err := c.cmd(ctx, "QUIT", "")
	c.Close()
	return err
}
