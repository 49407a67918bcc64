#!/usr/bin/env bash
# Benchmarks the lifecycle: how soon the daemon reports a service running once the
# service is healthy, and how close to stop_timeout a stop of a service that ignores
# SIGTERM ends.
#
# Builds a release build (build-release: the daemon and the test service testsvc), writes
# two services in a temp folder and runs the daemon on a free loopback port with
# --stop-services-on-exit. Then:
#   1. readiness: 20 times, POST /services/ready/start (no wait) and run two pollers side by
#      side, every 1 ms: one asks the service's own GET /health until it first answers 200,
#      the other asks the daemon's GET /services/ready/status on one kept-alive connection
#      until it says running. The latency is the second moment minus the first. The
#      service (testsvc --health-after 300) turns healthy 300 ms after it starts; the
#      daemon's probe interval is 5 s, so only the fast probing while starting can see it
#      in time. The service is stopped between runs.
#   2. stop: 10 times, start `stubborn` (testsvc --ignore-sigterm, no health check,
#      stop_timeout 2s), wait until it is running and answers, then time POST
#      /services/stubborn/stop from send to answer (it answers when the group is gone).
# It prints median and max of both, and whether the targets are met. See bench/README.md.
#
# Usage: bench/lifecycle.sh   (env: BENCH_READY_RUNS=20 BENCH_STOP_RUNS=10, and
#                             BENCH_BIN=path/to/nanny to skip the build; testsvc is taken
#                             from the same folder)
# Traffic goes to 127.0.0.1 only; every wait is bounded; the daemon (which stops its
# services), any testsvc left behind and the temp folder are removed on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

READY_RUNS=${BENCH_READY_RUNS:-20}
STOP_RUNS=${BENCH_STOP_RUNS:-10}
BUILD=build-release
HEALTH_AFTER_MS=300
STOP_TIMEOUT_MS=2000

# Targets (bench/README.md).
TARGET_READY_MEDIAN_MS=20
TARGET_STOP_OVERSHOOT_MS=100

daemon_pid=""
TMP=""

# The pids of the test services this run started that are still alive: every testsvc is
# given --write-pidfile $TMP/pids/NAME.pid, so the temp folder's path is in its argv.
leftovers() {
    pgrep -f -- "--write-pidfile $TMP/pids/" || true
}

# Sends SIGTERM to the daemon (it stops its services: --stop-services-on-exit) and waits
# up to 15 s, then SIGKILL.
stop_daemon() {
    local i
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$daemon_pid" 2>/dev/null; then
            echo "bench: the daemon did not exit within 15 s of SIGTERM; killing it" >&2
            kill -KILL "$daemon_pid" 2>/dev/null || true
        fi
        wait "$daemon_pid" 2>/dev/null || true
    fi
    daemon_pid=""
}

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    stop_daemon
    if [[ -n $TMP ]]; then
        for pid in $(leftovers); do
            echo "bench: killing testsvc pid $pid, left behind" >&2
            kill -KILL "$pid" 2>/dev/null || true
        done
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages and build ------------------------------------------------------
deps_install "${DEPS_BUILD[@]}" curl python3 procps
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-lifecycle.XXXXXX")

if [[ -n ${BENCH_BIN:-} ]]; then
    # Measure a binary built elsewhere (e.g. to compare two versions).
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

# --- the pollers ---------------------------------------------------------------
# One helper for everything that needs sub-millisecond timing; standard library only.
# Each call does one run and prints one line of figures, or a message on stderr and
# exits 1. All connections go to 127.0.0.1 and every wait has a deadline.
cat >"$TMP/poll.py" <<'PY'
import http.client
import json
import socket
import sys
import threading
import time

from benchlib import HOST, Daemon, fail, free_ports

RUN_DEADLINE = 10.0  # seconds, per run
POLL = 0.001         # seconds between two polls


def first_healthy(port, deadline, out):
    """Polls GET /health of the service every POLL until it answers 200; testsvc closes
    each connection (Connection: close), so each poll is a new one."""
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                out["mono"] = time.monotonic()
                out["wall"] = time.time()
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(POLL)


def first_running(daemon, name, deadline, out):
    """Polls the daemon's status of name every POLL, on the kept-alive connection, until
    it says running."""
    while time.monotonic() < deadline:
        st = daemon.status(name)
        if st["state"] == "running":
            out["mono"] = time.monotonic()
            out["status"] = st
            return
        if st["state"] in ("failed", "stopped"):
            out["status"] = st
            return
        time.sleep(POLL)


def iso_ms(s):
    """Unix ms of the daemon's ISO times (2024-01-02T03:04:05.678Z)."""
    import calendar
    base, frac = s.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac)


