"""The compose driver (SPEC sections 3 and 4) against a real Docker engine: start runs
`<compose> -p NAME up -d` in the service folder, stop runs `down -t <stop_timeout>`, the
logs come from Docker as `SERVICE | line`, the state follows the containers whoever
starts or kills them, the GPU rule holds for containers too, and the daemon lives through
an engine that goes away and comes back, or was never there.

The machinery (engine, FROM scratch test image, service folders, cleanup) is in
compose_helpers.py. The first tests check that machinery alone, without the driver, so
that a broken environment is told apart from a broken driver.
"""

import json
import os
import re
import stat
import threading
import time

import pytest

from compose_helpers import (  # noqa: F401 (clab, docker_engine, testsvc_image are fixtures)
    MISSING_IMAGE,
    clab,
    compose_command_name,
    docker_engine,
    engine_error_text,
    health_compose,
    new_project_name,
    split_prefixed,
    testsvc_image,
)
from conftest import free_port, wait_until
from lifecycle_helpers import (
    STATE_TIMEOUT,
    json_error,
    ok_status,
    start_answer,
)

# How long the state may take to follow a container that died or appeared behind the
# daemon's back (SPEC: within one health interval, 1 s here; generous for ASan).
FOLLOW_TIMEOUT = 5.0


def assert_conflict(resp, holder):
    body = json_error(resp, 409, "gpu_conflict")
    assert body.get("holder") == holder, body
    return body


# --- the machinery itself (no driver needed) ----------------------------------------------


def test_harness_image_and_compose_project_by_hand(clab):
    """The test image runs under compose by hand: it answers /health on its port, its
    containers carry the project label, `compose logs` has both services, and `down`
    leaves nothing."""
    svc = clab.add(args=["--print-lines", "2"], worker=True)
    svc.up()
    wait_until(svc.answers_health, timeout=STATE_TIMEOUT, interval=0.1,
               message=f"{svc.name} answers /health on {svc.port}")
    services = sorted(c["service"] for c in svc.running())
    assert services == ["app", "worker"], svc.containers()
    logs = svc.compose("logs", "--no-color").stdout
    assert "testsvc: line 1" in logs and "running without http" in logs, logs
    svc.down()
    assert svc.containers() == []
    assert svc.engine.networks(svc.project) == []


def test_harness_private_engine_stops_and_starts(clab):
    """A private dockerd starts, runs the image, takes its containers down with it when
    stopped, starts again on the same data, and is removed fully."""
    pe = clab.private_engine()
    svc = clab.add(engine=pe)
    svc.up()
    wait_until(svc.answers_health, timeout=STATE_TIMEOUT, interval=0.1,
               message=f"{svc.name} answers on the private engine")
    assert clab.engine.containers(svc.project) == [], "the up went to the shared engine"
    pe.stop()
    assert not pe.answers(timeout=5.0)
    wait_until(lambda: not svc.answers_health(), timeout=STATE_TIMEOUT, interval=0.1,
               message="the container died with its engine")
    pe.start()
    states = [c["state"] for c in svc.containers()]
    assert states and "running" not in states, svc.containers()
    svc.down()
    root = pe.root
    pe.destroy()
    assert not os.path.exists(root)
    assert not pe.alive


# --- /health and configuration ------------------------------------------------------------


def test_health_reports_the_compose_command_and_a_reachable_engine(clab):
    clab.add()
    d = clab.serve()
    c = wait_until(lambda: (lambda c: c if c["engine"] == "reachable" else None)(
        health_compose(d)), timeout=FOLLOW_TIMEOUT, message="/health engine reachable")
    assert c["command"] == compose_command_name(), c
    assert c["error"] is None, c


def test_the_engine_is_watched_once_a_compose_service_exists(clab):
    """Without compose services the daemon does not talk to the engine (nor load libcurl
    for it); the first compose service found starts the watch, and a project of it that
    already runs is seen."""
    d = clab.serve()
    assert health_compose(d)["engine"] == "unwatched"
    svc = clab.add()
    svc.up()  # running before the daemon knows the service
    r = d.post("/rediscover")
    assert r.status == 200, r
    wait_until(lambda: health_compose(d)["engine"] == "reachable", timeout=FOLLOW_TIMEOUT,
               message="/health engine reachable after the first compose service")
    clab.wait_status(svc.name, lambda s: s["state"] == "running", timeout=FOLLOW_TIMEOUT,
                     message="its project, started by hand, seen running")
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


