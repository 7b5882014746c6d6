#!/bin/sh
# Regenerates the table in docs/faults.md (issue #13) from one run of the
# fault tests: each test checks its invariants (nothing lost, nothing
# deleted before every sink had it, repeats only for what was in flight)
# and then logs one FAULTROW line per fault (internal/testutil/faultrow).
#
#   bench/faults.sh            the long run: PHTEST_FAULT_ROUNDS=300 (about an hour on 2 cores)
#   bench/faults.sh -quick     the rounds CI runs (a few minutes), to check the plumbing
#
# Needs what CI installs (.ci/run): Dovecot, Postfix, popa3d. Run as root,
# as CI does, for the full-filesystem rows (they mount a small tmpfs).
# Writes docs/faults.md only when every test passed; the test log is kept
# in faults.log.
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" = -quick ]; then
	unset PHTEST_FAULT_ROUNDS
	rounds="CI's"
else
	export PHTEST_FAULT_ROUNDS="${PHTEST_FAULT_ROUNDS:-300}"
	rounds=$PHTEST_FAULT_ROUNDS
fi

tests='^(TestNetFault|TestSinkFault|TestProcessFault|TestAuthFault|TestSecurity|TestHostile|TestClock)'
status=0
go test -count=1 -v -timeout 3h -run "$tests" ./cmd/pophook/ ./worker/ >faults.log 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
	echo "faults.sh: the fault tests failed (exit $status); see faults.log" >&2
	grep -- '--- FAIL' faults.log >&2 || true
	exit 1
fi

table=$(go run ./internal/testutil/faultrow/faulttable <faults.log)
{
	sed -n '1,/^<!-- faults:table begin -->$/p' docs/faults.md
	echo
	echo "Run of $(date -u +%Y-%m-%d), $rounds rounds (PHTEST_FAULT_ROUNDS), $(go version | cut -d' ' -f3), $(nproc) cores:"
	echo
	echo "$table"
	echo
	sed -n '/^<!-- faults:table end -->$/,$p' docs/faults.md
} >docs/faults.md.new
mv docs/faults.md.new docs/faults.md
echo "docs/faults.md updated ($(echo "$table" | grep -c '^| [a-z]') rows)"
