#!/usr/bin/env bash
# Benchmarks an MCP tool call's round trip: tools/call service_status over HTTP with
# keep-alive, one connection, one request at a time (what an agent does), against the
# same status read through the REST API (GET /services/NAME/status) on the same daemon
# and connection settings, interleaved in the same run. Prints the median and p99 of
# each and their ratio; the target is a median and p99 under 1 ms (issue 12).
#
# Builds a release build (build-release), generates 100 services in a temp folder (never
# started), runs the daemon on a free loopback port, opens an MCP session (initialize),
# then runs wrk -t1 -c1 --latency with a Lua script that posts the tools/call. Also
# times the stateless 2026-07-28 form of the same call (no session; _meta and headers).
#
# Usage: bench/mcp.sh   (env: BENCH_DURATION=10s, BENCH_BIN=path/to/nanny to skip the
#                       build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon and the temp folder
# are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

SERVICES=100
PROBE=svc-042
DURATION=${BENCH_DURATION:-10s}
BUILD=build-release
TARGET_MS=1

daemon_pid=""
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    bench_stop "$daemon_pid"
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deps_install "${DEPS_BENCH[@]}"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench-mcp.XXXXXX")
bench_build_release "$BUILD" "$TMP/build.log"
bench_make_services "$TMP/services" "$SERVICES" bench/mcp.sh
mkdir -p "$TMP/state"

bench_serve "$TMP/services" "$TMP/state"

# An MCP session, as an agent's client opens it.
session=$(curl -sS --max-time 5 -D - -o "$TMP/init.json" "$DAEMON/mcp" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' |
    tr -d '\r' | awk -F': ' 'tolower($1) == "mcp-session-id" { print $2 }')
[[ -n $session ]] || die "initialize gave no Mcp-Session-Id: $(head -c 300 "$TMP/init.json")"

call='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"service_status","arguments":{"name":"'$PROBE'"}}}'
meta='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
stateless='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"service_status","arguments":{"name":"'$PROBE'"},'$meta'}}'

# A wrk script posting body with the extra headers (name=value pairs).
lua() {
    local file=$1 body=$2
    shift 2
    {
        echo 'wrk.method = "POST"'
        printf 'wrk.body = %s\n' "$("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$body")"
        echo 'wrk.headers["Content-Type"] = "application/json"'
        echo 'wrk.headers["Accept"] = "application/json, text/event-stream"'
        local h
        for h in "$@"; do
            printf 'wrk.headers["%s"] = "%s"\n' "${h%%=*}" "${h#*=}"
        done
    } >"$file"
}
lua "$TMP/session.lua" "$call" "Mcp-Session-Id=$session" "MCP-Protocol-Version=2025-11-25"
lua "$TMP/stateless.lua" "$stateless" "MCP-Protocol-Version=2026-07-28" \
    "Mcp-Method=tools/call" "Mcp-Name=service_status"

# Each body answers what it should before it is timed.
check() {
    local script=$1 out
    out=$(curl -sS --max-time 5 "$DAEMON/mcp" -H 'Content-Type: application/json' "${@:2}")
    grep -q '"structuredContent"' <<<"$out" || die "$script: the call failed: ${out:0:300}"
}
check session -H "Mcp-Session-Id: $session" -H 'MCP-Protocol-Version: 2025-11-25' -d "$call"
check stateless -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' \
    -H 'Mcp-Name: service_status' -d "$stateless"

echo "wrk -t1 -c1 -d$DURATION --latency (one request at a time, keep-alive), interleaved ..."
read -r rest_p50 rest_p99 rest_rps < <(bench_wrk_one "$DAEMON/services/$PROBE/status")
read -r mcp_p50 mcp_p99 mcp_rps < <(bench_wrk_one -s "$TMP/session.lua" "$DAEMON/mcp")
read -r sl_p50 sl_p99 sl_rps < <(bench_wrk_one -s "$TMP/stateless.lua" "$DAEMON/mcp")
kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died under load"

echo
echo "Service Nanny MCP benchmark: $SERVICES services, $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo
printf '%-48s %10s %10s %10s %9s\n' "request" "median" "p99" "req/s" "p99 ratio"
row() {
    printf '%-48s %7s ms %7s ms %10s %8sx\n' "$1" "$2" "$3" "$4" \
        "$(awk -v a="$3" -v b="$rest_p99" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
}
row "GET /services/$PROBE/status (reference)" "$rest_p50" "$rest_p99" "$rest_rps"
row "MCP tools/call service_status (session)" "$mcp_p50" "$mcp_p99" "$mcp_rps"
row "MCP tools/call service_status (2026-07-28)" "$sl_p50" "$sl_p99" "$sl_rps"
verdict=met
for v in "$mcp_p50" "$mcp_p99" "$sl_p50" "$sl_p99"; do
    awk -v v="$v" -v t="$TARGET_MS" 'BEGIN { exit !(v < t) }' || verdict="NOT met"
done
echo
echo "target (tools/call service_status: median and p99 < ${TARGET_MS} ms): $verdict"
