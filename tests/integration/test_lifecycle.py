"""Lifecycle of process services (issue 3, SPEC sections 3 and 4): start, stop and
restart through the API, the health states, exits and crashes, restart policies with
backoff and the start limit, driver failures, and adoption by a restarted daemon.

Every service here runs the test service (tests/fixtures/README.md) through the process
driver; the `lab` fixture stops them all at the end and kills any leftover.
"""

import os
import re
import signal
import time

import pytest

from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    HEALTH_KEYS,
    json_error,
    lab,
    ok_status,
    pid_alive,
    start_answer,
)


def assert_health_filled(status, ok, code=None):
    h = status["health"]
    for k in HEALTH_KEYS:
        assert k in h, f"health lacks {k!r}: {h}"
    assert h["ok"] is ok, h
    if code is not None:
        assert h["status_code"] == code, h
    assert isinstance(h["latency_ms"], (int, float)) and h["latency_ms"] >= 0, h
    assert h["checked_at"], h


def mentions_exit_status(text, code):
    """last_error names the exit status, e.g. 'exited with status 3' or 'exit code 3'."""
    return bool(text) and "exit" in text.lower() and re.search(rf"\b{code}\b", text)


# --- start -------------------------------------------------------------------------


def test_start_answers_starting_then_becomes_running_and_healthy(lab):
    a = lab.add("a", ["--startup-delay", "300"])
    lab.serve()
    before = lab.status("a")
    assert before["state"] == "stopped" and before["is_healthy"] is False, before
    body = start_answer(lab.start("a"), "a", preempted=[])
    assert body["started_at"], body
    assert body["restarts"] == 0, body
    if body["state"] == "starting":
        assert body["is_healthy"] is False, body
    s = lab.wait_state("a", "running")
    assert s["is_healthy"] is True, s
    assert_health_filled(s, ok=True, code=200)
    assert s["last_error"] in (None, ""), s
    assert s["started_at"] == body["started_at"], (s, body)
    # The service itself runs: its own pid, one process.
    pid = a.own_pid()
    assert pid and pid == a.pidfile_pid(), (pid, a.pidfile_pid())
    assert lab.pids("a") == [pid]


def test_start_of_service_without_health_check_is_running_at_once(lab):
    a = lab.add("a", health=False)
    lab.serve()
    body = start_answer(lab.start("a"), "a", states="running", preempted=[])
    assert body["started_at"], body
    assert lab.pids("a"), "no process for a service answered as running"
    assert a.wait_own_pid() in lab.pids("a")
    assert lab.state("a") == "running"


def test_health_after_keeps_it_starting_until_the_check_passes(lab):
    a = lab.add("a", ["--health-after", "1500"])
    lab.serve()
    body = start_answer(lab.start("a"), "a", preempted=[])
    assert body["state"] == "starting", body
    # The service answers 503 "starting" for 1.5 s: it stays starting and not healthy.
    time.sleep(0.6)
    s = lab.status("a")
    assert s["state"] == "starting", s
    assert s["is_healthy"] is False, s
    s = lab.wait_state("a", "running")
    assert s["is_healthy"] is True, s
    assert_health_filled(s, ok=True, code=200)
    assert a.own_pid() in lab.pids("a")


def test_start_wait_healthy_answers_when_running(lab):
    a = lab.add("a", ["--startup-delay", "500"])
    lab.serve()
    body = start_answer(lab.start("a", wait=True), "a", states="running", preempted=[])
    assert body["is_healthy"] is True, body
    assert_health_filled(body, ok=True, code=200)
    assert a.own_pid() == a.pidfile_pid()


def test_start_wait_healthy_times_out_with_504_and_stops_the_service(lab):
    lab.add("a", ["--health", "fail"], health={"start_period": "1s"})
    lab.serve()
    r = lab.start("a", wait=True)
    json_error(r, 504, "timed_out")
    s = lab.status("a")
    assert s["state"] == "failed", s
    assert "not healthy within start_period" in (s["last_error"] or ""), s
    assert s["is_healthy"] is False, s
    lab.wait_no_processes("a")


def test_start_not_healthy_within_start_period_fails_without_wait(lab):
    lab.add("a", ["--health", "fail"], health={"start_period": "1s"})
    lab.serve()
    start_answer(lab.start("a"), "a", states="starting", preempted=[])
    s = lab.wait_state("a", ("failed", "stopped"))
    assert s["state"] == "failed", s
    assert "not healthy within start_period" in (s["last_error"] or ""), s
    lab.wait_no_processes("a")


