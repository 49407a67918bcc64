"""The GPU one-of rule (SPEC section 3): a gpu_required service in starting, running,
unhealthy or stopping holds the GPU; starting another answers 409 gpu_conflict naming
the holder and changes nothing; {"force":true} (or config gpu_conflict: preempt) stops
the holder fully first and lists it under "preempted"; any way a holder ends (stop,
crash, exit, a failed start, a start that never got healthy) frees the GPU.
"""

import threading
import time

import pytest

from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    json_error,
    lab,
    ok_status,
    pid_alive,
    start_answer,
)


def assert_conflict(resp, holder):
    body = json_error(resp, 409, "gpu_conflict")
    assert body.get("holder") == holder, body
    assert body["message"].startswith(f"{holder} is using the GPU"), body
    return body


def snapshot(lab, *names):
    """What a 409 must not change: state, started_at, restarts and the processes."""
    return {n: (lab.status(n)["state"], lab.status(n)["started_at"], lab.status(n)["restarts"],
                lab.pids(n)) for n in names}


# --- conflicts ---------------------------------------------------------------------


def test_second_gpu_service_is_refused_with_409_naming_the_holder(lab):
    a = lab.add("a", gpu=True)
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running", preempted=[])
    pid = a.own_pid()
    before = snapshot(lab, "a", "b")
    assert_conflict(lab.start("b"), "a")
    assert_conflict(lab.start("b", force=False), "a")
    assert_conflict(lab.start("b", wait=True), "a")
    assert snapshot(lab, "a", "b") == before
    assert a.own_pid() == pid
    assert b.pidfile_pid() is None, "b was spawned despite the conflict"
    assert lab.state("b") == "stopped"
    assert lab.gpu_holders() == ["a"]


def test_conflict_while_the_holder_is_starting(lab):
    lab.add("a", ["--startup-delay", "3000"], gpu=True)
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a"), "a", states="starting")
    assert_conflict(lab.start("b"), "a")
    assert b.pidfile_pid() is None
    assert lab.state("a") in ("starting", "running")


def test_conflict_while_the_holder_is_unhealthy(lab):
    # 200 for 2.5 s, then 503 for 2.5 s: running, then unhealthy.
    lab.add("a", ["--health", "flap", "--flap-period", "2500"], gpu=True)
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    lab.wait_state("a", "unhealthy", interval=0.03)
    # Unhealthy still holds the GPU (it may have recovered by now: it holds either way).
    assert_conflict(lab.start("b"), "a")
    assert b.pidfile_pid() is None


def test_conflict_while_the_holder_is_stopping(lab):
    # Ignores SIGTERM: stopping lasts the whole stop_timeout of 2 s.
    a = lab.add("a", ["--ignore-sigterm"], gpu=True, stop_timeout="2s")
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    answers = []
    stopper = threading.Thread(target=lambda: answers.append(lab.stop("a", timeout=30)))
    stopper.start()
    try:
        lab.wait_state("a", "stopping", interval=0.02)
        assert_conflict(lab.start("b"), "a")
        assert b.pidfile_pid() is None
    finally:
        stopper.join(40)
    assert answers, "the stop did not answer"
    ok_status(answers[0], "a", "stopped")
    lab.assert_no_processes("a", "after stop answered")
    assert a.own_pid() is None
    start_answer(lab.start("b"), "b", preempted=[])


def test_restart_of_another_gpu_service_conflicts_too(lab):
    lab.add("a", gpu=True)
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    assert_conflict(lab.restart("b"), "a")
    assert b.pidfile_pid() is None
    assert lab.state("a") == "running"


# --- force and preempt -------------------------------------------------------------


def test_force_stops_the_holder_fully_then_starts(lab):
    a = lab.add("a", ["--fork-children", "2"], gpu=True)
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    a_pids = lab.pids("a")
    assert len(a_pids) == 3, a_pids
    body = start_answer(lab.start("b", force=True), "b", preempted=["a"])
    # When the answer comes, the holder's process group is empty.
    still = [p for p in a_pids if pid_alive(p)]
    assert not still, f"preempted a still has processes {still}: {body}"
    assert lab.state("a") == "stopped"
    assert a.own_pid() is None
    lab.wait_state("b", "running")
    assert lab.gpu_holders() == ["b"]
    assert b.own_pid() in lab.pids("b")


