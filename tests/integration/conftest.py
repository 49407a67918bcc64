"""Shared machinery for the integration tests: start the real daemon on a free
loopback port with a temporary services folder, talk HTTP to it with the
standard library, and always stop it (SIGTERM, then SIGKILL on timeout).

The daemon binary comes from the environment variable NANNY_BIN (an absolute
path); ./test.sh sets it for the normal and the ASan+UBSan build. Every daemon
this suite starts has its stderr kept line by line, so tests can assert on the
log, and a daemon whose stderr holds a sanitizer report fails the test.
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

HOST = "127.0.0.1"

# Service ports that free_port() hands out (outside 8000-8080, the examples' range).
PORT_RANGE = (20000, 40000)
_ports_given = set()
_ports_lock = threading.Lock()

# Generous bounds: the ASan+UBSan build starts and answers several times slower.
START_TIMEOUT = float(os.environ.get("NANNY_TEST_START_TIMEOUT", "20"))
STOP_TIMEOUT = 20.0  # SIGTERM to exit, leak check included
HTTP_TIMEOUT = 15.0
POLL_TIMEOUT = 3.0  # automatic rediscovery must show within this (spec: ~1 s)

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# The port is group 1; "https" when the daemon serves TLS.
LISTENING_RE = re.compile(r"listening on https?://127\.0\.0\.1:(\d+)")

NANNY_ENV_VARS = ("NANNY_LISTEN", "NANNY_SERVICES", "NANNY_STATE_DIR", "NANNY_CONFIG",
                  "NANNY_DOCKER_HOST", "NANNY_COMPOSE_COMMAND", "NANNY_TRUSTED_PROXIES",
                  "NANNY_MAX_CONNECTIONS_PER_CLIENT", "NANNY_NO_RESUME", "NANNY_KEYS",
                  "NANNY_TLS_CERT", "NANNY_TLS_KEY", "NANNY_KEY", "NANNY_URL")


def nanny_binary():
    """The daemon under test, or a clear failure when NANNY_BIN is wrong."""
    path = os.environ.get("NANNY_BIN")
    if not path:
        pytest.fail(
            "NANNY_BIN is not set: export NANNY_BIN=/absolute/path/to/build/nanny "
            "(./test.sh does this for both builds)",
            pytrace=False,
        )
    if not os.path.isabs(path):
        pytest.fail(f"NANNY_BIN must be an absolute path, not {path!r}", pytrace=False)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"NANNY_BIN={path} does not exist or is not executable", pytrace=False)
    return path


def clean_env(extra=None):
    """The test's environment without a developer's own NANNY_* settings."""
    env = {k: v for k, v in os.environ.items() if k not in NANNY_ENV_VARS}
    if extra:
        env.update(extra)
    return env


def sanitizer_report(text):
    """The sanitizer lines of a daemon's stderr, or '' when there are none."""
    if not any(m in text for m in SANITIZER_MARKERS):
        return ""
    return text


def wait_until(fn, timeout=POLL_TIMEOUT, interval=0.03, message="condition"):
    """Calls fn until it returns something truthy; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout}s (last: {last!r})")
        time.sleep(interval)


# --- HTTP ------------------------------------------------------------------


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self._json = None

    @property
    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise AssertionError(
                    f"HTTP {self.status}: body is not JSON ({e}): {self.body[:300]!r}"
                ) from None
        return self._json

    def __repr__(self):
        return f"<Response {self.status} {self.content_type} {self.body[:200]!r}>"


def http_request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT,
                 ssl_context=None):
    """One request on a new connection; HTTPS when ssl_context (an ssl.SSLContext that
    trusts the test's CA) is given."""
    if ssl_context is not None:
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ssl_context)
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.headers, data)
    finally:
        conn.close()


