"""The root's test_api.sh ("Test the API" of the seed), run as a user runs it against a real
daemon: one `OK  METHOD PATH` line per endpoint and exit 0; a port nobody listens on is one
line and exit 4; a wrong key gives FAIL lines naming the status and a non-zero exit; it
starts and stops nothing unless --lifecycle NAME asks; HTTPS with --cacert/NANNY_CACERT."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import clean_env, free_port, manifest, write_service
from test_gate import Keyed, new_key
from test_tls import install, pki, serve_tls  # noqa: F401 (pki is a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "test_api.sh")
LINE_RE = re.compile(r"^(OK  [A-Z]+ /\S*|FAIL [A-Z]+ /\S*: .+|SKIP [A-Z]+ /\S*: .+)$")
SUMMARY_RE = re.compile(r"^(\d+) ok, (\d+) failed, (\d+) skipped \(.+\)$")

pytestmark = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="test_api.sh needs curl (Debian: curl)")


def run_script(args=(), env=None, cwd=None):
    r = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=120,
                       env=clean_env(env), cwd=cwd)
    return r.returncode, r.stdout, r.stderr


def parse(out):
    """stdout -> ({"METHOD PATH": "OK"|"FAIL ..."|"SKIP ..."}, (ok, failed, skipped))."""
    lines = out.splitlines()
    assert lines, "no output"
    summary = SUMMARY_RE.match(lines[-1])
    assert summary, f"the last line is not the summary: {lines[-1]!r}"
    results = {}
    for line in lines[:-1]:
        assert LINE_RE.match(line), f"not an OK/FAIL/SKIP line: {line!r}"
        word, method, rest = line.split(None, 2)
        path, _, why = rest.partition(": ")
        results[f"{method} {path}"] = word if word == "OK" else f"{word} {why}"
    counts = tuple(int(n) for n in summary.groups())
    assert counts == (sum(v == "OK" for v in results.values()),
                      sum(v.startswith("FAIL") for v in results.values()),
                      sum(v.startswith("SKIP") for v in results.values())), out
    return results, counts


READ_CHECKS = ["GET /health", "GET /services", "GET /services/alpha",
               "GET /services/alpha/status", "GET /services/alpha/logs?tail=5",
               "POST /rediscover", "GET /audit?tail=5"]


@pytest.fixture
def served(nanny, services_dir):
    write_service(services_dir, "alpha", manifest("alpha"))
    write_service(services_dir, "beta", manifest("beta"))
    return nanny.serve(services_dir)


def test_every_endpoint_is_ok_against_a_running_daemon(served):
    rc, out, err = run_script(["--url", f"http://127.0.0.1:{served.port}"])
    assert rc == 0, out + err
    results, (ok, failed, _) = parse(out)
    for check in READ_CHECKS:
        assert results.get(check) == "OK", f"{check}: {results.get(check)}\n{out}"
    assert failed == 0 and ok >= len(READ_CHECKS)
    # Read-only: nothing was started.
    states = {s["name"]: s["state"] for s in served.services()["services"]}
    assert states == {"alpha": "stopped", "beta": "stopped"}


def test_no_service_skips_the_service_endpoints(daemon):
    rc, out, err = run_script(["--url", f"http://127.0.0.1:{daemon.port}"])
    assert rc == 0, out + err
    results, _ = parse(out)
    assert results["GET /services/NAME/status"] == "SKIP GET /services lists no service", out
    assert results["GET /services"] == "OK" and results["POST /rediscover"] == "OK", out


def test_the_url_comes_from_nanny_url(served):
    rc, out, err = run_script(env={"NANNY_URL": f"http://127.0.0.1:{served.port}/"})
    assert rc == 0, out + err
    assert f"(http://127.0.0.1:{served.port})" in out.splitlines()[-1]


def test_no_daemon_is_one_line_and_exit_4():
    port = free_port()
    rc, out, err = run_script(["--url", f"http://127.0.0.1:{port}"])
    assert rc == 4, out + err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"test_api.sh: no answer from the daemon at http://127.0.0.1:{port}: "), err


def test_a_wrong_key_fails_with_the_status(nanny, workdir, services_dir):
    keyed = Keyed(nanny, workdir, services_dir)
    url = f"http://127.0.0.1:{keyed.d.port}"
    # The right key: every check passes (admin may rediscover and read the audit log).
    rc, out, err = run_script(["--url", url], env={"NANNY_KEY": keyed.keys["admin"]})
    assert rc == 0, out + err
    results, _ = parse(out)
    assert results["GET /services/idle/status"] == "OK", out
    # --key wins over NANNY_KEY; a viewer may read, not rescan.
    rc, out, err = run_script(["--url", url, "--key", keyed.keys["viewer"]],
                              env={"NANNY_KEY": new_key()})
    assert rc == 1, out + err
    results, (_, failed, _) = parse(out)
    assert results["GET /services"] == "OK", out
    assert results["POST /rediscover"].startswith("FAIL HTTP 403 (expected 200): "), out
    assert failed == 2, out  # /rediscover and /audit are admin's
    # A wrong key (last: wrong keys in a row from one address are throttled).
    rc, out, err = run_script(["--url", url], env={"NANNY_KEY": new_key()})
    assert rc == 1, out + err
    results, (_, failed, _) = parse(out)
    assert failed >= 1
    assert results["GET /services"].startswith("FAIL HTTP 401 (expected 200): "), out
    assert '"error":"unauthorized"' in results["GET /services"], out
    assert results["GET /services/NAME/status"].endswith("GET /services failed"), out
    for key in keyed.keys.values():  # never printed
        assert key not in out + err


def test_lifecycle_starts_restarts_and_stops_the_named_service(served):
    rc, out, err = run_script(["--url", f"http://127.0.0.1:{served.port}",
                               "--lifecycle", "alpha"])
    assert rc == 0, out + err
    results, _ = parse(out)
    for action in ("start", "restart", "stop"):
        assert results[f"POST /services/alpha/{action}"] == "OK", out
    states = {s["name"]: s["state"] for s in served.services()["services"]}
    assert states == {"alpha": "stopped", "beta": "stopped"}
    # A service that ran before is left running.
    assert served.post("/services/beta/start").status == 200
    rc, out, err = run_script(["--url", f"http://127.0.0.1:{served.port}",
                               "--lifecycle", "beta"])
    assert rc == 0, out + err
    assert served.get_json("/services/beta")["state"] in ("starting", "running")
    # An unknown service is a FAIL, not a crash.
    rc, out, err = run_script(["--url", f"http://127.0.0.1:{served.port}",
                               "--lifecycle", "nosuch"])
    assert rc == 1, out + err
    results, _ = parse(out)
    assert results["POST /services/nosuch/start"].startswith("FAIL HTTP 404"), out


def test_https_with_the_ca(nanny, services_dir, pki, tmp_path):  # noqa: F811
    write_service(services_dir, "alpha", manifest("alpha"))
    cert, key = install(pki, "one", tmp_path)
    d = serve_tls(nanny, services_dir, pki, cert, key)
    url = f"https://127.0.0.1:{d.port}"
    env = {"CURL_CA_BUNDLE": "", "SSL_CERT_FILE": os.devnull}
    rc, out, err = run_script(["--url", url, "--cacert", pki.ca], env=env)
    assert rc == 0, out + err
    rc, out, err = run_script(["--url", url], env={**env, "NANNY_CACERT": pki.ca})
    assert rc == 0, out + err
    # Without the CA curl does not trust the certificate: no answer, exit 4.
    rc, out, err = run_script(["--url", url], env=env)
    assert rc == 4 and "no answer from the daemon" in err and "(60)" in err, out + err


def test_help_and_usage():
    rc, out, err = run_script(["--help"])
    assert rc == 0 and out.startswith("usage: test_api.sh "), out + err
    for flag in ("--url", "--key", "--cacert", "--lifecycle", "NANNY_URL", "NANNY_KEY",
                 "NANNY_CACERT"):
        assert flag in out
    for args in (["--bogus"], ["--url"], ["--url", "127.0.0.1:8080"], ["--lifecycle", "A/b"]):
        rc, out, err = run_script(args)
        assert rc == 2, (args, out, err)
        assert err.startswith("test_api.sh: "), err


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    r = subprocess.run(["shellcheck", SCRIPT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

