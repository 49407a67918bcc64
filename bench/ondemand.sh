#!/usr/bin/env bash
# Benchmarks starts on demand and swaps through the proxy (issue 14's other figures): what
# the daemon adds to a cold request's wait beyond the backend's own start, and to a swap
# beyond the holder's stop and the newcomer's start.
#
# Builds a release build (build-release) and writes, in a temp folder, three process
# services with the same kind of command (BENCH_BACKEND=nginx, the default: an nginx with
# one worker, `daemon off`, serving small files; BENCH_BACKEND=upstream:
# tests/fixtures/upstream.py), each on its own free loopback port, health on /health:
#   backend: no GPU;
#   a, b:    gpu_required: true, priority 0 and 5, on the default box (one GPU of unknown
#            size: the config tries no NVML and no nvidia-smi).
# The daemon runs on a free loopback port with --stop-services-on-exit. Then, after one
# unmeasured round of each:
#   1. cold start, BENCH_RUNS times (10), interleaved: the script runs backend's command
#      itself (no daemon, the same argv, folder and environment) and polls its GET
#      /health every 1 ms until 200: the time from the spawn to that answer's first byte
#      is the backend alone; it is then stopped, and with the service stopped in the
#      daemon, a GET /s/backend/echo is timed from its send to the first byte of the
#      answer. The daemon starts backend, waits until it is healthy, forwards: the
#      difference of the medians is what the daemon adds. Then POST
#      /services/backend/stop (answered once it is stopped).
#   2. swap, BENCH_RUNS times: with a running (POST /services/a/start?wait=healthy) and
#      b stopped: POST /services/a/stop timed from send to answer (a's stop alone); b's
#      command run by the script as in 1 (b's start alone); a started again; then GET
#      /s/b/echo timed from its send to the first byte. b's priority is above a's, so
#      the request swaps: a (idle) is stopped, b started, the request forwarded. The
#      difference of the swap's median and the sum of the two medians alone is what the
#      daemon adds. Then b is stopped and a started, for the next run.
# It prints every run, the table and whether the targets are met (bench/README.md).
#
# Usage: bench/ondemand.sh   (env: BENCH_RUNS=10 BENCH_BACKEND=nginx|upstream, and
#                            BENCH_BIN=path/to/nanny to skip the build)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon (which stops its
# services), any backend of the run left behind and the temp folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BENCH_NAME=bench/ondemand.sh

RUNS=${BENCH_RUNS:-10}
BACKEND=${BENCH_BACKEND:-nginx}
BUILD=build-release

# Targets (bench/README.md).
TARGET_COLD_MS=20
TARGET_SWAP_MS=20

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive number, not '$RUNS'"
[[ $BACKEND == nginx || $BACKEND == upstream ]] ||
    die "BENCH_BACKEND must be nginx or upstream, not '$BACKEND'"

daemon_pid=""
port=""
TMP=""

# The pids of the backends this run started that are still alive: each one's command line
# holds the temp folder's path (nginx's -p, upstream.py's --tag). nginx's workers do not
# (they are "nginx: worker process"): SIGTERM to their master ends them.
leftovers() {
    pgrep -f -- "$TMP/(backend|a|b)/" || true
}

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid i
    # The daemon stops its services (--stop-services-on-exit).
    bench_stop "$daemon_pid" 15
    if [[ -n $TMP ]]; then
        # A backend the helper ran itself, or one the daemon could not stop.
        for pid in $(leftovers); do
            echo "$BENCH_NAME: stopping pid $pid, left behind" >&2
            kill -TERM "$pid" 2>/dev/null || true
        done
        for ((i = 0; i < 50; i++)); do
            [[ -z $(leftovers) ]] && break
            sleep 0.1
        done
        for pid in $(leftovers); do kill -KILL "$pid" 2>/dev/null || true; done
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

deps_install "${DEPS_BUILD[@]}" curl python3 procps
if [[ $BACKEND == nginx ]]; then bench_find_nginx; fi
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-bench-ondemand.XXXXXX")
# nginx's workers run as an unprivileged user: let them reach the files.
chmod 755 "$TMP"
bench_build_release "$BUILD" "$TMP/build.log"

# json_argv ARG...: ARGs as a JSON array of strings, which is also a YAML flow sequence:
# the manifest's command and the helper's read the same text.
json_argv() {
    "$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"
}