def raw_exchange(port, data, timeout=HTTP_TIMEOUT, shutdown_write=False):
    """Sends raw bytes and reads until the server closes; returns the bytes read.
    Raises socket.timeout when the server neither answers nor hangs up in time."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def parse_raw_response(data):
    """Splits one raw HTTP/1.x response into (status, headers dict, body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response: {data[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert m, f"bad status line: {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return int(m.group(1)), headers, body


def assert_json_error(resp, status, code=None):
    """SPEC section 3: every error is {"error": code, "message": text} as JSON."""
    assert resp.status == status, f"expected {status}, got {resp!r}"
    assert resp.content_type == "application/json", f"Content-Type of {resp!r}"
    body = resp.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    if code is not None:
        assert body["error"] == code, body
    return body


# --- services folders --------------------------------------------------------


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A loopback port for a test service, in 20000-40000, that nothing listens on or is
    bound to: tried by binding it, and never handed out twice in one run. Every port a
    test's service may bind comes from here, never a fixed number: a developer's own
    daemon (./start.sh) runs the example services on 8000-8080. Ports outside the kernel's
    ephemeral range are preferred, so that no outgoing connection (a health probe) takes
    the port before the service binds it."""
    lo, hi = PORT_RANGE
    eph_lo, eph_hi = _ephemeral_range()
    preferred = [p for p in range(lo, hi) if not eph_lo <= p <= eph_hi]
    pool = preferred or list(range(lo, hi))
    for _ in range(200):
        port = random.choice(pool)
        with _ports_lock:
            if port in _ports_given:
                continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        with _ports_lock:
            _ports_given.add(port)
        return port
    raise AssertionError("no free port found in 20000-40000 after 200 tries")




def manifest(name, port=None, **fields):
    """A valid process-driver manifest; extra fields are written as given (YAML text)."""
    lines = [f"name: {name}", 'command: ["sleep", "1000"]']
    if port is None:
        lines.append("health: false")
    else:
        lines.append(f'ports: ["{port}"]')
    for k, v in fields.items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def write_service(root, folder, text, filename="service.yaml"):
    """Writes folder/service.yaml (text or bytes) under root; returns its path."""
    d = os.path.join(str(root), folder)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, filename)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as f:
        f.write(text)
    return path


def replace_file(path, text):
    """Replaces a file atomically (write aside, rename), as editors and deploy tools do."""
    tmp = path + ".tmp-write"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


# --- the daemon --------------------------------------------------------------


class Daemon:
    """One `nanny serve` process with its stderr collected line by line."""

    def __init__(self, argv, env, cwd=None):
        self.argv = argv
        self.lines = []
        self.stdout_lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(
                target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True
            ),
        ]
        for t in self._readers:
            t.start()
        self.port = None
        self.ssl_context = None  # HTTPS: the context request() uses (NannyFactory.serve)

    def _read(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self._cond:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    @property
    def stderr(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_log(self, pattern, timeout=START_TIMEOUT, start=0):
        """Waits for a stderr line (from line index start) matching the regex; returns
        the match. Fails when the daemon exits first or time runs out."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                exited = self.proc.poll() is not None and not any(
                    t.is_alive() for t in self._readers
                )
                left = deadline - time.monotonic()
                if exited or left <= 0:
                    why = "exited" if exited else f"did not log it within {timeout}s"
                    raise AssertionError(
                        f"waiting for /{pattern}/: nanny {why} "
                        f"(rc={self.proc.poll()}); stderr:\n{chr(10).join(self.lines)[-4000:]}"
                    )
                self._cond.wait(min(left, 0.1))

    def wait_listening(self, timeout=START_TIMEOUT):
        m = self.wait_for_log(LISTENING_RE.pattern, timeout=timeout)
        self.port = int(m.group(1))
        return self.port

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Waits for the process to end and its output to be read; returns the exit code.
        Kills it when it takes longer than timeout, and fails."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            for t in self._readers:
                t.join(5)
            raise AssertionError(
                f"nanny did not exit within {timeout}s; killed. stderr:\n{self.stderr[-4000:]}"
            ) from None
        for t in self._readers:
            t.join(10)
        return rc

    def signal(self, signum):
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill_if_running(self):
        """Stops the daemon if it still runs: SIGTERM, then SIGKILL after STOP_TIMEOUT.
        Returns a problem to report (it needed SIGKILL, or exited non-zero), or None."""
        problem = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT)
                if rc != 0:
                    problem = f"exited with status {rc} on SIGTERM"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = f"did not stop within {STOP_TIMEOUT}s of SIGTERM; killed"
        for t in self._readers:
            t.join(5)
        return problem

    # HTTP helpers bound to this daemon's port.
    def request(self, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
        assert self.port, "the daemon is not listening yet"
        return http_request(self.port, method, path, body, headers, timeout,
                            ssl_context=self.ssl_context)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def get_json(self, path):
        r = self.get(path)
        assert r.status == 200, r
        assert r.content_type == "application/json", r
        return r.json()

    def services(self):
        return self.get_json("/services")

    def service_names(self):
        return sorted(s["name"] for s in self.services()["services"])

    def assert_healthy(self):
        """The daemon is up and answering: GET /health is 200 with status ok."""
        assert self.proc.poll() is None, f"nanny exited (rc={self.proc.poll()}):\n{self.stderr}"
        body = self.get_json("/health")
        assert body["status"] == "ok", body


class NannyFactory:
    """Starts daemons for one test and stops every one of them at its end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.daemons = []
        self.runs = []  # stderr of short runs, checked for sanitizer reports

    def spawn(self, args, env=None, cwd=None):
        """Starts `nanny ARGS...` (no waiting); env adds to a NANNY_*-free environment."""
        d = Daemon([nanny_binary()] + list(args), clean_env(env), cwd=cwd)
        self.daemons.append(d)
        return d

    def serve(self, services=None, state=None, extra_args=(), env=None, listen="127.0.0.1:0",
              cwd=None, start_timeout=START_TIMEOUT, stop_services=True, ssl_context=None):
        """Starts `nanny serve` and waits until it listens. Unless stop_services is False
        (tests of adoption), the daemon stops the services it runs when it stops, so that
        a test leaves no process behind. With ssl_context (the daemon serves HTTPS: its
        --tls-cert/--tls-key are in extra_args or env), its request helpers use it."""
        args = ["serve"]
        if stop_services:
            args.append("--stop-services-on-exit")
        if listen is not None:
            args += ["--listen", listen]
        if services is not None:
            args += ["--services", str(services)]
        if state is None:
            state = os.path.join(str(self.workdir), "state")
            os.makedirs(state, exist_ok=True)
        if state is not False:
            args += ["--state-dir", str(state)]
        d = self.spawn(args + list(extra_args), env=env, cwd=cwd)
        d.ssl_context = ssl_context
        d.wait_listening(timeout=start_timeout)
        return d

    def run(self, args, env=None, timeout=STOP_TIMEOUT, cwd=None):
        """Runs `nanny ARGS...` to completion; returns (rc, stdout, stderr). A daemon that
        unexpectedly keeps running is stopped and the test fails."""
        d = self.spawn(args, env=env, cwd=cwd)
        try:
            rc = d.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            d.kill_if_running()
            raise AssertionError(
                f"nanny {' '.join(args)} was expected to exit but kept running; "
                f"stderr:\n{d.stderr[-3000:]}"
            ) from None
        for t in d._readers:
            t.join(10)
        return rc, "\n".join(d.stdout_lines), d.stderr

    def close(self):
        problems = []
        for d in self.daemons:
            problem = d.kill_if_running()
            if problem:
                problems.append(f"nanny (pid {d.pid}) {problem}; stderr:\n{d.stderr[-3000:]}")
        remove_cgroups(self.daemons)
        reports = [
            f"nanny {' '.join(d.argv[1:3])} (pid {d.pid}):\n{d.stderr[-6000:]}"
            for d in self.daemons
            if sanitizer_report(d.stderr)
        ]
        if reports:
            problems.insert(0, "the daemon printed a sanitizer report:\n" + "\n\n".join(reports))
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


CGROUP_BASE_RE = re.compile(r"process services run in cgroups under (\S+)")


def remove_cgroups(daemons, timeout=3.0):
    """Removes the cgroup folders the daemons made (`<cgroup>/nanny/<id>` and the service
    cgroups in it) once they are empty: a daemon killed with -9 never removes its own. A
    folder still in use (a logger writing its last lines) is waited for a while, then
    left; rmdir never removes a cgroup that holds a process."""
    bases = set()
    for d in daemons:
        bases.update(m.group(1) for m in CGROUP_BASE_RE.finditer(d.stderr))
    deadline = time.monotonic() + timeout
    for base in sorted(bases):
        while os.path.isdir(base):
            for sub in os.listdir(base):
                path = os.path.join(base, sub)
                if os.path.isdir(path):
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
            try:
                os.rmdir(base)
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
            break


@pytest.fixture
def workdir(tmp_path):
    """The test's private folder; removed after the test, whatever it created."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def services_dir(workdir):
    d = workdir / "services"
    d.mkdir()
    return d


@pytest.fixture
def nanny(workdir):
    """Factory: nanny.serve(services_dir) -> a running Daemon; stopped at the end."""
    nanny_binary()
    factory = NannyFactory(workdir)
    yield factory
    factory.close()


@pytest.fixture
def daemon(nanny, services_dir):
    """A daemon on an empty services folder (tests may add services and rediscover)."""
    return nanny.serve(services_dir)
