#!/usr/bin/env bash
# Benchmarks the dashboard's lag: the time from a state change in the daemon to the page
# at GET / showing it, in Debian's headless Chromium driven by playwright-core
# (bench/dashboard.mjs). A MutationObserver in the page stamps each new state word on a
# service's card; the event's `time` (when the daemon's hub published it, on the same
# machine's clock) is subtracted. Another client (fetch from node) starts and stops one
# process service (python3's http.server, health checked) CYCLES times; each cycle is
# four state words (starting, running, stopping, stopped; two that come in one read show
# as the last). Prints the median and p99; the target is under 100 ms (issue 13).
#
# Builds a release build (build-release), writes the service into a temp folder, runs
# the daemon on a free loopback port; needs chromium (scripts/deps.sh's DEPS_TEST) and
# playwright-core (tests/mcp/install.sh, run here when needed).
#
# Usage: bench/dashboard.sh   (env: BENCH_CYCLES=20, BENCH_BIN=path/to/nanny to skip
#                             the build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon, its service and the
# temp folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

BENCH_NAME=dashboard
CYCLES=${BENCH_CYCLES:-20}
BUILD=build-release
SERVICE=dash-probe
TARGET_MS=100

daemon_pid=""
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        curl -sS --max-time 15 -o /dev/null -X POST \
            "http://127.0.0.1:${port:-0}/services/$SERVICE/stop" 2>/dev/null || true
    fi
    bench_stop "$daemon_pid"
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deps_install "${DEPS_BENCH[@]}" nodejs chromium
tests/mcp/install.sh >/dev/null || die "tests/mcp/install.sh could not install playwright-core"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench-dashboard.XXXXXX")
bench_build_release "$BUILD" "$TMP/build.log"

svc_port=$(bench_free_port)
mkdir -p "$TMP/services/$SERVICE" "$TMP/state"
cat >"$TMP/services/$SERVICE/service.yaml" <<EOT
name: $SERVICE
description: The dashboard benchmark's service (bench/dashboard.sh)
ports: ["$svc_port"]
command: ["python3", "-m", "http.server", "$svc_port", "--bind", "127.0.0.1"]
health: {path: /, interval: 5s, timeout: 2s}
stop_timeout: 5s
EOT

bench_serve "$TMP/services" "$TMP/state" --stop-services-on-exit

echo "$CYCLES start/stop cycles of $SERVICE, watched by the dashboard in $(chromium --version 2>/dev/null | head -n 1) ..."
timeout -k 5 600 node bench/dashboard.mjs "$DAEMON/" "$SERVICE" "$CYCLES" >"$TMP/out.json" \
    2>"$TMP/node.err" || {
    cat "$TMP/node.err" >&2
    die "bench/dashboard.mjs failed"
}
kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died"
read -r words median p99 < <(python3 -c 'import json, sys
o = json.load(open(sys.argv[1]))
print(o["words"], o["median"], o["p99"])' "$TMP/out.json")

echo
echo "Service Nanny dashboard benchmark: $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo
echo "state change (event published) -> state word shown on the page, $words words:"
echo "  median $median ms, p99 $p99 ms"
verdict=met
for v in "$median" "$p99"; do
    awk -v v="$v" -v t="$TARGET_MS" 'BEGIN { exit !(v < t) }' || verdict="NOT met"
done
echo
echo "target (median and p99 < $TARGET_MS ms): $verdict"