def test_start_of_running_service_is_a_no_op(lab):
    a = lab.add("a")
    lab.serve()
    first = start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    for force in (None, True):
        again = start_answer(lab.start("a", force=force), "a", states="running", preempted=[])
        assert again["started_at"] == first["started_at"], (first, again)
        assert again["restarts"] == first["restarts"], (first, again)
    assert a.own_pid() == pid
    assert lab.pids("a") == [pid]


def test_start_of_starting_service_is_a_no_op(lab):
    lab.add("a", ["--startup-delay", "3000"])
    lab.serve()
    first = start_answer(lab.start("a"), "a", states="starting")
    pids = lab.pids("a")
    assert len(pids) == 1, pids
    again = start_answer(lab.start("a"), "a", states=("starting", "running"), preempted=[])
    assert again["started_at"] == first["started_at"], (first, again)
    assert lab.pids("a") == pids


def test_start_answer_and_status_agree(lab):
    lab.add("a")
    lab.serve()
    body = start_answer(lab.start("a", wait=True), "a", states="running")
    s = lab.status("a")
    for k in ("name", "state", "started_at", "restarts", "is_healthy"):
        assert s[k] == body[k], (k, s, body)
    listed = [x for x in lab.list() if x["name"] == "a"]
    assert listed and listed[0]["state"] == "running", listed


# --- stop --------------------------------------------------------------------------


def test_stop_running_service(lab):
    a = lab.add("a")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    assert pid
    body = ok_status(lab.stop("a"), "a", "stopped")
    assert body["is_healthy"] is False, body
    # The answer comes once the process group is gone.
    assert not pid_alive(pid), f"pid {pid} alive after stop answered"
    lab.assert_no_processes("a", "after stop answered")
    assert a.own_pid() is None, "the service still answers after stop"
    assert lab.state("a") == "stopped"


def test_stop_of_stopped_service_is_200(lab):
    lab.add("a")
    lab.serve()
    ok_status(lab.stop("a"), "a", "stopped")
    start_answer(lab.start("a"), "a")
    ok_status(lab.stop("a"), "a", "stopped")
    ok_status(lab.stop("a"), "a", "stopped")
    assert lab.state("a") == "stopped"


def test_stop_while_starting(lab):
    lab.add("a", ["--startup-delay", "3000"])
    lab.serve()
    start_answer(lab.start("a"), "a", states="starting")
    ok_status(lab.stop("a"), "a", "stopped")
    lab.assert_no_processes("a", "after stop answered")


@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["sigterm", "ignores-sigterm"])
def test_stop_kills_the_whole_process_group(lab, ignore_sigterm):
    args = ["--fork-children", "3"]
    if ignore_sigterm:
        args.append("--ignore-sigterm")
    lab.add("a", args, stop_timeout="1s")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pids = lab.pids("a")
    assert len(pids) == 4, f"expected the service and its 3 children, found {pids}"
    body = ok_status(lab.stop("a", timeout=30), "a", "stopped")
    still = [p for p in pids if pid_alive(p)]
    assert not still, f"processes {still} of the group alive after stop answered: {body}"
    lab.assert_no_processes("a", "after stop answered")


def test_stop_with_term_delay_waits_for_the_exit(lab):
    a = lab.add("a", ["--term-delay", "500"], stop_timeout="5s")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    ok_status(lab.stop("a"), "a", "stopped")
    assert not pid_alive(pid)
    lines = lab.log_lines("a")
    assert "testsvc: SIGTERM, exiting" in lines, lines[-20:]


def test_stopped_on_failure_service_is_not_restarted(lab):
    lab.add("a", restart="on-failure")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")
    # A stop asked for is not a failure: nothing comes back, well past the 1 s backoff.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        s = lab.status("a")
        assert s["state"] == "stopped", s
        assert not lab.pids("a"), lab.pids("a")
        time.sleep(0.1)


# --- restart -----------------------------------------------------------------------


def test_restart_running_service_gives_a_new_process(lab):
    a = lab.add("a")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    old = a.own_pid()
    body = start_answer(lab.restart("a"), "a", preempted=[])
    assert not pid_alive(old), "the old process is still alive after restart answered"
    s = lab.wait_state("a", "running")
    new = a.own_pid()
    assert new and new != old, (old, new)
    assert lab.pids("a") == [new]
    assert s["started_at"], s
    assert body["started_at"], body


