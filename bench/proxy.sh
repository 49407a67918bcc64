#!/usr/bin/env bash
# Benchmarks the reverse proxy (issue 14): wrk against the same warm backend three ways,
# in one run: (a) direct, (b) through the daemon at /s/backend/, (c) through nginx's
# proxy_pass with keep-alive upstream connections (the reference).
#
# Builds a release build (build-release) and writes, in a temp folder, one process
# service "backend" whose command is an nginx (one worker) serving a small static file on
# a free loopback port: the daemon starts it and checks its health, as it would a real
# service. The reference is another nginx (one worker, as the daemon is one thread) with
# `upstream { server 127.0.0.1:PORT; keepalive 32; }`, `proxy_http_version 1.1` and an
# empty Connection header, mapping /s/backend/ to the backend's / as the daemon does.
# Then, in BENCH_ROUNDS rounds (3), each path in turn within a round, so that a burst of
# other load on the machine falls on every path alike, and the median of the rounds kept:
#   1. throughput: wrk -t1 -c$BENCH_CONNECTIONS -d$BENCH_DURATION --latency on each path:
#      req/s, p50 and p99;
#   2. latency: wrk -t1 -c1 (one request at a time) on each path: p50 and p99, and what
#      each proxy adds to the direct p50;
#   3. streaming (BENCH_SSE=0 skips it): a second service runs tests/fixtures/upstream.py;
#      its GET /sse?stamp=1 writes BENCH_SSE_EVENTS events 2 ms apart, each carrying the
#      CLOCK_MONOTONIC time it was written; each event's delay is when the client read it
#      minus that time, 3 streams direct, through the daemon and through nginx
#      (proxy_buffering off), interleaved: the medians' difference is what the daemon adds
#      to an event. After each stream, 100 round trips on a WebSocket to the same service's
#      /ws echo, each message written in two pieces 1 ms apart (head, then payload), as a
#      relay often gets them: with Nagle's algorithm on a relay's socket the second piece
#      waits for a delayed acknowledgement, ~40 ms. No target: nginx is the reference.
#   4. bulk (BENCH_BULK=0 skips it): one large body each way, 3 times on each path,
#      interleaved, median MB/s as curl saw it: a download of a BENCH_BULK_MB file from the
#      backend (Content-Length), and an upload of as many bytes to the streaming service's
#      /sink (with BENCH_SSE; nginx with client_max_body_size 0 and
#      proxy_request_buffering off, so that it streams as the daemon does). No target: what
#      a large answer or upload costs next to the reference.
# It prints the tables, the ratios and whether the targets are met (bench/README.md).
#
# Usage: bench/proxy.sh   (env: BENCH_DURATION=5s BENCH_ROUNDS=3 BENCH_CONNECTIONS=32 BENCH_SSE=1
#                         BENCH_SSE_EVENTS=500 BENCH_BULK=1 BENCH_BULK_MB=200, and
#                         BENCH_BIN=path/to/nanny to skip the build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon (which stops its
# services), both nginx and the temp folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BENCH_NAME=bench/proxy.sh

DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=1
SSE=${BENCH_SSE:-1}
SSE_EVENTS=${BENCH_SSE_EVENTS:-500}
BULK=${BENCH_BULK:-1}
BULK_MB=${BENCH_BULK_MB:-200}
BUILD=build-release
FILE=hello.txt

# Targets (bench/README.md).
TARGET_RATIO=1.0
TARGET_ADDED_P50_US=50
TARGET_SSE_ADDED_US=1000