def _wrapper(workdir):
    """A compose command of its own: a script that notes each call, then runs the real
    compose command."""
    real = compose_command_name()
    assert real, "no compose command on this machine"
    bindir = os.path.join(str(workdir), "bin")
    os.makedirs(bindir, exist_ok=True)
    marker = os.path.join(bindir, "calls")
    path = os.path.join(bindir, "my-compose")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"$*\" >>{marker}\nexec {real} \"$@\"\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path, marker


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_compose_command_can_be_configured(clab, workdir, how):
    path, marker = _wrapper(workdir)
    svc = clab.add()
    if how == "flag":
        d = clab.serve(extra_args=["--compose-command", path])
    elif how == "env":
        d = clab.serve(env={"NANNY_COMPOSE_COMMAND": path})
    else:
        d = clab.serve(config=f"compose_command: {json.dumps(path)}\n")
    assert health_compose(d)["command"] == path
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    with open(marker) as f:
        calls = f.read()
    assert re.search(rf"(-p|--project-name)[ =]{svc.name}( |$)", calls, re.M), calls
    assert re.search(r"(^| )up( |$)", calls, re.M), calls
    ok_status(clab.stop(svc.name), svc.name, "stopped")


# --- start and stop -----------------------------------------------------------------------


def test_start_runs_up_and_stop_runs_down(clab):
    svc = clab.add(stop_timeout="3s")
    clab.serve()
    st = clab.status(svc.name)
    assert st["driver"] == "compose", st
    assert st["state"] == "stopped", st
    assert st["port"] == svc.port, st
    body = start_answer(clab.start(svc.name), svc.name, preempted=[])
    assert body["driver"] == "compose", body
    # `up -d` returned: the container exists, whatever its health.
    assert [c["service"] for c in svc.containers()] == ["app"], svc.containers()
    st = clab.wait_status(svc.name, lambda s: s["state"] == "running" and s["is_healthy"],
                          timeout=STATE_TIMEOUT, message="running and healthy")
    assert st["started_at"], st
    assert svc.answers_health()
    body = ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert body["is_healthy"] is False, body
    assert svc.containers() == [], "stop answered but containers remain"
    assert not svc.answers_health()
    # Stopping a stopped service is 200 too.
    ok_status(clab.stop(svc.name), svc.name, "stopped")


def test_a_dotted_name_maps_to_its_compose_project(clab):
    # Compose keeps only a-z 0-9 _ - of a project name: "ct-x.y" is project "ct-xy".
    name = new_project_name().replace("ct", "ct-", 1) + ".d"
    svc = clab.add(name=name)
    assert svc.project != name
    clab.serve()
    start_answer(clab.start(name, wait=True), name, states="running")
    assert [c["service"] for c in svc.running()] == ["app"], svc.containers()
    ok_status(clab.stop(name), name, "stopped")
    assert svc.containers() == []


def test_start_wait_healthy_answers_once_healthy(clab):
    svc = clab.add(args=["--health-after", "1500"])
    clab.serve()
    body = start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    assert body["is_healthy"] is True, body
    assert svc.answers_health()


def test_start_of_a_running_service_is_a_noop(clab):
    svc = clab.add()
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    cid = svc.container()
    start_answer(clab.start(svc.name), svc.name, states="running", preempted=[])
    assert svc.container() == cid
    assert len(svc.containers()) == 1


def test_restart_replaces_the_container(clab):
    svc = clab.add()
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    cid = svc.container()
    start_answer(clab.restart(svc.name, wait=True), svc.name, states="running")
    assert [c["state"] for c in svc.containers()] == ["running"], svc.containers()
    assert svc.container() != cid, "restart kept the old container"


def test_failing_up_is_502_with_the_tail_of_compose_stderr(clab):
    # No registry is reachable; the image's registry is a refused loopback port, so the
    # pull fails at once. `pull_policy: never` makes compose v2 not even try.
    svc = clab.add(image=MISSING_IMAGE, gpu=True, compose_extra={"pull_policy": "never"})
    clab.serve()
    body = json_error(clab.start(svc.name, timeout=60), 502, "driver_failed")
    assert "127.0.0.1:9" in body["message"], body
    st = clab.status(svc.name)
    assert st["state"] in ("failed", "stopped"), st
    assert st["last_error"], st
    assert clab.gpu_holders() == [], "a failed start still holds the GPU"
    assert [c for c in svc.containers() if c["state"] == "running"] == []