def test_restart_wait_healthy(lab):
    a = lab.add("a", ["--startup-delay", "300"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    old = a.own_pid()
    body = start_answer(lab.restart("a", wait=True), "a", states="running", preempted=[])
    assert body["is_healthy"] is True, body
    assert a.own_pid() not in (None, old)


def test_restart_of_stopped_service_starts_it(lab):
    a = lab.add("a")
    lab.serve()
    start_answer(lab.restart("a"), "a", preempted=[])
    lab.wait_state("a", "running")
    assert a.own_pid() in lab.pids("a")


# --- health ------------------------------------------------------------------------


def test_flapping_service_goes_unhealthy_and_back(lab):
    # 200 for 2 s, then 503 for 2 s, and so on; probes every 200 ms.
    lab.add("a", ["--health", "flap", "--flap-period", "2000"])
    lab.serve()
    start_answer(lab.start("a"), "a")
    s = lab.wait_state("a", "running")
    assert s["is_healthy"] is True, s
    s = lab.wait_state("a", "unhealthy", interval=0.03)
    assert s["is_healthy"] is False, s
    assert_health_filled(s, ok=False, code=503)
    s = lab.wait_state("a", "running", interval=0.03)
    assert s["is_healthy"] is True, s
    assert_health_filled(s, ok=True, code=200)
    # Unhealthy is a health state, not an exit: same process all along.
    assert len(lab.pids("a")) == 1


def test_fewer_than_three_failed_checks_do_not_make_it_unhealthy(lab):
    # /health alternates 200 and 503 every 300 ms; checks at least 200 ms apart: a 503
    # window holds at most 2 checks, so there are never 3 failures in a row.
    lab.add("a", ["--health", "flap", "--flap-period", "300"],
            health={"interval": "200ms", "timeout": "150ms"})
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        s = lab.status("a")
        assert s["state"] == "running", s
        time.sleep(0.05)


def test_health_check_timeouts_count_as_failures(lab):
    # Answers /health after 3 s only: each check times out.
    lab.add("a", ["--health", "slow", "--slow-ms", "3000"],
            health={"interval": "200ms", "timeout": "150ms", "start_period": "2s"})
    lab.serve()
    start_answer(lab.start("a"), "a", states="starting")
    s = lab.wait_state("a", ("failed", "running", "unhealthy"))
    # Never healthy within start_period: failed and stopped.
    assert s["state"] == "failed", s
    assert "not healthy within start_period" in (s["last_error"] or ""), s
    assert s["health"]["ok"] is False, s
    lab.wait_no_processes("a")


# --- exits and crashes -------------------------------------------------------------


def test_crash_shows_failed_with_exit_status(lab):
    lab.add("a", ["--crash-after", "300", "--exit-code", "3"], restart="no")
    lab.serve()
    start_answer(lab.start("a"), "a")
    s = lab.wait_state("a", "failed", timeout=5)
    assert mentions_exit_status(s["last_error"], 3), s
    assert s["is_healthy"] is False, s
    assert s["restarts"] == 0, s
    lab.wait_no_processes("a")
    # restart: "no" leaves it failed.
    time.sleep(1.5)
    s = lab.status("a")
    assert s["state"] == "failed" and s["restarts"] == 0, s


def test_crash_after_running_shows_failed(lab):
    lab.add("a", ["--crash-after", "1500", "--exit-code", "3"], restart="no")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    s = lab.wait_state("a", "failed", timeout=6)
    assert mentions_exit_status(s["last_error"], 3), s


def test_death_by_signal_is_named_in_last_error(lab):
    lab.add("a", ["--crash-after", "300", "--signal-self", "KILL"], restart="no")
    lab.serve()
    start_answer(lab.start("a"), "a")
    s = lab.wait_state("a", "failed", timeout=5)
    err = s["last_error"] or ""
    assert re.search(r"SIGKILL|signal 9|\bKILL", err), s


def test_failed_service_can_be_started_again(lab):
    a = lab.add("a", ["--crash-after", "300", "--exit-code", "3"], restart="no")
    lab.serve()
    start_answer(lab.start("a"), "a")
    lab.wait_state("a", "failed", timeout=5)
    body = start_answer(lab.start("a"), "a")
    assert body["state"] in ("starting", "running"), body
    lab.wait_state("a", "failed", timeout=5)
    assert a.pidfile_pid()


def test_on_failure_restarts_with_doubling_backoff_until_the_start_limit(lab):
    lab.add("a", ["--crash-after", "300", "--exit-code", "3"], restart="on-failure")
    lab.serve()
    t0 = time.monotonic()
    start_answer(lab.start("a"), "a")
    seen = {0: t0}  # restarts count -> when it was first seen
    deadline = t0 + 50
    last = None
    while time.monotonic() < deadline:
        last = lab.status("a")
        n = last["restarts"]
        assert isinstance(n, int) and n >= 0, last
        if n not in seen:
            seen[n] = time.monotonic()
        if last["state"] == "failed" and "start limit hit" in (last["last_error"] or ""):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no 'start limit hit' within 50 s; restarts seen {sorted(seen)}; "
                             f"last status {last}")
    # 5 starts in 60 s: the first plus 4 restarts (5 if the limit counts restarts).
    assert last["restarts"] in (4, 5), last
    counts = sorted(seen)
    assert counts[:4] == [0, 1, 2, 3], f"restart counts seen: {counts}"
    # Backoff 1 s doubling: the gaps between restarts grow (lower bounds only).
    gaps = [seen[k + 1] - seen[k] for k in range(1, 3)]
    assert gaps[0] >= 0.9, f"restart 1 -> 2 after {gaps[0]:.2f}s; backoff should be >= 1s"
    assert gaps[1] >= 1.8, f"restart 2 -> 3 after {gaps[1]:.2f}s; backoff should be >= 2s"
    # Then it stays failed: nothing runs, nothing comes back.
    lab.wait_no_processes("a")
    time.sleep(2.0)
    s = lab.status("a")
    assert s["state"] == "failed" and s["restarts"] == last["restarts"], s
    assert "start limit hit" in (s["last_error"] or ""), s
    assert not lab.pids("a")


def test_on_failure_restart_brings_it_back_running(lab):
    # Crashes at 1.5 s after becoming healthy; restarted 1 s later it runs again.
    a = lab.add("a", ["--crash-after", "1500", "--exit-code", "3"], restart="on-failure")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    first = a.own_pid()
    s = lab.wait_status("a", lambda s: s["restarts"] >= 1 and s["state"] == "running",
                        message="restarted and running", timeout=10)
    assert a.own_pid() not in (None, first), s
    ok_status(lab.stop("a"), "a", "stopped")
    lab.assert_no_processes("a", "after stop answered")


def test_on_failure_does_not_restart_a_clean_exit(lab):
    lab.add("a", ["--exit-after", "300"], restart="on-failure", health=False)
    lab.serve()
    start_answer(lab.start("a"), "a")
    s = lab.wait_state("a", ("stopped", "failed"), timeout=5)
    time.sleep(1.8)
    s = lab.status("a")
    assert s["restarts"] == 0, s
    assert s["state"] in ("stopped", "failed"), s
    assert not lab.pids("a")


def test_always_restarts_a_clean_exit(lab):
    lab.add("a", ["--exit-after", "300"], restart="always", health=False)
    lab.serve()
    start_answer(lab.start("a"), "a")
    lab.wait_status("a", lambda s: s["restarts"] >= 1, message="restarted", timeout=8)
    ok_status(lab.stop("a"), "a", "stopped")
    time.sleep(1.5)
    s = lab.status("a")
    assert s["state"] == "stopped", s
    assert not lab.pids("a")


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["start", "stop", "restart"])
def test_unknown_service_is_404(lab, action):
    lab.add("a")
    lab.serve()
    json_error(lab.d.post(f"/services/nope/{action}"), 404, "not_found")
    json_error(lab.d.get("/services/nope/logs"), 404, "not_found")


