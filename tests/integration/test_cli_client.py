"""The daemon's commands from the command line (issue 11, part 1, SPEC section 7):
health, ls/ps, status, start, stop, restart, rediscover, logs, against the real daemon,
with their output and exit codes: 1 failed, 2 usage, 3 GPU conflict, 4 unreachable,
5 timed out, 6 unauthorized or forbidden."""

import json
import os
import pty
import shutil
import subprocess

import pytest

from conftest import clean_env, free_port, manifest, nanny_binary, wait_until, write_service
from test_gate import new_key, write_keys
from test_tls import install, pki, serve_tls  # noqa: F401 (pki: the fixture)


def cli(nanny, d, *args, env=None):
    url = f"http://127.0.0.1:{d.port}" if d is not None else None
    argv = list(map(str, args))
    if url:
        argv += ["--url", url]
    return nanny.run(argv, env=env)


def test_ls_status_start_stop_restart_logs(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    write_service(services_dir, "b", manifest("b"))
    d = nanny.serve(services_dir)

    rc, out, err = cli(nanny, d, "health")
    assert rc == 0, err
    assert out.startswith("ok: nanny ") and "2 services" in out

    rc, out, err = cli(nanny, d, "ls")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "HEALTH"]
    assert [line.split()[:2] for line in lines[1:]] == [["a", "stopped"], ["b", "stopped"]]
    assert "\033[" not in out  # not a terminal: no colour
    assert not any(line.endswith(" ") for line in lines), lines

    rc, out, err = cli(nanny, d, "start", "a")
    assert rc == 0, err
    assert out.startswith("a: ")
    wait_until(lambda: d.request("GET", "/services/a/status").json()["state"] == "running")

    rc, out, err = cli(nanny, d, "ps", "--json")
    assert rc == 0, err
    states = {s["name"]: s["state"] for s in json.loads(out)["services"]}
    assert states == {"a": "running", "b": "stopped"}

    rc, out, err = cli(nanny, d, "status", "a")
    assert rc == 0, err
    assert out.splitlines()[0].startswith("a: running")
    rc, out, err = cli(nanny, d, "status", "a", "--json")
    assert rc == 0 and json.loads(out)["name"] == "a"

    rc, out, err = cli(nanny, d, "restart", "a")
    assert rc == 0, err
    rc, out, err = cli(nanny, d, "stop", "a")
    assert rc == 0, err
    assert json.loads(cli(nanny, d, "status", "a", "--json")[1])["state"] == "stopped"

    rc, out, err = cli(nanny, d, "logs", "a", "-n", "5")
    assert rc == 0, err

    write_service(services_dir, "c", manifest("c"))
    rc, out, err = cli(nanny, d, "rediscover")
    assert rc == 0, err
    assert out.strip() == "3 services: 1 added, 0 removed, 0 changed, 0 errors"


def test_unknown_service_and_usage(nanny, daemon):
    rc, out, err = cli(nanny, daemon, "start", "nope")
    assert rc == 1
    assert "nanny start: " in err and "HTTP 404" in err
    rc, out, err = cli(nanny, daemon, "status", "nope")
    assert rc == 1

    rc, out, err = cli(nanny, daemon, "start")
    assert rc == 2 and "NAME" in err
    rc, out, err = cli(nanny, daemon, "stop", "a", "--json")
    assert rc == 2
    rc, out, err = cli(nanny, daemon, "start", "a", "--timeout", "soon")
    assert rc == 2
    rc, out, err = cli(nanny, None, "start", "--help")
    assert rc == 0 and "example" in out and "--force" in out


def test_gpu_conflict_names_the_holder_and_the_force_command(nanny, services_dir):
    write_service(services_dir, "g1", manifest("g1", gpu_required="true"))
    write_service(services_dir, "g2", manifest("g2", gpu_required="true"))
    d = nanny.serve(services_dir)
    assert cli(nanny, d, "start", "g1")[0] == 0
    rc, out, err = cli(nanny, d, "start", "g2")
    assert rc == 3, err
    assert "g1" in err and "nanny start g2 --force" in err
    rc, out, err = cli(nanny, d, "start", "g2", "--force")
    assert rc == 0, err
    wait_until(lambda: d.request("GET", "/services/g1/status").json()["state"] == "stopped")


