"""GET /services/NAME/logs (SPEC sections 3 and 4): the last N lines of a process
service's stdout and stderr, both, in order; text/plain, or {"lines":[...]} with
Accept: application/json; tail defaults to 100 and is capped at 10000; the service
writes its log file itself, so the log goes on while the daemon restarts.

testsvc's numbered lines go odd to stdout (`testsvc: line K`) and even to stderr
(`testsvc: err K`), so their order in the log shows both streams interleaved rightly.
"""

import os
import time

import pytest

from conftest import wait_until
from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    json_error,
    lab,
    numbered,
    ok_status,
    pid_alive,
    split_log,
    start_answer,
)


def wait_numbered(lab, name, count, timeout=10):
    """Waits until the log holds numbered lines 1..count; returns all its lines."""
    def check():
        lines = lab.log_lines(name)
        return lines if len(numbered(lines)) >= count else None
    return wait_until(check, timeout=timeout, interval=0.05,
                      message=f"{count} numbered lines in the log of {name}")


def test_logs_hold_stdout_and_stderr_in_order(lab):
    lab.add("a", ["--print-lines", "10"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    lines = wait_numbered(lab, "a", 10)
    assert numbered(lines) == list(range(1, 11)), lines
    assert any("listening on 127.0.0.1:" in line for line in lines), lines


@pytest.mark.parametrize("tail", [1, 2, 5, 10, 11])
def test_tail_gives_the_last_lines(lab, tail):
    lab.add("a", ["--print-lines", "10"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")  # the log no longer grows
    full = lab.log_lines("a")
    assert numbered(full) == list(range(1, 11)), full
    r = lab.logs("a", tail=tail)
    assert r.status == 200, r
    assert r.content_type == "text/plain", r
    got = split_log(r.body)
    assert got == full[-tail:], (tail, got, full)


def test_text_lines_end_with_newlines(lab):
    lab.add("a", ["--print-lines", "3"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    wait_numbered(lab, "a", 3)
    r = lab.logs("a", tail=3)
    assert r.status == 200, r
    assert r.body.endswith(b"\n"), r
    assert len(r.body.decode().splitlines()) == 3, r


def test_json_lines_on_accept_json(lab):
    lab.add("a", ["--print-lines", "6"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")
    text = lab.log_lines("a", tail=4)
    r = lab.logs("a", tail=4, as_json=True)
    assert r.status == 200, r
    assert r.content_type == "application/json", r
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("lines"), list), body
    assert body["lines"] == text, (body, text)
    assert all(isinstance(x, str) and "\n" not in x for x in body["lines"]), body


def test_tail_defaults_to_100(lab):
    lab.add("a", ["--print-lines", "150"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")
    full = lab.log_lines("a", tail=10000)
    assert numbered(full) == list(range(1, 151)), full[:5]
    r = lab.logs("a")
    assert r.status == 200, r
    assert split_log(r.body) == full[-100:]
    j = lab.logs("a", as_json=True)
    assert j.json()["lines"] == full[-100:]


@pytest.mark.parametrize("tail", [10001, 20000, 99999999, "99999999999999999999"])
def test_tail_is_capped_at_10000(lab, tail):
    lab.add("a", ["--print-lines", "10050"], health=False)
    lab.serve()
    start_answer(lab.start("a"), "a", states="running")
    # The whole log is longer than the cap: wait for its last line.
    wait_until(lambda: numbered(lab.log_lines("a"))[-1:] == [10050], timeout=15,
               message="line 10050 in the log")
    ok_status(lab.stop("a"), "a", "stopped")
    r = lab.logs("a", tail=tail)
    assert r.status == 200, r
    got = split_log(r.body)
    assert len(got) == 10000, len(got)
    assert got == lab.log_lines("a", tail=10000)
    assert numbered(got)[-1] == 10050


def test_tail_zero_gives_no_lines(lab):
    lab.add("a", ["--print-lines", "5"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    wait_numbered(lab, "a", 5)
    r = lab.logs("a", tail=0)
    assert r.status == 200, r
    assert split_log(r.body) == [], r
    assert lab.logs("a", tail=0, as_json=True).json()["lines"] == []


@pytest.mark.parametrize("tail", ["abc", "-1", "1.5", "", "5x", "0x10"])
def test_bad_tail_is_400(lab, tail):
    lab.add("a")
    lab.serve()
    json_error(lab.d.get(f"/services/a/logs?tail={tail}"), 400, "bad_request")


def test_never_started_service_has_no_lines(lab):
    lab.add("a")
    lab.serve()
    r = lab.logs("a")
    assert r.status == 200, r
    assert r.content_type == "text/plain", r
    assert split_log(r.body) == [], r
    j = lab.logs("a", tail=50, as_json=True)
    assert j.status == 200, j
    assert j.content_type == "application/json", j
    assert j.json()["lines"] == [], j


def test_unknown_service_logs_is_404(lab):
    lab.add("a")
    lab.serve()
    json_error(lab.logs("nope"), 404, "not_found")
    json_error(lab.logs("nope", as_json=True), 404, "not_found")


def test_logs_grow_while_the_service_runs(lab):
    lab.add("a", ["--print-interval", "50"], health=False)
    lab.serve()
    start_answer(lab.start("a"), "a", states="running")
    first = numbered(wait_numbered(lab, "a", 3))
    later = numbered(wait_numbered(lab, "a", first[-1] + 5))
    assert later[: len(first)] == first
    assert later == list(range(1, later[-1] + 1)), later


def test_logs_remain_after_stop_and_a_new_run_adds_to_them(lab):
    lab.add("a", ["--print-lines", "4"])
    lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")
    after_stop = lab.log_lines("a")
    assert numbered(after_stop) == [1, 2, 3, 4], after_stop
    assert "testsvc: SIGTERM, exiting" in after_stop, after_stop
    start_answer(lab.start("a", wait=True), "a", states="running")
    ok_status(lab.stop("a"), "a", "stopped")
    both = lab.log_lines("a")
    # The second run's lines come after the first's (the log is not lost on a new start).
    assert numbered(both) == [1, 2, 3, 4, 1, 2, 3, 4], both


def test_logs_of_a_crashed_service(lab):
    lab.add("a", ["--print-lines", "2", "--crash-after", "300", "--exit-code", "3"],
            restart="no")
    lab.serve()
    start_answer(lab.start("a"), "a")
    lab.wait_state("a", "failed", timeout=5)
    lines = lab.log_lines("a")
    assert numbered(lines) == [1, 2], lines
    assert "testsvc: crashing with exit code 3" in lines, lines


def test_long_line_comes_back_whole(lab):
    lab.add("a", ["--print-bytes", "5000", "--print-lines", "1"], health=False)
    lab.serve()
    start_answer(lab.start("a"), "a", states="running")
    lines = wait_numbered(lab, "a", 1)
    assert "x" * 5000 in lines, [len(x) for x in lines]


def test_logging_goes_on_across_a_daemon_restart(lab):
    a = lab.add("a", ["--print-interval", "100"])
    d1 = lab.serve(keep_services=True)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = a.own_pid()
    before = numbered(wait_numbered(lab, "a", 3))
    assert d1.terminate() == 0, d1.stderr
    # Lines written while no daemon runs still reach the file.
    wait_until(lambda: a.own_pid() == pid, timeout=3, message="service still up")
    time.sleep(1.0)
    lab.serve()
    s = lab.wait_state("a", "running")
    assert a.own_pid() == pid, s
    after = numbered(wait_numbered(lab, "a", before[-1] + 20, timeout=15))
    assert after == list(range(1, after[-1] + 1)), f"lines lost or reordered: {after}"
    ok_status(lab.stop("a"), "a", "stopped")
    assert not pid_alive(pid)


def test_a_log_past_log_max_size_is_rotated(lab):
    """Before the log would pass log_max_size the logger renames it to NAME.log.1 (off
    the daemon's loop) and goes on in a new file; the daemon answers meanwhile, and no
    file passes the cap."""
    lab.add("chatty", ["--print-lines", "400", "--print-bytes", "100", "--print-interval", "5"])
    lab.serve(config="log_max_size: 4096\nlog_max_files: 2\n")
    start_answer(lab.start("chatty"), "chatty")
    log = os.path.join(lab.state_dir, "logs", "chatty.log")
    wait_until(lambda: os.path.exists(log + ".1"), timeout=20, interval=0.2,
               message="chatty.log.1 made by the rotation")
    assert 0 < os.path.getsize(log + ".1") <= 4096
    assert lab.d.get("/health").status == 200
    ok_status(lab.stop("chatty"), "chatty", "stopped")
    assert not os.path.exists(log + ".3"), "more old files than log_max_files"
