"""Shared machinery for the lifecycle tests (start, stop, restart, health, logs, the GPU
rule): services that run the test service `testsvc` through the process driver, a `lab`
fixture that drives one daemon over them, and a teardown that never leaves a testsvc
behind.

Every testsvc a test starts is given `--write-pidfile WORKDIR/pids/NAME.pid`, so its
processes (and the children it forks, which share its command line) are known by that
argument: the teardown asks the daemon to stop every service, then kills by pid whatever
of this test's testsvc processes is still alive, and fails the test when a stop that
answered 200 left one behind.
"""

import concurrent.futures
import inspect
import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import HOST, free_port, http_request, nanny_binary, wait_until

# States in which a gpu_required service holds the GPU (SPEC section 3).
HOLDING = ("starting", "running", "unhealthy", "stopping")
STATES = ("stopped", "starting", "running", "unhealthy", "stopping", "failed")
STATUS_KEYS = ("name", "state", "is_healthy", "started_at", "restarts", "last_error", "health")
HEALTH_KEYS = ("ok", "status_code", "latency_ms", "checked_at", "error")

# Bounds for waiting on the daemon. Generous for the ASan build; a working daemon meets
# them with a wide margin, and a test never asserts that something was fast.
STATE_TIMEOUT = float(os.environ.get("NANNY_TEST_STATE_TIMEOUT", "10"))
WAIT_HEALTHY_HTTP_TIMEOUT = 30.0
TEARDOWN_HTTP_TIMEOUT = 10.0
GONE_TIMEOUT = 5.0

# Short health settings so that the tests run quickly.
FAST_HEALTH = {"path": "/health", "interval": "200ms", "timeout": "1s", "start_period": "5s"}

NUMBERED_LINE_RE = re.compile(r"^testsvc: (line|err) (\d+)$")


def testsvc_binary():
    """The test service, built next to the daemon (tests/fixtures/README.md)."""
    path = os.path.join(os.path.dirname(nanny_binary()), "testsvc")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"the test service {path} is missing: build it with ninja next to "
                    "NANNY_BIN", pytrace=False)
    return path


def yaml_value(v):
    """A scalar, list or mapping as YAML flow text (JSON is valid YAML flow syntax)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


class Svc:
    """One test service: its name, port, pidfile and the manifest fields it was given."""

    def __init__(self, name, port, pidfile, gpu, folder):
        self.name = name
        self.port = port
        self.pidfile = pidfile
        self.gpu = gpu
        self.folder = folder

    def get(self, path="/", timeout=5.0):
        """A request to the service itself (not through the daemon)."""
        return http_request(self.port, "GET", path, timeout=timeout)

    def own_pid(self):
        """The pid the running testsvc reports at GET /, or None when it does not answer."""
        try:
            r = self.get("/", timeout=3.0)
        except OSError:
            return None
        if r.status != 200:
            return None
        return r.json().get("pid")

    def pidfile_pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def wait_pidfile_pid(self, timeout=GONE_TIMEOUT):
        """The pid testsvc wrote to its pidfile, waiting for it to be written."""
        return wait_until(self.pidfile_pid, timeout=timeout,
                          message=f"{self.name} wrote its pidfile")

    def wait_own_pid(self, timeout=GONE_TIMEOUT):
        """The pid the service reports at GET /, waiting for it to listen."""
        return wait_until(self.own_pid, timeout=timeout, message=f"{self.name} answers GET /")

    def __repr__(self):
        return f"<Svc {self.name} port={self.port} gpu={self.gpu}>"


def read_argv(pid):
    """The argv of a live process, or None (gone, zombie, or not readable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if not raw:
        return None
    return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]


def process_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid):
    """True when the process exists and is not a zombie."""
    st = process_state(pid)
    return st is not None and st not in ("Z", "X")


def testsvc_argv_pidfile(argv, testsvc):
    """The --write-pidfile argument of a testsvc command line, or None."""
    if not argv or os.path.basename(argv[0]) != os.path.basename(testsvc):
        return None
    for i, a in enumerate(argv[:-1]):
        if a == "--write-pidfile":
            return argv[i + 1]
    return None



