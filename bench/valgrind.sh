#!/usr/bin/env bash
# A memcheck run of the daemon through full cycles of start, stop and force (the cycle of
# bench/cycle.py, as in bench/soak.sh), then a clean exit: it reports valgrind's error
# count and leak summary, and fails when memcheck saw an error or a definite or indirect
# leak.
#
# Builds a debug build without sanitizers (build-valgrind: nanny and testsvc), writes the
# three services of the soak (gpu-a, gpu-b need the GPU, cpu-c does not) in a temp folder,
# runs `valgrind --leak-check=full` on the daemon on a free loopback port, runs the cycle
# VALGRIND_CYCLES times (default 3), reads the services and one service's logs, then sends
# SIGTERM (the daemon stops its services: --stop-services-on-exit) and reads valgrind's
# summary.
#
# Usage: bench/valgrind.sh   (env: VALGRIND_CYCLES=3, BENCH_BIN=path/to/nanny to skip the
#                             build; testsvc is taken from the same folder)
# Traffic goes to 127.0.0.0/8 only; every wait is bounded; everything it started and the
# temp folder are removed on exit. Exit status 0: no error and no leak; 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

CYCLES=${VALGRIND_CYCLES:-3}
BUILD=build-valgrind
daemon_pid=""
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    bench_stop "$daemon_pid" 30 # memcheck makes the daemon's stop slow
    if [[ -n $TMP ]]; then
        for pid in $(pgrep -f -- "--write-pidfile $TMP/" || true); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BENCH_NAME=valgrind.sh

deps_install "${DEPS_BUILD[@]}" valgrind curl python3 procps
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-valgrind.XXXXXX")

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$(realpath "$BENCH_BIN")
    TESTSVC=$(dirname "$BIN")/testsvc
else
    echo "building $BUILD (debug, no sanitizers) ..."
    if ! deps_meson_setup "$BUILD" -Dbuildtype=debug >"$TMP/build.log" 2>&1 ||
        ! ninja -C "$BUILD" nanny testsvc >>"$TMP/build.log" 2>&1; then
        cat "$TMP/build.log" >&2
        die "the build failed"
    fi
    BIN=$REPO/$BUILD/nanny
    TESTSVC=$REPO/$BUILD/testsvc
fi

mkdir -p "$TMP/services" "$TMP/state"
read -r port_a port_b port_c < <("$PY" -c 'from benchlib import free_ports; free_ports(3)') ||
    die "no free ports"
service() { # NAME PORT GPU
    mkdir -p "$TMP/services/$1"
    cat >"$TMP/services/$1/service.yaml" <<EOF
name: $1
description: bench/valgrind.sh
ports: ["$2"]
driver: process
gpu_required: $3
command: ["$TESTSVC", "--port", "$2", "--write-pidfile", "$TMP/$1.pid"]
health:
  path: /health
  interval: 1s
  timeout: 5s
  start_period: 30s
stop_timeout: 5s
restart: "no"
EOF
}
service gpu-a "$port_a" true
service gpu-b "$port_b" true
service cpu-c "$port_c" false

# The daemon's own children (the services) are not traced: only the daemon is.
valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --track-origins=yes --trace-children=no \
    --log-file="$TMP/valgrind.log" \
    "$BIN" serve --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state" \
    --stop-services-on-exit </dev/null >"$TMP/daemon.log" 2>&1 &
daemon_pid=$!

port=""
for ((i = 0; i < 600; i++)); do # valgrind starts slowly: up to 60 s
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$TMP/daemon.log" |
        head -n 1)
    [[ -n $port ]] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
[[ -n $port ]] || die "the daemon did not log its port within 60 s"

echo "under memcheck: $CYCLES cycles of start, 409, force, stop ..."
for ((c = 0; c < CYCLES; c++)); do
    read -r _ ops errors < <(timeout -k 5 300 "$PY" "$REPO/bench/cycle.py" "$port" 0 2>>"$TMP/cycle.err") ||
        die "the cycle failed: $(tail -n 5 "$TMP/cycle.err")"
    ((errors == 0)) || die "the cycle had errors: $(tail -n 5 "$TMP/cycle.err")"
done
curl -fsS --max-time 30 -o /dev/null "http://127.0.0.1:$port/services" || die "GET /services failed"
curl -fsS --max-time 30 -o /dev/null "http://127.0.0.1:$port/services/gpu-a/logs?tail=20" ||
    die "GET /services/gpu-a/logs failed"

kill -TERM "$daemon_pid"
for ((i = 0; i < 600; i++)); do
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$daemon_pid" 2>/dev/null && die "the daemon did not exit within 60 s of SIGTERM"
status=0
wait "$daemon_pid" || status=$?
daemon_pid=""

echo
echo "memcheck of $BIN: $CYCLES cycles ($ops requests each), exit status $status"
grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|in use at exit" \
    "$TMP/valgrind.log" | sed 's/^==[0-9]*== */  /'
errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$TMP/valgrind.log" | tail -n 1)
if [[ $status != 0 || ${errors:-1} != 0 ]]; then
    echo "memcheck found errors or leaks:"
    sed 's/^==[0-9]*== */  /' "$TMP/valgrind.log" | grep -v "^  $" | head -n 80
    exit 1
fi
echo "no errors, no definite or indirect leaks"
