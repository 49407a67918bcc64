#!/usr/bin/env bash
# Benchmarks what production costs: the gate with API keys, and HTTPS.
#
# Builds a release build (build-release), generates 100 services in a temp folder (never
# started), and runs wrk on GET /services/svc-042/status:
#   1. keys: a daemon with no keys configured against one with a keys file, both asked
#      with a viewer key (Authorization: Bearer), plain HTTP, interleaved in the same run;
#      target: the keyed one at >= 0.95x the requests/s (the gate is nearly free);
#   2. HTTPS: the keyed daemon with --tls-cert/--tls-key against nginx serving the same
#      bytes over TLS with one worker, same certificate, keep-alive on both; target:
#      >= 0.8x nginx's requests/s.
# Prints a table and whether each target is met. See bench/README.md.
#
# Usage: bench/security.sh   (env: BENCH_DURATION=10s BENCH_CONNECTIONS=32
#                            BENCH_ROUNDS=3, and BENCH_BIN=path/to/nanny to skip the build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemons, nginx and the temp
# folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

SERVICES=100
PROBE=svc-042
ENDPOINT=/services/$PROBE/status
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=1
BUILD=build-release

# Targets (bench/README.md).
TARGET_KEYS=0.95
TARGET_HTTPS=0.80

pids=()
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        bench_stop "$pid"
    done
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages and build ------------------------------------------------------
deps_install "${DEPS_BENCH[@]}" openssl
bench_find_nginx
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench.XXXXXX")
# nginx's worker runs as an unprivileged user: let it reach the files.
chmod 755 "$TMP"

bench_build_release "$BUILD" "$TMP/build.log"

# --- 100 services, a viewer key, a certificate -------------------------------------
mkdir -p "$TMP/services" "$TMP/www" "$TMP/nginx" "$TMP/tls"
bench_make_services "$TMP/services" "$SERVICES" bench/security.sh

# The keys file as `nanny keys add` writes it: a name, a role and the key's SHA-256.
KEY=nanny_$(openssl rand -hex 32)
(
    umask 077
    printf 'keys:\n  - name: bench-viewer\n    role: viewer\n    hash: sha256:%s\n' \
        "$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)" >"$TMP/keys.yaml"
)
AUTH="Authorization: Bearer $KEY"

# One self-signed certificate (EC P-256) for 127.0.0.1, for the daemon and nginx alike.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" >"$TMP/tls/openssl.log" 2>&1 || {
    cat "$TMP/tls/openssl.log" >&2
    die "openssl could not make a certificate"
}
chmod 755 "$TMP/tls"
chmod 644 "$TMP/tls/cert.pem" "$TMP/tls/key.pem"
CURL_TLS=(--cacert "$TMP/tls/cert.pem")

# --- the daemons ---------------------------------------------------------------------
# try_daemon NAME ARGS...: starts `nanny serve` with its own state dir; sets $port and
# $daemon_pid, or returns 1 when it did not log that it listens within 10 s.
try_daemon() {
    local name=$1
    shift
    mkdir -p "$TMP/state-$name"
    "$BIN" serve --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state-$name" \
        "$@" </dev/null >"$TMP/daemon-$name.log" 2>&1 &
    daemon_pid=$!
    pids+=("$daemon_pid")
    port=$(bench_daemon_port "$TMP/daemon-$name.log" "$daemon_pid")
    [[ -n $port ]]
}

start_daemon() {
    try_daemon "$@" || {
        cat "$TMP/daemon-$1.log" >&2
        die "the daemon ($1) did not log 'listening on ...127.0.0.1:PORT' within 10 s"
    }
}

# wait_ok URL CURL_ARGS...: waits up to 10 s for URL to answer 200.
wait_ok() {
    local url=$1 i
    shift
    for ((i = 0; i < 100; i++)); do
        curl -fsS --max-time 1 -o /dev/null "$@" "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    curl -fsS --max-time 2 -o /dev/null "$@" "$url"
}

