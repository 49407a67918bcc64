#!/usr/bin/env bash
# The soak: 256 connections of reads for 60 s while services start, stop and are forced
# off the GPU, on the same daemon. It reports the errors (target 0), the p99 of the reads
# beside nginx's under the same load on a snapshot of the same bytes, and the growth of
# the daemon's resident memory from after a warm-up to after the soak (target < 1 MiB).
#
# Builds a release build (build-release: nanny and the test service testsvc), writes
# three services in a temp folder (gpu-a and gpu-b need the GPU, cpu-c does not; each is
# testsvc with a health check), and runs the daemon on a free loopback port. Then:
#   1. warm-up: one cycle of operations and 5 s of the read load, then VmRSS;
#   2. the soak: wrk -c256 on GET /services for SOAK_DURATION while a driver (from
#      127.0.0.2, so that it never competes with wrk's connections for the per-client
#      cap) repeats, until the soak ends: start gpu-a (200), start gpu-b (409, naming
#      gpu-a), force gpu-b (200), check that at most one GPU service runs, start and stop
#      cpu-c (200 each), stop gpu-b (200). Every other answer, every failed request and
#      every moment with two GPU services running is an error;
#   3. VmRSS again after 2 s of quiet; nginx then serves the last GET /services body to
#      the same wrk load for SOAK_REF_DURATION, as the reference for p99.
#
# Usage: bench/soak.sh   (env: SOAK_DURATION=60s SOAK_CONNECTIONS=256
#                         SOAK_REF_DURATION=10s, BENCH_BIN=path/to/nanny to skip the
#                         build; testsvc is taken from the same folder)
# Traffic goes to 127.0.0.0/8 only; every wait is bounded; the daemon (which stops its
# services), nginx and the temp folder are removed on exit. Exit status 0 when the soak
# ran, whether or not the targets were met; 1 when something broke.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

DURATION=${SOAK_DURATION:-60s}
REF_DURATION=${SOAK_REF_DURATION:-10s}
CONNECTIONS=${SOAK_CONNECTIONS:-256}
THREADS=2
BUILD=build-release
TARGET_RSS_GROWTH_KB=1024

daemon_pid=""
nginx_pid=""
TMP=""

# stop_pid PID: SIGTERM, up to 15 s, then SIGKILL.
stop_pid() {
    bench_stop "$1" 15
}

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    stop_pid "$nginx_pid"
    stop_pid "$daemon_pid" # --stop-services-on-exit: it stops the services
    if [[ -n $TMP ]]; then
        for pid in $(pgrep -f -- "--write-pidfile $TMP/" || true); do
            echo "soak: killing testsvc pid $pid, left behind" >&2
            kill -KILL "$pid" 2>/dev/null || true
        done
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BENCH_NAME=soak

# --- packages and build ------------------------------------------------------
deps_install "${DEPS_BENCH[@]}"
NGINX=$(command -v nginx || true)
if [[ -z $NGINX && -x /usr/sbin/nginx ]]; then NGINX=/usr/sbin/nginx; fi
if [[ -z $NGINX ]]; then
    deps_install nginx-light || deps_install nginx
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-soak.XXXXXX")
chmod 755 "$TMP"

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$(realpath "$BENCH_BIN")
    TESTSVC=$(dirname "$BIN")/testsvc
    BUILD="BENCH_BIN"
else
    echo "building $BUILD (release) ..."
    if ! deps_meson_setup "$BUILD" -Dbuildtype=release -Db_ndebug=true >"$TMP/build.log" 2>&1 ||
        ! ninja -C "$BUILD" nanny testsvc >>"$TMP/build.log" 2>&1; then
        cat "$TMP/build.log" >&2
        die "the release build failed"
    fi
    BIN=$REPO/$BUILD/nanny
    TESTSVC=$REPO/$BUILD/testsvc
fi
[[ -x $TESTSVC ]] || die "the test service $TESTSVC is missing (ninja -C DIR testsvc)"


# --- three services ----------------------------------------------------------------
mkdir -p "$TMP/services" "$TMP/state" "$TMP/www" "$TMP/nginx"
read -r port_a port_b port_c < <("$PY" -c 'from benchlib import free_ports; free_ports(3)') ||
    die "no free ports"
service() { # NAME PORT GPU
    mkdir -p "$TMP/services/$1"
    cat >"$TMP/services/$1/service.yaml" <<EOF
name: $1
description: bench/soak.sh
ports: ["$2"]
driver: process
gpu_required: $3
command: ["$TESTSVC", "--port", "$2", "--write-pidfile", "$TMP/$1.pid"]
health:
  path: /health
  interval: 1s
  timeout: 2s
  start_period: 10s
stop_timeout: 5s
restart: "no"
EOF
}
service gpu-a "$port_a" true
service gpu-b "$port_b" true
service cpu-c "$port_c" false

"$BIN" serve --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state" \
    --stop-services-on-exit </dev/null >"$TMP/daemon.log" 2>&1 &
daemon_pid=$!
port=$(bench_daemon_port "$TMP/daemon.log" "$daemon_pid")
[[ -n $port ]] || die "the daemon did not log 'listening on http://127.0.0.1:PORT' within 10 s"
DAEMON=http://127.0.0.1:$port
bench_wait_health "$DAEMON" "$daemon_pid" ||
    die "GET $DAEMON/health does not answer 2xx within 10 s"