daemon_pid=""
proxy_pid=""
port=""
TMP=""

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    # The daemon stops its services (--stop-services-on-exit); the backend nginx is
    # killed by its pid file in case the daemon could not.
    if [[ -n $port ]] && [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        curl -sS --max-time 10 -o /dev/null -X POST "http://127.0.0.1:$port/services/backend/stop" \
            2>/dev/null || true
    fi
    bench_stop "$daemon_pid" 15
    bench_stop "$proxy_pid"
    if [[ -n $TMP && -s $TMP/backend/nginx.pid ]]; then
        bench_stop "$(cat "$TMP/backend/nginx.pid")"
    fi
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deps_install "${DEPS_BENCH[@]}"
bench_find_nginx
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench-proxy.XXXXXX")
# nginx's workers run as an unprivileged user: let them reach the files.
chmod 755 "$TMP"
bench_build_release "$BUILD" "$TMP/build.log"

# --- the backend: a process service the daemon runs -----------------------------------
backend_port=$(bench_free_port)
mkdir -p "$TMP/backend/www" "$TMP/services/backend" "$TMP/state"
echo ok >"$TMP/backend/www/ready"
# A small static answer (64 bytes with the newline), as a health or JSON endpoint is.
printf '%063d\n' 0 | tr 0 x >"$TMP/backend/www/$FILE"
chmod -R a+rX "$TMP/backend"
bench_nginx_conf "$TMP/backend" "$backend_port" "        root $TMP/backend/www;"
cat >"$TMP/services/backend/service.yaml" <<EOT
name: backend
description: nginx serving a small static file, for bench/proxy.sh
driver: process
ports: ["$backend_port"]
command: ["$NGINX", "-p", "$TMP/backend/", "-c", "$TMP/backend/nginx.conf", "-e", "$TMP/backend/error.log"]
stop_timeout: 5s
health:
  path: /ready
  interval: 2s
  timeout: 1s
  start_period: 10s
EOT
if [[ $SSE == 1 ]]; then
    sse_port=$(bench_free_port)
    mkdir -p "$TMP/services/sse"
    cat >"$TMP/services/sse/service.yaml" <<EOT
name: sse
description: tests/fixtures/upstream.py, for the streaming figure of bench/proxy.sh
driver: process
ports: ["$sse_port"]
command: ["$PY", "$REPO/tests/fixtures/upstream.py", "--port", "$sse_port"]
stop_timeout: 5s
health:
  path: /health
  interval: 2s
  timeout: 1s
  start_period: 10s
EOT
fi

bench_serve "$TMP/services" "$TMP/state" --stop-services-on-exit
start_service() {
    local name=$1 code
    code=$(curl -sS --max-time 30 -o "$TMP/start.json" -w '%{http_code}' -X POST \
        "$DAEMON/services/$name/start?wait=healthy") || die "POST /services/$name/start failed"
    [[ $code == 200 ]] || die "POST /services/$name/start answered $code: $(head -c 300 "$TMP/start.json")"
}
start_service backend
if [[ $SSE == 1 ]]; then start_service sse; fi
BACKEND_URL=http://127.0.0.1:$backend_port
DAEMON_URL=$DAEMON/s/backend
curl -fsS --max-time 5 -o "$TMP/direct.out" "$BACKEND_URL/$FILE" || die "the backend does not answer"
code=$(curl -sS --max-time 5 -o "$TMP/daemon.out" -w '%{http_code}' "$DAEMON_URL/$FILE") ||
    die "GET $DAEMON_URL/$FILE failed"
[[ $code == 200 ]] || die "GET $DAEMON_URL/$FILE answered $code: $(head -c 300 "$TMP/daemon.out")"
cmp -s "$TMP/direct.out" "$TMP/daemon.out" || die "the daemon passes on other bytes than the backend's"

# --- the reference: nginx proxy_pass with keep-alive upstreams ------------------------
proxy_port=$(bench_free_port)
NGINX_PROXY_URL=http://127.0.0.1:$proxy_port/s/backend
bench_nginx_conf "$TMP/proxy" "$proxy_port" "        location /s/backend/ {
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
        location = /s/sse/ws {
            proxy_pass http://sse/ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \"upgrade\";
        }
        location /s/sse/ {
            proxy_pass http://sse/;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            client_max_body_size 0;
            proxy_request_buffering off;
        }" "    upstream backend {
        server 127.0.0.1:$backend_port;
        keepalive 32;
    }
    upstream sse {
        server 127.0.0.1:${sse_port:-$backend_port};
        keepalive 32;
    }"
"$NGINX" -p "$TMP/proxy/" -c "$TMP/proxy/nginx.conf" -e "$TMP/proxy/error.log" \
    </dev/null >"$TMP/proxy/stdout.log" 2>&1 &
proxy_pid=$!
for ((i = 0; i < 50; i++)); do
    curl -fsS --max-time 1 -o /dev/null "$NGINX_PROXY_URL/$FILE" 2>/dev/null && break
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
done
curl -fsS --max-time 2 -o "$TMP/proxy.out" "$NGINX_PROXY_URL/$FILE" || {
    cat "$TMP/proxy/error.log" "$TMP/proxy/stdout.log" >&2 2>/dev/null || true
    die "the nginx proxy did not start on $NGINX_PROXY_URL"
}
cmp -s "$TMP/direct.out" "$TMP/proxy.out" || die "the nginx proxy passes on other bytes"

# wrk_run CONNECTIONS URL: one bench_wrk_latency run; prints "req_per_s p50_us p99_us".
wrk_run() {
    local got p50 p99 rps
    got=$(bench_wrk_latency "$1" "$2") || exit 1
    read -r p50 p99 rps <<<"$got"
    awk -v a="$p50" -v b="$p99" -v r="$rps" 'BEGIN { printf "%.0f %.1f %.1f\n", r, a * 1000, b * 1000 }'
}

alive() {
    kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died under load"
    kill -0 "$proxy_pid" 2>/dev/null || die "the nginx proxy died under load"
}

declare -A url rps p50 p99 l50 l99
url[direct]=$BACKEND_URL/$FILE
url[daemon]=$DAEMON_URL/$FILE
url[nginx]=$NGINX_PROXY_URL/$FILE
targets=(direct daemon nginx)

# What CPU each proxy uses for a request: its process's user and system time over a c32
# run, divided by the requests wrk saw. Unlike requests/s, it hardly moves with the other
# load on the machine. nginx's is its one worker's (a child of the master started here).
nginx_worker=$(pgrep -P "$proxy_pid" | head -1)
[[ -n $nginx_worker ]] || die "the nginx proxy has no worker process"
declare -A cpu_pid=([daemon]=$daemon_pid [nginx]=$nginx_worker)
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# A short warm-up of each path (connections, caches).
for t in "${targets[@]}"; do
    timeout -k 5 30 wrk -t1 -c"$CONNECTIONS" -d1s "${url[$t]}" </dev/null >/dev/null 2>&1 || true
done
alive

# median LIST: the median of the numbers in LIST.
median() {
    tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

declare -A all_rps all_p50 all_p99 all_l50 all_l99 all_cpu now_rps now_l50
all_ratio="" all_added="" all_added_nginx=""
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round of $ROUNDS: wrk -t$THREADS -c$CONNECTIONS, then -c1, -d$DURATION --latency," \
        "direct, daemon, nginx ..."
    for t in "${targets[@]}"; do
        ticks=$([[ -n ${cpu_pid[$t]:-} ]] && cpu_ticks "${cpu_pid[$t]}" || echo 0)
        read -r "now_rps[$t]" a b < <(wrk_run "$CONNECTIONS" "${url[$t]}")
        all_rps[$t]+="${now_rps[$t]} " all_p50[$t]+="$a " all_p99[$t]+="$b "
        if [[ -n ${cpu_pid[$t]:-} ]]; then
            all_cpu[$t]+="$(awk -v a="$ticks" -v b="$(cpu_ticks "${cpu_pid[$t]}")" -v hz="$HZ" \
                '$2 == "requests" && $3 == "in" { printf "%.2f", (b - a) * 1e6 / hz / $1 }' \
                "$TMP/wrk.out") "
        fi
        alive
    done
    for t in "${targets[@]}"; do
        read -r _ "now_l50[$t]" b < <(wrk_run 1 "${url[$t]}")
        all_l50[$t]+="${now_l50[$t]} " all_l99[$t]+="$b "
        alive
    done
    read -r r a b < <(awk -v d="${now_rps[daemon]}" -v n="${now_rps[nginx]}" \
        -v ld="${now_l50[daemon]}" -v ln="${now_l50[nginx]}" -v lb="${now_l50[direct]}" \
        'BEGIN { printf "%.3f %.1f %.1f\n", (n > 0 ? d / n : 0), ld - lb, ln - lb }')
    all_ratio+="$r " all_added+="$a " all_added_nginx+="$b "
    printf '  daemon/nginx %.2fx, c1 p50 minus direct: daemon %+.0f us, nginx %+.0f us\n' "$r" "$a" "$b"
done
for t in "${targets[@]}"; do
    rps[$t]=$(median "${all_rps[$t]}")
    p50[$t]=$(median "${all_p50[$t]}")
    p99[$t]=$(median "${all_p99[$t]}")
    l50[$t]=$(median "${all_l50[$t]}")
    l99[$t]=$(median "${all_l99[$t]}")
done

# --- streaming: events, direct and through both proxies --------------------------------
sse_line=""
if [[ $SSE == 1 ]]; then
    echo "streaming: $SSE_EVENTS events 2 ms apart, 3 streams on each path, interleaved ..."
    sse_line=$("$PY" - "$sse_port" "$port" "$proxy_port" "$SSE_EVENTS" <<'PY'
import base64, os, socket, statistics, struct, sys, time

direct, daemon, nginx, events = (int(a) for a in sys.argv[1:5])
paths = {
    "direct": (direct, "/sse"),
    "daemon": (daemon, "/s/sse/sse"),
    "nginx": (nginx, "/s/sse/sse"),
}

def stream(port, path):
    """Each event's delay in us: when its last byte was read minus when the upstream
    wrote it (both CLOCK_MONOTONIC, one clock for every process of the machine)."""
    delays, data = [], b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path}?n={events}&interval_ms=2&stamp=1 HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{port}\r\n\r\n".encode())
        deadline = time.monotonic() + 30
        while len(delays) < events:
            if time.monotonic() > deadline:
                raise SystemExit(f"{path} on port {port}: {len(delays)} events in 30 s")
            chunk = s.recv(65536)
            now = time.monotonic_ns()
            if not chunk:
                raise SystemExit(f"{path} on port {port} closed after {len(delays)} events")
            data += chunk
            while True:
                i = data.find(b"data: ")
                j = data.find(b"\n\n", i)
                if i < 0 or j < 0:
                    break
                stamp = int(data[i:j].split()[2])
                delays.append((now - stamp) / 1000)
                data = data[j + 2:]
    return delays

def ws_round_trips(port, path, n=100):
    """Round trips in us of n WebSocket messages to the echo at path, each written in two
    pieces 1 ms apart (its head, then its payload), the 1 ms left out: a message that
    arrives in pieces, as a relay sees them."""
    key = base64.b64encode(os.urandom(16)).decode()
    trips = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        f = s.makefile("rb")
        status = f.readline()
        if b" 101 " not in status:
            raise SystemExit(f"{path} on port {port}: {status!r}")
        while f.readline() not in (b"\r\n", b""):
            pass

        def message():
            head = f.read(2)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", f.read(2))[0]
            return f.read(n)

        message()  # the service's hello
        for i in range(n):
            payload = b"token %04d" % i
            t = time.monotonic_ns()
            s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + b"\0\0\0\0")
            time.sleep(0.001)
            s.sendall(payload)
            if message() != payload:
                raise SystemExit(f"{path} on port {port}: another message came back")
            trips.append((time.monotonic_ns() - t) / 1000 - 1000)
    return trips

got = {k: [] for k in paths}
trips = {k: [] for k in paths}
ws_paths = {"direct": "/ws", "daemon": "/s/sse/ws", "nginx": "/s/sse/ws"}
for _ in range(3):
    for k, (port, path) in paths.items():
        got[k] += stream(port, path)
        trips[k] += ws_round_trips(port, ws_paths[k])
med = {k: statistics.median(v) for k, v in got.items()}
ws = {k: statistics.median(v) for k, v in trips.items()}
print(f"{med['direct']:.0f} {med['daemon']:.0f} {med['nginx']:.0f} "
      f"{ws['direct']:.0f} {ws['daemon']:.0f} {ws['nginx']:.0f}")
PY
) || die "the streaming measure failed"
    alive
