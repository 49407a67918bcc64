"""log_max_size is a limit that holds (issue 9, item 5): a process service writes into a
pipe read by the daemon's own logger (`nanny log-writer`), which rotates by rename before
the file would pass the cap, so the cap holds within 10% at any write speed and no line is
lost or cut by a rotation; the logs API reads across the rotation; a NUL byte does not cut
a line; the logger outlives a daemon restart.
"""

import os
import time

from conftest import wait_until
from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    lab,
    numbered,
    ok_status,
    pid_alive,
    split_log,
    start_answer,
)

CAP = 16384


def log_files(lab, name):
    """The service's log files, oldest first: NAME.log.N ... NAME.log.1, NAME.log."""
    base = os.path.join(lab.state_dir, "logs", f"{name}.log")
    older = []
    for f in os.listdir(os.path.dirname(base)):
        if f.startswith(f"{name}.log."):
            suffix = f[len(f"{name}.log."):]
            if suffix.isdigit():
                older.append((int(suffix), os.path.join(os.path.dirname(base), f)))
    return [p for _, p in sorted(older, reverse=True)] + ([base] if os.path.exists(base) else [])


def file_lines(paths):
    lines = []
    for p in paths:
        with open(p, "rb") as f:
            lines += f.read().decode("utf-8", "replace").splitlines()
    return lines


def test_the_cap_holds_at_full_speed_and_no_line_is_lost(lab):
    """60,000 numbered lines (~1.3 MB) as fast as the service can write them, with a
    16 KiB cap and room for every file: no file is ever over the cap by more than 10%,
    and the files, oldest first, hold every line once, in order."""
    n = 60000
    lab.add("fast", ["--print-lines", str(n)], health=False)
    lab.serve(config=f"log_max_size: {CAP}\nlog_max_files: 100\n")
    start_answer(lab.start("fast"), "fast")
    biggest = 0

    def all_written():
        nonlocal biggest
        paths = log_files(lab, "fast")
        for p in paths:
            try:
                biggest = max(biggest, os.path.getsize(p))
            except FileNotFoundError:
                pass  # renamed meanwhile
        if not paths:
            return None
        try:
            with open(paths[-1], "rb") as f:
                tail = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None  # renamed by a rotation since the listing: look again
        return paths if f"testsvc: err {n}\n" in tail or f"testsvc: line {n}\n" in tail \
            else None

    paths = wait_until(all_written, timeout=60, interval=0.01,
                       message=f"line {n} in the newest log file")
    ok_status(lab.stop("fast"), "fast", "stopped")
    paths = log_files(lab, "fast")
    sizes = [os.path.getsize(p) for p in paths]
    assert max(sizes + [biggest]) <= CAP * 1.1, (sizes, biggest)
    assert len(paths) > 20, paths
    got = numbered(file_lines(paths))
    assert got == list(range(1, n + 1)), \
        f"lines lost or reordered: {len(got)} of {n}, first gap near " \
        f"{next((i + 1 for i, k in enumerate(got) if k != i + 1), None)}"


def test_old_files_beyond_log_max_files_go(lab):
    lab.add("fast", ["--print-lines", "20000"], health=False)
    lab.serve(config=f"log_max_size: {CAP}\nlog_max_files: 2\n")
    start_answer(lab.start("fast"), "fast")
    wait_until(lambda: len(log_files(lab, "fast")) == 3, timeout=30, interval=0.05,
               message="fast.log, fast.log.1 and fast.log.2")
    ok_status(lab.stop("fast"), "fast", "stopped")
    paths = log_files(lab, "fast")
    assert [os.path.basename(p) for p in paths] == ["fast.log.2", "fast.log.1", "fast.log"]
    assert all(os.path.getsize(p) <= CAP * 1.1 for p in paths)
    # The newest lines are the last ones written, whole and in order.
    got = numbered(file_lines(paths))
    assert got == list(range(got[0], 20001)), got[:5]


def test_tail_reads_across_the_rotation(lab):
    """Just after a rotation the newest file holds few lines: the lines before it come
    from NAME.log.1, so tail loses nothing."""
    lab.add("chatty", ["--print-lines", "2000"], health=False)
    lab.serve(config=f"log_max_size: {CAP}\nlog_max_files: 3\n")
    start_answer(lab.start("chatty"), "chatty")
    wait_until(lambda: 2000 in numbered(file_lines(log_files(lab, "chatty"))), timeout=30,
               interval=0.05, message="line 2000 written")
    wait_until(lambda: len(log_files(lab, "chatty")) >= 2, timeout=30, interval=0.05,
               message="a rotation")
    ok_status(lab.stop("chatty"), "chatty", "stopped")
    paths = log_files(lab, "chatty")
    newest = len(file_lines(paths[-1:]))
    tail = newest + 100
    r = lab.logs("chatty", tail=tail)
    assert r.status == 200, r
    got = split_log(r.body)
    assert got == file_lines(paths)[-tail:], (newest, got[:3])
    nums = numbered(got)
    assert nums == list(range(nums[0], 2001)) and len(nums) >= 100, nums[:5]


def test_a_nul_byte_does_not_cut_a_line(lab):
    lab.add("nul", command=["sh", "-c", r"printf 'before\nab\000cd\nafter\n'; exec sleep 60"],
            health=False)
    lab.serve()
    start_answer(lab.start("nul"), "nul")

    def lines():
        r = lab.logs("nul", tail=10, as_json=True)
        assert r.status == 200, r
        got = r.json()["lines"]
        return got if "after" in got else None

    got = wait_until(lines, timeout=10, interval=0.05, message="the three lines")
    assert got == ["before", "ab\ufffdcd", "after"], got
    r = lab.logs("nul", tail=10)
    assert split_log(r.body) == ["before", "ab\ufffdcd", "after"], r.body
    ok_status(lab.stop("nul"), "nul", "stopped")


def test_the_logger_outlives_a_daemon_restart(lab):
    """The service writes on while no daemon runs: nothing is lost, and the cap still
    holds, because the logger belongs to the service, not to the daemon."""
    a = lab.add("a", ["--print-interval", "2"], health=False)
    d1 = lab.serve(config=f"log_max_size: {CAP}\nlog_max_files: 100\n", keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.wait_own_pid()
    assert d1.terminate() == 0, d1.stderr
    time.sleep(1.5)  # ~750 lines while no daemon runs
    assert pid_alive(pid)
    lab.serve(config=f"log_max_size: {CAP}\nlog_max_files: 100\n")
    lab.wait_state("a", "running")
    before = len(numbered(file_lines(log_files(lab, "a"))))
    wait_until(lambda: len(numbered(file_lines(log_files(lab, "a")))) > before + 200,
               timeout=15, interval=0.05, message="more lines after the restart")
    ok_status(lab.stop("a"), "a", "stopped")
    paths = log_files(lab, "a")
    assert all(os.path.getsize(p) <= CAP * 1.1 for p in paths), \
        [os.path.getsize(p) for p in paths]
    got = numbered(file_lines(paths))
    assert got == list(range(1, got[-1] + 1)), "lines lost or reordered across the restart"
    assert not pid_alive(pid)
    lab.assert_no_processes("a", "after the stop, the logger too")
