"""The seed's promise (SPEC: "every curl command in its cheat sheet and quick start must
work exactly as printed there"): the lines of seed/service-nanny-quick-reference.md are
run as they are, with bash and Debian's curl (and jq), against a daemon on a free port.
Only `localhost:8080` becomes 127.0.0.1:PORT, NAME a test service's name, and the quick
start's `localhost:8000` the port of the service it starts. Nothing is skipped: a missing
curl fails the tests; a missing jq is stood in for by Python's json, so the line's curl
part still runs as printed.

The services are the test service (testsvc) run by the process driver.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from lifecycle_helpers import lab  # noqa: F401 (lab is a fixture)

# The API cheat sheet, verbatim (the table's `\|` is a plain `|`).
CHEAT_SHEET = {
    "List all services": "curl http://localhost:8080/services | jq",
    "Start a service": "curl -X POST http://localhost:8080/services/NAME/start",
    "Force start GPU service":
        "curl -X POST http://localhost:8080/services/NAME/start -d '{\"force\":true}'",
    "Stop a service": "curl -X POST http://localhost:8080/services/NAME/stop",
    "Check if healthy": "curl http://localhost:8080/services/NAME/status | jq .is_healthy",
    "Get logs": "curl http://localhost:8080/services/NAME/logs?tail=50",
    "Rediscover services": "curl -X POST http://localhost:8080/rediscover",
}
# Quick start, commands 2 and 3 (command 1, ./start.sh, runs the daemon).
QUICK_START_START = "curl -X POST http://localhost:8080/services/minimal-sd-api/start"
QUICK_START_CHECK = "curl http://localhost:8000/health"
# Adding a new service, step 5.
STEP_5 = ["curl -X POST http://localhost:8080/rediscover",
          "curl http://localhost:8080/services | jq"]
# Success indicators.
DAEMON_HEALTH = "curl http://localhost:8080/health"

CURL_TIMEOUT = 40.0
WAIT = 10.0


def seed_path():
    if os.environ.get("NANNY_SEED"):
        return os.environ["NANNY_SEED"]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(repo, "..", "shared", "seed", "service-nanny-quick-reference.md")


def require_curl():
    path = shutil.which("curl")
    if not path:
        pytest.fail("curl is needed to run the seed's lines (Debian: apt-get install curl)",
                    pytrace=False)
    return path


class Shell:
    """Runs seed lines against one daemon."""

    def __init__(self, lab, rename=None):
        """rename maps a service name the seed prints (minimal-sd-api) to the test's."""
        require_curl()
        self.lab = lab
        self.jq = shutil.which("jq")
        self.rename = dict(rename or {})

    def substitute(self, line, name=None, service_port=None):
        assert "localhost:8080" in line or service_port is not None, line
        text = line.replace("localhost:8080", f"127.0.0.1:{self.lab.d.port}")
        for seed_name, test_name in self.rename.items():
            text = text.replace(f"/services/{seed_name}/", f"/services/{test_name}/")
        if name is not None:
            assert "NAME" in text, line
            text = text.replace("NAME", name)
        if service_port is not None:
            assert "localhost:8000" in text, line
            text = text.replace("localhost:8000", f"127.0.0.1:{service_port}")
        assert "localhost" not in text, text
        return text

    def run(self, line, name=None, service_port=None):
        """Runs the substituted line with bash; returns (exit code, stdout, stderr)."""
        text = self.substitute(line, name, service_port)
        jq_filter = None
        m = re.fullmatch(r"(.*?)\s*\|\s*jq(?:\s+(\S+))?", text)
        if m and not self.jq:
            # No jq here: run the curl part as printed and apply the filter in Python.
            text, jq_filter = m.group(1), m.group(2) or "."
        p = subprocess.run(["bash", "-o", "pipefail", "-c", text], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=CURL_TIMEOUT,
                           cwd=str(self.lab.workdir))
        out = p.stdout.decode("utf-8", "replace")
        if jq_filter is not None and p.returncode == 0:
            out = python_jq(out, jq_filter)
        return p.returncode, out, p.stderr.decode("utf-8", "replace")

    def run_ok(self, line, name=None, service_port=None):
        rc, out, err = self.run(line, name, service_port)
        assert rc == 0, f"{line!r} exited {rc}; stdout {out[:500]!r}; stderr {err[-500:]!r}"
        return out

    def run_json(self, line, name=None, service_port=None):
        out = self.run_ok(line, name, service_port)
        try:
            return json.loads(out)
        except ValueError:
            raise AssertionError(f"{line!r} printed no JSON: {out[:500]!r}") from None