def ready(daemon_port, name, svc_port):
    """One readiness run; prints: latency_ms, ms from the POST to the first 200, ms from
    the first 200 to the daemon's passing check (its checked_at, ms resolution)."""
    d = Daemon(daemon_port, RUN_DEADLINE)
    st = d.status(name)
    if st["state"] not in ("stopped", "failed"):
        fail(f"{name} is {st['state']} before the run")
    health, running = {}, {}
    t0 = time.monotonic()
    d.call("POST", f"/services/{name}/start")
    deadline = time.monotonic() + RUN_DEADLINE
    probe_conn = Daemon(daemon_port, RUN_DEADLINE)
    threads = [threading.Thread(target=first_healthy, args=(svc_port, deadline, health)),
               threading.Thread(target=first_running, args=(probe_conn, name, deadline, running))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if "mono" not in health:
        fail(f"{name}'s /health never answered 200 within {RUN_DEADLINE:.0f} s")
    if "mono" not in running:
        st = running.get("status", {})
        fail(f"the daemon never said {name} is running within {RUN_DEADLINE:.0f} s "
             f"(state {st.get('state')}, last_error {st.get('last_error')!r})")
    checked = running["status"]["health"]["checked_at"]
    check_lag = iso_ms(checked) - health["wall"] * 1000 if checked else float("nan")
    latency = (running["mono"] - health["mono"]) * 1000
    d.call("POST", f"/services/{name}/stop")
    d.wait_state(name, ("stopped",))
    print(f"{latency:.2f} {(health['mono'] - t0) * 1000:.1f} {check_lag:.0f}")


def stop(daemon_port, name, svc_port):
    """One stop run; prints: ms from sending the stop to its answer."""
    d = Daemon(daemon_port, RUN_DEADLINE)
    st = d.status(name)
    if st["state"] not in ("stopped", "failed"):
        fail(f"{name} is {st['state']} before the run")
    d.call("POST", f"/services/{name}/start")
    d.wait_state(name, ("running",))
    # Running (no health check) means spawned: wait until testsvc answers, so that it has
    # set up its SIGTERM handler.
    deadline = time.monotonic() + RUN_DEADLINE
    while True:
        try:
            c = http.client.HTTPConnection(HOST, svc_port, timeout=1.0)
            c.request("GET", "/")
            if c.getresponse().status == 200:
                c.close()
                break
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            fail(f"{name} does not answer on port {svc_port}")
        time.sleep(0.01)
    t0 = time.monotonic()
    st = json.loads(d.call("POST", f"/services/{name}/stop")[1])
    took = (time.monotonic() - t0) * 1000
    if st["state"] != "stopped":
        fail(f"the stop answered with {name} {st['state']}")
    # The service must really have ignored SIGTERM, and be gone from its port.
    _, log = d.call("GET", f"/services/{name}/logs?tail=20")
    if b"SIGTERM ignored" not in log:
        fail(f"{name}'s log has no 'SIGTERM ignored': {log[-300:]!r}")
    s = socket.socket()
    s.settimeout(1.0)
    try:
        if s.connect_ex((HOST, svc_port)) == 0:
            fail(f"something still answers on {name}'s port {svc_port} after the stop")
    finally:
        s.close()
    print(f"{took:.2f}")



if __name__ == "__main__":
    sys.setswitchinterval(0.0005)
    cmd = sys.argv[1]
    if cmd == "ports":
        free_ports(int(sys.argv[2]))
    elif cmd == "ready":
        ready(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    elif cmd == "stop":
        stop(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        fail(f"unknown command {cmd}")
PY

# --- two services ----------------------------------------------------------------
mkdir -p "$TMP/services/ready" "$TMP/services/stubborn" "$TMP/state" "$TMP/pids"
read -r ready_port stubborn_port < <("$PY" "$TMP/poll.py" ports 2) || die "no free ports"
cat >"$TMP/services/ready/service.yaml" <<EOF
name: ready
description: Healthy ${HEALTH_AFTER_MS} ms after it starts (bench/lifecycle.sh)
ports: ["$ready_port"]
driver: process
command: ["$TESTSVC", "--port", "$ready_port", "--health-after", "$HEALTH_AFTER_MS",
          "--write-pidfile", "$TMP/pids/ready.pid"]
health:
  path: /health
  interval: 5s
  timeout: 2s
  start_period: 30s
restart: "no"
EOF
cat >"$TMP/services/stubborn/service.yaml" <<EOF
name: stubborn
description: Ignores SIGTERM (bench/lifecycle.sh)
ports: ["$stubborn_port"]
driver: process
command: ["$TESTSVC", "--port", "$stubborn_port", "--ignore-sigterm",
          "--write-pidfile", "$TMP/pids/stubborn.pid"]
health: false
stop_timeout: ${STOP_TIMEOUT_MS}ms
restart: "no"
EOF

# --- the daemon ----------------------------------------------------------------
bench_serve "$TMP/services" "$TMP/state" --stop-services-on-exit
for name in ready stubborn; do
    curl -fsS --max-time 2 "$DAEMON/services/$name/status" >"$TMP/$name.json" ||
        die "GET /services/$name/status failed"
    "$PY" -c 'import json, sys
st = json.load(open(sys.argv[1]))
sys.exit(0 if st["manifest_error"] is None and st["state"] == "stopped" else 1)' \
        "$TMP/$name.json" || die "$name is not a stopped, valid service: $(cat "$TMP/$name.json")"
done

# --- 1. readiness ------------------------------------------------------------------
# stats FILE COLUMN: prints "median max" of the column (1-based) of FILE.
stats() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" '
        { v[NR] = $c }
        END {
            if (NR == 0) exit 1
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.1f %.1f\n", med, v[NR]
        }'
}

echo "readiness: $READY_RUNS starts of 'ready' (testsvc --health-after $HEALTH_AFTER_MS," \
    "health interval 5s), polling every 1 ms ..."
: >"$TMP/ready.txt"
for ((run = 1; run <= READY_RUNS; run++)); do
    line=$(timeout -k 5 40 "$PY" "$TMP/poll.py" ready "$port" ready "$ready_port") ||
        die "readiness run $run failed"
    read -r lat healthy lag <<<"$line"
    printf '  run %2d: healthy %6.1f ms after the POST, daemon says running %7.2f ms later' \
        "$run" "$healthy" "$lat"
    printf ' (its passing check at +%s ms)\n' "$lag"
    echo "$line" >>"$TMP/ready.txt"
done
read -r ready_median ready_max < <(stats "$TMP/ready.txt" 1)
read -r lag_median lag_max < <(stats "$TMP/ready.txt" 3)

# --- 2. stop of a service that ignores SIGTERM -------------------------------------------
echo "stop: $STOP_RUNS stops of 'stubborn' (testsvc --ignore-sigterm, stop_timeout" \
    "${STOP_TIMEOUT_MS} ms) ..."
: >"$TMP/stop.txt"
for ((run = 1; run <= STOP_RUNS; run++)); do
    took=$(timeout -k 5 40 "$PY" "$TMP/poll.py" stop "$port" stubborn "$stubborn_port") ||
        die "stop run $run failed"
    printf '  run %2d: POST /services/stubborn/stop answered after %8.2f ms\n' "$run" "$took"
    echo "$took" >>"$TMP/stop.txt"
done
read -r stop_median stop_max < <(stats "$TMP/stop.txt" 1)
stop_min=$(sort -g "$TMP/stop.txt" | head -n 1)

kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died during the runs"
rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$daemon_pid/status")

# --- the end: the daemon stops what runs, nothing is left ----------------------------------
# Leave 'ready' running, so that the daemon's exit has something to stop.
curl -fsS --max-time 5 -X POST -o /dev/null "$DAEMON/services/ready/start" ||
    die "the last start of 'ready' failed"
stop_daemon
mapfile -t left < <(leftovers)
if ((${#left[@]} > 0)); then
    left_msg="${#left[@]} LEFT BEHIND (pids ${left[*]})"
else
    left_msg="none"
fi

# --- report ----------------------------------------------------------------------
echo
echo "Service Nanny lifecycle benchmark: $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo
over_median=$(awk -v v="$stop_median" -v t="$STOP_TIMEOUT_MS" 'BEGIN { printf "%+.1f", v - t }')
over_max=$(awk -v v="$stop_max" -v t="$STOP_TIMEOUT_MS" 'BEGIN { printf "%+.1f", v - t }')
over_min=$(awk -v v="$stop_min" -v t="$STOP_TIMEOUT_MS" 'BEGIN { printf "%+.1f", v - t }')
verdict_ready=met
awk -v m="$ready_median" -v t="$TARGET_READY_MEDIAN_MS" 'BEGIN { exit !(m < t) }' ||
    verdict_ready="NOT met"
verdict_stop=met
awk -v lo="$over_min" -v hi="$over_max" -v t="$TARGET_STOP_OVERSHOOT_MS" \
    'BEGIN { exit !(lo >= 0 && hi <= t) }' || verdict_stop="NOT met"

printf '%-44s %5s %11s %11s  %-30s %s\n' measure runs median max target verdict
printf '%-44s %5s %8s ms %8s ms  %-30s %s\n' "readiness: first 200 -> daemon says running" \
    "$READY_RUNS" "$ready_median" "$ready_max" "median < $TARGET_READY_MEDIAN_MS ms" "$verdict_ready"
printf '%-44s %5s %8s ms %8s ms\n' "  (the same, by the daemon's checked_at)" \
    "$READY_RUNS" "$lag_median" "$lag_max"
printf '%-44s %5s %8s ms %8s ms  %-30s %s\n' "stop, SIGTERM ignored, stop_timeout 2 s" \
    "$STOP_RUNS" "$stop_median" "$stop_max" "2000 ms + 0 ... $TARGET_STOP_OVERSHOOT_MS ms" \
    "$verdict_stop"
printf '%-44s %5s %8s ms %8s ms\n' "  overshoot over the 2 s" "$STOP_RUNS" "$over_median" \
    "$over_max"
echo
echo "daemon VmRSS after the runs: $rss kB"
echo "testsvc left after the daemon's exit (--stop-services-on-exit): $left_msg"
if [[ $left_msg != none ]]; then
    die "the daemon left test services running"
fi
