#!/usr/bin/env bash
# Benchmarks what issue 11 asks of the live surfaces (bench/events.py says how each is
# measured): a state change's event at a GET /events client (target: median < 5 ms), a
# service's line printed by `nanny logs -f` (median < 50 ms), GET /services/NAME/status's
# p99 with 1,000 /events clients (< 2 ms), and the daemon's memory per client. Each figure
# is printed beside its reference run (the request's own answer, `tail -F` of the same
# file, wrk with no client).
#
# Builds a release build (build-release), writes two process services in a temp folder
# (`ev`: sleep, its pid in a file, no health check; `follow`: cat of a FIFO) and runs the daemon on a free
# loopback port with --stop-services-on-exit and room for the clients on one address.
#
# Usage: bench/events.sh   (env: BENCH_EVENT_RUNS=40 BENCH_CLIENTS=1000
#                          BENCH_WRK_SECONDS=8 BENCH_ONLY="event follow clients",
#                          BENCH_BIN=path/to/nanny to skip the build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon (which stops its
# services) and the temp folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BENCH_NAME=events

daemon_pid=""
TMP=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        for _ in $(seq 150); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    [[ -n $TMP ]] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deps_install "${DEPS_BENCH[@]}"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-events.XXXXXX")
bench_build_release build-release "$TMP/build.log"

mkdir -p "$TMP/services/ev" "$TMP/services/follow" "$TMP/state"
mkfifo "$TMP/fifo"
cat >"$TMP/services/ev/service.yaml" <<EOT
name: ev
command: ["sh", "-c", "echo \$\$ > $TMP/ev.pid; exec sleep 1000"]
health: false
EOT
cat >"$TMP/services/follow/service.yaml" <<EOT
name: follow
command: ["cat", "$TMP/fifo"]
health: false
EOT

"$BIN" serve --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state" \
    --stop-services-on-exit --max-connections-per-client 2000 \
    >"$TMP/daemon.log" 2>&1 &
daemon_pid=$!
port=$(bench_daemon_port "$TMP/daemon.log" "$daemon_pid")
[[ -n $port ]] || die "the daemon did not start"
bench_wait_health "http://127.0.0.1:$port" "$daemon_pid" || die "the daemon never answered"

echo "nanny ${BUILD:-build-release} on 127.0.0.1:$port, $(nproc) cores"
"$PY" "$REPO/bench/events.py" "$port" "$daemon_pid" "$BIN" "$TMP/fifo" \
    "$TMP/state/logs/follow.log" "$TMP/ev.pid"
