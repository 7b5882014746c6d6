package pop3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// probeGrace is how long, beyond four round trips, the pipelining probe
// waits for its second reply before it concludes the server dropped it.
var probeGrace = 2 * time.Second

// pipeline sends n commands with up to the pipelining window in flight and
// calls read(i, discard) to consume the reply to command i, in order. When
// read returns an error and the connection is still usable, no further
// command is sent, the replies already under way are read with discard set,
// and that first error is returned. Without pipelining the window is one:
// the same code runs lock-step.
func (c *Client) pipeline(ctx context.Context, n int, cmd func(i int) (command, redacted string), read func(i int, discard bool) error) error {
	return c.exchange(ctx, func() error {
		window, err := c.window()
		if err != nil {
			return err
		}
		sent := 0
		var stop error
		for i := 0; i < n; i++ {
			if stop == nil {
				for ; sent < n && sent < i+window; sent++ {
					c.send(cmd(sent))
				}
				if err := c.flush(); err != nil {
					return err
				}
			}
			if i >= sent {
				break
			}
			if err := read(i, stop != nil); err != nil {
				if c.err != nil {
					return err
				}
				if stop == nil {
					stop = err
				}
			}
		}
		return stop
	})
}

// window decides, once per session, whether commands may be pipelined.
// PIPELINING is only believed after a probe: two NOOPs in one write must
// both be answered. A server that answers the second with -ERR is used
// lock-step; one that never answers it has dropped it, and since a late
// reply would be taken for the answer to a later command, the connection
// is closed with ErrPipeliningBroken.
func (c *Client) window() (int, error) {
	switch {
	case c.opts.DisablePipelining || c.pipelining < 0 || !c.authed || !c.caps.Has("PIPELINING"):
		return 1, nil
	case c.pipelining > 0:
		return c.opts.PipelineWindow, nil
	}
	start := time.Now()
	c.send("NOOP", "")
	c.send("NOOP", "")
	if err := c.flush(); err != nil {
		return 0, err
	}
	_, err1 := c.readReply("NOOP")
	if err1 != nil && !isReply(err1) {
		return 0, err1
	}
	wait := probeGrace + 4*time.Since(start)
	c.probeDeadline = time.Now().Add(wait)
	_, err2 := c.readReply("NOOP")
	c.probeDeadline = time.Time{}
	var ne net.Error
	if errors.As(err2, &ne) && ne.Timeout() && (c.deadline.IsZero() || time.Now().Before(c.deadline)) {
		c.err = fmt.Errorf("%w (no reply to the second of two pipelined NOOPs within %s)", ErrPipeliningBroken, wait.Round(time.Millisecond))
		return 0, c.err
	}
	if err2 != nil && !isReply(err2) {
		return 0, err2
	}
	if err1 != nil || err2 != nil {
		c.pipelining = -1
		c.tracef("-- PIPELINING advertised but refused; lock-step")
		return 1, nil
	}
	c.pipelining = 1
	return c.opts.PipelineWindow, nil
}

// Pipelined reports whether this session sends commands pipelined (after
// the first batch operation has probed the server).
func (c *Client) Pipelined() bool { return c.pipelining > 0 }

// Window is how many commands a batch operation has in flight at most:
// the pipelining window, or 1 lock-step.
func (c *Client) Window() int {
	if c.pipelining > 0 {
		return c.opts.PipelineWindow
	}
	return 1
}

// RetrEach fetches the messages in order, pipelined when the server allows,
// and calls fn once for each: with a reader of its body, or with the
// server's -ERR for that message (body nil). The body is valid only during
// the call; what fn leaves unread is read and dropped.
//
// When fn returns an error, RetrEach sends no further RETR, reads the
// replies already under way, and returns that error as a *CallerError: the
// session stays usable. When the connection fails or a body exceeds
// MaxMessageSize, the connection is closed and that error returned.
func (c *Client) RetrEach(ctx context.Context, nums []int, fn func(num int, body io.Reader, err error) error) error {
	command := func(i int) string { return "RETR " + strconv.Itoa(nums[i]) }
	return c.pipeline(ctx, len(nums),
		func(i int) (string, string) { return command(i), "" },
		func(i int, discard bool) error {
			if _, err := c.readReply(command(i)); err != nil {
				if !isReply(err) || discard {
					return err
				}
				if ferr := fn(nums[i], nil, err); ferr != nil {
					return &CallerError{ferr}
				}
				return nil
			}
			if discard {
				return c.readBody(command(i), nil)
			}
			return c.readBody(command(i), func(body io.Reader) error { return fn(nums[i], body, nil) })
		})
}

// DeleMany marks the messages for deletion, pipelined when the server
// allows. errs[i] holds the server's -ERR for nums[i], if any; err is a
// failure of the session. Deletion takes effect only when Quit succeeds.
func (c *Client) DeleMany(ctx context.Context, nums []int) (errs []error, err error) {
	errs = make([]error, len(nums))
	err = c.pipeline(ctx, len(nums),
		func(i int) (string, string) { return "DELE " + strconv.Itoa(nums[i]), "" },
		func(i int, _ bool) error {
			_, err := c.readReply("DELE " + strconv.Itoa(nums[i]))
			if isReply(err) {
				errs[i] = err
				return nil
			}
			return err
		})
	return errs, err
}
