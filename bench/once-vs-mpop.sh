#!/bin/sh
# Compare "pophook once" with mpop on the same Dovecot mailbox: wall time
# and peak RSS, N messages (default 2000, ~200 MB) over TLS with delete.
# Needs dovecot-core, dovecot-pop3d and mpop. Set PHTEST_BENCH_MESSAGES to
# change N. Extra arguments go to "go test" (e.g. -count 3).
set -eu
cd "$(dirname "$0")/.."
exec go test ./cmd/pophook/ -run '^$' -bench '^BenchmarkOnceVsMpop$' -benchtime=1x -timeout 30m "$@"
