"""Shared machinery for the compose driver's tests: a Docker engine, the test image, compose
service folders, a lab that drives one daemon over them, private engines that a test may
stop and start, and a teardown that leaves no container, network or image of ours behind.

The engine: the one at $DOCKER_HOST when that is unix://PATH, else /var/run/docker.sock
(the daemon's own default). ./test.sh makes sure one answers (it starts dockerd when none
does). Without one, every compose test FAILS with a message saying so, never skips.

The image: `nanny-testsvc:s<pid>-<random>`, built once per session FROM scratch with the
static test service (testsvc-static, built by meson next to the daemon) as /testsvc and
ENTRYPOINT ["/testsvc"], so a compose `command:` is testsvc's flags. It is removed at the
end of the session. No registry is reachable, so nothing is ever pulled.

Projects: a service's compose project is its name, "ct" plus random hex, unique in the
session, so that a failed run never collides with another. After each test every container
and network labelled com.docker.compose.project=<one of the test's projects> is removed,
on every engine the test used, whatever the daemon did; at the end of the session the
shared engine must hold none of this session's projects.
"""

import functools
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, http_request, nanny_binary, wait_until
from lifecycle_helpers import (
    FAST_HEALTH,
    GONE_TIMEOUT,
    Lab,
    write_manifest,
    yaml_value,
)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
IMAGE_REPO = "nanny-testsvc"
DEFAULT_SOCKET = "/var/run/docker.sock"

DOCKER_TIMEOUT = 60.0  # one docker or compose command (a build, an `up`, a `down`)
ENGINE_START_TIMEOUT = 60.0  # a private dockerd answering `docker info`
ENGINE_STOP_TIMEOUT = 30.0  # a private dockerd stopping (it stops its containers first)

# Health settings for compose services: short, but a container takes longer to start than
# a process, and the ASan build is slower still.
COMPOSE_HEALTH = dict(FAST_HEALTH, interval="1s", timeout="500ms", start_period="20s")

# An image that does not exist anywhere. Its name points at a registry on a loopback port
# where nothing listens, so a pull (compose v1 ignores `pull_policy: never`) is refused at
# once instead of waiting on a network, and no traffic leaves 127.0.0.1.
MISSING_IMAGE = "127.0.0.1:9/nanny-missing-image:none"

_session_projects = set()  # every compose project name this session created
_private_engines = []  # every PrivateEngine this session started


def _tail(text, n=2000):
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else (text or "")
    return text[-n:]


def docker_bin():
    path = shutil.which("docker")
    if not path:
        pytest.fail("the docker command is missing: install docker.io (./test.sh does)",
                    pytrace=False)
    return path


