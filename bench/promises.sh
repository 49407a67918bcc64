#!/usr/bin/env bash
# The four promises a red-team run broke (issue 9), tried many times over: each round
# runs the fault tests of one promise against the real daemon, and the script reports,
# per promise, the tests run and how many lost something (a failed test is one where the
# promise did not hold: a stalled loop, a second copy or a forgotten service, two GPU
# holders, a process left after stop).
#
#   loop      no request can stall the loop: long chunk-size lines while health probes,
#             SIGTERM and other clients must go on (test_http_faults.py)
#   restart   a restart loses nothing: kill -9 at every crash point of start, stop,
#             force and restart, right after a start's answer, during a stop, a corrupt
#             or unwritable state file (test_crash_points.py, test_state_faults.py)
#   gpu       never two GPU holders against manifest edits (test_manifest_edits.py)
#   stop      stop leaves nothing: setsid and setpgid escapers, kill -9 with a lost
#             state file, in cgroup and fallback mode (test_cgroups.py)
#
# Usage: bench/promises.sh [ROUNDS] [PROMISE...]   (default 20 rounds, all four)
# Needs a build with crash points: build/ configured with -Dcrash_points=true (as
# ./test.sh configures it); BENCH_BUILD=dir picks another. Exit status 1 when a test
# failed in any round.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

ROUNDS=${1:-20}
shift || true
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/promises.sh [ROUNDS] [loop|restart|gpu|stop...]" >&2
    exit 2
fi
PROMISES=("$@")
if ((${#PROMISES[@]} == 0)); then
    PROMISES=(loop restart gpu stop)
fi
BUILD=${BENCH_BUILD:-build}
if [[ ! -x $BUILD/nanny ]]; then
    echo "no $BUILD/nanny: build first (./test.sh, or meson setup $BUILD" \
        "-Dcrash_points=true && ninja -C $BUILD)" >&2
    exit 2
fi

# The tests of one promise, as pytest arguments.
tests_of() {
    case $1 in
    loop) echo "tests/integration/test_http_faults.py -k chunk" ;;
    restart) echo "tests/integration/test_crash_points.py tests/integration/test_state_faults.py" ;;
    gpu) echo "tests/integration/test_manifest_edits.py" ;;
    stop) echo "tests/integration/test_cgroups.py -k stop_ends_what_left or kill9" ;;
    *)
        echo "unknown promise '$1' (loop, restart, gpu, stop)" >&2
        return 1
        ;;
    esac
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-promises.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PYTEST=(pytest-3)
command -v pytest-3 >/dev/null 2>&1 || PYTEST=(python3 -m pytest)

status=0
printf '%-8s %7s %7s %7s\n' promise rounds tests lost
for promise in "${PROMISES[@]}"; do
    spec=$(tests_of "$promise")
    read -r -a files <<<"${spec%% -k *}"
    filter=()
    if [[ $spec == *" -k "* ]]; then
        filter=(-k "${spec#* -k }")
    fi
    tests=0 lost=0
    for ((round = 1; round <= ROUNDS; round++)); do
        xml=$TMP/$promise-$round.xml
        timeout 900 env NANNY_BIN="$REPO/$BUILD/nanny" NANNY_BUILD_DIR="$REPO/$BUILD" \
            "${PYTEST[@]}" -q -p no:cacheprovider --junitxml="$xml" "${files[@]}" \
            "${filter[@]}" >"$TMP/$promise-$round.log" 2>&1 </dev/null || true
        if [[ ! -s $xml ]]; then
            echo "$promise round $round: pytest wrote no result:" >&2
            tail -20 "$TMP/$promise-$round.log" >&2
            status=1
            continue
        fi
        read -r t f e < <(python3 -c '
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
print(s.get("tests"), s.get("failures"), s.get("errors"))' "$xml")
        tests=$((tests + t))
        if ((f + e > 0)); then
            lost=$((lost + f + e))
            status=1
            echo "$promise round $round: $((f + e)) of $t failed:" >&2
            grep -E '^(FAILED|ERROR)' "$TMP/$promise-$round.log" >&2 || true
        fi
    done
    printf '%-8s %7d %7d %7d\n' "$promise" "$ROUNDS" "$tests" "$lost"
done
exit $status
