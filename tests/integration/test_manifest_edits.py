"""The GPU rule against manifest edits (issue 9, item 4): a running service keeps the
manifest it was started with (its GPU hold, port, command) until it stops; GET /services
shows that manifest and, apart, `pending_changes`; a new folder that claims the name of a
running service is the error, whatever the folder order; a restart (or a stop, then a
start) applies the new manifest; a manifest that breaks, or a folder removed, while the
service runs leaves it running on its manifest until it is stopped.

Each test drives the fault, then asserts that GET /services never shows two GPU holders
(the test's own record of which services were started as GPU services counts too) and
that nothing was lost: the running process is the same one, still answering.
"""

import os
import shutil

import pytest

from compose_helpers import (  # noqa: F401 (clab, docker_engine, testsvc_image are fixtures)
    clab,
    docker_engine,
    testsvc_image,
)
from conftest import replace_file, wait_until
from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    json_error,
    lab,
    ok_status,
    start_answer,
)


def manifest_path(svc):
    return os.path.join(svc.folder, "service.yaml")


def edit_manifest(svc, old, new):
    """Replaces old by new in svc's service.yaml (atomically, as editors do)."""
    with open(manifest_path(svc)) as f:
        text = f.read()
    assert old in text, text
    replace_file(manifest_path(svc), text.replace(old, new))


def assert_one_holder_at_most(lab):
    services = lab.list()
    holders = lab.gpu_holders(services)
    assert len(holders) <= 1, f"two GPU holders: {holders}: {services}"
    return holders


def assert_still_runs(lab, svc, pid):
    """Nothing lost: the same process runs and answers, and the daemon says running."""
    assert svc.own_pid() == pid, f"{svc.name}: pid {svc.own_pid()}, was {pid}"
    assert lab.state(svc.name) == "running"


def assert_conflict(resp, holder):
    body = json_error(resp, 409, "gpu_conflict")
    assert body.get("holder") == holder, body
    return body


def test_flipping_gpu_required_of_a_running_holder_keeps_its_hold(lab):
    """gpu_required flipped to false while a runs, another GPU service started, flipped
    back: a keeps the GPU throughout, and the other is refused."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()

    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    lab.rediscover()
    flipped = lab.status("a")
    answer = lab.start("b", wait=True)
    edit_manifest(a, "gpu_required: false", "gpu_required: true")
    lab.rediscover()

    assert assert_one_holder_at_most(lab) == ["a"]
    assert_conflict(answer, "a")
    assert flipped["gpu_required"] is True, flipped
    assert flipped["pending_changes"] == {"gpu_required": {"running": True, "new": False}}, \
        flipped
    assert lab.status("a")["pending_changes"] is None
    assert_conflict(lab.start("b"), "a")
    assert lab.state("b") == "stopped"
    assert lab.pids("b") == []
    assert_still_runs(lab, a, pid)


def test_flipping_gpu_required_then_starting_another_while_the_watcher_rescans(lab):
    """The same, the rescans left to the folder watcher: once the flip shows as pending,
    a start of another GPU service is still a conflict."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()

    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    # Either the flip is seen as pending, or (the fault) it is taken at once.
    st = lab.wait_status("a", lambda s: s.get("pending_changes") or not s["gpu_required"],
                         message="the edit was rescanned")
    answer = lab.start("b", force=False, wait=True)
    edit_manifest(a, "gpu_required: false", "gpu_required: true")
    lab.wait_status("a", lambda s: not s.get("pending_changes") and s["gpu_required"],
                    message="the edit back was rescanned")

    assert assert_one_holder_at_most(lab) == ["a"]
    assert_conflict(answer, "a")
    assert st["gpu_required"] is True, st
    assert_conflict(lab.start("b"), "a")
    assert_still_runs(lab, a, pid)


def write_claimant(lab, folder, name, port):
    """A second folder whose manifest takes name, without the GPU, on its own port."""
    path = os.path.join(str(lab.services_dir), folder)
    os.makedirs(path)
    with open(os.path.join(path, "service.yaml"), "w") as f:
        f.write(f"name: {name}\n"
                f"driver: process\n"
                f'ports: ["{port}"]\n'
                f"gpu_required: false\n"
                f'command: ["{lab.testsvc}", "--port", "{port}"]\n'
                f"health: false\n")
    return path


