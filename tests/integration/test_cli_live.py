"""What the CLI watches as it happens (issue 11, parts 2 and 4): `nanny start --wait` on a
terminal shows one live line driven by GET /events (state, seconds, last health result),
then the final state; without a terminal only the result. `nanny logs -f` prints the tail,
then new lines as they are written, and ends cleanly on Ctrl-C."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import clean_env, free_port, manifest, nanny_binary, wait_until, write_service
from lifecycle_helpers import NUMBERED_LINE_RE, lab  # noqa: F401 (lab: a fixture)
from test_gate import new_key, write_keys

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Tmux:
    """A private tmux server (its own socket) running one command in a 120x10 window."""

    def __init__(self, workdir, argv, env):
        self.socket = os.path.join(str(workdir), "tmux.sock")
        self.done = os.path.join(str(workdir), "tmux.rc")
        command = " ".join(f"'{a}'" for a in argv)
        self.run("new-session", "-d", "-x", "120", "-y", "10",
                 f"{command}; echo $? > {self.done}; sleep 60", env=env)

    def run(self, *args, env=None):
        return subprocess.run(["tmux", "-S", self.socket] + list(args), env=env,
                              capture_output=True, text=True, timeout=10, check=True).stdout

    def screen(self):
        return self.run("capture-pane", "-p")

    def rc(self):
        try:
            with open(self.done) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def close(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def tmux_factory(workdir):
    made = []

    def make(argv, env=None):
        t = Tmux(workdir, argv, clean_env(env))
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


@needs_tmux
def test_start_wait_on_a_terminal_shows_a_live_line(lab, tmux_factory):
    lab.add("s", args=["--health-after", "4000"])
    d = lab.serve()
    t = tmux_factory([nanny_binary(), "start", "s", "--wait", "--url",
                      f"http://127.0.0.1:{d.port}"])
    # While it waits: one line with the state from the events, the seconds elapsed and the
    # last health result (testsvc answers 503 while it is not ready).
    line = wait_until(lambda: next((l for l in t.screen().splitlines()
                                    if l.startswith("s: starting, ")
                                    and "health: failing (" in l and "503" in l), None),
                      timeout=10, message="the live line says starting, failing with 503")
    assert re.match(r"^s: starting, \d+s, health: failing \(.*503.*\)$", line.rstrip()), line
    wait_until(lambda: t.rc() is not None, timeout=30, message="nanny start returned")
    assert t.rc() == 0
    lines = [l for l in t.screen().splitlines() if l.strip()]
    # The live line is gone; the final state is what is left.
    assert lines == ["s: running, healthy"], lines
    assert lab.state("s") == "running"


@needs_tmux
def test_start_wait_on_a_terminal_with_a_timeout_leaves_the_service(lab, tmux_factory):
    lab.add("s", args=["--health-after", "60000"])
    d = lab.serve()
    t = tmux_factory([nanny_binary(), "start", "s", "--wait", "--timeout", "2s", "--url",
                      f"http://127.0.0.1:{d.port}"])
    wait_until(lambda: t.rc() is not None, timeout=30, message="nanny start returned")
    assert t.rc() == 5
    assert "s was left as it is" in t.screen()
    assert lab.state("s") == "starting"


def test_start_wait_without_a_terminal_prints_only_the_result(lab, nanny):
    lab.add("s", args=["--health-after", "500"])
    d = lab.serve()
    rc, out, err = nanny.run(["start", "s", "--wait", "--url", f"http://127.0.0.1:{d.port}"])
    assert rc == 0, err
    assert out == "s: running, healthy", repr(out)
    assert "\r" not in out and "\033" not in out


def follow(nanny, d, name, *args, env=None):
    argv = [nanny_binary(), "logs", name, "-f", "--url", f"http://127.0.0.1:{d.port}"]
    return subprocess.Popen(argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(env), text=True)


def read_lines(p, n, timeout=10):
    """The next n lines of p's stdout."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {got} in time"
        line = p.stdout.readline()
        assert line, f"stdout closed after {got}; stderr: {p.stderr.read()}"
        got.append(line.rstrip("\n"))
    return got


def test_logs_follow_prints_the_tail_then_new_lines_and_ends_on_ctrl_c(lab, nanny):
    lab.add("s", args=["--print-lines", "4", "--print-interval", "200"], health=False)
    d = lab.serve()
    assert lab.start("s").status == 200
    wait_until(lambda: len([l for l in lab.log_lines("s") if NUMBERED_LINE_RE.match(l)]) >= 6,
               message="six numbered lines written")
    before = lab.log_lines("s")
    p = follow(nanny, d, "s", "-n", "2")
    try:
        first = read_lines(p, 2)
        more = read_lines(p, 3)
    finally:
        p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=10)
    assert rc == 0, p.stderr.read()
    # The tail: the last two lines written when it asked (or later ones, were more written
    # meanwhile), then the lines as they come: in order, none lost, none twice.
    numbers = [int(NUMBERED_LINE_RE.match(line).group(2)) for line in first + more]
    before_numbers = [int(m.group(2)) for m in map(NUMBERED_LINE_RE.match, before) if m]
    assert numbers[0] >= before_numbers[-2], (first, before[-3:])
    assert numbers == list(range(numbers[0], numbers[0] + 5)), first + more


def test_logs_follow_errors(nanny, services_dir, workdir):
    write_service(services_dir, "a", manifest("a"))
    viewer = new_key()
    keys = write_keys(workdir / "keys.yaml", [("v", "viewer", viewer)])
    d = nanny.serve(services_dir, extra_args=["--keys", keys])
    url = f"http://127.0.0.1:{d.port}"
    rc, out, err = nanny.run(["logs", "nope", "-f", "--url", url, "--key", viewer])
    assert rc == 1 and "nope" in err, err
    rc, out, err = nanny.run(["logs", "a", "-f", "--url", url])
    assert rc == 6, err
    port = free_port()
    rc, out, err = nanny.run(["logs", "a", "-f", "--url", f"http://127.0.0.1:{port}"])
    assert rc == 4 and "no nanny answers" in err, err


def test_start_wait_on_a_terminal_with_no_daemon_says_so_once(nanny):
    import pty
    port = free_port()
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([nanny_binary(), "start", "s", "--wait", "--url",
                              f"http://127.0.0.1:{port}"], stdout=slave,
                             stderr=subprocess.PIPE, env=clean_env(), text=True)
        os.close(slave)
        err = p.communicate(timeout=30)[1]
    finally:
        os.close(master)
    assert p.returncode == 4, err
    assert err.count("no nanny answers") == 1, err