def python_jq(text, flt):
    """The two jq filters the seed uses: `.` and `.key`."""
    value = json.loads(text)
    if flt != ".":
        assert re.fullmatch(r"\.[A-Za-z_][A-Za-z0-9_]*", flt), flt
        value = value.get(flt[1:]) if isinstance(value, dict) else None
    return json.dumps(value, indent=2) + "\n"


def started(body):
    """A start's answer as curl printed it: the status, starting or running."""
    assert body.get("state") in ("starting", "running"), body
    return body


def parses_to(text, value):
    try:
        return json.loads(text) == value
    except ValueError:
        return False


@pytest.fixture
def sh(lab):
    return Shell(lab)


def add_services(lab):
    """The seed's example services, played by testsvc."""
    sd = lab.add("minimal-sd-api", ["--print-lines", "3"], gpu=True)
    up = lab.add("upscale-api", gpu=True)
    cpu = lab.add("cpu-api")
    return sd, up, cpu


def wait_output(sh, line, want, name=None, service_port=None, timeout=WAIT):
    """Runs line until its output (stripped) is want, or want(output) is true when want
    is a function; returns the output."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out, err = sh.run(line, name, service_port)
        if rc == 0 and (want(out) if callable(want) else out.strip() == want):
            return out
        if time.monotonic() >= deadline:
            raise AssertionError(f"{line!r} did not print {want!r} within {timeout}s; "
                                 f"last: rc {rc}, stdout {out[:300]!r}, stderr {err[-300:]!r}")
        time.sleep(0.1)


# --- the lines ----------------------------------------------------------------------


def test_cheat_sheet_lines_are_the_seeds():
    path = seed_path()
    if not os.path.isfile(path):
        pytest.skip(f"the seed is not at {path} (set NANNY_SEED to check the copies)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    rows = {}
    for m in re.finditer(r"^\|\s*([^|]+?)\s*\|\s*`(.+)`\s*\|\s*$", text, re.M):
        rows[m.group(1)] = m.group(2).replace("\\|", "|")
    for want, command in CHEAT_SHEET.items():
        assert rows.get(want) == command, (want, rows.get(want))
    assert f"# 2. Start a service\n{QUICK_START_START}\n" in text
    assert f"# 3. Check it's running\n{QUICK_START_CHECK}\n" in text
    for line in STEP_5:
        assert f"\n{line}\n" in text, line
    assert f"`{DAEMON_HEALTH}` returns 200" in text


def test_curl_is_installed():
    require_curl()
    p = subprocess.run(["curl", "--version"], capture_output=True, timeout=10)
    assert p.returncode == 0 and p.stdout.startswith(b"curl "), p


# --- quick start ---------------------------------------------------------------------


def test_quick_start(lab, sh):
    sd, _, _ = add_services(lab)
    lab.serve()
    body = sh.run_json(QUICK_START_START)
    assert body.get("name") == "minimal-sd-api", body
    assert body.get("state") in ("starting", "running"), body
    assert body.get("preempted") == [], body
    # "Check it's running": the service's own /health on its port.
    out = wait_output(sh, QUICK_START_CHECK, lambda out: parses_to(out, {"status": "ok"}),
                      service_port=sd.port)
    assert json.loads(out) == {"status": "ok"}


# --- the cheat sheet ----------------------------------------------------------------


def test_list_all_services(lab, sh):
    add_services(lab)
    lab.serve()
    body = sh.run_json(CHEAT_SHEET["List all services"])
    names = sorted(s["name"] for s in body["services"])
    assert names == ["cpu-api", "minimal-sd-api", "upscale-api"], body
    assert body["errors"] == [], body


def test_start_a_service(lab, sh):
    _, _, cpu = add_services(lab)
    lab.serve()
    body = sh.run_json(CHEAT_SHEET["Start a service"], name="cpu-api")
    assert body.get("name") == "cpu-api", body
    assert body.get("state") in ("starting", "running"), body
    assert body.get("preempted") == [], body
    lab.wait_state("cpu-api", "running")
    assert cpu.own_pid() in lab.pids("cpu-api")


def test_gpu_arbitration_flow_409_then_force(lab, sh):
    sd, up, _ = add_services(lab)
    lab.serve()
    a = sh.run_json(CHEAT_SHEET["Start a service"], name="minimal-sd-api")
    assert a.get("state") in ("starting", "running"), a
    # Start Service B (GPU): 409 Conflict, "Service A is using GPU".
    b = sh.run_json(CHEAT_SHEET["Start a service"], name="upscale-api")
    assert b.get("error") == "gpu_conflict", b
    assert b.get("holder") == "minimal-sd-api", b
    assert "minimal-sd-api is using the GPU" in b.get("message", ""), b
    assert up.pidfile_pid() is None
    # Start Service B (force=true): stops Service A, starts Service B.
    f = sh.run_json(CHEAT_SHEET["Force start GPU service"], name="upscale-api")
    assert f.get("name") == "upscale-api", f
    assert f.get("state") in ("starting", "running"), f
    assert f.get("preempted") == ["minimal-sd-api"], f
    assert lab.state("minimal-sd-api") == "stopped"
    lab.assert_no_processes("minimal-sd-api", "after the forced start answered")
    wait_output(sh, CHEAT_SHEET["Check if healthy"], "true", name="upscale-api")
    assert sh.run_ok(CHEAT_SHEET["Check if healthy"], name="minimal-sd-api").strip() == "false"


def test_force_start_with_no_holder(lab, sh):
    add_services(lab)
    lab.serve()
    f = sh.run_json(CHEAT_SHEET["Force start GPU service"], name="upscale-api")
    assert f.get("state") in ("starting", "running"), f
    assert f.get("preempted") == [], f


def test_stop_a_service(lab, sh):
    sd, _, _ = add_services(lab)
    lab.serve()
    started(sh.run_json(CHEAT_SHEET["Start a service"], name="minimal-sd-api"))
    wait_output(sh, CHEAT_SHEET["Check if healthy"], "true", name="minimal-sd-api")
    body = sh.run_json(CHEAT_SHEET["Stop a service"], name="minimal-sd-api")
    assert body.get("name") == "minimal-sd-api", body
    assert body.get("state") == "stopped", body
    assert sd.own_pid() is None
    lab.assert_no_processes("minimal-sd-api", "after stop answered")
    # Stopping it again is fine.
    again = sh.run_json(CHEAT_SHEET["Stop a service"], name="minimal-sd-api")
    assert again.get("state") == "stopped", again


def test_check_if_healthy(lab, sh):
    add_services(lab)
    lab.serve()
    line = CHEAT_SHEET["Check if healthy"]
    assert sh.run_ok(line, name="cpu-api").strip() == "false"
    started(sh.run_json(CHEAT_SHEET["Start a service"], name="cpu-api"))
    wait_output(sh, line, "true", name="cpu-api")
    assert sh.run_json(CHEAT_SHEET["Stop a service"], name="cpu-api").get("state") == "stopped"
    assert sh.run_ok(line, name="cpu-api").strip() == "false"


def test_get_logs(lab, sh):
    add_services(lab)
    lab.serve()
    started(sh.run_json(CHEAT_SHEET["Start a service"], name="minimal-sd-api"))
    wait_output(sh, CHEAT_SHEET["Check if healthy"], "true", name="minimal-sd-api")
    out = sh.run_ok(CHEAT_SHEET["Get logs"], name="minimal-sd-api")
    lines = out.splitlines()
    assert 0 < len(lines) <= 50, out
    for want in ("testsvc: line 1", "testsvc: err 2", "testsvc: line 3"):
        assert want in lines, out
    assert any("listening on 127.0.0.1:" in x for x in lines), out


def test_get_logs_of_a_service_never_started(lab, sh):
    add_services(lab)
    lab.serve()
    out = sh.run_ok(CHEAT_SHEET["Get logs"], name="upscale-api")
    assert out.strip() == "", out


def test_rediscover_services(lab, sh):
    add_services(lab)
    lab.serve()
    body = sh.run_json(CHEAT_SHEET["Rediscover services"])
    assert body.get("added") == [] and body.get("removed") == [], body
    # Step 5 of "Adding a New Service": the new folder shows up.
    lab.add("my-awesome-service")
    body = sh.run_json(STEP_5[0])
    assert body.get("added") == ["my-awesome-service"], body
    listed = sh.run_json(STEP_5[1])
    assert "my-awesome-service" in [s["name"] for s in listed["services"]], listed
    # And it can be started with the cheat sheet's line.
    started = sh.run_json(CHEAT_SHEET["Start a service"], name="my-awesome-service")
    assert started.get("state") in ("starting", "running"), started


def test_daemon_health_returns_200(lab, sh):
    add_services(lab)
    lab.serve()
    body = sh.run_json(DAEMON_HEALTH)
    assert body.get("status") == "ok", body
    assert body.get("services") == 3, body