def write_manifest(services_dir, name, driver, port, gpu, stop_timeout, health,
                   health_defaults, restart=None, more=None):
    """Writes services_dir/NAME/service.yaml of a test service and returns the folder.
    health=True uses health_defaults, a dict adds to them, False means `health: false`;
    more adds `key: text` lines."""
    lines = [
        f"name: {name}",
        f"description: {yaml_value('test service ' + name)}",
        f"driver: {driver}",
        f'ports: ["{port}"]',
        f"gpu_required: {yaml_value(gpu)}",
        f"stop_timeout: {stop_timeout}",
    ]
    if health is False:
        lines.append("health: false")
    else:
        h = dict(health_defaults)
        if isinstance(health, dict):
            h.update(health)
        lines.append("health:")
        lines += [f"  {k}: {v}" for k, v in h.items()]
    if restart is not None:
        lines.append(f"restart: {yaml_value(restart)}")
    lines += [f"{k}: {v}" for k, v in (more or {}).items()]
    folder = os.path.join(str(services_dir), name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "service.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return folder

class Lab:
    """A services folder of test services and the daemon that runs them."""

    def __init__(self, nanny, services_dir, workdir):
        self.nanny = nanny
        self.services_dir = services_dir
        self.workdir = workdir
        self.testsvc = testsvc_binary()
        self.pids_dir = os.path.join(str(workdir), "pids")
        os.makedirs(self.pids_dir, exist_ok=True)
        self.state_dir = os.path.join(str(workdir), "state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.svcs = {}
        self.d = None
        self.daemons = []
        self.held_sockets = []

    # --- services -------------------------------------------------------------------

    def add(self, name, args=(), gpu=False, port=None, health=True, stop_timeout="2s",
            restart=None, command=None, workdir=None, extra=None, testsvc_port=True):
        """Writes services/NAME/service.yaml for a process service running testsvc with
        ARGS (plus --port and --write-pidfile), or COMMAND when given. health=True uses
        FAST_HEALTH, a dict adds to it, False means `health: false`. Returns the Svc."""
        if port is None:
            port = free_port()
        pidfile = os.path.join(self.pids_dir, f"{name}.pid")
        if command is None:
            command = [self.testsvc]
            if testsvc_port:
                command += ["--port", str(port)]
            command += [str(a) for a in args] + ["--write-pidfile", pidfile]
        more = {"command": yaml_value(command)}
        if workdir is not None:
            more["workdir"] = yaml_value(workdir)
        more.update(extra or {})
        folder = write_manifest(self.services_dir, name, "process", port, gpu, stop_timeout,
                                health, FAST_HEALTH, restart, more)
        svc = Svc(name, port, pidfile, gpu, folder)
        self.svcs[name] = svc
        return svc

    def hold_port(self, port):
        """Listens on 127.0.0.1:port as 'another program'; closed at teardown."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((HOST, port))
        s.listen(8)
        self.held_sockets.append(s)
        return s

    # --- the daemon -----------------------------------------------------------------

    def serve(self, config=None, extra_args=(), keep_services=False, env=None):
        """Starts a daemon on the services folder and the test's state dir (the same on
        every call, so a second daemon adopts what the first started). keep_services
        makes sure the daemon leaves its services running when it stops (the default of
        `nanny serve`; the shared fixture may add --stop-services-on-exit otherwise)."""
        args = list(extra_args)
        if config is not None:
            path = os.path.join(str(self.workdir), "nanny.yaml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        kw = {}
        if keep_services and "stop_services" in inspect.signature(self.nanny.serve).parameters:
            kw["stop_services"] = False
        if env is not None:
            kw["env"] = env
        self.d = self.nanny.serve(self.services_dir, state=self.state_dir, extra_args=args,
                                  **kw)
        if keep_services:
            assert "--stop-services-on-exit" not in self.d.argv, self.d.argv
        self.daemons.append(self.d)
        return self.d

    def rediscover(self):
        r = self.d.post("/rediscover")
        assert r.status == 200, r
        return r.json()

    # --- requests -------------------------------------------------------------------

    def start(self, name, force=None, wait=False, body=None, action="start", timeout=None):
        path = f"/services/{name}/{action}"
        if wait:
            path += "?wait=healthy"
        if body is None and force is not None:
            body = json.dumps({"force": force})
        headers = {"Content-Type": "application/json"} if body else {}
        if timeout is None:
            timeout = WAIT_HEALTHY_HTTP_TIMEOUT if wait else 20.0
        return self.d.post(path, body=body, headers=headers, timeout=timeout)

    def restart(self, name, force=None, wait=False, body=None, timeout=None):
        return self.start(name, force=force, wait=wait, body=body, action="restart",
                          timeout=timeout)

    def stop(self, name, timeout=20.0):
        return self.d.post(f"/services/{name}/stop", timeout=timeout)

    def logs(self, name, tail=None, as_json=False):
        path = f"/services/{name}/logs"
        if tail is not None:
            path += f"?tail={tail}"
        headers = {"Accept": "application/json"} if as_json else {}
        return self.d.get(path, headers=headers)

    def log_lines(self, name, tail=10000):
        """The service's log lines as text (tail 10000 by default); asserts the answer."""
        r = self.logs(name, tail=tail)
        assert r.status == 200, r
        assert r.content_type == "text/plain", r
        return split_log(r.body)

    def status(self, name):
        r = self.d.get(f"/services/{name}/status")
        assert r.status == 200, r
        assert r.content_type == "application/json", r
        return r.json()

    def state(self, name):
        return self.status(name)["state"]

    def list(self):
        return self.d.services()["services"]

    def gpu_holders(self, services=None):
        """Names of GPU services in a holding state, from a GET /services answer."""
        if services is None:
            services = self.list()
        return sorted(s["name"] for s in services if is_gpu_holder(s, self.svcs))

    def wait_state(self, name, states, timeout=STATE_TIMEOUT, interval=0.05):
        """Polls GET status until state is one of states; returns the status."""
        if isinstance(states, str):
            states = (states,)
        seen = []

        def check():
            s = self.status(name)
            if not seen or seen[-1] != s["state"]:
                seen.append(s["state"])
            return s if s["state"] in states else None

        try:
            return wait_until(check, timeout=timeout, interval=interval,
                              message=f"{name} in state {'/'.join(states)}")
        except AssertionError as e:
            raise AssertionError(f"{e}; states seen: {seen}; last status: "
                                 f"{self.status(name)}") from None

    def wait_status(self, name, pred, timeout=STATE_TIMEOUT, message="condition",
                    interval=0.05):
        """Polls GET status until pred(status) is truthy; returns the status."""
        last = {}

        def check():
            last["s"] = self.status(name)
            return last["s"] if pred(last["s"]) else None

        try:
            return wait_until(check, timeout=timeout, interval=interval,
                              message=f"{name}: {message}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last status: {last.get('s')}") from None

    # --- processes ------------------------------------------------------------------

    def processes(self):
        """{service name: [pids]} of this test's live testsvc processes, children
        included (they share the parent's command line)."""
        by_pidfile = {s.pidfile: s.name for s in self.svcs.values()}
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            pidfile = testsvc_argv_pidfile(read_argv(pid), self.testsvc)
            if pidfile is None or pidfile not in by_pidfile:
                continue
            if not pid_alive(pid):
                continue
            out.setdefault(by_pidfile[pidfile], []).append(pid)
        return out

    def pids(self, name):
        return sorted(self.processes().get(name, []))

    def wait_no_processes(self, name, timeout=GONE_TIMEOUT):
        return wait_until(lambda: not self.pids(name), timeout=timeout,
                          message=f"no process of {name} left (left: {self.pids(name)})")

    def assert_no_processes(self, name, why=""):
        left = self.pids(name)
        assert not left, f"{name}: processes {left} still alive {why}".rstrip()

    # --- teardown -------------------------------------------------------------------

    def _stop_all(self):
        """Asks every live daemon to stop every service of this test; returns the names
        whose stop answered 200 with state stopped."""
        stopped = set()
        for d in self.daemons:
            if d.proc.poll() is not None or not d.port:
                continue

            def stop(name, d=d):
                try:
                    r = d.post(f"/services/{name}/stop", timeout=TEARDOWN_HTTP_TIMEOUT)
                except OSError:
                    return None
                if r.status == 200:
                    try:
                        if r.json().get("state") == "stopped":
                            return name
                    except AssertionError:
                        return None
                return None

            with concurrent.futures.ThreadPoolExecutor(max(1, len(self.svcs))) as ex:
                for name in ex.map(stop, list(self.svcs)):
                    if name:
                        stopped.add(name)
        return stopped

    def _kill_leftovers(self):
        """SIGKILLs this test's leftover testsvc processes, found by pidfile and by
        their --write-pidfile argument; returns {name: [pids]} that were killed."""
        killed = {}
        by_pidfile = {s.pidfile: s.name for s in self.svcs.values()}
        candidates = {}
        for svc in self.svcs.values():
            pid = svc.pidfile_pid()
            if pid:
                candidates[pid] = svc.name
        for name, pids in self.processes().items():
            for pid in pids:
                candidates[pid] = name
        for pid, name in candidates.items():
            # Only a live process whose command line is this test's testsvc is killed.
            if testsvc_argv_pidfile(read_argv(pid), self.testsvc) not in by_pidfile:
                continue
            if not pid_alive(pid):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed.setdefault(name, []).append(pid)
            except ProcessLookupError:
                pass
        if killed:
            deadline = time.monotonic() + GONE_TIMEOUT
            while time.monotonic() < deadline and any(
                    pid_alive(p) for ps in killed.values() for p in ps):
                time.sleep(0.05)
        return killed

    def _terminate_daemons(self):
        """SIGTERMs this test's live daemons and waits for them, so that none can start a
        service again after the sweep (a request still queued, a restart policy); returns
        the problems (a daemon that needed SIGKILL or exited non-zero)."""
        problems = []
        for d in self.daemons:
            if d.proc.poll() is not None:
                continue
            try:
                rc = d.terminate()
            except AssertionError as e:  # it needed SIGKILL; wait_exit killed it
                problems.append(f"nanny (pid {d.pid}): {e}")
                continue
            if rc != 0:
                problems.append(f"nanny (pid {d.pid}) exited with status {rc} on SIGTERM; "
                                f"stderr (tail):\n{d.stderr[-3000:]}")
        return problems

    def close(self):
        """Teardown: stop every service through the API, check that a stop that answered
        'stopped' left nothing behind, stop the daemons, then kill whatever is left."""
        problems = []
        stopped = set()
        leftovers = {}
        log = ""
        try:
            stopped = self._stop_all()
            if stopped:
                # A stop answers once the group is gone; a moment for zombies to clear.
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and any(
                        self.processes().get(n) for n in stopped):
                    time.sleep(0.05)
                procs = self.processes()
                leftovers = {n: procs[n] for n in stopped if procs.get(n)}
            log = self.d.stderr[-3000:] if self.d is not None else ""
            problems += self._terminate_daemons()
        finally:
            self._kill_leftovers()
            # Once more, in case a dying daemon had forked a service just before exiting.
            time.sleep(0.05)
            self._kill_leftovers()
            for s in self.held_sockets:
                s.close()
        for name, pids in sorted(leftovers.items()):
            problems.insert(0, f"{name}: stop answered 200 'stopped' but testsvc processes "
                               f"{sorted(pids)} were still alive (killed by the test)")
        if leftovers:
            problems.append(f"daemon log (tail):\n{log}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def is_gpu_holder(status, svcs=None):
    """A status of a GPU service in a holding state. The test's own record of which
    services need the GPU is used as well as the status's gpu_required."""
    gpu = status.get("gpu_required") is True
    if svcs and status.get("name") in svcs:
        gpu = gpu or svcs[status["name"]].gpu
    return gpu and status.get("state") in HOLDING


def split_log(body):
    """The lines of a text/plain logs answer."""
    text = body.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []


def numbered(lines):
    """The numbers of testsvc's numbered lines (`line K` on stdout for odd K, `err K` on
    stderr for even K), in log order; asserts that each went to the right stream."""
    out = []
    for line in lines:
        m = NUMBERED_LINE_RE.match(line)
        if m:
            k = int(m.group(2))
            assert (m.group(1) == "line") == (k % 2 == 1), f"wrong stream for {line!r}"
            out.append(k)
    return out


def json_error(resp, status, code=None):
    """Asserts resp is the JSON error {"error","message"} with this status; returns it."""
    from conftest import assert_json_error
    return assert_json_error(resp, status, code)


def ok_status(resp, name=None, states=None):
    """Asserts a 200 JSON status answer (of a start, stop or restart); returns it."""
    assert resp.status == 200, f"expected 200, got {resp!r}"
    assert resp.content_type == "application/json", resp
    body = resp.json()
    assert isinstance(body, dict), body
    for k in STATUS_KEYS:
        assert k in body, f"status lacks {k!r}: {body}"
    assert body["state"] in STATES, body
    if name is not None:
        assert body["name"] == name, body
    if states is not None:
        if isinstance(states, str):
            states = (states,)
        assert body["state"] in states, f"state {body['state']!r}, expected {states}: {body}"
    return body


def start_answer(resp, name, states=("starting", "running"), preempted=None):
    """Asserts a successful start/restart answer: the status plus "preempted" (always a
    list); preempted, when given, is compared as a set of names."""
    body = ok_status(resp, name, states)
    assert "preempted" in body, f"a start answer always has preempted: {body}"
    assert isinstance(body["preempted"], list), body
    if preempted is not None:
        assert sorted(body["preempted"]) == sorted(preempted), body
    return body


@pytest.fixture
def lab(nanny, services_dir, workdir):
    """A Lab: add services, lab.serve(), drive them; at the end every service is stopped
    through the API and any leftover testsvc of this test is killed."""
    lab = Lab(nanny, services_dir, workdir)
    yield lab
    lab.close()
