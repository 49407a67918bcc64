#!/usr/bin/env bash
# Benchmarks the compose driver against plain docker-compose in the same run:
#   1. start: 10 times each, alternating (the order flips every pair), a start through the
#      daemon (POST /services/NAME/start, which answers once `docker-compose up -d` has
#      returned) and a start by hand (`docker-compose -p REF up -d` in the same folder).
#      Each is timed from the send (or the spawn) until both the answer (or the command's
#      exit) came and the engine lists the project's container as running; then the
#      service is taken down (POST stop, or `docker-compose down`). It prints the medians
#      and the ratio daemon / by hand.
#   2. kill detection: 10 times, `docker kill` of the service's container while a poller
#      asks GET /services/NAME/status every 1 ms on one kept-alive connection, until the
#      state is not `running` (at most 5 s). It prints the time from just before the kill
#      to that answer, the time `docker kill` itself took, the difference (detection after
#      the kill returned) and the time from the engine's `die` event to that answer. The
#      service is started again through the API (?wait=healthy) between the runs.
# See bench/README.md.
#
# Usage: bench/compose.sh   (env: BENCH_START_RUNS=10 BENCH_KILL_RUNS=10, and
#                           BENCH_BIN=path/to/nanny to skip the build; testsvc-static is
#                           taken from the same folder)
# Builds a release build (build-release), a FROM scratch image of testsvc-static
# (nanny-bench:PID), one compose service in a temp folder (host network, init, a free
# loopback port) and runs the daemon on a free loopback port. Needs a Docker engine: the
# one at $DOCKER_HOST (a unix socket) or /var/run/docker.sock; when none answers, dockerd
# is started and stopped again at the end. Traffic goes to 127.0.0.1 (and the engine's
# socket) only; every wait is bounded; on exit the daemon is stopped, both compose
# projects are taken down, and the image and the temp folder are removed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=scripts/dockerd.sh
. "$REPO/scripts/dockerd.sh"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

START_RUNS=${BENCH_START_RUNS:-10}
KILL_RUNS=${BENCH_KILL_RUNS:-10}
BUILD=build-release
COMPOSE=docker-compose
STOP_TIMEOUT_S=2 # the manifest's stop_timeout, and the -t of the `down` by hand

# Targets (bench/README.md).
TARGET_START_RATIO=1.05
TARGET_KILL_MS=100

NAME="nbd$$"    # the service, and so its compose project
REF="nbr$$"     # the project of the starts by hand: as long a name, not a service
IMAGE="nanny-bench:$$"

daemon_pid=""
image_built=0
TMP=""
SVC_DIR=""

# --- the engine ---------------------------------------------------------------------------
# The daemon reads DOCKER_HOST only when it is a unix socket; so does this script.
if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix://* ]]; then
    echo "bench: ignoring DOCKER_HOST=$DOCKER_HOST: the benchmark needs an engine on a unix socket" >&2
    unset DOCKER_HOST
