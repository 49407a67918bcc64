"""GET /services/NAME/logs?follow=1 (issue 11, part 4; SPEC section 7): the tail lines,
then new lines as they are written, chunked text/plain, until the client goes; across
rotation; one watch however many follow; a reader that never reads costs the daemon a
bounded amount and is told so; the gate and bad arguments as for any request."""

import os
import subprocess

from conftest import clean_env, manifest, nanny_binary, wait_until, write_service
from lifecycle_helpers import NUMBERED_LINE_RE, lab, start_answer  # noqa: F401 (lab: a fixture)
from sse_client import SSE
from test_gate import new_key, write_keys


def follow(d, name, tail=None, rcvbuf=None, headers=None):
    path = f"/services/{name}/logs?follow=1" + (f"&tail={tail}" if tail is not None else "")
    return SSE(d.port, path=path, hello=False, rcvbuf=rcvbuf, headers=headers)


def numbers(lines):
    return [int(m.group(2)) for m in map(NUMBERED_LINE_RE.match, lines) if m]


def inotify_watches(pid):
    """How many inotify watches the process holds (every instance)."""
    n = 0
    fd_dir = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fd_dir):
        try:
            with open(os.path.join(fd_dir, fd)) as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def test_tail_then_new_lines_in_order(lab):
    lab.add("s", ["--print-lines", "10", "--print-interval", "50"], health=False)
    d = lab.serve()
    start_answer(lab.start("s"), "s")
    wait_until(lambda: len(numbers(lab.log_lines("s"))) >= 12, message="twelve lines")
    f = follow(d, "s", tail=3)
    assert f.status == 200
    assert f.header("Content-Type") == "text/plain; charset=utf-8"
    assert f.header("Transfer-Encoding") == "chunked"
    got = numbers(f.lines(23))
    assert len(got) >= 20, got
    assert got == list(range(got[0], got[0] + len(got))), got
    f.close()


def test_follow_goes_on_across_rotation(lab):
    lab.add("s", ["--print-interval", "2"], health=False)
    d = lab.serve(config="log_max_size: 4096\nlog_max_files: 3\n")
    f = follow(d, "s", tail=0)  # before it starts: the file does not exist yet
    start_answer(lab.start("s"), "s")
    got = numbers(f.lines(1500, timeout=30))
    # Some 1,500 lines of ~20 bytes: several rotations of a 4 KiB file.
    rotated = os.path.join(lab.state_dir, "logs", "s.log.1")
    assert os.path.exists(rotated)
    assert got == list(range(got[0], got[0] + len(got))), got[:20]
    f.close()


def test_many_followers_share_one_watch_and_it_goes_with_them(lab):
    lab.add("s", ["--print-interval", "100"], health=False)
    d = lab.serve()
    start_answer(lab.start("s"), "s")
    before = inotify_watches(d.pid)
    followers = [follow(d, "s", tail=1) for _ in range(10)]
    for f in followers:
        assert numbers(f.lines(2)), "each follower gets lines"
    during = inotify_watches(d.pid)
    assert during - before <= 1, (before, during)
    for f in followers:
        f.close()
    wait_until(lambda: inotify_watches(d.pid) <= before, timeout=10,
               message="the watch goes with the last follower")


def test_a_follower_that_never_reads_is_told_and_cut(lab):
    # 200,000 lines (~5 MB) as fast as it can: far more than the 1 MiB the daemon keeps
    # for a follower, and than the sockets hold.
    lab.add("fast", ["--print-lines", "200000"], health=False)
    d = lab.serve(config="log_max_size: 67108864\n")
    slow = follow(d, "fast", tail=0, rcvbuf=4096)
    start_answer(lab.start("fast"), "fast")
    wait_until(lambda: d.stderr.count("read too slowly") >= 1, timeout=60,
               message="the daemon cut the slow follower")
    # The daemon still answers, and what it kept arrives, then a last line saying why.
    assert d.get("/health").status == 200
    rest = slow.body_rest(timeout=60)
    assert rest.rstrip("\n").endswith("waited unread; the follow ended]"), rest[-300:]
    assert slow.ended
    slow.close()


def test_bad_requests(nanny, services_dir, workdir):
    write_service(services_dir, "a", manifest("a"))
    viewer = new_key()
    keys = write_keys(workdir / "keys.yaml", [("v", "viewer", viewer)])
    d = nanny.serve(services_dir, extra_args=["--keys", keys])
    auth = {"Authorization": f"Bearer {viewer}"}
    assert follow(d, "a").status == 401
    assert follow(d, "nope", headers=auth).status == 404
    r = d.get("/services/a/logs?follow=banana", headers=auth)
    assert r.status == 400 and "follow" in r.json()["message"], r
    r = d.get("/services/a/logs?follow=1&tail=x", headers=auth)
    assert r.status == 400, r
    # follow=0 is the plain tail, answered at once.
    r = d.get("/services/a/logs?follow=0", headers=auth)
    assert r.status == 200 and r.headers.get("Transfer-Encoding") != "chunked", r


def test_the_daemon_stops_promptly_with_followers(lab):
    lab.add("s", ["--print-interval", "100"], health=False)
    d = lab.serve()
    start_answer(lab.start("s"), "s")
    followers = [follow(d, "s") for _ in range(3)]
    d.terminate()
    for f in followers:
        f.body_rest(timeout=10)
        assert f.ended
        f.close()


def test_a_big_tail_comes_whole_before_the_follow(lab):
    # 8,000 lines of 201 bytes: a tail of 1.6 MB, more than what may lag behind (1 MiB).
    script = 'for i in $(seq 1 8000); do printf "%0200d\\n" $i; done; exec sleep 1000'
    lab.add("big", command=["sh", "-c", script], health=False)
    d = lab.serve()
    start_answer(lab.start("big"), "big")
    wait_until(lambda: len(lab.log_lines("big", tail=8000)) >= 8000, timeout=30,
               message="8,000 lines written")
    f = follow(d, "big", tail=8000, rcvbuf=4096)
    lines = f.lines(8000, timeout=30)
    assert [int(x) for x in lines] == list(range(1, 8001))
    f.close()


def test_nanny_logs_f_into_head_ends_cleanly(lab, nanny):
    lab.add("s", ["--print-lines", "5", "--print-interval", "50"], health=False)
    d = lab.serve()
    start_answer(lab.start("s"), "s")
    cmd = (f"set -o pipefail; '{nanny_binary()}' logs s -f -n 3 "
           f"--url http://127.0.0.1:{d.port} | head -n 5")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert len(p.stdout.splitlines()) == 5, p.stdout