def test_unreachable(nanny):
    port = free_port()
    rc, out, err = nanny.run(["ls"], env={"NANNY_URL": f"http://127.0.0.1:{port}"})
    assert rc == 4
    assert err.strip() == (f"nanny: no nanny answers at http://127.0.0.1:{port}: "
                           "is it running? (./start.sh)")


def test_wait_timeout_leaves_the_service(nanny, services_dir):
    # Nothing listens on its port: it never becomes healthy.
    write_service(services_dir, "slow", manifest("slow", free_port()))
    d = nanny.serve(services_dir)
    rc, out, err = cli(nanny, d, "start", "slow", "--wait", "--timeout", "1s")
    assert rc == 5, err
    assert "slow was left as it is" in err
    state = d.request("GET", "/services/slow/status").json()["state"]
    assert state in ("starting", "unhealthy", "running"), state


def test_unauthorized_and_forbidden(nanny, services_dir, workdir):
    write_service(services_dir, "a", manifest("a"))
    viewer, admin = new_key(), new_key()
    keys = write_keys(workdir / "keys.yaml", [("v", "viewer", viewer), ("ad", "admin", admin)])
    d = nanny.serve(services_dir, extra_args=["--keys", keys])

    rc, out, err = cli(nanny, d, "ls")
    assert rc == 6, err
    rc, out, err = cli(nanny, d, "ls", "--key", viewer)
    assert rc == 0, err
    rc, out, err = cli(nanny, d, "start", "a", env={"NANNY_KEY": viewer})
    assert rc == 6, err
    assert "HTTP 403" in err
    rc, out, err = cli(nanny, d, "start", "a", env={"NANNY_KEY": admin})
    assert rc == 0, err


def test_daemon_timeout_504_says_it_was_stopped(nanny, services_dir):
    write_service(services_dir, "never", manifest(
        "never", free_port(), health="{path: /health, interval: 200ms, start_period: 1s}"))
    d = nanny.serve(services_dir)
    rc, out, err = cli(nanny, d, "start", "never", "--wait")
    assert rc == 5, err
    assert "HTTP 504" in err and "never did not become healthy in time and was stopped" in err


def run_on_a_terminal(argv, env):
    """Runs argv with stdout on a pseudo-terminal; returns (rc, what it wrote)."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        return p.wait(timeout=10), b"".join(chunks).decode()
    finally:
        os.close(master)


def test_colours_only_on_a_terminal_and_never_with_no_color(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    assert cli(nanny, d, "start", "a")[0] == 0
    wait_until(lambda: d.request("GET", "/services/a/status").json()["state"] == "running")
    argv = [nanny_binary(), "ls", "--url", f"http://127.0.0.1:{d.port}"]
    rc, out = run_on_a_terminal(argv, clean_env())
    assert rc == 0 and "\033[32mrunning" in out, out
    rc, out = run_on_a_terminal(argv, clean_env({"NO_COLOR": "1"}))
    assert rc == 0 and "running" in out and "\033[" not in out, out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_daemon_with_cacert(nanny, services_dir, workdir, pki):
    cert, key = install(pki, "one", workdir)
    d = serve_tls(nanny, services_dir, pki, cert, key)
    url = f"https://127.0.0.1:{d.port}"
    rc, out, err = nanny.run(["health", "--url", url])
    assert rc == 4
    assert "does not trust" in err and "--cacert" in err
    rc, out, err = nanny.run(["health", "--url", url, "--cacert", pki.ca])
    assert rc == 0, err
    assert out.startswith("ok: nanny ")
    rc, out, err = nanny.run(["health"], env={"NANNY_URL": url, "NANNY_CACERT": pki.ca})
    assert rc == 0, err