fi

# --- bulk: one large body each way ----------------------------------------------------
declare -A down up
if [[ $BULK == 1 ]]; then
    echo "bulk: a $BULK_MB MB download (and upload) 3 times on each path, interleaved ..."
    head -c "$((BULK_MB * 1000000))" /dev/zero >"$TMP/backend/www/bulk.bin"
    chmod a+r "$TMP/backend/www/bulk.bin"
    declare -A all_down all_up
    # bulk_curl URL [curl options...]: prints MB/s (down or up as the options say).
    # bulk_curl URL OUT [curl options...]: prints MB/s (down or up, as the options say);
    # the answer goes to OUT, and a download must come whole.
    bulk_curl() {
        local to=$1 out=$2 got code d u size
        shift 2
        got=$(curl -sS --max-time 120 -o "$out" \
            -w '%{http_code} %{speed_download} %{speed_upload} %{size_download}' "$@" "$to") ||
            die "curl $to failed"
        read -r code d u size <<<"$got"
        [[ $code == 200 ]] || die "$to answered $code"
        [[ $out != /dev/null || $size == "$((BULK_MB * 1000000))" ]] ||
            die "$to sent $size bytes of $((BULK_MB * 1000000))"
        awk -v d="$d" -v u="$u" 'BEGIN { printf "%.0f\n", (u > d ? u : d) / 1e6 }'
    }
    # nginx as configured for the rest (proxy_buffering on, its default: it spills what the
    # client has not taken to a temp file); with proxy_buffering off it read and wrote
    # 4 KiB at a time, at about half the speed.
    declare -A bulk_url=([direct]="$BACKEND_URL/bulk.bin" [daemon]="$DAEMON_URL/bulk.bin"
        [nginx]="$NGINX_PROXY_URL/bulk.bin")
    declare -A sink_url=([direct]="http://127.0.0.1:${sse_port:-0}/sink"
        [daemon]="$DAEMON/s/sse/sink" [nginx]="http://127.0.0.1:$proxy_port/s/sse/sink")
    for ((i = 0; i < 3; i++)); do
        for t in "${targets[@]}"; do
            all_down[$t]+="$(bulk_curl "${bulk_url[$t]}" /dev/null) "
            if [[ $SSE == 1 ]]; then
                # -T streams the file (with its Content-Length) rather than read it whole.
                all_up[$t]+="$(bulk_curl "${sink_url[$t]}" "$TMP/bulk.out" -X POST -H 'Expect:' \
                    -T "$TMP/backend/www/bulk.bin") "
                grep -qE "\"bytes\": $((BULK_MB * 1000000))[,}]" "$TMP/bulk.out" ||
                    die "the upload through $t did not arrive whole: $(head -c 300 "$TMP/bulk.out")"
            fi
            alive
        done
    done
    for t in "${targets[@]}"; do
        down[$t]=$(median "${all_down[$t]}")
        [[ $SSE == 1 ]] && up[$t]=$(median "${all_up[$t]}")
    done
