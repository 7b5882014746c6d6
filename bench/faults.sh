#!/bin/sh
# Regenerates the table in docs/faults.md (issue #13) from one run of the
# fault tests: each test checks its invariants (nothing lost, nothing
# deleted before every sink had it, repeats only for what was in flight)
# and then logs one FAULTROW line per fault (internal/testutil/faultrow).
#
#   bench/faults.sh            the long run (about 20 minutes on 2 cores)
#   bench/faults.sh -quick     the rounds CI runs (a few minutes), to check the plumbing
#
# The long run gives the random-fault tests (SIGKILL at random moments,
# random network faults) LONG rounds each [300] and every other fault test
# ROUNDS rounds [5] (PHTEST_FAULT_ROUNDS for each group).
#
# Needs what CI installs (.ci/run): Dovecot, Postfix, popa3d. Run as root,
# as CI does, for the full-filesystem rows (they mount a small tmpfs).
# Writes docs/faults.md only when every test passed; the test logs are kept
# in faults-*.log.
set -eu
cd "$(dirname "$0")/.."
rm -f faults-*.log

long='^(TestNetFaultRandom|TestProcessFaultSIGKILLPhases)$'
rest='^(TestNetFault|TestSinkFault|TestProcessFault|TestAuthFault|TestSecurity|TestHostile|TestClock)'
quick=false
if [ "${1:-}" = -quick ]; then
	quick=true
	rounds="the rounds CI runs"
else
	LONG=${LONG:-300} ROUNDS=${ROUNDS:-5}
	rounds="$LONG rounds for the random SIGKILL and network faults, $ROUNDS for the others"
fi

# group NAME ROUNDS RUN [SKIP]: run the fault tests matching RUN (and not
# SKIP) with PHTEST_FAULT_ROUNDS=ROUNDS ("" for CI's), log in faults-NAME.log.
group() {
	status=0
	if [ -n "$2" ]; then
		PHTEST_FAULT_ROUNDS=$2 go test -count=1 -v -timeout 3h -run "$3" ${4:+-skip "$4"} ./cmd/pophook/ ./worker/ >"faults-$1.log" 2>&1 || status=$?
	else
		env -u PHTEST_FAULT_ROUNDS go test -count=1 -v -timeout 3h -run "$3" ${4:+-skip "$4"} ./cmd/pophook/ ./worker/ >"faults-$1.log" 2>&1 || status=$?
	fi
	if [ "$status" -ne 0 ]; then
		echo "faults.sh: the fault tests failed (exit $status); see faults-$1.log" >&2
		grep -- '--- FAIL' "faults-$1.log" >&2 || true
		exit 1
	fi
}
if $quick; then
	group all "" "$rest"
else
	group long "$LONG" "$long"
	group rest "$ROUNDS" "$rest" "$long"
fi

table=$(cat faults-*.log | go run ./internal/testutil/faultrow/faulttable)
{
	sed -n '1,/^<!-- faults:table begin -->$/p' docs/faults.md
	echo
	echo "Run of $(date -u +%Y-%m-%d): $rounds; $(go version | cut -d' ' -f3), $(nproc) cores, \`bench/faults.sh\`."
	echo
	echo "$table"
	echo
	sed -n '/^<!-- faults:table end -->$/,$p' docs/faults.md
} >docs/faults.md.new
mv docs/faults.md.new docs/faults.md
echo "docs/faults.md updated ($(echo "$table" | grep -c '^| [a-z]') rows)"