@pytest.mark.parametrize("rescan", ["rediscover", "watcher"])
def test_new_folder_claiming_the_name_of_a_running_service_is_the_error(lab, rescan):
    """A folder sorting before the running one's takes its name, without the GPU: the new
    folder is the error (naming the running service's folder), the running service keeps
    its manifest and its hold, and a second GPU service is refused. The rescan is asked
    for, or left to the folder watcher."""
    from conftest import free_port
    x = lab.add("x", gpu=True)
    lab.add("y", gpu=True)
    lab.serve()
    start_answer(lab.start("x", wait=True), "x", states="running")
    pid = x.wait_own_pid()

    write_claimant(lab, "a-x", "x", free_port())
    if rescan == "rediscover":
        body = lab.rediscover()
    else:
        # Seen once the new folder is listed, as an error or (the fault) as x's folder.
        wait_until(lambda: any(e["folder"] == "a-x" for e in lab.d.services()["errors"])
                   or lab.status("x")["folder"] == "a-x", message="the new folder was seen")
        body = lab.d.services()
    st = lab.status("x")
    answer = lab.start("y", wait=True)
    assert assert_one_holder_at_most(lab) == ["x"]
    assert_conflict(answer, "x")
    assert st["folder"] == "x", st
    assert st["gpu_required"] is True, st
    assert st["manifest_error"] is None, st
    assert st["pending_changes"] is None, st
    errors = [e for e in body["errors"] if e["folder"] == "a-x"]
    assert errors, body["errors"]
    assert 'running service in folder "x"' in errors[0]["message"], errors
    assert lab.pids("y") == []
    assert_still_runs(lab, x, pid)

    # Later rescans (the watcher's too) keep it so.
    for _ in range(3):
        lab.rediscover()
    assert lab.status("x")["folder"] == "x"
    assert_conflict(lab.start("y"), "x")
    assert_still_runs(lab, x, pid)


def test_new_folder_sorting_after_a_running_service_is_the_error_too(lab):
    """(As before: a guard that the claim does not undo the folder order's rule.)"""
    from conftest import free_port
    x = lab.add("x", gpu=True)
    lab.add("y", gpu=True)
    lab.serve()
    start_answer(lab.start("x", wait=True), "x", states="running")
    pid = x.wait_own_pid()

    write_claimant(lab, "z-x", "x", free_port())
    body = lab.rediscover()
    assert [e["folder"] for e in body["errors"]] == ["z-x"], body["errors"]
    assert lab.status("x")["folder"] == "x"
    assert_conflict(lab.start("y"), "x")
    assert_one_holder_at_most(lab)
    assert_still_runs(lab, x, pid)


def test_a_stopped_service_follows_the_folder_order_as_before(lab):
    """The claim is a running service's: a stopped one's name goes to the folder that
    sorts first, as discovery always did."""
    from conftest import free_port
    lab.add("x", gpu=True)
    lab.serve()
    write_claimant(lab, "a-x", "x", free_port())
    body = lab.rediscover()
    assert lab.status("x")["folder"] == "a-x"
    assert [e["folder"] for e in body["errors"]] == ["x"], body["errors"]


def test_restart_applies_the_new_manifest(lab):
    """Port, command and GPU changed while a runs: shown as pending, a keeps running on
    its manifest; a restart applies them all."""
    from conftest import free_port
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    old_port, new_port = a.port, free_port()

    edit_manifest(a, str(old_port), str(new_port))  # ports:, --port and nothing else
    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    lab.rediscover()
    st = lab.status("a")
    assert st["port"] == old_port and st["gpu_required"] is True, st
    pending = st["pending_changes"]
    assert pending["gpu_required"] == {"running": True, "new": False}, pending
    assert set(pending) >= {"gpu_required", "ports", "command", "health"}, pending
    assert_conflict(lab.start("b"), "a")
    assert_still_runs(lab, a, pid)

    body = start_answer(lab.restart("a", wait=True), "a", states="running")
    assert body["port"] == new_port and body["gpu_required"] is False, body
    assert body["pending_changes"] is None, body
    a.port = new_port
    assert a.wait_own_pid() != pid
    # a no longer needs the GPU: b starts, and only b holds it.
    start_answer(lab.start("b", wait=True), "b", states="running")
    lab.svcs["a"].gpu = False
    assert assert_one_holder_at_most(lab) == ["b"]


def test_stop_then_start_applies_the_new_manifest(lab):
    from conftest import free_port
    a = lab.add("a", gpu=False)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    old_port, new_port = a.port, free_port()
    edit_manifest(a, str(old_port), str(new_port))
    lab.rediscover()
    assert lab.status("a")["port"] == old_port
    assert a.own_pid() == pid

    ok_status(lab.stop("a"), "a", states="stopped")
    start_answer(lab.start("a", wait=True), "a", states="running")
    st = lab.status("a")
    assert st["port"] == new_port and st["pending_changes"] is None, st
    a.port = new_port
    assert a.wait_own_pid() not in (None, pid)


