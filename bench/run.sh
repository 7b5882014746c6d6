#!/bin/sh
# pophook's end-to-end benchmark (issue #12). One command:
#
#   bench/run.sh                 the default run: 3 rounds, medians (15-25 min on 2 cores)
#   bench/run.sh -quick          a sanity pass of a few minutes (small sets, 1 round)
#   bench/run.sh -lag            also the schedule-lag run (pophook run, @every 10s, ~3 min)
#   bench/run.sh -profile DIR    also profile (pprof build): CPU and heap profiles and
#                                strace fsync counts for once to a Maildir, once to json
#                                and the large idle poll, written to DIR
#
# It starts a private Dovecot (internal/testutil/dovecottest) on 127.0.0.2,
# generates a deterministic mailbox (bench/corpus.go: CJK charsets,
# multipart/alternative, base64 attachments, 1 KiB to several MiB) and
# measures, alternating the contenders in every round:
#   maildir   pophook once to a Maildir with DELE, against mpop (the reference)
#   webhook   pophook once to a local webhook, json and raw, against two floors:
#             openssl s_client pipelining every RETR into a pipe (the reference)
#             and the same in Go (crypto/tls)
#   idle-N    an idle poll of N kept, already recorded messages, against mpop
#   accounts  1000 accounts x 2 small messages in one pophook once, against mpop -a
#             and against bare concurrent logins (TLS, AUTH, STAT, QUIT)
#   big       peak RSS of one 25 MiB message to a Maildir and to json
# Every run is checked, and the benchmark fails rather than time a failure:
# the Maildir holds every message and the server none (or all, where kept);
# the receiver got one request per message and at least the mailbox's
# bytes; the floors saw every answer +OK and every message whole; the idle
# polls delivered nothing; every bare login's STAT counted its messages.
#
# It prints a table of median wall time, ratio to the reference, messages/s,
# MB/s, CPU (the contender's and Dovecot's) and peak RSS (GNU time), then the
# issue-#12 targets. Numbers are only comparable within one run.
#
# Needs: Go, dovecot-core dovecot-pop3d, mpop, time (GNU), openssl; strace for
# -profile. Run as root (as CI does) or as a user Dovecot can run as.
#
# Environment (defaults in brackets): PHBENCH_MESSAGES [2000], PHBENCH_MB [160],
# PHBENCH_ROUNDS [3], PHBENCH_SEED [20260101], PHBENCH_IDLE_SMALL [2000],
# PHBENCH_IDLE_BIG [100000], PHBENCH_ACCOUNTS [1000], PHBENCH_BIG_MIB [25],
# PHBENCH_LAG [0; -lag sets 20], PHBENCH_ONLY [all: maildir,webhook,idle,
# accounts,big], POPHOOK_CONCURRENCY [4]. PHBENCH_KEEP=1 keeps the work dir.
set -eu

usage() {
	sed -n '2,/^set -eu/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -eu/d'
}

quick=0 profile= lag=
while [ $# -gt 0 ]; do
	case $1 in
	-quick | --quick) quick=1 ;;
	-lag | --lag) lag=${PHBENCH_LAG:-20} ;;
	-profile | --profile)
		[ $# -ge 2 ] || { echo "run.sh: -profile needs a directory" >&2; exit 2; }
		profile=$2
		shift
		;;
	-rounds | --rounds)
		[ $# -ge 2 ] || { echo "run.sh: -rounds needs a number" >&2; exit 2; }
		PHBENCH_ROUNDS=$2
		export PHBENCH_ROUNDS
		shift
		;;
	-only | --only)
		[ $# -ge 2 ] || { echo "run.sh: -only needs a list" >&2; exit 2; }
		PHBENCH_ONLY=$2
		export PHBENCH_ONLY
		shift
		;;
	-h | -help | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument $1 (see $0 -h)" >&2; exit 2 ;;
	esac
	shift
done

cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$quick" = 1 ]; then
	: "${PHBENCH_MESSAGES:=300}" "${PHBENCH_MB:=20}" "${PHBENCH_ROUNDS:=1}"
	: "${PHBENCH_IDLE_SMALL:=300}" "${PHBENCH_IDLE_BIG:=20000}" "${PHBENCH_ACCOUNTS:=200}"
	[ -z "$lag" ] || lag=${PHBENCH_LAG:-5}
fi
PHBENCH_LAG=${lag:-0}
export PHBENCH_MESSAGES PHBENCH_MB PHBENCH_ROUNDS PHBENCH_IDLE_SMALL PHBENCH_IDLE_BIG PHBENCH_ACCOUNTS PHBENCH_LAG

for tool in /usr/bin/time /usr/bin/mpop openssl go; do
	command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: $tool is missing (apt-get install time mpop openssl; Go 1.26)" >&2; exit 2; }
done
if [ -n "$profile" ] && ! command -v strace >/dev/null 2>&1; then
	echo "run.sh: -profile counts fsyncs with strace: apt-get install strace (continuing without)" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pophook-bench.XXXXXX")
if [ "${PHBENCH_KEEP:-0}" != 1 ]; then
	trap 'rm -rf "$work"' EXIT
	trap 'exit 130' INT TERM
fi

# Other work may leave the tree briefly unbuildable: try a few times.
build() {
	tries=0
	until "$@"; do
		tries=$((tries + 1))
		[ $tries -lt 5 ] || { echo "run.sh: build failed $tries times" >&2; exit 1; }
		echo "run.sh: build failed; retrying in 60s" >&2
		sleep 60
	done
}
tags=
if [ -n "$profile" ]; then
	tags="-tags pprof"
	mkdir -p "$profile"
	profile=$(cd "$profile" && pwd)
fi
# shellcheck disable=SC2086 # $tags is one optional word pair
build env CGO_ENABLED=0 go build $tags -o "$work/pophook" ./cmd/pophook
build go test -c -o "$work/bench.test" ./bench

report=${profile:-$work}/report.txt
if tree=$(git rev-parse --short=12 HEAD 2>/dev/null); then
	PHBENCH_TREE="$tree plus $(git status --porcelain -- . ':!bench' 2>/dev/null | wc -l) changed file(s) outside bench/"
	export PHBENCH_TREE
fi
echo "run.sh: pophook $("$work/pophook" version 2>/dev/null | head -n1); work dir $work; $(uptime)" >&2
cd "$work"
PHBENCH_BIN=$work/pophook PHBENCH_OUT=$report PHBENCH_PROFILE_DIR=$profile \
	"$work/bench.test" -test.run '^TestBench$' -test.v -test.timeout 0 -test.count 1
cd "$root"
echo "run.sh: done; $(uptime)" >&2
if [ -n "$profile" ]; then
	echo "run.sh: report and profiles in $profile" >&2
fi