def test_wait_healthy_timeout_is_504_and_takes_the_containers_down(clab):
    svc = clab.add(args=["--health", "fail"], gpu=True,
                   health={"start_period": "3s"})
    clab.serve()
    json_error(clab.start(svc.name, wait=True), 504)
    svc.wait_no_containers()
    assert clab.gpu_holders() == []
    assert clab.state(svc.name) in ("stopped", "failed")


# --- logs ---------------------------------------------------------------------------------


def test_logs_are_prefixed_with_the_compose_service(clab):
    svc = clab.add(args=["--print-lines", "6"])
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    want = [f"testsvc: line {k}" for k in (1, 3, 5)] + [f"testsvc: err {k}" for k in (2, 4, 6)]
    lines = wait_until(
        lambda: (lambda ls: ls if all(f"app | {w}" in ls for w in want) else None)(
            clab.log_lines(svc.name, tail=100)),
        timeout=FOLLOW_TIMEOUT, message="the numbered lines in the logs")
    pairs = split_prefixed(lines)
    assert {s for s, _ in pairs} == {"app"}, lines
    assert any(re.match(r"testsvc: pid \d+ listening on 127\.0\.0\.1:%d$" % svc.port, t)
               for _, t in pairs), lines
    r = clab.logs(svc.name, tail=100, as_json=True)
    assert r.status == 200 and r.content_type == "application/json", r
    assert r.json()["lines"] == lines, r.json()
    last3 = clab.log_lines(svc.name, tail=3)
    assert last3 == lines[-3:], (last3, lines)


def test_logs_of_a_two_container_project(clab):
    svc = clab.add(args=["--print-lines", "3"],
                   worker=["--no-http", "--print-lines", "5"])
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")

    def both():
        ls = clab.log_lines(svc.name, tail=1000)
        ok = ("app | testsvc: line 3" in ls and "worker | testsvc: line 5" in ls
              and any(x.startswith("worker | testsvc: pid ") for x in ls))
        return ls if ok else None

    lines = wait_until(both, timeout=FOLLOW_TIMEOUT, message="lines of app and worker")
    assert {s for s, _ in split_prefixed(lines)} == {"app", "worker"}, lines
    four = clab.log_lines(svc.name, tail=4)
    assert len(four) == 4, four
    split_prefixed(four)
    r = clab.logs(svc.name, tail=2, as_json=True)
    assert r.status == 200, r
    assert len(r.json()["lines"]) == 2, r.json()


# --- the state follows the containers ------------------------------------------------------


def test_docker_kill_makes_the_service_fail(clab):
    svc = clab.add(gpu=True)
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    svc.engine.docker("kill", svc.container())
    st = clab.wait_state(svc.name, "failed", timeout=FOLLOW_TIMEOUT)
    assert st["is_healthy"] is False, st
    assert re.search(r"exit|kill|137|died", st["last_error"] or "", re.I), st
    assert clab.gpu_holders() == []
    # Stop runs `down`: the dead container goes too.
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == [], "stop of a failed service left its dead container"
    # It starts again.
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


def test_docker_kill_with_restart_on_failure_comes_back(clab):
    svc = clab.add(restart="on-failure")
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    before = clab.status(svc.name)["restarts"]
    svc.engine.docker("kill", svc.container())
    clab.wait_status(svc.name, lambda s: s["restarts"] > before and s["state"] == "running",
                     timeout=STATE_TIMEOUT + FOLLOW_TIMEOUT, message="restarted and running")
    wait_until(svc.answers_health, timeout=STATE_TIMEOUT, interval=0.1,
               message="answers again after the restart")
    assert len(svc.running()) == 1, svc.containers()


def test_compose_down_by_hand_is_noticed(clab):
    svc = clab.add()
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    svc.down()
    clab.wait_status(svc.name, lambda s: s["state"] in ("stopped", "failed"),
                     timeout=FOLLOW_TIMEOUT, message="not running after a down by hand")


def test_project_started_by_hand_shows_running(clab):
    svc = clab.add()
    clab.serve()
    assert clab.state(svc.name) == "stopped"
    svc.up()
    clab.wait_status(svc.name, lambda s: s["state"] == "running",
                     timeout=FOLLOW_TIMEOUT, message="running after an up by hand")
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