def test_force_stops_a_holder_that_ignores_sigterm(lab):
    a = lab.add("a", ["--ignore-sigterm", "--fork-children", "2"], gpu=True, stop_timeout="1s")
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    a_pids = lab.pids("a")
    start_answer(lab.start("b", force=True, timeout=30), "b", preempted=["a"])
    assert not [p for p in a_pids if pid_alive(p)]
    lab.assert_no_processes("a", "after the forced start answered")
    assert a.own_pid() is None


def test_force_while_the_holder_is_starting(lab):
    lab.add("a", ["--startup-delay", "3000"], gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a"), "a", states="starting")
    start_answer(lab.start("b", force=True), "b", preempted=["a"])
    assert lab.state("a") == "stopped"
    lab.assert_no_processes("a", "after the forced start answered")
    lab.wait_state("b", "running")


def test_force_while_the_holder_is_stopping(lab):
    lab.add("a", ["--ignore-sigterm"], gpu=True, stop_timeout="2s")
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    answers = []
    stopper = threading.Thread(target=lambda: answers.append(lab.stop("a", timeout=30)))
    stopper.start()
    try:
        lab.wait_state("a", "stopping", interval=0.02)
        body = start_answer(lab.start("b", force=True, timeout=30), "b")
        # a was on its way out: listed as preempted or not, it is gone now.
        assert set(body["preempted"]) <= {"a"}, body
        lab.assert_no_processes("a", "after the forced start answered")
    finally:
        stopper.join(40)
    ok_status(answers[0], "a", "stopped")
    assert lab.gpu_holders() == ["b"]


def test_force_with_no_holder_preempts_nothing(lab):
    lab.add("a", gpu=True)
    lab.add("c")
    lab.serve()
    start_answer(lab.start("c", wait=True), "c", states="running")
    start_answer(lab.start("a", force=True), "a", preempted=[])
    assert lab.state("c") == "running"


def test_force_start_of_the_holder_itself_is_a_no_op(lab):
    a = lab.add("a", gpu=True)
    lab.serve()
    first = start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    again = start_answer(lab.start("a", force=True), "a", states="running", preempted=[])
    assert again["started_at"] == first["started_at"], (first, again)
    assert a.own_pid() == pid


def test_forced_restart_preempts_the_holder(lab):
    lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    start_answer(lab.restart("b", force=True), "b", preempted=["a"])
    lab.assert_no_processes("a", "after the forced restart answered")
    assert lab.gpu_holders() == ["b"]


def test_restart_of_the_holder_itself_does_not_conflict(lab):
    a = lab.add("a", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    old = a.own_pid()
    start_answer(lab.restart("a"), "a", preempted=[])
    lab.wait_state("a", "running")
    assert a.own_pid() not in (None, old)


def test_config_preempt_makes_every_start_forced(lab):
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve(config="gpu_conflict: preempt\n")
    start_answer(lab.start("a", wait=True), "a", states="running")
    start_answer(lab.start("b"), "b", preempted=["a"])
    assert lab.state("a") == "stopped"
    assert a.own_pid() is None
    lab.assert_no_processes("a", "after the start answered")
    start_answer(lab.restart("a"), "a", preempted=["b"])
    lab.assert_no_processes("b", "after the restart answered")
    assert lab.gpu_holders() == ["a"]


def test_config_refuse_is_the_default_behaviour(lab):
    lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve(config="gpu_conflict: refuse\n")
    start_answer(lab.start("a", wait=True), "a", states="running")
    assert_conflict(lab.start("b"), "a")


# --- services that do not need the GPU --------------------------------------------


def test_non_gpu_services_never_conflict(lab):
    lab.add("g", gpu=True)
    c1 = lab.add("c1")
    c2 = lab.add("c2")
    lab.serve()
    start_answer(lab.start("c1", wait=True), "c1", states="running", preempted=[])
    start_answer(lab.start("g", wait=True), "g", states="running", preempted=[])
    start_answer(lab.start("c2", wait=True), "c2", states="running", preempted=[])
    # A forced start of a CPU service preempts nobody either.
    ok_status(lab.stop("c2"), "c2", "stopped")
    start_answer(lab.start("c2", force=True), "c2", preempted=[])
    assert lab.gpu_holders() == ["g"]
    assert lab.state("c1") == "running" and c1.own_pid()
    lab.wait_state("c2", "running")
    assert c2.own_pid()


def test_a_preempting_start_leaves_cpu_services_alone(lab):
    lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    c = lab.add("c")
    lab.serve()
    start_answer(lab.start("c", wait=True), "c", states="running")
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = c.own_pid()
    start_answer(lab.start("b", force=True), "b", preempted=["a"])
    assert lab.state("c") == "running"
    assert c.own_pid() == pid


# --- every way out frees the GPU -----------------------------------------------------


def test_stop_frees_the_gpu(lab):
    lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")
    assert lab.gpu_holders() == []
    start_answer(lab.start("b"), "b", preempted=[])


FAILURES = {
    # name: (manifest kwargs, how the start answers: "502", "504" or "200")
    "missing-command": (dict(command=["/nonexistent/nanny-test/no-such-program"], health=False),
                        "502"),
    "missing-workdir": (dict(workdir="does-not-exist", health=False), "502"),
    "crash": (dict(args=["--crash-after", "300", "--exit-code", "3"], restart="no"), "200"),
    "clean-exit": (dict(args=["--exit-after", "300"], restart="no", health=False), "200"),
    "never-healthy": (dict(args=["--health", "fail"], health={"start_period": "1s"}), "504"),
    "never-healthy-no-wait": (dict(args=["--health", "fail"], health={"start_period": "1s"}),
                              "200"),
}


@pytest.mark.parametrize("how", list(FAILURES))
def test_a_failed_gpu_service_frees_the_gpu(lab, how):
    kwargs, answer = FAILURES[how]
    lab.add("a", gpu=True, **kwargs)
    lab.add("b", gpu=True)
    lab.serve()
    r = lab.start("a", wait=(answer == "504"))
    if answer == "502":
        json_error(r, 502, "driver_failed")
        assert lab.state("a") == "failed"
    elif answer == "504":
        json_error(r, 504, "timed_out")
        assert lab.state("a") == "failed"
    else:
        start_answer(r, "a")
        lab.wait_state("a", ("failed", "stopped"))
    lab.wait_no_processes("a")
    assert lab.gpu_holders() == []
    start_answer(lab.start("b"), "b", preempted=[])
    lab.wait_state("b", "running")


def test_port_taken_frees_the_gpu(lab):
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.hold_port(a.port)
    lab.serve()
    r = lab.start("a")
    if r.status == 502:
        json_error(r, 502)
    else:
        start_answer(r, "a")
    s = lab.wait_state("a", "failed")
    assert str(a.port) in (s["last_error"] or ""), s
    lab.wait_no_processes("a")
    assert lab.gpu_holders() == []
    start_answer(lab.start("b"), "b", preempted=[])


def test_gpu_hold_survives_a_daemon_restart(lab):
    a = lab.add("a", gpu=True)
    b = lab.add("b", gpu=True)
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    assert d1.terminate() == 0, d1.stderr
    lab.serve()
    lab.wait_state("a", "running")
    assert_conflict(lab.start("b"), "a")
    assert b.pidfile_pid() is None
    body = start_answer(lab.start("b", force=True), "b", preempted=["a"])
    assert not pid_alive(pid), body
    lab.assert_no_processes("a", "after the forced start answered")


def test_gpu_holder_is_listed_consistently(lab):
    lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a"), "a")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        services = lab.list()
        assert lab.gpu_holders(services) == ["a"], services
        assert all(s["gpu_required"] for s in services if s["name"] in ("a", "b"))
        time.sleep(0.05)


def test_forced_start_that_settles_at_once_is_answered_once(lab):
    """A forced start of a service without health checks reaches running in the same
    callback that frees the GPU; its request is answered exactly once (this used to read
    the answered operation after it was freed)."""
    lab.add("a", gpu=True)
    lab.add("b", gpu=True, health=False)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    start_answer(lab.start("b", force=True), "b", states="running", preempted=["a"])
    assert lab.state("b") == "running"
    assert lab.state("a") == "stopped"
    lab.d.assert_healthy()


def test_service_removed_while_its_start_waits_for_the_gpu(lab):
    """The folder of a service whose forced start waits for the holder to go is deleted
    and rescanned: the service stays until its start is answered, and the daemon lives."""
    import shutil
    lab.add("a", ["--ignore-sigterm"], gpu=True, stop_timeout="2s")
    b = lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    answers = []
    t = threading.Thread(target=lambda: answers.append(lab.start("b", force=True, timeout=30)))
    t.start()
    lab.wait_state("a", "stopping", interval=0.02)
    shutil.rmtree(b.folder)
    lab.rediscover()
    t.join(30)
    assert answers, "the forced start got no answer"
    r = answers[0]
    # Its folder is gone, so the start may fail (no workdir) or succeed from memory.
    assert r.status in (200, 502), r
    lab.d.assert_healthy()
    lab.stop("b")