fi

# --- report ---------------------------------------------------------------------------
# The figures judged: medians of each round's own ratio and differences (the paths of a
# round ran within seconds of each other, under the same load).
ratio=$(awk -v r="$(median "$all_ratio")" 'BEGIN { printf "%.2f", r }')
added=$(awk -v a="$(median "$all_added")" 'BEGIN { printf "%.0f", a }')
added_nginx=$(awk -v a="$(median "$all_added_nginx")" 'BEGIN { printf "%.0f", a }')

echo
echo "Service Nanny proxy benchmark: $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo "nginx:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker each (backend and proxy);" \
    "the backend serves a $(wc -c <"$TMP/backend/www/$FILE" | tr -d ' ')-byte file"
echo
echo "medians of $ROUNDS rounds of $DURATION each:"
printf '%-8s %12s %10s %10s   %12s %12s\n' path "req/s c$CONNECTIONS" "p50 us" "p99 us" \
    "c1 p50 us" "c1 p99 us"
for t in "${targets[@]}"; do
    printf '%-8s %12s %10s %10s   %12s %12s\n' "$t" "${rps[$t]}" "${p50[$t]}" "${p99[$t]}" \
        "${l50[$t]}" "${l99[$t]}"
done
echo
echo "daemon / nginx req/s (c$CONNECTIONS), median of the rounds' ratios: ${ratio}x" \
    "  (target >= ${TARGET_RATIO}x)"
