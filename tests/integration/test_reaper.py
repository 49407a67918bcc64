"""The daemon is the child subreaper of its services: a process that leaves its
service's process group (setsid) and is orphaned becomes the daemon's child, and the
daemon reaps it when it ends, so that no <defunct> child of the daemon is left."""

import os
import signal

from conftest import wait_until
from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    GONE_TIMEOUT,
    lab,
    ok_status,
    process_state,
    start_answer,
)


def stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def zombie_children(pid):
    """The pids of pid's children that ended and were not reaped."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(entry)
        if fields and fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def test_an_orphan_out_of_the_group_is_reaped_when_it_ends(lab, workdir):
    orphan_file = os.path.join(str(workdir), "orphan.pid")
    # The subshell starts the orphan in a session of its own and ends at once, so the
    # orphan goes to the daemon, its subreaper, outside the service's process group.
    lab.add("a", command=f"(setsid sh -c 'echo $$ > {orphan_file}; exec sleep 1000' &); "
                         "exec sleep 1000", health=False)
    d = lab.serve()
    start_answer(lab.start("a"), "a")
    orphan = wait_until(lambda: read_pid(orphan_file), timeout=GONE_TIMEOUT,
                        message="the orphan wrote its pid")
    try:
        wait_until(lambda: (stat_fields(orphan) or [None, None])[1] == str(d.pid),
                   timeout=GONE_TIMEOUT, message=f"orphan {orphan} is a child of the daemon")
        assert os.getpgid(orphan) == orphan, "the orphan left the service's process group"
        leader = lab.status("a")
        assert leader["state"] == "running", leader

        os.kill(orphan, signal.SIGKILL)
        wait_until(lambda: process_state(orphan) is None, timeout=GONE_TIMEOUT,
                   message=f"orphan {orphan} reaped")
        wait_until(lambda: not zombie_children(d.pid), timeout=GONE_TIMEOUT,
                   message=f"no zombie child of the daemon (left: {zombie_children(d.pid)})")
        # The service itself runs on, its leader still watched by the daemon.
        assert lab.status("a")["state"] == "running"
    finally:
        if process_state(orphan) not in (None, "Z"):
            os.kill(orphan, signal.SIGKILL)

    ok_status(lab.stop("a"), "a", "stopped")
    wait_until(lambda: not zombie_children(d.pid), timeout=GONE_TIMEOUT,
               message=f"no zombie child of the daemon after the stop "
                       f"(left: {zombie_children(d.pid)})")


def test_an_orphan_that_ends_by_itself_is_reaped(lab, workdir):
    orphan_file = os.path.join(str(workdir), "orphan.pid")
    gate = os.path.join(str(workdir), "gate")
    os.mkfifo(gate)
    # The orphan ends by itself once the test opens the gate: `read` returns at EOF.
    lab.add("a", command=f"(setsid sh -c 'echo $$ > {orphan_file}; read x < {gate}' &); "
                         "exec sleep 1000", health=False)
    d = lab.serve()
    start_answer(lab.start("a"), "a")
    orphan = wait_until(lambda: read_pid(orphan_file), timeout=GONE_TIMEOUT,
                        message="the orphan wrote its pid")
    wait_until(lambda: (stat_fields(orphan) or [None, None])[1] == str(d.pid),
               timeout=GONE_TIMEOUT, message=f"orphan {orphan} is a child of the daemon")
    with open(gate, "w"):
        pass
    wait_until(lambda: process_state(orphan) is None, timeout=GONE_TIMEOUT,
               message=f"orphan {orphan} reaped")
    assert not zombie_children(d.pid)
    ok_status(lab.stop("a"), "a", "stopped")
    wait_until(lambda: not zombie_children(d.pid), timeout=GONE_TIMEOUT,
               message=f"no zombie child of the daemon after the stop "
                       f"(left: {zombie_children(d.pid)})")
