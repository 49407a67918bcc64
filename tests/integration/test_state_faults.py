"""Faults of the state folder: kill -9 of the daemon right after an answer, a corrupt
state file, a state file that cannot be written, and a host reboot (a faked boot id, in
crash-points builds). Real daemon, real processes; each asserts that nothing was lost."""

import glob
import http.client
import os
import signal
import time

from conftest import wait_until
from lifecycle_helpers import json_error, lab, pid_alive  # noqa: F401


def serve(lab, env=None, extra_args=()):
    """A daemon on the lab's folders that leaves its services running when it ends."""
    d = lab.nanny.serve(lab.services_dir, state=lab.state_dir, env=env,
                        extra_args=list(extra_args), stop_services=False)
    lab.d = d
    lab.daemons.append(d)
    return d


def kill9(d):
    d.proc.send_signal(signal.SIGKILL)
    assert d.wait_exit() == -9


def state_path(lab):
    return os.path.join(lab.state_dir, "state.json")


def test_kill9_right_after_start_answer_loses_nothing(lab):
    a = lab.add("a", gpu=True, health=False)
    for _ in range(5):
        d = serve(lab)
        assert lab.start("a").status == 200
        kill9(d)  # at once: the answer came only once the process was on disk
        serve(lab)
        s = lab.wait_state("a", ("running", "stopped", "failed"))
        assert s["state"] == "running", s
        assert lab.start("a").status == 200
        assert len(lab.pids("a")) == 1, lab.pids("a")
        assert lab.stop("a").status == 200
        lab.wait_no_processes("a")
        kill9(lab.d)
    assert a.name == "a"


def test_kill9_during_a_stop_finishes_it(lab):
    a = lab.add("a", health=False, args=["--ignore-sigterm"], stop_timeout="3s")
    d = serve(lab)
    assert lab.start("a").status == 200
    pid = a.wait_pidfile_pid()
    # The stop waits for stop_timeout (the service ignores SIGTERM): kill the daemon then.
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    conn.request("POST", "/services/a/stop")
    time.sleep(0.3)
    kill9(d)
    conn.close()
    serve(lab)
    lab.wait_no_processes("a")
    # (A process on its way out has no command line: gone from the list before its end.)
    wait_until(lambda: not pid_alive(pid), timeout=10, message=f"pid {pid} ended")
    assert lab.wait_state("a", ("stopped", "failed"))


def test_corrupt_state_file_is_kept_and_reported(lab):
    lab.add("a", health=False)
    for text in ["", "{\"services\": {", "\x00garbage"]:
        with open(state_path(lab), "w") as f:
            f.write(text)
        d = serve(lab)
        h = d.get_json("/health")
        assert h["status"] == "degraded", h
        assert "corrupt" in h["reason"], h
        kept = glob.glob(state_path(lab) + ".corrupt-*")
        assert kept, os.listdir(lab.state_dir)
        assert "state file was corrupt" in d.stderr
        # A good state written by an operation ends the notice.
        assert lab.start("a").status == 200
        assert d.get_json("/health")["status"] == "ok"
        assert lab.stop("a").status == 200
        d.terminate()
        for p in kept:
            os.unlink(p)


def test_unwritable_state_refuses_starts_and_stops_still_run(lab):
    a = lab.add("a", health=False)
    lab.add("b", health=False)
    d = serve(lab)
    assert lab.start("a").status == 200
    pid = a.wait_pidfile_pid()
    # A folder where the daemon writes its temporary file: every write fails (root too).
    blocker = os.path.join(lab.state_dir, ".state.json.tmp")
    os.mkdir(blocker)
    try:
        json_error(lab.start("b"), 503, "state_unwritable")
        assert not lab.pids("b")
        h = d.get_json("/health")
        assert h["status"] == "degraded" and "cannot be written" in h["reason"], h
        # A stop always runs.
        assert lab.stop("a").status == 200
        lab.wait_no_processes("a")
        assert not pid_alive(pid)
    finally:
        os.rmdir(blocker)
    assert lab.start("b").status == 200
    assert d.get_json("/health")["status"] == "ok"


def fake_boot(boot):
    return {"NANNY_TEST_BOOT_ID": boot}


def reboot(lab):
    """What a reboot does to the services: nothing of them is left."""
    for name in list(lab.svcs):
        for pid in lab.pids(name):
            os.kill(pid, signal.SIGKILL)
        lab.wait_no_processes(name)


def test_reboot_starts_again_what_ran_higher_priority_first(lab):
    lab.add("low", gpu=True, health=False)
    lab.add("high", gpu=True, health=False, extra={"priority": 10})
    lab.add("plain", health=False)
    serve(lab, env=fake_boot("boot-1"))
    # Both GPU services were last meant to run (high ended by itself, then low started).
    assert lab.start("high").status == 200
    for pid in lab.pids("high"):
        os.kill(pid, signal.SIGKILL)
    lab.wait_state("high", ("failed", "stopped"))
    # Until its logger has written the last lines and gone, high's run lingers and holds
    # the GPU (a 409 naming it): a few ms, longer under the sanitizers.
    wait_until(lambda: lab.start("low").status == 200, timeout=20, interval=0.05,
               message="low started once high's run was gone")
    assert lab.start("plain").status == 200
    lab.d.terminate()
    reboot(lab)
    d = serve(lab, env=fake_boot("boot-2"))
    lab.wait_state("high", ("running",))
    lab.wait_state("plain", ("running",))
    assert lab.state("low") == "stopped"
    assert lab.gpu_holders() == ["high"]
    assert len(lab.pids("high")) == 1 and len(lab.pids("plain")) == 1
    assert "rebooted" in d.stderr


def test_reboot_with_no_resume_starts_nothing(lab):
    lab.add("a", health=False)
    serve(lab, env=fake_boot("boot-1"))
    assert lab.start("a").status == 200
    lab.d.terminate()
    reboot(lab)
    d = serve(lab, env=fake_boot("boot-2"), extra_args=["--no-resume"])
    d.wait_for_log("no_resume")
    assert lab.state("a") == "stopped"
    assert not lab.pids("a")