# fetch URL FILE CURL_ARGS...: saves the body of a 200 answer.
fetch() {
    local url=$1 file=$2 code
    shift 2
    code=$(curl -sS --max-time 5 -o "$file" -w '%{http_code}' "$@" "$url") || die "GET $url failed"
    [[ $code == 200 ]] || die "GET $url answered $code: $(head -c 300 "$file")"
}

start_daemon open
OPEN_PID=$daemon_pid
OPEN=http://127.0.0.1:$port
start_daemon keyed --keys "$TMP/keys.yaml"
KEYED_PID=$daemon_pid
KEYED=http://127.0.0.1:$port
wait_ok "$OPEN$ENDPOINT" || die "GET $OPEN$ENDPOINT does not answer 200 within 10 s"
wait_ok "$KEYED$ENDPOINT" -H "$AUTH" || die "GET $KEYED$ENDPOINT with the key does not answer 200"
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "$KEYED$ENDPOINT")
[[ $code == 401 ]] || die "the keyed daemon answers $code without a key: are keys on?"

# --- load ------------------------------------------------------------------------------

# Sums of req/s and the worst p99 over the rounds, per side.
declare -A sum worst
# measure SIDE URL [HEADER]: one run, added to SIDE's figures.
measure() {
    local side=$1 result rps p99
    result=$(bench_wrk 120 "$2" "$TMP/wrk.out" "${3:-}")
    read -r rps p99 <<<"$result"
    printf '  %-28s %8s req/s  p99 %8s ms\n' "$side" "$rps" "$p99"
    sum[$side]=$((${sum[$side]:-0} + rps))
    worst[$side]=$(awk -v a="${worst[$side]:-0}" -v b="$p99" 'BEGIN { print (b > a ? b : a) }')
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a daemon or nginx died under load (pid $pid)"
    done
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency on GET $ENDPOINT, $ROUNDS rounds, interleaved ..."
# measure_rounds SIDE_A URL_A SIDE_B URL_B: ROUNDS runs of each, both with the key's
# header; odd rounds A then B, even ones B then A, so that a drift of the machine's speed
# during the run favours neither side.
measure_rounds() {
    local r
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then
            measure "$1" "$2" "$AUTH"
            measure "$3" "$4" "$AUTH"
        else
            measure "$3" "$4" "$AUTH"
            measure "$1" "$2" "$AUTH"
        fi
    done
}

# The same request bytes to both: the daemon without keys ignores the header.
measure_rounds "no keys (HTTP)" "$OPEN$ENDPOINT" "viewer key (HTTP)" "$KEYED$ENDPOINT"

# --- HTTPS: the keyed daemon with TLS, and nginx ------------------------------------------
https_error=""
if ! try_daemon tls --keys "$TMP/keys.yaml" --tls-cert "$TMP/tls/cert.pem" \
    --tls-key "$TMP/tls/key.pem"; then
    https_error="the daemon with --tls-cert/--tls-key did not start: $(tail -n 2 "$TMP/daemon-tls.log" | tr '\n' ' ')"
else
    TLS_URL=https://127.0.0.1:$port
    if ! wait_ok "$TLS_URL$ENDPOINT" "${CURL_TLS[@]}" -H "$AUTH"; then
        https_error="the daemon does not answer HTTPS with --tls-cert/--tls-key: $(tail -n 2 "$TMP/daemon-tls.log" | tr '\n' ' ')"
    fi
fi

if [[ -z $https_error ]]; then
    fetch "$TLS_URL$ENDPOINT" "$TMP/www/status.json" "${CURL_TLS[@]}" -H "$AUTH"
    chmod 755 "$TMP/www"
    chmod 644 "$TMP/www/status.json"
    nginx_port=$(bench_free_port)
    NGINX_URL=https://127.0.0.1:$nginx_port
    bench_nginx_conf "$TMP/nginx" "$nginx_port ssl" "        default_type application/json;
        ssl_certificate $TMP/tls/cert.pem;
        ssl_certificate_key $TMP/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        # No session resumption, as the daemon (libmicrohttpd keeps no session cache):
        # with keep-alive each wrk connection shakes hands once anyway.
        ssl_session_cache off;
        ssl_session_tickets off;
        location = $ENDPOINT { alias $TMP/www/status.json; }
        location / { return 404; }"
    "$NGINX" -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
        </dev/null >"$TMP/nginx/stdout.log" 2>&1 &
    pids+=("$!")
    wait_ok "$NGINX_URL$ENDPOINT" "${CURL_TLS[@]}" || {
        cat "$TMP/nginx/error.log" "$TMP/nginx/stdout.log" >&2 2>/dev/null || true
        die "nginx did not start on $NGINX_URL"
    }
    fetch "$NGINX_URL$ENDPOINT" "$TMP/nginx-check.json" "${CURL_TLS[@]}"
    cmp -s "$TMP/nginx-check.json" "$TMP/www/status.json" || die "nginx serves other bytes"

    # What each side negotiates with an OpenSSL client (wrk uses OpenSSL too).
    tls_params() {
        timeout 10 openssl s_client -connect "127.0.0.1:$1" -brief </dev/null 2>&1 |
            awk -F': ' '/^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 }
                END { printf "%s %s", p, c }'
    }
    tls_daemon=$(tls_params "${TLS_URL##*:}")
    tls_nginx=$(tls_params "$nginx_port")

    echo "HTTPS, keep-alive, $ROUNDS rounds, interleaved ..."
    measure_rounds "nginx (HTTPS, 1 worker)" "$NGINX_URL$ENDPOINT" \
        "daemon (HTTPS, viewer key)" "$TLS_URL$ENDPOINT"
fi

# --- report ----------------------------------------------------------------------------
avg() { echo $((${sum[$1]} / ROUNDS)); }
bytes() { wc -c <"$1" | tr -d ' '; }

echo
echo "Service Nanny security benchmark: $SERVICES services, $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo "nginx:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, ssl_session_cache off"
if [[ -z $https_error ]]; then
    echo "TLS:    daemon $tls_daemon; nginx $tls_nginx; status body $(bytes "$TMP/www/status.json") B"
fi
echo
printf '%-34s %12s %10s %12s %10s %7s %8s  %s\n' comparison "ref req/s" "ref p99" \
    "req/s" p99 ratio target verdict
verdict_all=met
row() {
    local what=$1 ref=$2 side=$3 target=$4 ratio verdict
    ratio=$(awk -v d="$(avg "$side")" -v n="$(avg "$ref")" \
        'BEGIN { printf "%.2f", (n > 0 ? d / n : 0) }')
    verdict=met
    awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r >= t) }' || verdict="NOT met"
    [[ $verdict == met ]] || verdict_all="NOT met"
    printf '%-34s %12s %7s ms %12s %7s ms %6sx %8s  %s\n' "$what" "$(avg "$ref")" \
        "${worst[$ref]}" "$(avg "$side")" "${worst[$side]}" "$ratio" ">= $target" "$verdict"
}
row "viewer key / no keys (HTTP)" "no keys (HTTP)" "viewer key (HTTP)" "$TARGET_KEYS"
if [[ -z $https_error ]]; then
    row "daemon HTTPS / nginx HTTPS" "nginx (HTTPS, 1 worker)" "daemon (HTTPS, viewer key)" \
        "$TARGET_HTTPS"
else
    printf '%-34s %s\n' "daemon HTTPS / nginx HTTPS" "not measured: $https_error"
    verdict_all="NOT measured"
fi
echo "(req/s: the mean over the rounds; p99: the worst round)"
echo
echo "targets (keys >= ${TARGET_KEYS}x no keys, HTTPS >= ${TARGET_HTTPS}x nginx): $verdict_all"
if ! kill -0 "$OPEN_PID" 2>/dev/null || ! kill -0 "$KEYED_PID" 2>/dev/null; then
    die "a daemon died"
fi
[[ -z $https_error ]] || exit 1
