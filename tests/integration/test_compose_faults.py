"""The promises of a restart for compose services (issue 9, item 1): their truth is the
engine's labels, not state.json. kill -9 of the daemon at every crash point of a start,
stop, forced start and restart of a compose service, and a corrupt or lost state file
while one runs: the daemon restarted on the same state folder finds the project by its
labels and finishes or undoes the operation; never a second container, never two GPU
holders, never a project that runs while the daemon says it is stopped.

Needs a crash-points build (meson -Dcrash_points=true, as ./test.sh configures build/
and build-asan/) and a Docker engine (compose_helpers)."""

import glob
import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest

from compose_helpers import clab, docker_engine, testsvc_image  # noqa: F401 (fixtures)
from lifecycle_helpers import json_error

CRASH_TIMEOUT = 60.0  # a compose command under the daemon can take a while


def serve(lab, point=None):
    """A daemon on the lab's folders that leaves its services running when it ends,
    killing itself at crash point POINT (None: never)."""
    return lab.serve(keep_services=True, env={"NANNY_TEST_CRASH_AT": point} if point else None)


def crash_on(lab, point, path, body=None):
    """Sends the request that reaches POINT and sees the daemon die there by SIGKILL."""
    d = lab.d
    try:
        d.post(path, body=body, headers={"Content-Type": "application/json"} if body else None,
               timeout=CRASH_TIMEOUT)
    except (OSError, http.client.HTTPException):
        pass
    rc = d.wait_exit(timeout=CRASH_TIMEOUT)
    assert rc == -9, (f"the daemon did not die at crash point {point} (exit {rc}): not a "
                      f"crash-points build, or the point is gone; stderr:\n{d.stderr[-3000:]}")
    assert f"crash point {point}" in d.stderr, d.stderr[-3000:]


def app_containers(svc):
    """The running containers of the service's `app`."""
    return [c for c in svc.running() if c.get("service", "app") == "app"]


def assert_sound(lab, svcs):
    """At most one app container per service, the state agrees with the engine, at most
    one GPU holder, and a second start makes no second container."""
    assert len(lab.gpu_holders()) <= 1, lab.gpu_holders()
    for svc in svcs:
        running = app_containers(svc)
        assert len(running) <= 1, (svc.name, running)
        state = lab.state(svc.name)
        if running:
            assert state in ("running", "starting"), (svc.name, state, running)
        else:
            assert state in ("stopped", "failed"), (svc.name, state)
        r = lab.start(svc.name)
        if r.status == 200:
            lab.wait_state(svc.name, ("running",))
            assert len(app_containers(svc)) == 1, (svc.name, svc.running())
        else:
            json_error(r, 409, "gpu_conflict")
    assert len(lab.gpu_holders()) <= 1, lab.gpu_holders()


@pytest.mark.parametrize("point", ["start-intent-written", "start-spawned", "start-recorded"])
def test_crash_during_a_compose_start_leaves_one_container(clab, point):
    a = clab.add(gpu=True)
    serve(clab, point)
    crash_on(clab, point, f"/services/{a.name}/start")
    serve(clab)
    # The intent (running) was on disk: the start is finished, with one container.
    clab.wait_state(a.name, ("running",))
    assert len(app_containers(a)) == 1, a.running()
    assert clab.gpu_holders() == [a.name], clab.gpu_holders()
    assert_sound(clab, [a])


@pytest.mark.parametrize("point", ["stop-intent-written", "stop-signalled"])
def test_crash_during_a_compose_stop_finishes_it(clab, point):
    a = clab.add(gpu=True)
    serve(clab, point)
    assert clab.start(a.name).status == 200
    clab.wait_state(a.name, ("running",))
    crash_on(clab, point, f"/services/{a.name}/stop")
    serve(clab)
    a.wait_no_containers()
    clab.wait_state(a.name, ("stopped",))
    assert clab.gpu_holders() == [], clab.gpu_holders()
    assert_sound(clab, [a])


@pytest.mark.parametrize("point", ["force-intent-written", "force-holder-stopping",
                                   "force-holder-gone"])
def test_crash_during_a_compose_preemption_finishes_it(clab, point):
    a = clab.add(gpu=True)
    b = clab.add(gpu=True)
    serve(clab, point)
    assert clab.start(a.name).status == 200
    clab.wait_state(a.name, ("running",))
    crash_on(clab, point, f"/services/{b.name}/start", body=json.dumps({"force": True}))
    serve(clab)
    clab.wait_state(b.name, ("running",))
    a.wait_no_containers()
    clab.wait_state(a.name, ("stopped", "failed"))
    assert len(app_containers(b)) == 1, b.running()
    assert clab.gpu_holders() == [b.name], clab.gpu_holders()
    assert_sound(clab, [a, b])