def test_a_manifest_that_breaks_while_running_leaves_it_running(lab):
    """Edited (GPU off), then broken by a typo while a runs: a keeps running on the
    manifest it started with, the error shown as what is pending; restarts are refused
    until the file is fixed."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()

    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    lab.rediscover()
    edit_manifest(a, "stop_timeout: 2s", "stop_timeout: [nonsense")
    lab.rediscover()
    answer = lab.start("b", wait=True)
    assert assert_one_holder_at_most(lab) == ["a"]
    assert_conflict(answer, "a")
    st = lab.status("a")
    assert st["gpu_required"] is True, st
    assert st["manifest_error"] is not None, st
    assert st["pending_changes"] == {"gpu_required": {"running": True, "new": False}}, st
    # Nothing starts from a broken manifest: a restart is refused, a stays as it is.
    json_error(lab.restart("a"), 422, "invalid_manifest")
    assert_still_runs(lab, a, pid)
    assert assert_one_holder_at_most(lab) == ["a"]
    ok_status(lab.stop("a"), "a", states="stopped")
    start_answer(lab.start("b", wait=True), "b", states="running")


def test_a_folder_removed_while_running_keeps_it_until_stopped(lab):
    """As systemd keeps a unit whose file was removed: a runs until stopped, holding the
    GPU; stopped, it leaves the list."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()

    shutil.rmtree(a.folder)
    lab.rediscover()
    st = lab.status("a")
    assert st["gpu_required"] is True, st
    assert "removed" in st["manifest_error"]["message"], st
    assert_conflict(lab.start("b"), "a")
    assert_still_runs(lab, a, pid)

    ok_status(lab.stop("a"), "a", states="stopped")
    lab.wait_status("b", lambda s: "a" not in lab.d.service_names(),
                    message="a left the list once stopped")
    start_answer(lab.start("b", wait=True), "b", states="running")
    assert assert_one_holder_at_most(lab) == ["b"]


def test_a_folder_moved_and_edited_while_running_waits_as_pending(lab):
    """mv a a2 and GPU off in one go while a runs (a removal and an addition in one scan):
    it is the same service, the change pending; a keeps the GPU until restarted."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()

    moved = os.path.join(str(lab.services_dir), "a2")
    with open(manifest_path(a)) as f:
        text = f.read()
    os.makedirs(moved)
    with open(os.path.join(moved, "service.yaml"), "w") as f:
        f.write(text.replace("gpu_required: true", "gpu_required: false"))
    shutil.rmtree(a.folder)
    lab.rediscover()
    answer = lab.start("b", wait=True)
    assert assert_one_holder_at_most(lab) == ["a"]
    assert_conflict(answer, "a")
    st = lab.status("a")
    assert st["gpu_required"] is True and st["folder"] == "a2", st
    assert st["pending_changes"]["gpu_required"] == {"running": True, "new": False}, st
    assert_still_runs(lab, a, pid)

    ok_status(lab.stop("a"), "a", states="stopped")
    lab.wait_status("a", lambda s: s["pending_changes"] is None and not s["gpu_required"],
                    message="the pending manifest applied once stopped")
    start_answer(lab.start("b", wait=True), "b", states="running")
    lab.svcs["a"].gpu = False
    assert assert_one_holder_at_most(lab) == ["b"]


def test_gpu_required_flipped_while_the_daemon_was_down_keeps_the_hold(lab):
    """The daemon stops (its services run on), gpu_required is flipped off, a new daemon
    adopts a: what a was started with is in the state file, so a still holds the GPU and
    another GPU service is refused; a restart of a applies the manifest."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    assert d1.terminate() == 0, d1.stderr
    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    lab.serve()
    st = lab.wait_status("a", lambda s: s["state"] == "running", message="a adopted")
    assert st["gpu_required"] is True, st
    assert st["pending_changes"] == {"gpu_required": {"running": True, "new": False}}, st
    answer = lab.start("b", wait=True)
    assert assert_one_holder_at_most(lab) == ["a"]
    assert_conflict(answer, "a")
    assert_still_runs(lab, a, pid)

    start_answer(lab.restart("a", wait=True), "a", states="running")
    start_answer(lab.start("b", wait=True), "b", states="running")
    lab.svcs["a"].gpu = False
    assert assert_one_holder_at_most(lab) == ["b"]