def shared_socket():
    """The engine socket the daemon under test uses by default: $DOCKER_HOST when it is
    unix://PATH, else /var/run/docker.sock."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return DEFAULT_SOCKET


def new_project_name():
    """A fresh service (and so compose project) name: "ct" plus 8 hex digits."""
    while True:
        name = "ct%08x" % random.getrandbits(32)
        if name not in _session_projects:
            _session_projects.add(name)
            return name


def project_name(name):
    """The compose project of a service name, as compose normalizes it: lower case, only
    a-z 0-9 _ - kept."""
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


class Engine:
    """A Docker engine reached through its unix socket with the docker command."""

    def __init__(self, socket):
        self.socket = socket

    @property
    def host(self):
        return "unix://" + self.socket

    def env(self, extra=None):
        env = dict(os.environ)
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_HOST"] = self.host
        if extra:
            env.update(extra)
        return env

    def run(self, argv, timeout=DOCKER_TIMEOUT, check=True, cwd=None, stdin=None):
        """Runs ARGV (a docker or compose command) against this engine; returns the
        CompletedProcess (text). check: fail the test when it exits non-zero."""
        try:
            p = subprocess.run(argv, env=self.env(), cwd=cwd, stdin=stdin or subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout, text=True)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(argv)} ({self.host}) did not finish within "
                                 f"{timeout}s; stderr: {_tail(e.stderr)}") from None
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} ({self.host}) exited {p.returncode}: "
                                 f"{_tail(p.stderr)}")
        return p

    def docker(self, *args, **kw):
        return self.run([docker_bin()] + [str(a) for a in args], **kw)

    def answers(self, timeout=20.0):
        """True when `docker info` answers; else False (with the reason in .why)."""
        try:
            p = self.docker("info", "--format", "{{.ServerVersion}}", timeout=timeout,
                            check=False)
        except AssertionError as e:
            self.why = str(e)
            return False
        self.why = _tail(p.stderr, 500).strip()
        return p.returncode == 0 and bool(p.stdout.strip())

    def containers(self, project):
        """[{id, name, state, service}] of every container of a compose project."""
        p = self.docker("ps", "-a", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={project}",
                        "--format",
                        '{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label "%s"}}' % SERVICE_LABEL)
        out = []
        for line in p.stdout.splitlines():
            if not line.strip():
                continue
            cid, name, state, service = (line.split("\t") + ["", "", "", ""])[:4]
            out.append({"id": cid, "name": name, "state": state, "service": service})
        return out

    def running(self, project):
        return [c for c in self.containers(project) if c["state"] == "running"]

    def networks(self, project):
        p = self.docker("network", "ls", "-q", "--filter", f"label={PROJECT_LABEL}={project}")
        return p.stdout.split()

    def remove_projects(self, projects):
        """Removes every container and network of these projects; returns {project:
        [container names]} of what had to be removed."""
        removed = {}
        for project in sorted(projects):
            cs = self.containers(project)
            if cs:
                removed[project] = [c["name"] for c in cs]
                self.docker("rm", "-f", "-v", *[c["id"] for c in cs], check=False)
            nets = self.networks(project)
            if nets:
                self.docker("network", "rm", *nets, check=False)
        return removed

    def has_image(self, tag):
        return self.docker("image", "inspect", tag, check=False).returncode == 0

    def __repr__(self):
        return f"<Engine {self.host}>"


def _children(pid):
    """The pids whose parent is pid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry))
    return out


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _mounts_under(root):
    """Mount points at or under root, deepest first."""
    points = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4:
                    mp = fields[4].replace("\\040", " ")
                    if mp == root or mp.startswith(root.rstrip("/") + "/"):
                        points.append(mp)
    except OSError:
        pass
    return sorted(set(points), key=len, reverse=True)