def test_gpu_project_started_by_hand_before_the_daemon_holds_the_gpu(clab):
    a = clab.add(gpu=True)
    b = clab.add(gpu=True)
    a.up()
    wait_until(a.answers_health, timeout=STATE_TIMEOUT, interval=0.1,
               message=f"{a.name} answers")
    clab.serve()
    clab.wait_status(a.name, lambda s: s["state"] == "running",
                     timeout=FOLLOW_TIMEOUT, message="adopted as running")
    assert clab.gpu_holders() == [a.name]
    assert_conflict(clab.start(b.name), a.name)
    assert b.containers() == []
    assert clab.state(a.name) == "running"


def test_daemon_restart_adopts_a_running_project(clab):
    svc = clab.add(gpu=True)
    other = clab.add(gpu=True)
    clab.serve(keep_services=True)
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    cid = svc.container()
    assert clab.d.terminate() == 0
    assert svc.container() == cid and svc.running(), "the daemon's exit took the project down"
    clab.serve()
    clab.wait_status(svc.name, lambda s: s["state"] == "running",
                     timeout=FOLLOW_TIMEOUT, message="adopted as running")
    assert_conflict(clab.start(other.name), svc.name)
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


# --- the GPU rule -------------------------------------------------------------------------


def test_force_preempts_a_compose_holder(clab):
    a = clab.add(gpu=True, worker=True)
    b = clab.add(gpu=True)
    clab.serve()
    start_answer(clab.start(a.name, wait=True), a.name, states="running")
    assert len(a.running()) == 2
    assert_conflict(clab.start(b.name), a.name)
    assert b.containers() == []
    body = start_answer(clab.start(b.name, force=True, timeout=60), b.name,
                        preempted=[a.name])
    assert a.containers() == [], "the preempted holder's containers remain"
    assert body["name"] == b.name
    assert clab.state(a.name) == "stopped"
    clab.wait_state(b.name, "running")
    assert clab.gpu_holders() == [b.name]