@pytest.mark.parametrize("action", ["start", "restart"])
@pytest.mark.parametrize("body", ["{", '{"force":"yes"}', '{"other":1}', "[]"])
def test_bad_body_is_400_and_changes_nothing(lab, action, body):
    lab.add("a")
    lab.serve()
    json_error(lab.start("a", body=body, action=action), 400, "bad_request")
    assert lab.state("a") == "stopped"
    assert not lab.pids("a")


def test_bad_stop_body_is_400_and_changes_nothing(lab):
    lab.add("a")
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    json_error(lab.d.post("/services/a/stop", body='{"force":true}'), 400, "bad_request")
    assert lab.state("a") == "running"


def test_broken_manifest_is_422(lab):
    lab.add("a")
    folder = os.path.join(str(lab.services_dir), "broken")
    os.makedirs(folder)
    with open(os.path.join(folder, "service.yaml"), "w") as f:
        f.write('name: broken\nports: ["99999"]\ncommand: ["sleep", "1"]\n')
    lab.serve()
    for action in ("start", "restart", "stop"):
        body = json_error(lab.d.post(f"/services/broken/{action}"), 422, "invalid_manifest")
        assert body["message"], body
    json_error(lab.d.get("/services/broken/logs"), 422, "invalid_manifest")


def test_manifest_broken_after_start_refuses_start_with_422(lab):
    a = lab.add("a", health=False)
    lab.serve()
    path = f"{a.folder}/service.yaml"
    with open(path, "a") as f:
        f.write("ports: [\n")  # breaks the YAML
    lab.rediscover()
    json_error(lab.start("a"), 422, "invalid_manifest")
    assert not lab.pids("a")