class PrivateEngine(Engine):
    """A dockerd of the test's own: its own data root, exec root, pidfile and socket under
    a short /tmp folder (unix socket paths are limited to 108 bytes), no bridge and no
    iptables rules, so it touches nothing of the shared engine or the host network. It
    can be stopped and started again on the same data; destroy() stops it and removes
    everything it made."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="nd-", dir="/tmp")
        super().__init__(os.path.join(self.root, "docker.sock"))
        self.data_root = os.path.join(self.root, "data")
        self.exec_root = os.path.join(self.root, "exec")
        self.pidfile = os.path.join(self.root, "docker.pid")
        self.log_path = os.path.join(self.root, "dockerd.log")
        self.proc = None
        self.children = []
        _private_engines.append(self)

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return _tail(f.read(), n)
        except OSError:
            return ""

    def start(self):
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        argv = [dockerd, "--data-root", self.data_root, "--exec-root", self.exec_root,
                "--pidfile", self.pidfile, "-H", self.host, "--bridge=none",
                "--iptables=false", "--ip6tables=false"]
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C of pytest must not reach it before teardown does.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"private dockerd exited {self.proc.returncode}; log:\n"
                                     f"{self.log_tail()}")
            if self.answers(timeout=10.0):
                break
            if time.monotonic() >= deadline:
                self.stop()
                raise AssertionError(f"private dockerd did not answer within "
                                     f"{ENGINE_START_TIMEOUT}s; log:\n{self.log_tail()}")
            time.sleep(0.2)
        self.children = [p for p in _children(self.proc.pid) if _comm(p) == "containerd"]
        return self

    def stop(self, timeout=ENGINE_STOP_TIMEOUT):
        """SIGTERM, SIGKILL after timeout; then makes sure its containerd ended too.
        With live-restore off (the default) its containers are stopped with it."""
        if self.proc is None:
            return
        children = set(self.children) | {p for p in _children(self.proc.pid)
                                         if _comm(p) == "containerd"}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in children:
            if _comm(pid) != "containerd":
                continue
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        self.children = []

    @property
    def alive(self):
        """True while its dockerd process runs."""
        return self.proc is not None and self.proc.poll() is None

    def load_image(self, tag, source):
        """Copies image tag from engine source into this one (docker save | docker load)."""
        save = subprocess.Popen([docker_bin(), "save", tag], env=source.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self.docker("load", stdin=save.stdout)
        finally:
            save.stdout.close()
            _, err = save.communicate(timeout=DOCKER_TIMEOUT)
        assert save.returncode == 0, f"docker save {tag}: {_tail(err)}"
        assert self.has_image(tag), f"{tag} is not in {self} after docker load"

    def _kill_shims(self):
        """SIGKILLs the containerd shims of this engine and the container processes under
        them: they outlive a dockerd and containerd that had to be killed."""
        address = os.path.join(self.exec_root, "containerd", "containerd.sock")
        shims = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and b"containerd-shim" in argv[0] and address.encode() in argv:
                shims.append(int(entry))
        doomed = []
        todo = list(shims)
        while todo:
            pid = todo.pop()
            doomed.append(pid)
            todo += _children(pid)
        for pid in reversed(doomed):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self):
        """Stops it (removing its containers first, if it still answers), kills what a
        killed engine may have left running, unmounts what it left mounted under its
        root, and removes the root."""
        if self.alive and self.answers(timeout=5.0):
            ps = self.docker("ps", "-aq", check=False)
            ids = ps.stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False)
        self.stop()
        self._kill_shims()
        for mp in _mounts_under(self.root):
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        if self in _private_engines:
            _private_engines.remove(self)


@functools.lru_cache(maxsize=None)
def _compose_argv():
    """The compose command the daemon picks by default (SPEC: `docker compose` when it
    works, else `docker-compose`), as an argv prefix; None when neither works."""
    for argv in ([docker_bin(), "compose"], ["docker-compose"]):
        if argv[0] != docker_bin() and not shutil.which(argv[0]):
            continue
        try:
            p = subprocess.run(argv + ["version"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode == 0:
            return tuple(argv)
    return None


def compose_argv():
    argv = _compose_argv()
    return list(argv) if argv else None


def compose_command_name():
    """The compose command as /health names it: "docker compose", "docker-compose" or None."""
    argv = compose_argv()
    if argv is None:
        return None
    return "docker compose" if argv[-1] == "compose" and len(argv) == 2 else "docker-compose"


def testsvc_static():
    """The static test service, built by meson in the build dir (NANNY_BUILD_DIR, else
    the folder of NANNY_BIN)."""
    build = os.environ.get("NANNY_BUILD_DIR") or os.path.dirname(nanny_binary())
    path = os.path.join(build, "testsvc-static")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing: build it with ninja (meson builds testsvc-static "
                    "when the C compiler can link statically)", pytrace=False)
    return path


# --- session fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine():
    """The shared engine; fails (never skips) when none answers. At the end of the
    session no container of this session's projects may be left on it."""
    engine = Engine(shared_socket())
    if not engine.answers():
        pytest.fail(f"no Docker engine: run ./test.sh, which starts dockerd (`docker info` "
                    f"on {engine.host}: {engine.why or 'no answer'})", pytrace=False)
    yield engine
    for pe in list(_private_engines):
        pe.destroy()
    left = engine.remove_projects(_session_projects)
    assert not left, f"containers of this session's projects were left on {engine.host} " \
                     f"(removed now): {left}"