rss_kb() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

# wrk_run URL DURATION OUT: prints "requests errors p99_ms" (errors: socket errors of
# every kind plus non-2xx answers).
wrk_run() {
    local url=$1 duration=$2 out=$3
    timeout -k 5 600 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 10s --latency \
        "$url" </dev/null >"$out" 2>&1 || {
        cat "$out" >&2
        die "wrk $url failed"
    }
    awk '
        / requests in / { req = $1 }
        $1 == "Socket" && $2 == "errors:" {
            for (i = 3; i <= NF; i++) { v = $i; gsub(/,/, "", v); if (v ~ /^[0-9]+$/) err += v }
        }
        $1 == "Non-2xx" { err += $NF }
        $1 == "99%" {
            v = $2
            if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 }
            else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v }
            else if (v ~ /m$/) { sub(/m$/, "", v); p99 = v * 60000 }
            else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 }
        }
        END {
            if (req == "" || p99 == "") exit 1
            printf "%d %d %.3f\n", req, err, p99
        }' "$out" || die "could not read wrk's output for $url"
}

# --- 1. warm-up -------------------------------------------------------------------
echo "warm-up: one cycle and 5 s of reads ..."
read -r _ _ warm_errors < <(timeout -k 5 120 "$PY" "$REPO/bench/cycle.py" "$port" 0 2>"$TMP/warm.err") ||
    die "the warm-up cycle failed: $(cat "$TMP/warm.err")"
((warm_errors == 0)) || die "the warm-up cycle had errors: $(cat "$TMP/warm.err")"
wrk_run "$DAEMON/services" 5s "$TMP/wrk-warm.out" >/dev/null
sleep 2
rss_before=$(rss_kb "$daemon_pid" VmRSS)

# --- 2. the soak ------------------------------------------------------------------
seconds=$("$PY" -c 'import sys
v = sys.argv[1]
print({"s": 1, "m": 60}.get(v[-1], None) and float(v[:-1]) * {"s": 1, "m": 60}[v[-1]] or float(v))' "$DURATION")
echo "soak: wrk -t$THREADS -c$CONNECTIONS -d$DURATION on GET /services, operations beside it ..."
timeout -k 5 600 "$PY" "$REPO/bench/cycle.py" "$port" "$seconds" >"$TMP/driver.out" 2>"$TMP/driver.err" &
driver_pid=$!
read -r soak_req soak_wrk_errors soak_p99 < <(wrk_run "$DAEMON/services" "$DURATION" "$TMP/wrk.out")
wait "$driver_pid" || die "the driver failed: $(tail -n 5 "$TMP/driver.err")"
read -r cycles ops op_errors <"$TMP/driver.out"
kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died during the soak"
sleep 2
rss_after=$(rss_kb "$daemon_pid" VmRSS)
hwm=$(rss_kb "$daemon_pid" VmHWM)

# --- 3. the reference ------------------------------------------------------------
curl -fsS --max-time 5 -o "$TMP/www/services.json" "$DAEMON/services" || die "GET /services failed"
chmod 644 "$TMP/www/services.json"
nginx_port=$("$PY" -c 'from benchlib import free_ports; free_ports(1)')
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/nginx/body;
    types { }
    default_type application/json;
    server {
        listen 127.0.0.1:$nginx_port;
        location = /services { alias $TMP/www/services.json; }
        location / { return 404; }
    }
}
EOF
"$NGINX" -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    </dev/null >"$TMP/nginx/stdout.log" 2>&1 &
nginx_pid=$!
for ((i = 0; i < 50; i++)); do
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$nginx_port/services" 2>/dev/null && break
    sleep 0.1
done
echo "reference: nginx, the same load for $REF_DURATION ..."
read -r _ ref_errors ref_p99 < <(wrk_run "http://127.0.0.1:$nginx_port/services" "$REF_DURATION" \
    "$TMP/wrk-ref.out")

# --- the table ---------------------------------------------------------------------
errors=$((soak_wrk_errors + op_errors))
growth=$((rss_after - rss_before))
echo
echo "Service Nanny soak: $(nproc) cores, $(uname -r), daemon $BIN ($BUILD)," \
    "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
printf '  reads:      %d requests in %s on %d connections, %d errors, p99 %.2f ms' \
    "$soak_req" "$DURATION" "$CONNECTIONS" "$soak_wrk_errors" "$soak_p99"
printf ' (nginx on the same bytes: p99 %.2f ms, %d errors; ratio %.2fx)\n' "$ref_p99" \
    "$ref_errors" "$(awk -v a="$soak_p99" -v b="$ref_p99" 'BEGIN { print (b > 0 ? a / b : 0) }')"
printf '  operations: %d cycles, %d requests, %d errors\n' "$cycles" "$ops" "$op_errors"
printf '  VmRSS:      %d KiB after the warm-up, %d KiB after the soak (growth %d KiB, peak %d KiB)\n' \
    "$rss_before" "$rss_after" "$growth" "$hwm"
if [[ -s $TMP/driver.err ]]; then
    echo "  first errors of the operations:"
    head -n 10 "$TMP/driver.err" | sed 's/^/    /'
fi
verdict=met
((errors == 0)) || verdict="NOT met"
((growth < TARGET_RSS_GROWTH_KB)) || verdict="NOT met"
echo "targets (0 errors, RSS growth < 1 MiB): $verdict"
