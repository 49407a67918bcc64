"""Reality from the kernel (issue 9, item 1): every process service runs in a cgroup v2
of its own under <the daemon's cgroup>/nanny/<id>, or, where none can be written (or
NANNY_CGROUP=off), in a process group with the marker NANNY_INSTANCE=<id>/<service> in
its environment. Each fault runs in both modes: a process that leaves its service's
process group is still stopped, and a daemon killed with -9 whose state file is then
lost or broken adopts what runs instead of starting a second copy. And item 5's clean
environment: a secret of the daemon's environment does not reach a service, the
variables of `env_pass:` do.

Every test cleans up after itself, after the lab's own teardown: the processes it saw
are killed, and the daemon's cgroup subtree is emptied (cgroup.kill) and removed."""

import json
import os
import signal
import sys
import time

import pytest

from conftest import wait_until
from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    GONE_TIMEOUT,
    Lab,
    lab,
    ok_status,
    pid_alive,
    start_answer,
)

ESCAPER = os.path.join(os.path.dirname(__file__), "..", "fixtures", "escaper.py")
ESCAPER = os.path.abspath(ESCAPER)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_environ(pid):
    """{name: value} of /proc/PID/environ."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    out = {}
    for entry in raw.split(b"\0"):
        if b"=" in entry:
            k, _, v = entry.partition(b"=")
            out[k.decode()] = v.decode("utf-8", "replace")
    return out


class Leftovers:
    """What a test must not leave behind: pids it saw and the daemon's cgroup subtree.
    Requested before `lab`, so that it is cleaned after the lab's teardown."""

    def __init__(self):
        self.pids = []
        self.cgroups = set()

    def clean(self):
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for base in self.cgroups:
            remove_cgroup_tree(base)
            try:
                os.rmdir(os.path.dirname(base))  # nanny/, when no other daemon uses it
            except OSError:
                pass


def cgroup_populated(path):
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            return "populated 1" in f.read()
    except OSError:
        return False