def test_a_typo_in_the_running_manifest_does_not_hand_its_name_over(lab):
    """x's manifest broken by a YAML typo (no name can be read from it) and a new folder
    sorting first takes the name, without the GPU: the new folder is the error, x keeps
    running on its manifest, holding the GPU."""
    from conftest import free_port
    x = lab.add("x", gpu=True)
    lab.add("y", gpu=True)
    lab.serve()
    start_answer(lab.start("x", wait=True), "x", states="running")
    pid = x.wait_own_pid()

    edit_manifest(x, "gpu_required: true", "gpu_required: [true")
    write_claimant(lab, "a-x", "x", free_port())
    body = lab.rediscover()
    answer = lab.start("y", wait=True)
    assert assert_one_holder_at_most(lab) == ["x"]
    assert_conflict(answer, "x")
    st = lab.status("x")
    assert st["folder"] == "x" and st["gpu_required"] is True, st
    assert st["manifest_error"] is not None, st
    errors = {e["folder"]: e["message"] for e in body["errors"]}
    assert 'running service in folder "x"' in errors.get("a-x", ""), body["errors"]
    assert_still_runs(lab, x, pid)
    # Rescans settle: a few more change nothing.
    for _ in range(3):
        assert lab.rediscover()["changed"] == []
    assert_still_runs(lab, x, pid)


# --- a daemon restart keeps what runs apart from what is on disk ---------------------------

def edit_running_holder(lab, a):
    """Moves a (running, holding the GPU) to a new port (its ports, command and health
    change) and flips its gpu_required off on disk; returns the new port and the
    status the daemon shows once it has seen the edit."""
    from conftest import free_port
    new_port = free_port()
    edit_manifest(a, str(a.port), str(new_port))
    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    lab.rediscover()
    st = lab.status("a")
    assert st["gpu_required"] is True and st["port"] == a.port, st
    assert set(st["pending_changes"]) >= {"gpu_required", "ports", "command", "health"}, st
    return new_port, st


def assert_runs_as_before(lab, a, pid, before):
    """The restarted daemon shows a as it ran (the manifest it was started with) and what
    is on disk as pending, exactly as the daemon before it; another GPU service is
    refused, naming a."""
    st = lab.wait_status("a", lambda s: s["state"] == "running", message="a adopted")
    shown = set(st) - {"state", "pid", "pids", "generation", "health", "is_healthy",
                       "uptime_s", "uptime", "restarts", "last_error"}
    assert {"port", "gpu_required"} <= shown, st
    for field in shown:
        assert st[field] == before[field], (field, st, before)
    assert st["pending_changes"] == before["pending_changes"], (st, before)
    assert_conflict(lab.start("b", wait=True), "a")
    assert lab.pids("b") == []
    assert assert_one_holder_at_most(lab) == ["a"]
    assert_still_runs(lab, a, pid)


def test_daemon_killed_keeps_the_running_manifest_and_its_pending_changes(lab):
    """kill -9 of the daemon while a GPU holder runs with an edited manifest (GPU off, a
    new port and command): the next daemon shows the manifest a runs on and the edit as
    pending_changes, a keeps the GPU; a restart applies the edit."""
    import signal
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    d1 = lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    new_port, before = edit_running_holder(lab, a)

    d1.proc.send_signal(signal.SIGKILL)
    assert d1.wait_exit() == -9
    lab.serve()
    assert_runs_as_before(lab, a, pid, before)

    body = start_answer(lab.restart("a", wait=True), "a", states="running")
    assert body["port"] == new_port and body["gpu_required"] is False, body
    assert body["pending_changes"] is None, body
    a.port = new_port
    assert a.wait_own_pid() != pid
    start_answer(lab.start("b", wait=True), "b", states="running")
    lab.svcs["a"].gpu = False
    assert assert_one_holder_at_most(lab) == ["b"]