@pytest.fixture(scope="session")
def testsvc_image(docker_engine):
    """Builds the test image FROM scratch; removes it at the end of the session."""
    binary = testsvc_static()
    tag = "%s:s%d-%06x" % (IMAGE_REPO, os.getpid(), random.getrandbits(24))
    ctx = tempfile.mkdtemp(prefix="nanny-image-")
    try:
        shutil.copy2(binary, os.path.join(ctx, "testsvc"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM scratch\nCOPY testsvc /testsvc\nENTRYPOINT [\"/testsvc\"]\n")
        docker_engine.docker("build", "-q", "--label", "nanny-test=1", "-t", tag, ctx,
                             timeout=120)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    yield tag
    docker_engine.docker("rmi", "-f", tag, check=False)
    assert not docker_engine.has_image(tag), f"the test image {tag} could not be removed"


# --- compose services ------------------------------------------------------------------


class CSvc:
    """One compose test service: a folder with service.yaml and docker-compose.yml."""

    def __init__(self, name, port, folder, gpu, engine, services):
        self.name = name
        self.project = project_name(name)
        self.port = port
        self.folder = folder
        self.gpu = gpu
        self.engine = engine
        self.services = services  # the compose services in its compose file
        self.pidfile = None  # (Lab's process bookkeeping: none for containers)

    def get(self, path="/", timeout=5.0):
        """A request to the service itself (not through the daemon)."""
        return http_request(self.port, "GET", path, timeout=timeout)

    def answers_health(self):
        try:
            return self.get("/health", timeout=3.0).status == 200
        except OSError:
            return False

    def containers(self):
        return self.engine.containers(self.project)

    def running(self):
        return self.engine.running(self.project)

    def container(self, service="app"):
        """The id of the compose service's container (fails when there is none)."""
        cs = [c for c in self.containers() if c["service"] == service]
        assert cs, f"{self.name}: no container of compose service {service}: {self.containers()}"
        return cs[0]["id"]

    def compose(self, *args, check=True, timeout=DOCKER_TIMEOUT):
        """Runs `<compose> -p NAME ARGS...` by hand in the service folder, on its engine."""
        argv = compose_argv()
        assert argv, "neither `docker compose` nor `docker-compose` works here"
        return self.engine.run(argv + ["-p", self.project] + [str(a) for a in args],
                               cwd=self.folder, check=check, timeout=timeout)

    def up(self):
        return self.compose("up", "-d")

    def down(self):
        return self.compose("down", "-t", "2")

    def wait_no_containers(self, timeout=GONE_TIMEOUT):
        return wait_until(lambda: not self.containers(), timeout=timeout, interval=0.2,
                          message=f"no container of {self.name} left")

    def __repr__(self):
        return f"<CSvc {self.name} port={self.port} gpu={self.gpu} {self.engine.host}>"


def compose_file(image, port, args=(), worker=None, extra=None):
    """The text of a docker-compose.yml: service `app` runs testsvc on port (host network,
    init) with ARGS; worker (a list of testsvc flags, or True for a default) adds a second
    service `worker` without HTTP; extra adds YAML lines to app (a dict key: text)."""
    lines = ["services:", "  app:", f"    image: {yaml_value(image)}",
             "    network_mode: host", "    init: true",
             f"    command: {yaml_value(['--port', str(port)] + [str(a) for a in args])}"]
    for k, v in (extra or {}).items():
        lines.append(f"    {k}: {v}")
    if worker:
        wargs = ["--no-http", "--print-lines", "3"] if worker is True else [str(a) for a in worker]
        lines += ["  worker:", f"    image: {yaml_value(image)}", "    network_mode: host",
                  "    init: true", f"    command: {yaml_value(wargs)}"]
    return "\n".join(lines) + "\n"


class ComposeLab(Lab):
    """A services folder of compose test services and the daemon that runs them (the
    requests and waits of lifecycle_helpers.Lab); see the module comment for cleanup."""

    def __init__(self, nanny, services_dir, workdir, engine, image):
        super().__init__(nanny, services_dir, workdir)
        self.engine = engine
        self.image = image
        self.engines = [engine]

    def add(self, name=None, args=(), gpu=False, port=None, health=True, stop_timeout="2s",
            restart=None, worker=None, image=None, engine=None, compose_extra=None,
            extra=None):
        """Writes services/NAME/{service.yaml,docker-compose.yml} (driver compose, project
        NAME, testsvc ARGS on PORT). health=True uses COMPOSE_HEALTH, a dict adds to it,
        False means `health: false`. Returns the CSvc."""
        name = name or new_project_name()
        _session_projects.add(project_name(name))
        if port is None:
            port = free_port()
        engine = engine or self.engine
        if engine not in self.engines:
            self.engines.append(engine)
        folder = write_manifest(self.services_dir, name, "compose", port, gpu, stop_timeout,
                                health, COMPOSE_HEALTH, restart, extra)
        with open(os.path.join(folder, "docker-compose.yml"), "w") as f:
            f.write(compose_file(image or self.image, port, args, worker, compose_extra))
        svc = CSvc(name, port, folder, gpu, engine, ["app", "worker"] if worker else ["app"])
        self.svcs[name] = svc
        return svc

    def serve(self, config=None, extra_args=(), keep_services=False, env=None):
        """Starts a daemon on the services folder and the test's state dir; config is
        the text of a config file, env adds to its environment; keep_services leaves
        its services running when it stops (otherwise it stops them)."""
        args = list(extra_args)
        if config is not None:
            path = os.path.join(str(self.workdir), "nanny.yaml")
            with open(path, "w") as f:
                f.write(config)
            args += ["--config", path]
        self.d = self.nanny.serve(self.services_dir, state=self.state_dir, extra_args=args,
                                  env=env, stop_services=not keep_services)
        self.daemons.append(self.d)
        return self.d

    def private_engine(self, start=True):
        """A PrivateEngine with the test image loaded, destroyed at the end of the test.
        start=False: not started yet; start it with start_private_engine()."""
        pe = PrivateEngine()
        self.engines.append(pe)
        if start:
            self.start_private_engine(pe)
        return pe

    def start_private_engine(self, pe):
        """Starts pe, and loads the test image into it unless it has it already."""
        pe.start()
        if not pe.has_image(self.image):
            pe.load_image(self.image, self.engine)
        return pe

    def processes(self):
        return {}  # containers are checked through the engine, not /proc

    def close(self):
        """Teardown: stop every service through the API and check that a stop that
        answered 'stopped' left no running container; stop the daemons; then remove every
        container and network of this test's projects on every engine it used."""
        problems = []
        try:
            stopped = self._stop_all()
            for name in sorted(stopped):
                svc = self.svcs[name]
                # Running ones only: when a test ends with the engine in trouble, exited
                # containers may stay; the tests check full removal themselves.
                try:
                    left = svc.running() if svc.engine.answers(timeout=5.0) else []
                except AssertionError:
                    left = []
                if left:
                    problems.append(f"{name}: stop answered 200 'stopped' but its containers "
                                    f"{[c['name'] for c in left]} still run")
            log = self.d.stderr[-3000:] if self.d is not None else ""
            problems += self._terminate_daemons()
            if problems:
                problems.append(f"daemon log (tail):\n{log}")
        finally:
            for eng in self.engines:
                if isinstance(eng, PrivateEngine):
                    eng.destroy()
                elif eng.answers(timeout=10.0):
                    eng.remove_projects({s.project for s in self.svcs.values()})
            for s in self.held_sockets:
                s.close()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def clab(nanny, services_dir, workdir, docker_engine, testsvc_image):
    """A ComposeLab on the shared engine with the session's test image."""
    lab = ComposeLab(nanny, services_dir, workdir, docker_engine, testsvc_image)
    yield lab
    lab.close()


# --- assertions ------------------------------------------------------------------------


LOG_LINE_RE = re.compile(r"^([A-Za-z0-9._-]+) \| (.*)$")


def split_prefixed(lines):
    """[(compose service, line)] of `SERVICE | line` log lines; asserts the format."""
    out = []
    for line in lines:
        m = LOG_LINE_RE.match(line)
        assert m, f"log line not in the form 'SERVICE | line': {line!r}"
        out.append((m.group(1), m.group(2)))
    return out


def engine_error_text(text):
    """True when an error text says the Docker engine cannot be reached."""
    low = (text or "").lower()
    return ("docker" in low or "engine" in low) and (
        "reach" in low or "connect" in low or "unavailable" in low)


def health_compose(d):
    """The "compose" object of GET /health; asserts its shape."""
    body = d.get_json("/health")
    assert "compose" in body, f"/health has no compose object: {body}"
    c = body["compose"]
    assert isinstance(c, dict), body
    for k in ("command", "engine", "error"):
        assert k in c, f"/health compose lacks {k!r}: {c}"
    assert c["engine"] in ("reachable", "unreachable", "unwatched"), c
    assert c["command"] is None or isinstance(c["command"], str), c
    assert c["error"] is None or (isinstance(c["error"], str) and c["error"].strip()), c
    return c