def test_racing_gpu_starts_yield_one_holder(clab):
    a = clab.add(gpu=True)
    b = clab.add(gpu=True)
    clab.serve()
    answers = {}

    def go(name):
        answers[name] = clab.start(name, timeout=60)

    threads = [threading.Thread(target=go, args=(n,)) for n in (a.name, b.name)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    codes = sorted(r.status for r in answers.values())
    assert codes == [200, 409], answers
    winner = a if answers[a.name].status == 200 else b
    loser = b if winner is a else a
    assert_conflict(answers[loser.name], winner.name)
    assert loser.containers() == []
    clab.wait_state(winner.name, "running")


# --- the engine goes away ----------------------------------------------------------------


def test_engine_stopped_and_started_again(clab):
    pe = clab.private_engine()
    svc = clab.add(engine=pe)
    d = clab.serve(extra_args=["--docker-host", pe.socket])
    wait_until(lambda: health_compose(d)["engine"] == "reachable", timeout=FOLLOW_TIMEOUT,
               message="the private engine reachable")
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    assert svc.running(), "the service's container is not on the private engine"
    assert clab.engine.containers(svc.project) == [], "the up went to the shared engine"

    pe.stop()  # live-restore is off: its containers stop with it
    wait_until(lambda: health_compose(d)["engine"] == "unreachable", timeout=FOLLOW_TIMEOUT,
               message="/health engine unreachable")
    c = health_compose(d)
    assert c["error"], c
    # Its container died with the engine: not healthy, and last_error says why.
    clab.wait_status(svc.name,
                     lambda s: engine_error_text(s["last_error"]) and not s["is_healthy"],
                     timeout=FOLLOW_TIMEOUT, message="last_error about the engine")
    json_error(clab.start(svc.name), 503, "backend_unavailable")
    assert d.get("/services").status == 200
    d.assert_healthy()

    pe.start()
    wait_until(lambda: health_compose(d)["engine"] == "reachable", timeout=FOLLOW_TIMEOUT,
               message="/health engine reachable again")
    assert health_compose(d)["error"] is None
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    assert svc.running()
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


def test_engine_that_comes_up_after_the_daemon_is_used(clab):
    pe = clab.private_engine(start=False)
    svc = clab.add(engine=pe)
    d = clab.serve(extra_args=["--docker-host", pe.socket])
    wait_until(lambda: health_compose(d)["engine"] == "unreachable", timeout=FOLLOW_TIMEOUT,
               message="/health engine unreachable")
    json_error(clab.start(svc.name), 503, "backend_unavailable")
    clab.start_private_engine(pe)
    wait_until(lambda: health_compose(d)["engine"] == "reachable", timeout=FOLLOW_TIMEOUT,
               message="/health engine reachable once dockerd runs")
    assert health_compose(d)["error"] is None
    clab.wait_status(svc.name, lambda s: not engine_error_text(s["last_error"]),
                     timeout=FOLLOW_TIMEOUT, message="last_error about the engine cleared")
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    assert svc.running()
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


@pytest.mark.parametrize("how", ["flag-path", "flag-unix-url", "env", "config",
                                 "DOCKER_HOST"])
def test_without_an_engine_the_daemon_runs_and_start_is_503(clab, workdir, how):
    missing = os.path.join(str(workdir), "no-engine", "docker.sock")
    svc = clab.add()
    other = clab.add(gpu=True)  # every compose service reports the engine
    if how == "flag-path":
        d = clab.serve(extra_args=["--docker-host", missing])
    elif how == "flag-unix-url":
        d = clab.serve(extra_args=["--docker-host", "unix://" + missing])
    elif how == "config":
        d = clab.serve(config=f"docker_host: {json.dumps(missing)}\n")
    else:
        var = "NANNY_DOCKER_HOST" if how == "env" else "DOCKER_HOST"
        d = clab.serve(env={var: "unix://" + missing})
    names = d.service_names()
    assert svc.name in names and other.name in names, names
    for name in (svc.name, other.name):
        clab.wait_status(name, lambda s: engine_error_text(s["last_error"]),
                         timeout=FOLLOW_TIMEOUT, message="last_error: engine not reachable")
    c = health_compose(d)
    assert c["engine"] == "unreachable", c
    assert c["error"], c
    body = json_error(clab.start(svc.name), 503, "backend_unavailable")
    assert body["message"], body
    assert clab.state(svc.name) in ("stopped", "failed")
    d.assert_healthy()


# --- a start that follows a down of the same project ---------------------------------------


def test_start_right_after_the_stop_of_a_failed_service_waits_for_its_down(clab):
    """The stop of a failed service runs `down` for its dead container; a start asked
    meanwhile must not run `up -d` during that down (which would remove what up made):
    the stop is overtaken, the start comes up after the down, and runs."""
    svc = clab.add(stop_timeout="1s")
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    svc.engine.docker("kill", svc.container())
    clab.wait_state(svc.name, "failed", timeout=FOLLOW_TIMEOUT)
    answers = {}
    stopper = threading.Thread(target=lambda: answers.setdefault("stop", clab.stop(svc.name)))
    stopper.start()
    time.sleep(0.05)
    start = clab.start(svc.name, wait=True)
    stopper.join(timeout=60)
    assert not stopper.is_alive(), "the stop was never answered"
    start_answer(start, svc.name, states="running")
    stop = answers["stop"]
    assert stop.status in (200, 409), stop
    if stop.status == 409:
        assert json_error(stop, 409, "cancelled")
    # The container that up made is there and serves, a moment later too.
    time.sleep(1.0)
    assert len(svc.running()) == 1, svc.containers()
    assert clab.state(svc.name) == "running"
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


def test_failed_up_then_immediate_restart_does_not_overlap_its_down(clab):
    """A failing up answers 502 and the driver takes down what it made; an automatic
    restart (restart: always, 1 s later) or a retry must wait for that down."""
    svc = clab.add(image=MISSING_IMAGE, restart="always")
    clab.serve()
    r = clab.start(svc.name)
    json_error(r, 502, "driver_failed")
    r2 = clab.start(svc.name)
    assert r2.status in (200, 502), r2
    # Whatever it tried, nothing of it is left running, and the daemon still answers.
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


def test_manifest_env_reaches_the_compose_file(clab):
    """The manifest's env is compose's environment: the compose file's ${VAR} use it (here
    the port the container listens on, and a line it prints)."""
    port = free_port()
    svc = clab.add(port=port, extra={"env": f"{{APP_PORT: '{port}', APP_LINES: '2'}}"})
    with open(os.path.join(svc.folder, "docker-compose.yml"), "w") as f:
        f.write("services:\n  app:\n"
                f"    image: {clab.image}\n"
                "    network_mode: host\n    init: true\n"
                '    command: ["--port", "${APP_PORT}", "--print-lines", "${APP_LINES}"]\n')
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    assert svc.answers_health()
    lines = clab.log_lines(svc.name)
    assert "app | testsvc: line 1" in lines, lines
    assert not any("line 3" in line for line in lines), lines
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []


# --- stops that `down` alone cannot finish -------------------------------------------------


def test_stop_removes_a_container_whose_service_left_the_compose_file(clab):
    """The compose file changed while it ran (its service renamed): `down` must take the
    orphan too, or the stop and the GPU would wait for it forever."""
    svc = clab.add(gpu=True)
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    path = os.path.join(svc.folder, "docker-compose.yml")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("  app:", "  renamed:"))
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    assert svc.containers() == []
    assert clab.gpu_holders() == []


