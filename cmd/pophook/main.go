// Command pophook fetches mail from POP3 mailboxes and forwards every
// message once, never losing one, to webhooks and Maildirs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// beforeExit runs before main exits; the pprof build (pprof.go) writes
// its profiles there, since os.Exit runs no deferred calls.
var beforeExit = func() {}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		// The first signal asks for a graceful stop: nothing new starts,
		// the message in hand is finished, QUIT without DELE for anything
		// not delivered. A second one does not wait.
		cancel()
		<-signals
		fmt.Fprintln(os.Stderr, "pophook: second signal, exiting now")
		beforeExit()
		os.Exit(130)
	}()
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	code := exitCode(err)
	beforeExit()
	os.Exit(code)
}

// exitError carries an exit status; its message has already been printed
// when quiet is set.
type exitError struct {
	code  int
	err   error
	quiet bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.quiet {
			fmt.Fprintln(os.Stderr, "pophook:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "pophook:", err)
	return 1
}