def remove_cgroup_tree(base):
    """Kills what runs under base and removes its cgroups, deepest first."""
    if not os.path.isdir(base):
        return
    for root, _, _ in os.walk(base, topdown=False):
        try:
            with open(os.path.join(root, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            pass
        deadline = time.monotonic() + GONE_TIMEOUT
        while cgroup_populated(root) and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            os.rmdir(root)
        except OSError:
            pass


@pytest.fixture
def leftovers():
    g = Leftovers()
    yield g
    g.clean()


@pytest.fixture(params=["cgroup", "fallback"])
def mode(request, monkeypatch):
    """Which way the daemon holds its services: cgroups (skipped where none can be
    written) or the fallback, forced with NANNY_CGROUP=off."""
    if request.param == "fallback":
        monkeypatch.setenv("NANNY_CGROUP", "off")
    else:
        monkeypatch.delenv("NANNY_CGROUP", raising=False)
    return request.param


def serve(lab, mode, leftovers, keep_services=False):
    """Starts the lab's daemon; notes its cgroup subtree for the cleanup. In cgroup mode
    on a machine without a writable cgroup v2, the test is skipped."""
    d = lab.serve(keep_services=keep_services)
    info = d.get_json("/health").get("process")
    if isinstance(info, dict):
        if info.get("cgroup"):
            leftovers.cgroups.add(info["cgroup"])
        if mode == "cgroup" and info.get("mode") != "cgroup":
            pytest.skip(f"no writable cgroup v2 here: {info.get('why')}")
    return d


def add_escaper(lab, name, how):
    pidfile = os.path.join(str(lab.workdir), f"{name}.escaped.pid")
    lab.add(name, command=[sys.executable, ESCAPER, how, pidfile], health=False)
    return pidfile


def test_health_and_log_say_the_mode(leftovers, mode, lab):
    d = serve(lab, mode, leftovers)
    info = d.get_json("/health")["process"]
    if mode == "cgroup":
        assert info["mode"] == "cgroup", info
        assert info["cgroup"].endswith("/nanny/" + info["instance"]), info
        assert os.path.isfile(os.path.join(info["cgroup"], "cgroup.kill")), info
        d.wait_for_log(r"process services run in cgroups under " + info["cgroup"])
    else:
        assert info["mode"] == "process-group", info
        assert "NANNY_CGROUP=off" in info["why"], info
        d.wait_for_log(r"process services run in process groups, found by the marker "
                       r"NANNY_INSTANCE=" + info["instance"])
    assert len(info["instance"]) == 12, info


@pytest.mark.parametrize("how", ["setsid-grandchild", "setpgid-child"])
def test_stop_ends_what_left_the_process_group(leftovers, mode, lab, how):
    pidfile = add_escaper(lab, "esc", how)
    serve(lab, mode, leftovers)
    start_answer(lab.start("esc"), "esc")
    escaped = wait_until(lambda: read_pid(pidfile), timeout=GONE_TIMEOUT,
                         message="the escaped process wrote its pid")
    leftovers.pids.append(escaped)
    assert pid_alive(escaped)

    ok_status(lab.stop("esc"), "esc", "stopped")
    assert not pid_alive(escaped), f"{how}: pid {escaped} still runs after the stop answered"


@pytest.mark.parametrize("damage", ["garbage", "empty", "removed"])
def test_kill9_and_a_lost_state_file_adopt_what_runs(leftovers, mode, lab, damage):
    svc = lab.add("a", health=False)
    d = serve(lab, mode, leftovers, keep_services=True)
    start_answer(lab.start("a"), "a")
    lab.wait_state("a", "running")
    pid = svc.wait_pidfile_pid()
    leftovers.pids.append(pid)
    wait_until(lambda: os.path.exists(os.path.join(lab.state_dir, "state.json")),
               timeout=GONE_TIMEOUT, message="the state file was written")

    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=GONE_TIMEOUT)
    state = os.path.join(lab.state_dir, "state.json")
    if damage == "removed":
        os.unlink(state)
    else:
        with open(state, "w") as f:
            f.write('{"version": 1, "services": {"a": {"pi' if damage == "garbage" else "")

    serve(lab, mode, leftovers, keep_services=True)
    status = lab.wait_state("a", "running")
    assert pid_alive(pid), status
    # A start of what runs is not a second copy.
    ok_status(lab.start("a"), "a", ("running", "starting"))
    assert lab.pids("a") == [pid], f"one copy of a, pid {pid}: {lab.pids('a')}"

    ok_status(lab.stop("a"), "a", "stopped")
    assert not pid_alive(pid)


def test_a_clean_environment_with_env_pass(leftovers, lab, monkeypatch):
    monkeypatch.setenv("NANNY_TEST_SECRET", "s3cret")
    monkeypatch.setenv("PASSME", "passed")
    monkeypatch.setenv("NOT_LISTED", "kept-out")
    pidfile = os.path.join(str(lab.workdir), "env.pid")
    lab.add("env", command=[sys.executable, ESCAPER, "sleep", pidfile], health=False,
            extra={"env_pass": json.dumps(["PASSME"]), "env": json.dumps({"MINE": "1"})})
    d = serve(lab, None, leftovers)
    start_answer(lab.start("env"), "env")
    pid = wait_until(lambda: read_pid(pidfile), timeout=GONE_TIMEOUT,
                     message="the service wrote its pid")
    leftovers.pids.append(pid)
    env = read_environ(pid)
    assert "NANNY_TEST_SECRET" not in env, env
    assert "NOT_LISTED" not in env, env
    assert env.get("PASSME") == "passed", env
    assert env.get("MINE") == "1", env
    assert env.get("PATH"), env
    instance = d.get_json("/health")["process"]["instance"]
    assert env.get("NANNY_INSTANCE") == f"{instance}/env", env
    ok_status(lab.stop("env"), "env", "stopped")


@pytest.mark.parametrize("first, then", [("fallback", "cgroup"), ("cgroup", "fallback")])
def test_a_restart_in_the_other_mode_adopts_and_stops(leftovers, lab, monkeypatch, first, then):
    """A daemon started in one mode, killed, and started again in the other (an upgrade,
    a cgroup that became writable or not): what runs is adopted and stopped whole."""
    pidfile = add_escaper(lab, "esc", "setsid-grandchild")

    def use(mode):
        if mode == "fallback":
            monkeypatch.setenv("NANNY_CGROUP", "off")
        else:
            monkeypatch.delenv("NANNY_CGROUP", raising=False)

    use(first)
    d = serve(lab, first, leftovers, keep_services=True)
    start_answer(lab.start("esc"), "esc")
    escaped = wait_until(lambda: read_pid(pidfile), timeout=GONE_TIMEOUT,
                         message="the escaped process wrote its pid")
    leftovers.pids.append(escaped)
    wait_until(lambda: os.path.exists(os.path.join(lab.state_dir, "state.json")),
               timeout=GONE_TIMEOUT, message="the state file was written")
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=GONE_TIMEOUT)

    use(then)
    serve(lab, then, leftovers, keep_services=True)
    lab.wait_state("esc", "running")
    ok_status(lab.stop("esc"), "esc", "stopped")
    assert not pid_alive(escaped), f"pid {escaped} still runs after the stop answered"


def test_two_daemons_never_touch_each_others_services(leftovers, mode, lab, nanny, workdir):
    """Two daemons of one host (two state folders), each with a service of one name: each
    stops and adopts only its own."""
    other_dir = workdir / "other"
    (other_dir / "services").mkdir(parents=True)
    other = Lab(nanny, other_dir / "services", other_dir)
    try:
        mine, theirs = lab.add("a", health=False), other.add("a", health=False)
        d = serve(lab, mode, leftovers)
        d2 = serve(other, mode, leftovers)
        assert (d.get_json("/health")["process"]["instance"]
                != d2.get_json("/health")["process"]["instance"])
        start_answer(lab.start("a"), "a")
        start_answer(other.start("a"), "a")
        my_pid, their_pid = mine.wait_pidfile_pid(), theirs.wait_pidfile_pid()
        leftovers.pids += [my_pid, their_pid]

        ok_status(lab.stop("a"), "a", "stopped")
        assert not pid_alive(my_pid)
        assert pid_alive(their_pid)
        # A rescan looks for what runs in this daemon's subtree: not the other's.
        lab.rediscover()
        assert lab.state("a") == "stopped"
        assert other.state("a") == "running"
        ok_status(other.stop("a"), "a", "stopped")
        assert not pid_alive(their_pid)
    finally:
        other.close()
