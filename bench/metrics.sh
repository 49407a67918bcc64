#!/usr/bin/env bash
# Benchmarks GET /metrics with 100 and 1,000 services (issue 13): the scrape's median and
# p99 (wrk -t1 -c1, keep-alive, one request at a time) beside nginx serving the same bytes
# from a file (the reference, run alongside); the loop time the page took in one go (its
# longest slice, from the daemon's debug log; target: under 1 ms of CPU with 1,000
# services, p99 over the pages, the maximum shown beside it); and how long GET /health waits while four clients scrape /metrics without
# pause (the loop's stall as another client sees it), beside GET /health alone.
#
# Builds a release build (build-release), generates the services in a temp folder (never
# started) and runs the daemon on a free loopback port, once per size.
#
# Usage: bench/metrics.sh   (env: BENCH_DURATION=5s, BENCH_BIN=path/to/nanny to skip the
#                           build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon, nginx and the temp
# folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BENCH_NAME=bench/metrics.sh

DURATION=${BENCH_DURATION:-5s}
BUILD=build-release
TARGET_US=1000

daemon_pid=""
NGINX_PID=""
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    bench_stop "$daemon_pid"
    bench_stop "$NGINX_PID"
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deps_install "${DEPS_BENCH[@]}"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench-metrics.XXXXXX")
bench_build_release "$BUILD" "$TMP/build.log"

rows=()
verdict=met
for n in 100 1000; do
    dir=$TMP/n$n
    bench_make_services "$dir/services" "$n" bench/metrics.sh
    mkdir -p "$dir/state"
    bench_serve "$dir/services" "$dir/state" --log-level debug
    # The reference serves the bytes of one page as a file.
    curl -fsS --max-time 10 -o "$dir/www/metrics" --create-dirs "$DAEMON/metrics" ||
        die "GET /metrics failed"
    size=$(stat -c %s "$dir/www/metrics")
    bench_nginx_serve "$dir"

    echo "$n services: wrk -t1 -c1 -d$DURATION, daemon and nginx interleaved ..."
    read -r d50 d99 _ < <(bench_wrk_one "$DAEMON/metrics")
    read -r n50 n99 _ < <(bench_wrk_one "$NGINX_URL/metrics")
    read -r _ h99 _ < <(bench_wrk_one "$DAEMON/health")
    # /health while four clients scrape without pause (their pages take turns).
    timeout -k 5 60 wrk -t1 -c4 -d"$DURATION" "$DAEMON/metrics" </dev/null >/dev/null 2>&1 &
    scraper=$!
    sleep 0.5
    read -r _ hl99 _ < <(bench_wrk_one "$DAEMON/health")
    wait "$scraper" || true
    kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died under load"
    # Each page's longest slice: wall time (a slice the kernel preempted counts whole) and
    # CPU time (what rendering cost the loop).
    pct() {
        sed -n "s/.*metrics: a page of .* slices, the longest $1.*/\\1/p" "$TMP/daemon.log" |
            sort -n | awk '{ v[NR] = $1 } END {
                printf "%d %d %d %d\n", NR, v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR] }'
    }
    read -r pages s50 s99 smax < <(pct '\([0-9]*\) us')
    read -r _ c50 c99 cmax < <(pct '[0-9]* us (\([0-9]*\) us on the CPU)')
    slices=$(sed -n 's/.*metrics: a page of .* in \([0-9]*\) slices.*/\1/p' "$TMP/daemon.log" |
        sort -n | awk '{ v[NR] = $1 } END { print v[int(NR * 0.5) + 1] }')
    rows+=("$(printf '%-6s %9s %7s %7s %7s %7s %6s %6s %6s %15s %15s %7s %7s' "$n" "$size" \
        "$d50" "$d99" "$n50" "$n99" "$(awk -v a="$d50" -v b="$n50" 'BEGIN { printf "%.1fx", a / b }')" \
        "$pages" "$slices" "$s50/$s99/$smax" "$c50/$c99/$cmax" "$h99" "$hl99")")
    if [[ $n == 1000 ]] && ! ((c99 < TARGET_US)); then verdict="NOT met"; fi
    bench_stop "$daemon_pid"
    daemon_pid=""
    bench_stop "$NGINX_PID"
    NGINX_PID=""
done

echo
echo "Service Nanny GET /metrics benchmark: $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo "times in ms except the slice (us); nginx serves the same page from a file"
echo
printf '%-6s %9s %7s %7s %7s %7s %6s %6s %6s %15s %15s %7s %7s\n' services bytes median p99 \
    nginx50 nginx99 ratio pages slices "wall_us 50/99/max" "cpu_us 50/99/max" health99 h99+scr
printf '%s\n' "${rows[@]}"
echo
echo "slices: a page's slices (median); wall_us and cpu_us: each page's longest slice in wall"
echo "and CPU time, median/p99/max over the pages; health99: GET /health p99 alone; h99+scr:"
echo "the same while four clients scrape /metrics nonstop"
echo "target (a slice of a 1,000-service page holds the loop < ${TARGET_US} us of CPU, p99): $verdict"
echo "(the maximum is the machine's: on a virtual machine the host's steal counts as the"
echo "thread's CPU time; seen here as a slice's user time with no page fault and no switch)"