# backend_service NAME PORT EXTRA: the service NAME in $TMP/services/NAME on PORT, with
# the manifest lines EXTRA; its command is also written to $TMP/spec (NAME PORT ARGV).
backend_service() {
    local name=$1 svc_port=$2 extra=$3 dir=$TMP/$1 argv
    mkdir -p "$TMP/services/$name"
    if [[ $BACKEND == nginx ]]; then
        mkdir -p "$dir/www"
        echo ok >"$dir/www/health"
        echo "$name" >"$dir/www/echo"
        chmod -R a+rX "$dir"
        bench_nginx_conf "$dir" "$svc_port" "        root $dir/www;"
        argv=$(json_argv "$NGINX" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log")
    else
        mkdir -p "$dir"
        argv=$(json_argv "$PY" "$REPO/tests/fixtures/upstream.py" --port "$svc_port" --tag "$dir/")
    fi
    cat >"$TMP/services/$name/service.yaml" <<EOT
name: $name
description: the $BACKEND backend $name of bench/ondemand.sh
driver: process
ports: ["$svc_port"]
command: $argv
stop_timeout: 5s
health:
  path: /health
  interval: 2s
  timeout: 1s
  start_period: 10s
$extra
EOT
    printf '%s %s %s\n' "$name" "$svc_port" "$argv" >>"$TMP/spec"
}

# Ports outside the kernel's ephemeral range: the pollers (the helper's and the daemon's
# health probes) connect to a port before anything listens on it.
read -r port_backend port_a port_b < <("$PY" -c 'from benchlib import free_ports; free_ports(3)') ||
    die "no free ports"
mkdir -p "$TMP/state"
: >"$TMP/spec"
backend_service backend "$port_backend" ""
backend_service a "$port_a" "gpu_required: true
priority: 0"
backend_service b "$port_b" "gpu_required: true
priority: 5"
# The default box, whatever the machine: one GPU of unknown size.
cat >"$TMP/nanny.yaml" <<EOT
nvml_library: ""
nvidia_smi: ""
EOT

bench_serve "$TMP/services" "$TMP/state" --config "$TMP/nanny.yaml" --stop-services-on-exit

# --- the helper: every timing, in one Python process (standard library) ----------------
# Each wait has a deadline; it prints every run on stdout and the figures, "KEY VALUE" a
# line, into the file named by its last argument.
cat >"$TMP/ondemand.py" <<'PY'
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from benchlib import HOST, fail

daemon_port, runs, backend, spec_file, out_file = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
DEADLINE = 15.0  # seconds: the longest any one wait (a start: start_period 10 s) may take
POLL = 0.001     # seconds between two polls of a backend run alone
SETTLE = 0.05    # seconds of quiet before each timed step

svcs = {}
with open(spec_file) as f:
    for line in f:
        name, port, argv = line.rstrip("\n").split(" ", 2)
        svcs[name] = {"port": int(port), "argv": json.loads(argv),
                      "dir": os.path.join(os.path.dirname(spec_file), "services", name)}
# The environment the daemon gives a process service (README: PATH, LANG, HOME).
ENV = {k: os.environ[k] for k in ("PATH", "LANG", "HOME") if k in os.environ}


def ms(ns):
    return ns / 1e6


def api(method, path, expect=200):
    """One call to the daemon on a new connection; returns (ms from the send to the whole
    answer, the answer's JSON)."""
    conn = http.client.HTTPConnection(HOST, daemon_port, timeout=DEADLINE)
    try:
        conn.connect()
        t0 = time.monotonic_ns()
        conn.request(method, path, body=b"" if method == "POST" else None)
        r = conn.getresponse()
        body = r.read()
        t1 = time.monotonic_ns()
    except (OSError, http.client.HTTPException) as e:
        fail(f"{method} {path}: {e}")
    finally:
        conn.close()
    if r.status != expect:
        fail(f"{method} {path} answered {r.status}: {body[:300]!r}")
    try:
        return ms(t1 - t0), json.loads(body)
    except ValueError:
        fail(f"{method} {path} answered no JSON: {body[:300]!r}")


def state(name):
    return api("GET", f"/services/{name}/status")[1]["state"]


def expect_states(when, **want):
    for name, st in want.items():
        got = state(name)
        if got != st:
            fail(f"{when}: {name} is {got}, not {st}")


def get(port, path, deadline, poll=False):
    """GET path on a new connection to port (Connection: close, read to the end). Returns
    (ns at the send, ns at the answer's first byte, status, body), or None when the
    connection is refused (and, with poll, when it breaks: the next poll tries again)."""
    try:
        s = socket.create_connection((HOST, port), timeout=max(0.001, deadline - time.monotonic()))
    except OSError:
        return None
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        t0 = time.monotonic_ns()
        s.sendall(req.encode())
        data = s.recv(65536)
        t1 = time.monotonic_ns()
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("the answer did not end in time")
            s.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        if poll and time.monotonic() < deadline:
            return None
        fail(f"GET {path} on port {port}: {e}")
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        if poll:
            return None
        fail(f"GET {path} on port {port}: no HTTP answer: {data[:200]!r}")
    return t0, t1, status, body


def port_refuses(port, deadline):
    while time.monotonic() < deadline:
        s = socket.socket()
        s.settimeout(1.0)
        try:
            if s.connect_ex((HOST, port)) != 0:
                return True
        finally:
            s.close()
        time.sleep(0.01)
    return False


def alone(name):
    """Runs name's command as the daemon would (argv, folder, environment), without it;
    polls GET /health every POLL until 200. Returns ms from the spawn to that answer's
    first byte. The process group is then ended (SIGTERM, SIGKILL after 5 s)."""
    svc = svcs[name]
    if not port_refuses(svc["port"], time.monotonic() + DEADLINE):
        fail(f"something answers on {name}'s port {svc['port']} before its run alone")
    log = open(os.path.join(os.path.dirname(spec_file), f"{name}.alone.log"), "ab")
    t0 = time.monotonic_ns()
    p = subprocess.Popen(svc["argv"], cwd=svc["dir"], env=ENV, stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            got = get(svc["port"], "/health", deadline, poll=True)
            if got and got[2] == 200:
                took = ms(got[1] - t0)
                break
            if p.poll() is not None:
                fail(f"{name} run alone exited ({p.returncode}) before /health answered 200")
            if time.monotonic() > deadline:
                fail(f"{name} run alone: /health did not answer 200 within {DEADLINE:.0f} s")
            time.sleep(POLL)
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        log.close()
    # Its group (nginx's worker) must be gone before the daemon starts the same command.
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            fail(f"{name} run alone: its processes are still there {DEADLINE:.0f} s after SIGTERM")
        time.sleep(0.005)
    if not port_refuses(svc["port"], time.monotonic() + DEADLINE):
        fail(f"{name} run alone: its port still answers after it ended")
    return took


def proxied(name):
    """GET /s/NAME/echo through the daemon; returns ms from the send to the first byte."""
    got = get(daemon_port, f"/s/{name}/echo", time.monotonic() + DEADLINE)
    if got is None:
        fail("the daemon refuses connections")
    t0, t1, status, body = got
    if status != 200:
        fail(f"GET /s/{name}/echo answered {status}: {body[:300]!r}")
    marker = f"{name}\n".encode() if backend == "nginx" else b'"path": "/echo"'
    if marker not in body:
        fail(f"GET /s/{name}/echo answered 200 with another body: {body[:300]!r}")
    return ms(t1 - t0)


def cold_run():
    """(backend alone, the cold GET through the daemon), in ms."""
    expect_states("before a cold run", backend="stopped")
    time.sleep(SETTLE)
    direct = alone("backend")
    time.sleep(SETTLE)
    cold = proxied("backend")
    expect_states("after the cold GET", backend="running")
    api("POST", "/services/backend/stop")
    expect_states("after POST /services/backend/stop", backend="stopped")
    return direct, cold


def a_running():
    """Back to a running, b stopped."""
    api("POST", "/services/b/stop")
    api("POST", "/services/a/start?wait=healthy")
    expect_states("before a swap run", a="running", b="stopped")


def swap_run():
    """(a's stop alone, b alone, the swapping GET), in ms."""
    a_running()
    time.sleep(SETTLE)
    stop, st = api("POST", "/services/a/stop")
    if st.get("state") != "stopped":
        fail(f"POST /services/a/stop answered with a {st.get('state')}")
    time.sleep(SETTLE)
    direct = alone("b")
    a_running()
    time.sleep(SETTLE)
    swap = proxied("b")
    expect_states("after the swapping GET", a="stopped", b="running")
    return stop, direct, swap


health = api("GET", "/health")[1]
mode = (health.get("process") or {}).get("mode", "?")
print(f"process services run in {mode} mode")

print(f"cold start: 1 unmeasured round, then {runs} runs ...", flush=True)
cold_run()
direct, cold = [], []
for i in range(1, runs + 1):
    d, c = cold_run()
    direct.append(d)
    cold.append(c)
    print(f"  cold run {i:2d}: backend alone healthy after {d:7.2f} ms; "
          f"GET /s/backend/echo first byte after {c:7.2f} ms ({c - d:+7.2f} ms)", flush=True)

print(f"swap a -> b: 1 unmeasured round, then {runs} runs ...", flush=True)
swap_run()
stops, bstarts, swaps = [], [], []
for i in range(1, runs + 1):
    s, b, w = swap_run()
    stops.append(s)
    bstarts.append(b)
    swaps.append(w)
    print(f"  swap run {i:2d}: POST /services/a/stop {s:7.2f} ms + b alone healthy {b:7.2f} ms "
          f"= {s + b:7.2f} ms; GET /s/b/echo first byte after {w:7.2f} ms ({w - s - b:+7.2f} ms)",
          flush=True)
api("POST", "/services/b/stop")

med = statistics.median
fig = {
    "mode": mode,
    "direct_median": med(direct), "direct_max": max(direct),
    "cold_median": med(cold), "cold_max": max(cold),
    "cold_added": med(cold) - med(direct),
    "cold_pairs": med([c - d for c, d in zip(cold, direct)]),
    "stop_median": med(stops), "stop_max": max(stops),
    "bstart_median": med(bstarts), "bstart_max": max(bstarts),
    "swap_median": med(swaps), "swap_max": max(swaps),
    "swap_ref": med(stops) + med(bstarts),
    "swap_added": med(swaps) - med(stops) - med(bstarts),
    "swap_runs": med([w - s - b for s, b, w in zip(stops, bstarts, swaps)]),
}
with open(out_file, "w") as f:
    for k, v in fig.items():
        f.write(f"{k} {v:.2f}\n" if isinstance(v, float) else f"{k} {v}\n")
PY

echo "on-demand benchmark: $RUNS runs, backend $BACKEND, daemon on $DAEMON"
timeout -k 5 $((120 + RUNS * 60)) "$PY" "$TMP/ondemand.py" "$port" "$RUNS" "$BACKEND" \
    "$TMP/spec" "$TMP/figures" || die "the measure failed"
kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died during the runs"

# --- report ---------------------------------------------------------------------------
declare -A fig
while read -r key value; do fig[$key]=$value; done <"$TMP/figures"

echo
echo "Service Nanny on-demand benchmark: $(nproc) cores, $(uname -r)"
echo "daemon:  $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')," \
    "process services in ${fig[mode]} mode"
if [[ $BACKEND == nginx ]]; then
    echo "backend: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, serving small files"
else
    echo "backend: tests/fixtures/upstream.py ($("$PY" --version 2>&1))"
fi
echo
printf '%-44s %5s %10s %10s %11s %10s  %-9s %s\n' figure runs median max reference added target verdict
verdict=met
# row LABEL MEDIAN MAX REFERENCE ADDED TARGET: one judged row (ADDED <= TARGET).
row() {
    local v=met
    awk -v a="$5" -v t="$6" 'BEGIN { exit !(a <= t) }' || v="NOT met"
    [[ $v == met ]] || verdict="NOT met"
    printf '%-44s %5s %7s ms %7s ms %8s ms %+7.2f ms  <= %s ms  %s\n' "$1" "$RUNS" "$2" "$3" "$4" "$5" "$6" "$v"
}
# info LABEL MEDIAN MAX: a row that is not judged.
info() {
    printf '%-44s %5s %7s ms %7s ms\n' "$1" "$RUNS" "$2" "$3"
}
row "cold start: GET /s/backend/echo, first byte" "${fig[cold_median]}" "${fig[cold_max]}" \
    "${fig[direct_median]}" "${fig[cold_added]}" "$TARGET_COLD_MS"
info "  reference: backend alone, spawn to 200" "${fig[direct_median]}" "${fig[direct_max]}"
printf '%-44s %5s %+7.2f ms\n' "  median of the runs' differences" "$RUNS" "${fig[cold_pairs]}"
row "swap a -> b: GET /s/b/echo, first byte" "${fig[swap_median]}" "${fig[swap_max]}" \
    "${fig[swap_ref]}" "${fig[swap_added]}" "$TARGET_SWAP_MS"
info "  reference: POST /services/a/stop alone" "${fig[stop_median]}" "${fig[stop_max]}"
info "  reference: + b alone, spawn to 200" "${fig[bstart_median]}" "${fig[bstart_max]}"
printf '%-44s %5s %+7.2f ms\n' "  median of the runs' differences" "$RUNS" "${fig[swap_runs]}"
echo
echo "targets (the daemon adds <= $TARGET_COLD_MS ms to a cold start, <= $TARGET_SWAP_MS ms to a swap): $verdict"