def test_stop_with_a_broken_compose_file_stops_the_containers_through_the_engine(clab):
    """`down` fails (the compose file broke while it ran): after its retries the daemon
    stops the project's containers through the Engine API, and only then says stopped."""
    svc = clab.add(gpu=True)
    clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    with open(os.path.join(svc.folder, "docker-compose.yml"), "w") as f:
        f.write("services: [this is not a compose file\n")
    ok_status(clab.stop(svc.name), svc.name, "stopped")
    # The engine's own list may lag its die event (which the daemon follows) a moment.
    wait_until(lambda: svc.running() == [], timeout=FOLLOW_TIMEOUT,
               message="no container of it running")
    assert clab.gpu_holders() == []
    assert not svc.answers_health()
    assert "through the engine" in clab.d.stderr, "the engine fallback did not run"


def test_start_stop_restart_storm_ends_consistent(clab):
    """Starts, stops, restarts and forced starts of two GPU compose services, from 6
    threads at once (bounded: 6 requests each): every request is answered with a known
    status, never two holders are seen, and after a last stop of both no container of
    either is left."""
    a = clab.add(gpu=True, stop_timeout="1s")
    b = clab.add(gpu=True, stop_timeout="1s")
    clab.serve()
    seen_two = []
    errors = []

    def worker(k):
        ops = ["start", "stop", "restart", "force", "start", "stop"]
        for i, op in enumerate(ops):
            name = (a, b)[(k + i) % 2].name
            if op == "force":
                r = clab.d.post(f"/services/{name}/start", body='{"force":true}', timeout=90)
            else:
                r = clab.d.post(f"/services/{name}/{op}", timeout=90)
            if r.status not in (200, 409):
                errors.append((op, name, r.status, r.body[:200]))
            if len(clab.gpu_holders()) > 1:
                seen_two.append(clab.gpu_holders())

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a request was never answered"
    assert errors == [], errors
    assert seen_two == [], seen_two
    for svc in (a, b):
        ok_status(clab.stop(svc.name), svc.name, "stopped")
        assert svc.containers() == [], svc.containers()
    assert clab.d.get("/health").status == 200


def test_logs_follow_of_a_compose_service(clab):
    """GET /services/NAME/logs?follow=1 of a compose service: the tail, then the lines the
    container writes, from the engine's follow stream, prefixed with the compose service;
    the follow ends with a last line once the containers stop."""
    from sse_client import SSE

    svc = clab.add(args=["--print-lines", "4", "--print-interval", "100"])
    d = clab.serve()
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    wait_until(lambda: any("app | testsvc: err 4" in x for x in clab.log_lines(svc.name)),
               timeout=FOLLOW_TIMEOUT, message="the first lines in the logs")
    f = SSE(d.port, path=f"/services/{svc.name}/logs?follow=1&tail=2", hello=False)
    assert f.status == 200
    lines = f.lines(8, timeout=30)
    pairs = split_prefixed(lines)
    assert {s for s, _ in pairs} == {"app"}, lines
    numbers = [int(m.group(2)) for m in (re.match(r"testsvc: (line|err) (\d+)$", t)
                                         for _, t in pairs) if m]
    # After the tail, new lines: the numbers go on growing.
    assert len(numbers) >= 6 and numbers[-1] > 5, lines
    assert numbers == sorted(numbers), lines
    assert clab.stop(svc.name).status == 200
    rest = f.body_rest(timeout=30)
    assert "[nanny: the follow ended" in rest, rest[-300:]
    f.close()