echo "CPU per request (c$CONNECTIONS), median of the rounds: daemon $(median "${all_cpu[daemon]}") us," \
    "nginx $(median "${all_cpu[nginx]}") us (user and system time of the process)"
echo "daemon p50 minus direct p50 (c1), median of the rounds': ${added} us" \
    "  (target <= ${TARGET_ADDED_P50_US} us; nginx adds ${added_nginx} us)"
verdict=met
awk -v r="$ratio" -v t="$TARGET_RATIO" 'BEGIN { exit !(r >= t) }' || verdict="NOT met"
((added <= TARGET_ADDED_P50_US)) || verdict="NOT met"
if [[ -n $sse_line ]]; then
    read -r sse_direct sse_daemon sse_nginx ws_direct ws_daemon ws_nginx <<<"$sse_line"
    sse_added=$((sse_daemon - sse_direct))
    echo "SSE event, written by the upstream to read by the client (median of $((3 * SSE_EVENTS))):" \
        "direct ${sse_direct} us, daemon ${sse_daemon} us, nginx ${sse_nginx} us;" \
        "the daemon adds ${sse_added} us   (target <= ${TARGET_SSE_ADDED_US} us)"
    ((sse_added <= TARGET_SSE_ADDED_US)) || verdict="NOT met"
    echo "WebSocket round trip of a message sent in two pieces (median of 300):" \
        "direct ${ws_direct} us, daemon ${ws_daemon} us, nginx ${ws_nginx} us"
fi
if [[ $BULK == 1 ]]; then
    echo "bulk, median MB/s of 3: download of $BULK_MB MB: direct ${down[direct]}," \
        "daemon ${down[daemon]}, nginx ${down[nginx]}${up[daemon]:+; upload: direct ${up[direct]}, daemon ${up[daemon]}, nginx ${up[nginx]}}"
fi
echo "targets: $verdict"
