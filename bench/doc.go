// Package bench holds pophook's end-to-end benchmark (issue #12): a
// generated mailbox served by a private Dovecot, and pophook measured
// against mpop, against raw TLS floors and against itself, alternating
// the contenders in every round and reporting medians and ratios.
//
// Run it with bench/run.sh (bench/run.sh -h lists the flags); the latest
// results are in bench/RESULTS.md. The harness is TestBench in
// bench_test.go; it skips unless PHBENCH_BIN names a pophook binary, so
// "go test ./..." only runs the quick checks: the message generator
// (TestCorpus) and the floors' POP3 session checker (TestPopCheck).
package bench