def test_missing_command_is_502_driver_failed(lab):
    lab.add("a", command=["/nonexistent/nanny-test/no-such-program", "--flag"], health=False)
    lab.serve()
    r = lab.start("a")
    body = json_error(r, 502, "driver_failed")
    msg = body["message"].lower()
    assert "no-such-program" in msg or "no such file" in msg or "not found" in msg, body
    s = lab.status("a")
    assert s["state"] == "failed", s
    assert s["last_error"], s
    assert s["is_healthy"] is False, s


def test_missing_workdir_is_502_driver_failed(lab):
    lab.add("a", workdir="does-not-exist", health=False)
    lab.serve()
    body = json_error(lab.start("a"), 502, "driver_failed")
    assert "does-not-exist" in body["message"] or "workdir" in body["message"], body
    s = lab.status("a")
    assert s["state"] == "failed", s
    assert s["last_error"], s
    assert not lab.pids("a")


def test_port_taken_by_another_program_fails_with_the_port_in_last_error(lab):
    a = lab.add("a")
    lab.hold_port(a.port)
    lab.serve()
    r = lab.start("a")
    if r.status == 502:
        body = json_error(r, 502)
        assert str(a.port) in body["message"], body
        s = lab.status("a")
    else:
        start_answer(r, "a")
        s = lab.wait_state("a", "failed")
    assert s["state"] == "failed", s
    assert str(a.port) in (s["last_error"] or ""), s
    lab.wait_no_processes("a")


def test_other_services_unaffected_by_a_failure(lab):
    good = lab.add("good")
    lab.add("bad", command=["/nonexistent/nanny-test/nope"], health=False)
    lab.serve()
    start_answer(lab.start("good", wait=True), "good", states="running")
    json_error(lab.start("bad"), 502, "driver_failed")
    assert lab.state("good") == "running"
    assert good.own_pid() in lab.pids("good")
    lab.d.assert_healthy()


# --- the daemon restarts; services stay -------------------------------------------


def test_daemon_restart_adopts_running_services(lab):
    a = lab.add("a", gpu=True)
    b = lab.add("b", gpu=True)
    c = lab.add("c", health=False)
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    start_answer(lab.start("c"), "c", states="running")
    pid_a, pid_c = a.own_pid(), c.wait_pidfile_pid()
    assert pid_a and pid_c
    assert d1.terminate() == 0, d1.stderr
    # SIGTERM to the daemon leaves its services running.
    assert pid_alive(pid_a) and a.own_pid() == pid_a
    assert pid_alive(pid_c)
    lab.serve()
    s = lab.wait_state("a", "running")
    assert a.own_pid() == pid_a, s
    assert lab.pids("a") == [pid_a], "the adopted service was started again"
    assert lab.wait_state("c", "running")
    assert lab.pids("c") == [pid_c]
    # The GPU hold is kept.
    body = json_error(lab.start("b"), 409, "gpu_conflict")
    assert body["holder"] == "a", body
    assert not lab.pids("b")
    # And the new daemon stops what the old one started.
    ok_status(lab.stop("a"), "a", "stopped")
    assert not pid_alive(pid_a)
    lab.assert_no_processes("a", "after stop answered")
    ok_status(lab.stop("c"), "c", "stopped")
    lab.assert_no_processes("c", "after stop answered")
    start_answer(lab.start("b"), "b", preempted=[])
    assert b.wait_pidfile_pid()


def test_daemon_restart_marks_services_that_died_meanwhile_not_running(lab):
    a = lab.add("a")
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    assert d1.terminate() == 0, d1.stderr
    # The service dies while no daemon watches it.
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    lab.serve()
    s = lab.wait_state("a", ("stopped", "failed"))
    assert s["is_healthy"] is False, s
    # And it starts again normally.
    start_answer(lab.start("a", wait=True), "a", states="running")
    assert a.own_pid() not in (None, pid)
