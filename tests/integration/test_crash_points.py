"""kill -9 of the daemon in every phase of a start, stop, forced start (preemption) and
restart, at the crash points of a test build (meson -Dcrash_points=true: the daemon kills
itself where NANNY_TEST_CRASH_AT says). A daemon restarted on the same state folder
finishes or undoes the operation: never half-remembered, never a second copy of a
process, never two GPU holders, and a second start does not make two copies."""

import http.client
import json

import pytest

from lifecycle_helpers import json_error, lab, ok_status, pid_alive  # noqa: F401

CRASH_TIMEOUT = 20.0


def serve(lab, point=None):
    """A daemon on the lab's folders that leaves its services running when it ends,
    killing itself at crash point POINT (None: never)."""
    env = {"NANNY_TEST_CRASH_AT": point} if point else None
    d = lab.nanny.serve(lab.services_dir, state=lab.state_dir, env=env, stop_services=False)
    lab.d = d
    lab.daemons.append(d)
    return d


def crash_on(lab, point, method_path, body=None):
    """Sends the request that reaches POINT and sees the daemon die there by SIGKILL."""
    d = lab.d
    try:
        r = d.post(method_path, body=body,
                   headers={"Content-Type": "application/json"} if body else None,
                   timeout=CRASH_TIMEOUT)
    except (OSError, http.client.HTTPException):
        r = None
    rc = d.wait_exit(timeout=CRASH_TIMEOUT)
    assert rc == -9, (f"the daemon did not die at crash point {point} (answer {r!r}, exit "
                      f"{rc}): not a crash-points build, or the point is gone; stderr:\n"
                      f"{d.stderr[-3000:]}")
    assert f"crash point {point}" in d.stderr, d.stderr[-3000:]


def settled(lab, name, states=("running", "stopped", "failed")):
    try:
        return lab.wait_state(name, states)
    except AssertionError as e:
            raise AssertionError(f"{e}\nstderr of the daemons:\n" + "\n----\n".join(
            d.stderr[-3000:] for d in lab.daemons)) from None


def assert_sound(lab, names):
    """No duplicate process, at most one GPU holder, and a second start makes no second
    copy of what runs."""
    holders = lab.gpu_holders()
    assert len(holders) <= 1, holders
    for name in names:
        pids = lab.pids(name)
        assert len(pids) <= 1, f"{name}: {pids}"
        state = lab.state(name)
        if pids:
            assert state in ("running", "starting"), (name, state, pids)
        r = lab.start(name)
        if r.status == 200:
            lab.wait_state(name, ("running",))
            assert len(lab.pids(name)) == 1, f"{name}: {lab.pids(name)} after a second start"
        else:
            json_error(r, 409, "gpu_conflict")
    assert len(lab.gpu_holders()) <= 1


# --- start ------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["start-intent-written", "start-recorded"])
def test_crash_during_start_finishes_it(lab, point):
    lab.add("a", gpu=True, health=False)
    serve(lab, point)
    crash_on(lab, point, "/services/a/start")
    serve(lab)
    assert settled(lab, "a", ("running",))
    assert len(lab.pids("a")) == 1, lab.pids("a")
    assert_sound(lab, ["a"])


def test_crash_between_spawn_and_record_makes_no_second_copy(lab):
    lab.add("a", gpu=True, health=False)
    serve(lab, "start-spawned")
    crash_on(lab, "start-spawned", "/services/a/start")
    serve(lab)
    assert settled(lab, "a", ("running",))
    assert len(lab.pids("a")) == 1, lab.pids("a")
    assert_sound(lab, ["a"])


# --- stop -------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["stop-intent-written", "stop-signalled"])
def test_crash_during_stop_finishes_it(lab, point):
    a = lab.add("a", gpu=True, health=False, args=["--ignore-sigterm"], stop_timeout="1s")
    serve(lab, point)
    ok = lab.start("a")
    assert ok.status == 200, ok
    pid = a.wait_pidfile_pid()
    crash_on(lab, point, "/services/a/stop")
    serve(lab)
    # The stop is finished: nothing of a runs, and it says so.
    lab.wait_no_processes("a")
    assert settled(lab, "a", ("stopped", "failed"))
    assert not pid_alive(pid)  # stopped: nothing of it runs (not even on its way out)
    assert_sound(lab, ["a"])


# --- force (preemption) -----------------------------------------------------------------


@pytest.mark.parametrize("point", ["force-intent-written", "force-holder-stopping",
                                   "force-holder-gone"])
def test_crash_during_preemption_finishes_it(lab, point):
    lab.add("a", gpu=True, health=False, stop_timeout="1s")
    lab.add("b", gpu=True, health=False)
    serve(lab, point)
    assert lab.start("a").status == 200
    lab.wait_state("a", ("running",))
    crash_on(lab, point, "/services/b/start", body=json.dumps({"force": True}))
    serve(lab)
    # b got the GPU, a was stopped: the preemption is finished.
    lab.wait_state("b", ("running",))
    lab.wait_no_processes("a")
    assert settled(lab, "a", ("stopped", "failed"))
    assert len(lab.pids("b")) == 1, lab.pids("b")
    assert lab.gpu_holders() == ["b"], lab.gpu_holders()
    assert_sound(lab, ["a", "b"])


# --- restart ----------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["restart-intent-written", "restart-old-stopped"])
def test_crash_during_restart_leaves_one_running(lab, point):
    lab.add("a", gpu=True, health=False, stop_timeout="1s")
    serve(lab, point)
    assert lab.start("a").status == 200
    lab.wait_state("a", ("running",))
    crash_on(lab, point, "/services/a/restart")
    serve(lab)
    assert settled(lab, "a", ("running",))
    assert len(lab.pids("a")) == 1, lab.pids("a")
    assert_sound(lab, ["a"])