@pytest.mark.parametrize("point", ["restart-intent-written", "restart-old-stopped"])
def test_crash_during_a_compose_restart_leaves_one_running(clab, point):
    a = clab.add(gpu=True)
    serve(clab, point)
    assert clab.start(a.name).status == 200
    clab.wait_state(a.name, ("running",))
    crash_on(clab, point, f"/services/{a.name}/restart")
    serve(clab)
    clab.wait_state(a.name, ("running",))
    assert len(app_containers(a)) == 1, a.running()
    assert_sound(clab, [a])


@pytest.mark.parametrize("damage", ["corrupt", "lost"])
def test_a_damaged_state_file_loses_no_compose_service(clab, damage):
    """The state file goes bad (garbled, or deleted) while a compose GPU holder runs and
    the daemon is down: the next daemon finds it by its labels, shows it running and
    holding the GPU, and a second GPU service gets 409 naming it."""
    a = clab.add(gpu=True)
    b = clab.add(gpu=True)
    d = serve(clab)
    assert clab.start(a.name).status == 200
    clab.wait_state(a.name, ("running",))
    d.proc.send_signal(signal.SIGKILL)
    assert d.wait_exit() == -9
    path = os.path.join(clab.state_dir, "state.json")
    if damage == "corrupt":
        with open(path, "w") as f:
            f.write('{"services": {"' + a.name + '": {"pid"')
    else:
        os.unlink(path)
    serve(clab)
    clab.wait_state(a.name, ("running",))
    assert clab.gpu_holders() == [a.name], clab.gpu_holders()
    r = clab.start(b.name)
    body = json_error(r, 409, "gpu_conflict")
    assert a.name in json.dumps(body), body
    assert len(app_containers(a)) == 1, a.running()
    assert not b.running()
    for p in glob.glob(path + ".corrupt-*"):
        os.unlink(p)
    assert_sound(clab, [a, b])


class SlowEngine:
    """A unix socket in front of the real engine whose answers are held back for `delay`
    seconds on the connections made in its first `window` seconds: a daemon that starts
    behind it waits that long for the engine's first list."""

    def __init__(self, target, path, delay=2.0, window=1.0):
        self.target, self.path, self.delay, self.window = target, path, delay, window
        self.born = time.monotonic()
        self.closed = False
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(64)
        self.server.settimeout(0.2)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except (socket.timeout, OSError):
                continue
            hold = time.monotonic() - self.born < self.window
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(self.target)
            for src, dst, slow in ((client, engine, False), (engine, client, hold)):
                t = threading.Thread(target=self._pipe, args=(src, dst, slow), daemon=True)
                t.start()
                self.threads.append(t)

    def _pipe(self, src, dst, slow):
        src.settimeout(0.2)
        until = time.monotonic() + (self.delay if slow else 0)
        while not self.closed:
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            while time.monotonic() < until and not self.closed:
                time.sleep(0.05)
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        for t in self.threads:
            t.join(5)
        self.server.close()
        os.unlink(self.path)


def test_a_slow_engine_at_startup_never_makes_two_gpu_holders(clab, workdir):
    """The daemon is killed while a compose GPU holder runs, and comes back behind an
    engine whose first answers take 2 s. A start of another GPU service sent at once
    waits for the engine's list (the holder is adopted first) and gets 409 naming it; a
    stop of the holder sent at once stops it for real. Before, both were decided on an
    empty list: a second holder, and a stop answered while the holder still ran."""
    a = clab.add(gpu=True)
    b = clab.add(gpu=True)
    d = serve(clab)
    assert clab.start(a.name).status == 200
    clab.wait_state(a.name, ("running",))
    d.proc.send_signal(signal.SIGKILL)
    assert d.wait_exit() == -9
    slow = SlowEngine(clab.engine.socket, os.path.join(str(workdir), "slow.sock"))
    try:
        clab.serve(keep_services=True, extra_args=["--docker-host", slow.path])
        r = clab.start(b.name)
        body = json_error(r, 409, "gpu_conflict")
        assert a.name in json.dumps(body), body
        assert not b.running()
        assert clab.gpu_holders() == [a.name], clab.gpu_holders()
        r = clab.stop(a.name)
        assert r.status == 200, r
        assert r.json()["state"] == "stopped", r.json()
        assert not app_containers(a), a.running()
    finally:
        clab.d.terminate()
        slow.close()