fi
SOCK=${DOCKER_HOST:+${DOCKER_HOST#unix://}}
SOCK=${SOCK:-/var/run/docker.sock}
export DOCKER_HOST=unix://$SOCK
unset DOCKER_CONTEXT

# --- cleanup ----------------------------------------------------------------------------------
# Sends SIGTERM to the daemon (it takes its service down: --stop-services-on-exit) and
# waits up to 30 s (a compose down), then SIGKILL.
stop_daemon() {
    local i
    if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$daemon_pid" 2>/dev/null; then
            echo "bench: the daemon did not exit within 30 s of SIGTERM; killing it" >&2
            kill -KILL "$daemon_pid" 2>/dev/null || true
        fi
        wait "$daemon_pid" 2>/dev/null || true
    fi
    daemon_pid=""
}

# The ids of every container (running or not) of compose project $1.
project_containers() {
    timeout -k 5 30 docker ps -aq --filter "label=com.docker.compose.project=$1" 2>/dev/null || true
}

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local project ids
    stop_daemon
    if [[ -n $SVC_DIR && -d $SVC_DIR ]]; then
        for project in "$NAME" "$REF"; do
            if [[ -n $(project_containers "$project") ]]; then
                (cd "$SVC_DIR" && timeout -k 5 60 "$COMPOSE" -p "$project" down -t 1 \
                    >/dev/null 2>&1) || true
            fi
            ids=$(project_containers "$project")
            if [[ -n $ids ]]; then
                echo "bench: removing containers of $project left behind" >&2
                # shellcheck disable=SC2086 # ids, one a word
                timeout -k 5 30 docker rm -f $ids >/dev/null 2>&1 || true
            fi
        done
    fi
    if ((image_built)); then
        timeout -k 5 30 docker rmi -f "$IMAGE" >/dev/null 2>&1 ||
            echo "bench: could not remove the image $IMAGE" >&2
    fi
    dockerd_stop
    if [[ -n $TMP ]]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages, engine, build ------------------------------------------------------------------
deps_install "${DEPS_BUILD[@]}" curl python3 procps docker.io docker-compose busybox-static
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
command -v "$COMPOSE" >/dev/null || die "$COMPOSE is missing"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-compose.XXXXXX")

if docker_answers; then
    engine_note="already running, left running"
else
    echo "no Docker engine answers at $SOCK: starting dockerd (log: $TMP/dockerd.log) ..."
    dockerd_args=()
    if [[ $SOCK != /var/run/docker.sock ]]; then dockerd_args=(-H "unix://$SOCK"); fi
    dockerd_start "$TMP/dockerd.log" "${dockerd_args[@]}" ||
        die "dockerd did not answer within ${DOCKERD_START_TIMEOUT} s"
    engine_note="started by this script (pid $dockerd_pid), stopped at the end"
fi
engine_version=$(timeout -k 5 20 docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')

if [[ -n ${BENCH_BIN:-} ]]; then
    BIN=$(realpath "$BENCH_BIN")
    TESTSVC_STATIC=$(dirname "$BIN")/testsvc-static
    BUILD="BENCH_BIN"
else
    echo "building $BUILD (release) ..."
    if ! deps_meson_setup "$BUILD" -Dbuildtype=release -Db_ndebug=true >"$TMP/build.log" 2>&1 ||
        ! ninja -C "$BUILD" nanny testsvc-static >>"$TMP/build.log" 2>&1; then
        cat "$TMP/build.log" >&2
        die "the release build failed"
    fi
    BIN=$REPO/$BUILD/nanny
    TESTSVC_STATIC=$REPO/$BUILD/testsvc-static
fi
[[ -x $TESTSVC_STATIC ]] ||
    die "the static test service $TESTSVC_STATIC is missing (ninja -C DIR testsvc-static)"
"$BIN" serve --help 2>&1 | grep -q -- --docker-host ||
    die "$BIN has no --docker-host flag: not a build with the compose driver"

echo "building the image $IMAGE (FROM scratch, testsvc-static) ..."
mkdir -p "$TMP/image"
cp "$TESTSVC_STATIC" "$TMP/image/testsvc"
printf 'FROM scratch\nCOPY testsvc /testsvc\nENTRYPOINT ["/testsvc"]\n' >"$TMP/image/Dockerfile"
image_built=1
timeout -k 5 120 docker build -q --label nanny-bench=1 -t "$IMAGE" "$TMP/image" \
    >"$TMP/image.log" 2>&1 || {
    cat "$TMP/image.log" >&2
    die "docker build of $IMAGE failed"
}

# --- the helper -----------------------------------------------------------------------------------
# Everything timed is done here, standard library only: one run per call, one line of
# figures on stdout, or a message on stderr and exit 1. The daemon is reached on
# 127.0.0.1, the engine on its unix socket; every wait has a deadline.
cat >"$TMP/compose.py" <<'PY'
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from benchlib import HOST, Daemon, fail, free_ports

STEP_DEADLINE = 60.0  # seconds: one start, one stop, one compose command
KILL_DEADLINE = 5.0   # seconds: the kill's detection
POLL = 0.001          # seconds between two polls of the daemon
ENGINE_POLL = 0.002   # seconds between two polls of the engine
PROJECT_LABEL = "com.docker.compose.project"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Engine:
    """The Docker Engine API on its unix socket, one kept-alive connection."""

    def __init__(self, sock):
        self.sock = sock
        self.conn = UnixHTTP(sock, 10.0)

    def get(self, path):
        try:
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            fail(f"engine GET {path}: {e}")
        if r.status != 200:
            fail(f"engine GET {path} answered {r.status}: {body[:300]!r}")
        return json.loads(body)

    def containers(self, project, running_only):
        f = {"label": [f"{PROJECT_LABEL}={project}"]}
        if running_only:
            f["status"] = ["running"]
        q = urllib.parse.urlencode({"all": "1", "filters": json.dumps(f)})
        return self.get(f"/containers/json?{q}")

    def die_time(self, cid, since):
        """Unix seconds (float) of the engine's die event of container cid after since."""
        f = {"container": [cid], "event": ["die"]}
        q = urllib.parse.urlencode({"since": f"{since:.6f}", "until": f"{time.time() + 1:.6f}",
                                    "filters": json.dumps(f)})
        conn = UnixHTTP(self.sock, 10.0)
        try:
            conn.request("GET", f"/events?{q}")
            body = conn.getresponse().read()
        except (OSError, http.client.HTTPException) as e:
            fail(f"engine GET /events: {e}")
        finally:
            conn.close()
        for line in body.decode().splitlines():
            if line.strip():
                return json.loads(line)["timeNano"] / 1e9
        return None


def first_container_running(engine, project, deadline, out):
    """Polls the engine every ENGINE_POLL until a container of project runs."""
    while time.monotonic() < deadline and not out.get("stop"):
        if engine.containers(project, True):
            out["mono"] = time.monotonic()
            return
        time.sleep(ENGINE_POLL)


def proc_ended(pid):
    """True when process pid is gone or a zombie (it exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def compose_child_end(dpid, deadline, out):
    """Finds the daemon's `up` child (from /proc/DPID/task/*/children) and polls it every
    POLL until it exits: the moment the daemon's `up -d` returned."""
    pid = None
    while pid is None and time.monotonic() < deadline and not out.get("stop"):
        try:
            tasks = os.listdir(f"/proc/{dpid}/task")
        except OSError:
            return
        for t in tasks:
            try:
                with open(f"/proc/{dpid}/task/{t}/children") as f:
                    kids = f.read().split()
            except OSError:
                continue
            for k in kids:
                try:
                    with open(f"/proc/{k}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if b"up" in argv:
                    pid = k
        if pid is None:
            time.sleep(POLL)
    if pid is None:
        return
    out["pid"] = pid
    while time.monotonic() < deadline:
        if proc_ended(pid):
            out["mono"] = time.monotonic()
            return
        time.sleep(POLL)


def wait_gone(engine, project):
    """Until the engine lists no container of project at all (down removes them)."""
    deadline = time.monotonic() + STEP_DEADLINE
    while engine.containers(project, False):
        if time.monotonic() > deadline:
            fail(f"containers of {project} are still there {STEP_DEADLINE:.0f} s after the down")
        time.sleep(0.01)


def timed_start(engine, project, start, dpid=None):
    """Runs start() (it returns when the start is answered) with the engine poller beside
    it, and with dpid, a watcher of the daemon's `up` child. Returns the ms, from just
    before start() began, to: the answer, the end of the compose command (the answer's
    time when it is start() itself), the container running, and all three done."""
    if engine.containers(project, False):
        fail(f"{project} has containers before the run")
    out, child = {}, {}
    t0 = time.monotonic()
    deadline = t0 + STEP_DEADLINE
    threads = [threading.Thread(target=first_container_running,
                                args=(engine, project, deadline, out))]
    if dpid:
        threads.append(threading.Thread(target=compose_child_end, args=(dpid, deadline, child)))
    for th in threads:
        th.start()
    try:
        start()
    except BaseException:
        out["stop"] = child["stop"] = True
        for th in threads:
            th.join(STEP_DEADLINE)
        raise
    t_answer = time.monotonic()
    # The container runs once up -d returned: the pollers have a bounded while more.
    for th in threads:
        th.join(STEP_DEADLINE)
    out["stop"] = child["stop"] = True
    if "mono" not in out:
        fail(f"no container of {project} ran within {STEP_DEADLINE:.0f} s")
    t_up = t_answer
    if dpid:
        if "mono" not in child:
            fail(f"the daemon's up -d child was {'not seen' if 'pid' not in child else 'not done'}")
        t_up = child["mono"]
    ms = lambda t: (t - t0) * 1000
    return ms(t_answer), ms(t_up), ms(out["mono"]), ms(max(t_answer, t_up, out["mono"]))


def start_daemon(daemon_port, sock, name, dpid):
    """One start through the daemon: prints answer_ms up_ms running_ms done_ms down_ms
    state (the answer's)."""
    d = Daemon(daemon_port, STEP_DEADLINE)
    engine = Engine(sock)
    st = d.status(name)
    if st["state"] not in ("stopped", "failed"):
        fail(f"{name} is {st['state']} before the run")
    answer = {}

    def start():
        answer["st"] = json.loads(d.call("POST", f"/services/{name}/start")[1])

    a, u, r, done = timed_start(engine, name, start, dpid)
    t1 = time.monotonic()
    st = json.loads(d.call("POST", f"/services/{name}/stop")[1])
    down = (time.monotonic() - t1) * 1000
    if st["state"] != "stopped":
        fail(f"the stop answered with {name} {st['state']} ({st.get('last_error')!r})")
    wait_gone(engine, name)
    print(f"{a:.1f} {u:.1f} {r:.1f} {done:.1f} {down:.1f} {answer['st']['state']}")


def compose(argv, folder, what):
    try:
        p = subprocess.run(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=STEP_DEADLINE)
    except subprocess.TimeoutExpired:
        fail(f"{what} did not end within {STEP_DEADLINE:.0f} s")
    if p.returncode != 0:
        fail(f"{what} exited {p.returncode}: {p.stderr[-500:]!r}")


def start_raw(sock, compose_cmd, project, folder, stop_timeout):
    """One start by hand: prints up_ms up_ms running_ms done_ms down_ms (the first two
    the same: the command's return is its answer)."""
    engine = Engine(sock)
    argv = compose_cmd.split() + ["-p", project]
    a, u, r, done = timed_start(engine, project,
                                lambda: compose(argv + ["up", "-d"], folder, "up -d"))
    t1 = time.monotonic()
    compose(argv + ["down", "-t", stop_timeout], folder, "down")
    down = (time.monotonic() - t1) * 1000
    wait_gone(engine, project)
    print(f"{a:.1f} {u:.1f} {r:.1f} {done:.1f} {down:.1f}")


def status_poller(d, name, deadline, ready, out):
    """Polls the daemon every POLL until name is not running; sets ready after the first
    answer (which must say running)."""
    first = True
    while time.monotonic() < deadline:
        st = d.status(name)
        now_m, now_w = time.monotonic(), time.time()
        if st["state"] != "running":
            if first:
                out["early"] = st
                ready.set()
                return
            out["mono"], out["wall"], out["st"] = now_m, now_w, st
            return
        if first:
            first = False
            ready.set()
        time.sleep(POLL)


def kill(daemon_port, sock, name):
    """One kill: prints kill_cmd_ms seen_ms detect_ms die_to_seen_ms state."""
    d = Daemon(daemon_port, STEP_DEADLINE)
    engine = Engine(sock)
    st = d.status(name)
    if st["state"] != "running":
        # Started again after the last kill; ?wait=healthy answers once it is running.
        if st["state"] not in ("stopped", "failed"):
            fail(f"{name} is {st['state']} before the run")
        st = json.loads(d.call("POST", f"/services/{name}/start?wait=healthy")[1])
        if st["state"] != "running":
            st = d.status(name)
        if st["state"] != "running":
            fail(f"{name} is {st['state']} after a start with wait=healthy")
    cs = engine.containers(name, True)
    if len(cs) != 1:
        fail(f"{name} has {len(cs)} running containers, not 1")
    cid = cs[0]["Id"]
    probe = Daemon(daemon_port, STEP_DEADLINE)
    out, ready = {}, threading.Event()
    since = time.time() - 1
    th = threading.Thread(target=status_poller,
                          args=(probe, name, time.monotonic() + 2 * KILL_DEADLINE, ready, out))
    th.start()
    if not ready.wait(KILL_DEADLINE) or "early" in out:
        th.join(KILL_DEADLINE)
        fail(f"the poller did not see {name} running: {out.get('early')}")
    t0 = time.monotonic()
    try:
        p = subprocess.run(["docker", "kill", cid], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           timeout=KILL_DEADLINE)
    except subprocess.TimeoutExpired:
        fail(f"docker kill did not return within {KILL_DEADLINE:.0f} s")
    t_kill = time.monotonic()
    if p.returncode != 0:
        fail(f"docker kill exited {p.returncode}: {p.stderr[-300:]!r}")
    th.join(t0 + KILL_DEADLINE + 1 - time.monotonic())
    if "mono" not in out or out["mono"] - t0 > KILL_DEADLINE:
        fail(f"the daemon still says {name} is running {KILL_DEADLINE:.0f} s after docker kill")
    die = engine.die_time(cid, since)
    die_to_seen = (out["wall"] - die) * 1000 if die else float("nan")
    print(f"{(t_kill - t0) * 1000:.1f} {(out['mono'] - t0) * 1000:.1f} "
          f"{(out['mono'] - t_kill) * 1000:.1f} {die_to_seen:.1f} {out['st']['state']}")



if __name__ == "__main__":
    sys.setswitchinterval(0.0005)
    cmd = sys.argv[1]
    if cmd == "ports":
        free_ports(int(sys.argv[2]))
    elif cmd == "start-daemon":
        start_daemon(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "start-raw":
        start_raw(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    elif cmd == "kill":
        kill(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        fail(f"unknown command {cmd}")
PY

# --- the service -------------------------------------------------------------------------------
SVC_DIR=$TMP/services/$NAME
mkdir -p "$SVC_DIR" "$TMP/state"
read -r svc_port < <("$PY" "$TMP/compose.py" ports 1) || die "no free port"
cat >"$SVC_DIR/docker-compose.yml" <<EOF
services:
  app:
    image: "$IMAGE"
    network_mode: host
    init: true
    command: ["--port", "$svc_port"]
EOF
cat >"$SVC_DIR/service.yaml" <<EOF
name: $NAME
description: testsvc in a FROM scratch container (bench/compose.sh)
driver: compose
ports: ["$svc_port"]
health:
  path: /health
  interval: 5s
  timeout: 2s
  start_period: 30s
stop_timeout: ${STOP_TIMEOUT_S}s
restart: "no"
EOF

# --- the daemon ----------------------------------------------------------------------------------
"$BIN" serve --listen 127.0.0.1:0 --services "$TMP/services" --state-dir "$TMP/state" \
    --docker-host "$SOCK" --compose-command "$COMPOSE" --stop-services-on-exit \
    </dev/null >"$TMP/daemon.log" 2>&1 &
daemon_pid=$!

port=$(bench_daemon_port "$TMP/daemon.log" "$daemon_pid")
[[ -n $port ]] || die "the daemon did not log 'listening on http://127.0.0.1:PORT' within 10 s"
DAEMON=http://127.0.0.1:$port
bench_wait_health "$DAEMON" "$daemon_pid" ||
    die "GET $DAEMON/health does not answer 2xx within 10 s"
curl -fsS --max-time 2 "$DAEMON/services/$NAME/status" >"$TMP/status.json" ||
    die "GET /services/$NAME/status failed"
"$PY" -c 'import json, sys
st = json.load(open(sys.argv[1]))
ok = st["manifest_error"] is None and st["state"] == "stopped" and st["driver"] == "compose"
sys.exit(0 if ok else 1)' "$TMP/status.json" ||
    die "$NAME is not a stopped, valid compose service: $(cat "$TMP/status.json")"

# stats FILE COLUMN [DECIMALS]: prints "median max" of the column (1-based) of FILE.
stats() {
    sort -g -k"$2,$2" "$1" | awk -v c="$2" -v d="${3:-1}" '
        { v[NR] = $c }
        END {
            if (NR == 0) exit 1
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.*f %.*f\n", d, med, d, v[NR]
        }'
}

# --- 1. start ----------------------------------------------------------------------------------
# Columns of both files: answer_ms up_ms running_ms done_ms down_ms (see compose.py).
start_daemon() {
    timeout -k 5 150 "$PY" "$TMP/compose.py" start-daemon "$port" "$SOCK" "$NAME" "$daemon_pid"
}
start_raw() {
    timeout -k 5 150 "$PY" "$TMP/compose.py" start-raw "$SOCK" "$COMPOSE" "$REF" "$SVC_DIR" \
        "$STOP_TIMEOUT_S"
}
echo "start: $START_RUNS starts through the daemon and $START_RUNS by hand ($COMPOSE -p $REF" \
    "up -d), alternating, each then taken down; one unmeasured warm-up of each first ..."
start_daemon >/dev/null || die "the warm-up start through the daemon failed"
start_raw >/dev/null || die "the warm-up start by hand failed"
: >"$TMP/start-daemon.txt"
: >"$TMP/start-raw.txt"
for ((run = 1; run <= START_RUNS; run++)); do
    if ((run % 2)); then order="daemon raw"; else order="raw daemon"; fi
    for who in $order; do
        if [[ $who == daemon ]]; then
            line=$(start_daemon) || die "start run $run through the daemon failed"
            read -r a u r d down s <<<"$line"
            printf '  run %2d daemon:  answer %6.1f ms (%s), its up -d ended %6.1f ms,' \
                "$run" "$a" "$s" "$u"
            printf ' container running %6.1f ms, done %6.1f ms; POST stop %6.1f ms\n' \
                "$r" "$d" "$down"
            echo "$line" >>"$TMP/start-daemon.txt"
        else
            line=$(start_raw) || die "start run $run by hand failed"
            read -r a u r d down <<<"$line"
            printf '  run %2d by hand:                       up -d returned %6.1f ms,' \
                "$run" "$u"
            printf ' container running %6.1f ms, done %6.1f ms; down -t %s  %6.1f ms\n' \
                "$r" "$d" "$STOP_TIMEOUT_S" "$down"
            echo "$line" >>"$TMP/start-raw.txt"
        fi
    done
done
read -r sd_answer _ < <(stats "$TMP/start-daemon.txt" 1)
read -r sd_up _ < <(stats "$TMP/start-daemon.txt" 2)
read -r sd_running _ < <(stats "$TMP/start-daemon.txt" 3)
read -r sd_done sd_done_max < <(stats "$TMP/start-daemon.txt" 4)
read -r sd_down _ < <(stats "$TMP/start-daemon.txt" 5)
read -r sr_up _ < <(stats "$TMP/start-raw.txt" 2)
read -r sr_running _ < <(stats "$TMP/start-raw.txt" 3)
read -r sr_done sr_done_max < <(stats "$TMP/start-raw.txt" 4)
read -r sr_down _ < <(stats "$TMP/start-raw.txt" 5)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }'; }
done_ratio=$(ratio "$sd_done" "$sr_done")
up_ratio=$(ratio "$sd_up" "$sr_up")
running_ratio=$(ratio "$sd_running" "$sr_running")
down_ratio=$(ratio "$sd_down" "$sr_down")
# The median of the ratios of the runs of one pair (measured back to back, so under the
# same load): steadier than the ratio of the medians when the machine's load changes.
paste "$TMP/start-daemon.txt" "$TMP/start-raw.txt" |
    awk '{ printf "%.4f\n", ($10 > 0) ? $4 / $10 : 0 }' >"$TMP/start-pairs.txt"
read -r pair_ratio _ < <(stats "$TMP/start-pairs.txt" 1 3)

# --- 2. kill detection ---------------------------------------------------------------------------
echo "kill: $KILL_RUNS times docker kill of $NAME's container, polling its status every 1 ms" \
    "(started again with ?wait=healthy before each) ..."
: >"$TMP/kill.txt"
for ((run = 1; run <= KILL_RUNS; run++)); do
    line=$(timeout -k 5 150 "$PY" "$TMP/compose.py" kill "$port" "$SOCK" "$NAME") ||
        die "kill run $run failed"
    read -r k seen det dts s <<<"$line"
    printf '  run %2d: docker kill took %6.1f ms, status says %s %6.1f ms after the kill began' \
        "$run" "$k" "$s" "$seen"
    printf ' (%6.1f ms after it returned, %6.1f ms after the engine'"'"'s die event)\n' \
        "$det" "$dts"
    echo "$line" >>"$TMP/kill.txt"
done
read -r k_med k_max < <(stats "$TMP/kill.txt" 1)
read -r seen_med seen_max < <(stats "$TMP/kill.txt" 2)
read -r det_med det_max < <(stats "$TMP/kill.txt" 3)
read -r dts_med dts_max < <(stats "$TMP/kill.txt" 4)

kill -0 "$daemon_pid" 2>/dev/null || die "the daemon died during the runs"
rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$daemon_pid/status")

# --- the end: the daemon takes its running service down -----------------------------------------
curl -fsS --max-time 60 -X POST -o /dev/null "$DAEMON/services/$NAME/start?wait=healthy" ||
    die "the last start of $NAME failed"
stop_daemon
left=$(project_containers "$NAME" | wc -l)
if ((left > 0)); then left_msg="$left LEFT BEHIND"; else left_msg="none"; fi

# --- report ----------------------------------------------------------------------------------------
echo
echo "Service Nanny compose benchmark: $(nproc) cores, $(uname -r)"
echo "daemon: $BIN ($BUILD), $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no commit')"
echo "engine: Docker $engine_version at $SOCK ($engine_note); $($COMPOSE version --short 2>/dev/null ||
    echo "$COMPOSE")"
echo
echo "start: from the send of POST /services/$NAME/start, or the spawn of \`$COMPOSE up -d\` by hand,"
echo "  until all of: the answer came, the \`up -d\` (the daemon's child, or the command by hand)"
echo "  returned, and the engine lists the project's container running (\"done\")"
verdict_start=met
awk -v r="$done_ratio" -v t="$TARGET_START_RATIO" 'BEGIN { exit !(r <= t) }' ||
    verdict_start="NOT met"
printf '%-40s %5s %11s %11s %11s  %-10s %s\n' measure runs daemon "by hand" ratio target verdict
printf '%-40s %5s %8s ms %8s ms %10sx  %-10s %s\n' "start, done (median)" "$START_RUNS" \
    "$sd_done" "$sr_done" "$done_ratio" "<= ${TARGET_START_RATIO}x" "$verdict_start"
printf '%-40s %5s %8s ms %8s ms\n' "  start, done (max)" "$START_RUNS" "$sd_done_max" \
    "$sr_done_max"
printf '%-40s %5s %11s %11s %10sx\n' "  start, done: median of pair ratios" \
    "$START_RUNS" "" "" "$pair_ratio"
printf '%-40s %5s %8s ms %8s ms %10sx\n' "  container running (median)" "$START_RUNS" \
    "$sd_running" "$sr_running" "$running_ratio"
printf '%-40s %5s %8s ms %8s ms %10sx\n' "  up -d returned (median)" "$START_RUNS" "$sd_up" \
    "$sr_up" "$up_ratio"
printf '%-40s %5s %8s ms %8s\n' "  the POST's answer (median)" "$START_RUNS" "$sd_answer" "-"
printf '%-40s %5s %8s ms %8s ms %10sx\n' "stop: POST stop / down -t $STOP_TIMEOUT_S (median)" \
    "$START_RUNS" "$sd_down" "$sr_down" "$down_ratio"
echo
verdict_kill=met
awk -v m="$seen_max" -v t="$TARGET_KILL_MS" 'BEGIN { exit !(m < t) }' || verdict_kill="NOT met"
printf '%-52s %5s %11s %11s  %-18s %s\n' "kill detection" runs median max target verdict
printf '%-52s %5s %8s ms %8s ms  %-18s %s\n' "docker kill begins -> status not running" \
    "$KILL_RUNS" "$seen_med" "$seen_max" "every run < $TARGET_KILL_MS ms" "$verdict_kill"
printf '%-52s %5s %8s ms %8s ms\n' "  docker kill itself (until it returned)" "$KILL_RUNS" \
    "$k_med" "$k_max"
printf '%-52s %5s %8s ms %8s ms\n' "  docker kill returned -> status not running" \
    "$KILL_RUNS" "$det_med" "$det_max"
printf '%-52s %5s %8s ms %8s ms\n' "  engine's die event -> status not running" "$KILL_RUNS" \
    "$dts_med" "$dts_max"
echo
echo "daemon VmRSS after the runs: $rss kB"
echo "containers of $NAME left after the daemon's exit (--stop-services-on-exit): $left_msg"
if [[ $left_msg != none ]]; then
    die "the daemon left containers running"
fi
