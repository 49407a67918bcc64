#!/usr/bin/env bash
# Benchmarks the daemon's read API against nginx serving the same bytes.
#
# Builds a release build (build-release), generates 100 services in a temp
# folder (never started), runs the daemon on a free loopback port, saves the
# exact bodies of GET /services and GET /services/svc-042/status, serves those
# two files from nginx (one worker, the daemon is one thread) on another free
# loopback port, then runs wrk against both servers for both endpoints,
# interleaved in the same run, and prints req/s, p99 and the ratio. It also
# prints the daemon's VmRSS idle and after the load. See bench/README.md.
#
# Usage: bench/api.sh   (env: BENCH_DURATION=10s BENCH_CONNECTIONS=32, and
#                       BENCH_BIN=path/to/nanny to skip the build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon, nginx and
# the temp folder are removed on exit.
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
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=1
BUILD=build-release

# Targets (bench/README.md).
TARGET_RATIO=0.90
TARGET_P99_MS=2
TARGET_RSS_KB=$((8 * 1024))

daemon_pid=""
nginx_pid=""
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    bench_stop "$nginx_pid"
    bench_stop "$daemon_pid"
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages and build ------------------------------------------------------
deps_install "${DEPS_BENCH[@]}"
bench_find_nginx
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench.XXXXXX")
# nginx's worker runs as an unprivileged user: let it reach the files.
chmod 755 "$TMP"

bench_build_release "$BUILD" "$TMP/build.log"

# --- 100 services --------------------------------------------------------------
mkdir -p "$TMP/services" "$TMP/state" "$TMP/www" "$TMP/nginx"
bench_make_services "$TMP/services" "$SERVICES" bench/api.sh

# --- the daemon ----------------------------------------------------------------
"$BIN" serve --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state" \
    </dev/null >"$TMP/daemon.log" 2>&1 &
daemon_pid=$!

port=$(bench_daemon_port "$TMP/daemon.log" "$daemon_pid")
if [[ -z $port ]]; then
    cat "$TMP/daemon.log" >&2
    die "the daemon did not log 'listening on http://127.0.0.1:PORT' within 10 s"
fi
DAEMON=http://127.0.0.1:$port

bench_wait_health "$DAEMON" "$daemon_pid" ||
    die "GET $DAEMON/health does not answer 2xx within 10 s"

# Save the exact bodies nginx will serve.
fetch() {
    local url=$1 file=$2 code
    code=$(curl -sS --max-time 5 -o "$file" -w '%{http_code}' "$url") ||
        die "GET $url failed"
    [[ $code == 200 ]] || die "GET $url answered $code: $(head -c 300 "$file")"
}
fetch "$DAEMON/services" "$TMP/www/services.json"
fetch "$DAEMON/services/$PROBE/status" "$TMP/www/status.json"
chmod 755 "$TMP/www"
chmod 644 "$TMP/www/services.json" "$TMP/www/status.json"

read -r found errors < <("$PY" - "$TMP/www/services.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(len(doc.get("services", [])), len(doc.get("errors", [])))
PY
) || die "GET /services did not answer JSON"
if ((found != SERVICES || errors != 0)); then
    echo "warning: the daemon lists $found services and $errors errors (expected $SERVICES, 0)" >&2
fi

rss_kb() {
    awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"
}
sleep 1
rss_idle=$(rss_kb "$daemon_pid" VmRSS)

# --- nginx: one worker, the same bytes ---------------------------------------
nginx_port=$(bench_free_port)
NGINX_URL=http://127.0.0.1:$nginx_port
# The same bytes as files; the daemon (libmicrohttpd) keeps a connection open for any
# number of requests, and so does nginx here (bench_nginx_conf).
bench_nginx_conf "$TMP/nginx" "$nginx_port" "        default_type application/json;
        location = /services { alias $TMP/www/services.json; }
        location = /services/$PROBE/status { alias $TMP/www/status.json; }
        location / { return 404; }"
"$NGINX" -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    </dev/null >"$TMP/nginx/stdout.log" 2>&1 &
nginx_pid=$!
for ((i = 0; i < 50; i++)); do
    curl -fsS --max-time 1 -o /dev/null "$NGINX_URL/services" 2>/dev/null && break
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
done
curl -fsS --max-time 2 -o "$TMP/nginx-check.json" "$NGINX_URL/services" || {
    cat "$TMP/nginx/error.log" "$TMP/nginx/stdout.log" >&2 2>/dev/null || true
    die "nginx did not start on $NGINX_URL"
}
cmp -s "$TMP/nginx-check.json" "$TMP/www/services.json" || die "nginx serves other bytes"

# --- load ------------------------------------------------------------------------

endpoints=(/services "/services/$PROBE/status")
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, daemon and nginx interleaved ..."
declare -A rps p99
for ep in "${endpoints[@]}"; do
    for target in daemon nginx; do
        base=$DAEMON
        [[ $target == nginx ]] && base=$NGINX_URL
        result=$(bench_wrk 60 "$base$ep" "$TMP/wrk.out")
        read -r "rps[$target$ep]" "p99[$target$ep]" <<<"$result"
        kill -0 "$daemon_pid" 2>/dev/null || {
            cat "$TMP/daemon.log" >&2
            die "the daemon died under load"
        }
    done
done
rss_after=$(rss_kb "$daemon_pid" VmRSS)
hwm_after=$(rss_kb "$daemon_pid" VmHWM)

# --- report ----------------------------------------------------------------------
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f MiB", kb / 1024 }'; }
bytes() { wc -c <"$1" | tr -d ' '; }

echo
echo "Service Nanny API benchmark: $SERVICES services, $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo "nginx:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, same bytes" \
    "(/services $(bytes "$TMP/www/services.json") B, status $(bytes "$TMP/www/status.json") B)"
echo
printf '%-28s %14s %11s %14s %11s %8s\n' endpoint "daemon req/s" "daemon p99" \
    "nginx req/s" "nginx p99" ratio
verdict=met
for ep in "${endpoints[@]}"; do
    ratio=$(awk -v d="${rps[daemon$ep]}" -v n="${rps[nginx$ep]}" \
        'BEGIN { printf "%.2f", (n > 0 ? d / n : 0) }')
    printf '%-28s %14s %9s ms %14s %9s ms %7sx\n' "GET $ep" "${rps[daemon$ep]}" \
        "${p99[daemon$ep]}" "${rps[nginx$ep]}" "${p99[nginx$ep]}" "$ratio"
    if ! awk -v r="$ratio" -v t="$TARGET_RATIO" -v p="${p99[daemon$ep]}" \
        -v tp="$TARGET_P99_MS" 'BEGIN { exit !(r >= t && p < tp) }'; then
        verdict="NOT met"
    fi
done
echo
echo "daemon VmRSS idle with $SERVICES services: $rss_idle kB ($(mib "$rss_idle"))"
echo "daemon VmRSS after the wrk runs:         $rss_after kB ($(mib "$rss_after")), peak VmHWM $hwm_after kB ($(mib "$hwm_after"))"
if ((rss_idle >= TARGET_RSS_KB || rss_after >= TARGET_RSS_KB)); then
    verdict="NOT met"
fi
echo
echo "targets (>= ${TARGET_RATIO}x nginx req/s, p99 < ${TARGET_P99_MS} ms, VmRSS < 8 MiB): $verdict"