def test_daemon_stopped_leaving_services_keeps_the_running_manifest(lab):
    """The same after a clean stop of the daemon that leaves its services running; a stop
    then a start applies the edit."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    new_port, before = edit_running_holder(lab, a)

    assert d1.terminate() == 0, d1.stderr
    d2 = lab.serve(keep_services=True)
    assert_runs_as_before(lab, a, pid, before)
    # And again: the second daemon recorded what the first had.
    assert d2.terminate() == 0, d2.stderr
    lab.serve()
    assert_runs_as_before(lab, a, pid, before)

    ok_status(lab.stop("a"), "a", states="stopped")
    body = start_answer(lab.start("a", wait=True), "a", states="running")
    assert body["port"] == new_port and body["gpu_required"] is False, body
    assert body["pending_changes"] is None, body
    a.port = new_port
    assert a.wait_own_pid() not in (None, pid)
    start_answer(lab.start("b", wait=True), "b", states="running")
    lab.svcs["a"].gpu = False
    assert assert_one_holder_at_most(lab) == ["b"]


def test_a_recorded_manifest_that_no_longer_parses_falls_back_to_the_disk(lab):
    """The state file's copy of the manifest a runs on is broken (a person's edit): the
    next daemon says so, shows the manifest on disk, and a keeps the GPU it was started
    with."""
    import json
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    edit_manifest(a, "gpu_required: true", "gpu_required: false")
    assert d1.terminate() == 0, d1.stderr
    path = os.path.join(lab.state_dir, "state.json")
    with open(path) as f:
        state = json.load(f)
    record = state["services"]["a"]
    assert "gpu_required: true" in record["manifest"]["source"], record
    record["manifest"]["source"] = "name: a\nports: [[[\n"
    replace_file(path, json.dumps(state))

    d2 = lab.serve()
    st = lab.wait_status("a", lambda s: s["state"] == "running", message="a adopted")
    assert st["gpu_required"] is False and st["pending_changes"] is None, st
    d2.wait_for_log(r"a: the manifest it was started with .* no longer parses")
    assert_conflict(lab.start("b", wait=True), "a")
    assert_still_runs(lab, a, pid)


def test_compose_holder_keeps_its_manifest_through_a_daemon_restart(clab):
    """A compose service (whose driver records nothing: the engine's labels say what runs)
    holds the GPU; its service.yaml is edited (GPU off, stop_timeout) and the daemon
    stops, leaving it running: the next daemon finds the project, shows the manifest it
    was started with and the edit as pending, and another GPU service is refused; a stop
    then a start applies the edit."""
    svc = clab.add(gpu=True)
    other = clab.add(gpu=True)
    d1 = clab.serve(keep_services=True)
    start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    cid = svc.container()
    edit_manifest(svc, "gpu_required: true", "gpu_required: false")
    edit_manifest(svc, "stop_timeout: 2s", "stop_timeout: 3s")
    clab.rediscover()
    before = clab.status(svc.name)
    assert before["gpu_required"] is True, before
    assert set(before["pending_changes"]) == {"gpu_required", "stop_timeout_ms"}, before

    assert d1.terminate() == 0, d1.stderr
    clab.serve()
    st = clab.wait_status(svc.name, lambda s: s["state"] == "running", timeout=10,
                          message="adopted as running")
    assert st["gpu_required"] is True, st
    assert st["pending_changes"] == before["pending_changes"], (st, before)
    assert_conflict(clab.start(other.name, wait=True), svc.name)
    assert svc.container() == cid

    ok_status(clab.stop(svc.name), svc.name, "stopped")
    body = start_answer(clab.start(svc.name, wait=True), svc.name, states="running")
    assert body["gpu_required"] is False and body["pending_changes"] is None, body
    start_answer(clab.start(other.name, wait=True), other.name, states="running")


@pytest.mark.parametrize("fault", ["broken", "removed"])
def test_a_manifest_broken_or_removed_while_the_daemon_was_down(lab, fault):
    """a's manifest breaks (or its folder goes) while no daemon runs: the next daemon
    still adopts a on the manifest it was started with, from the state file, shows the
    problem, and keeps the GPU with a; once stopped, a stays in the list with its problem
    (a broken manifest, as when it breaks while the daemon runs) or leaves it (removed)."""
    a = lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    before = lab.status("a")
    assert d1.terminate() == 0, d1.stderr
    if fault == "broken":
        edit_manifest(a, "gpu_required: true", "gpu_required: [oops")
    else:
        shutil.rmtree(a.folder)

    lab.serve()
    st = lab.wait_status("a", lambda s: s["state"] == "running" and s["manifest_error"],
                         message="a adopted, its problem shown")
    assert st["gpu_required"] is True and st["port"] == before["port"], st
    assert_conflict(lab.start("b", wait=True), "a")
    assert lab.pids("b") == []
    assert_still_runs(lab, a, pid)

    ok_status(lab.stop("a"), "a", states="stopped")
    lab.wait_no_processes("a")
    if fault == "broken":
        st = lab.status("a")
        assert st["state"] == "stopped" and st["manifest_error"], st
    else:
        wait_until(lambda: "a" not in [s["name"] for s in lab.list()],
                   message="a left the list")
    start_answer(lab.start("b", wait=True), "b", states="running")
    assert assert_one_holder_at_most(lab) == ["b"]
