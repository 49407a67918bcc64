"""/mcp driven by the official TypeScript clients (issue 12, "Tests and figures"):
@modelcontextprotocol/sdk 1.32.2 over Streamable HTTP in a 2025-11-25 session
(tests/mcp/sdk_http.mjs) and over stdio through `nanny mcp` (tests/mcp/sdk_stdio.mjs),
and @modelcontextprotocol/client 2.4.0 on the stateless revision 2026-07-28
(tests/mcp/client_modern.mjs). The scripts check each answer as the SDKs see it
(structuredContent against each tool's outputSchema, isError results, progress
notifications) and print a JSON summary; these tests then check the daemon's side of
it through the REST API.

At least one progress notification is required, not one per state change: SDK 1.x
hands notifications to their handler a microtask later than responses, so the last
one ("starting -> running"), written just before the result, is sometimes dropped
when both arrive in one read (seen over stdio under load; typescript-sdk issue #2580).
"""

import json
import os

from conftest import nanny_binary
from lifecycle_helpers import lab  # noqa: F401 (a fixture)
from mcp_helpers import run_script
from test_gate import new_key, write_keys

# testsvc's first numbered line (--print-lines): what service_logs must show.
LOG_LINE = "testsvc: line 1"


def mcp_url(daemon):
    return f"http://127.0.0.1:{daemon.port}/mcp"


def test_sdk_agent_flow_over_streamable_http(lab):
    # a becomes healthy a little after it starts, so that a wait_healthy start goes
    # through starting -> running with progress notifications on the way.
    lab.add("gpu-a", ["--startup-delay", "300"], gpu=True)
    lab.add("gpu-b", ["--print-lines", "3"], gpu=True)
    d = lab.serve()
    summary = run_script("sdk_http.mjs", [mcp_url(d), "gpu-a", "gpu-b", "--log-line", LOG_LINE], d)

    assert summary["protocolVersion"] == "2025-11-25", summary
    assert len(summary["tools"]) == 8, summary
    assert "gpu-a" in summary["conflict"], summary
    assert summary["progress"], summary
    assert all(isinstance(p.get("progress"), (int, float)) for p in summary["progress"]), summary
    # The flow ends with both services stopped and the GPU free.
    assert lab.state("gpu-a") == "stopped"
    assert lab.state("gpu-b") == "stopped"
    assert lab.gpu_holders() == []


def test_sdk_agent_flow_with_a_key(lab, workdir):
    # With keys, the SDK sends its key as Bearer on every request (the DELETE too);
    # the flow needs admin (rediscover). Without a key /mcp is 401.
    admin = new_key()
    keys = write_keys(os.path.join(str(workdir), "keys.yaml"), [("agent", "admin", admin)])
    lab.add("gpu-a", ["--startup-delay", "300"], gpu=True)
    lab.add("gpu-b", ["--print-lines", "3"], gpu=True)
    d = lab.serve(extra_args=["--keys", keys])
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "1"}}}
    r = d.post("/mcp", json.dumps(initialize), headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    assert r.status == 401, r
    summary = run_script("sdk_http.mjs", [mcp_url(d), "gpu-a", "gpu-b", "--log-line", LOG_LINE], d,
                         env={"NANNY_KEY": admin})
    assert "gpu-a" in summary["conflict"] and summary["progress"], summary
    listed = d.get("/services", headers={"Authorization": f"Bearer {admin}"})
    assert listed.status == 200, listed
    assert {s["name"]: s["state"] for s in listed.json()["services"]} == \
        {"gpu-a": "stopped", "gpu-b": "stopped"}, listed.json()


def test_modern_client_on_the_stateless_revision(lab):
    lab.add("svc", health=False)
    d = lab.serve()
    summary = run_script("client_modern.mjs", [mcp_url(d), "svc"], d)

    for mode in ("pinned", "auto"):
        seen = summary[mode]
        assert "2026-07-28" in seen["supportedVersions"], seen
        assert seen["methods"][0] == "server/discover", seen
        assert "initialize" not in seen["methods"], seen
        assert seen["status"]["name"] == "svc" and seen["status"]["state"] == "stopped", seen
    assert "no-such-service" in summary["pinned"]["unknown"]


def test_modern_client_with_a_viewer_key(lab, workdir):
    # A viewer may list and read: all that client_modern.mjs does.
    viewer = new_key()
    keys = write_keys(os.path.join(str(workdir), "keys.yaml"), [("watcher", "viewer", viewer)])
    lab.add("svc", health=False)
    d = lab.serve(extra_args=["--keys", keys])
    summary = run_script("client_modern.mjs", [mcp_url(d), "svc"], d, env={"NANNY_KEY": viewer})
    assert summary["pinned"]["status"]["name"] == "svc", summary
    assert summary["auto"]["methods"][0] == "server/discover", summary


def test_sdk_agent_flow_over_stdio(lab):
    # `nanny mcp` as a desktop agent launches it: stdio, talking to the daemon at NANNY_URL.
    lab.add("gpu-a", ["--startup-delay", "300"], gpu=True)
    lab.add("gpu-b", ["--print-lines", "3"], gpu=True)
    d = lab.serve()
    summary = run_script("sdk_stdio.mjs", [nanny_binary(), f"http://127.0.0.1:{d.port}", "gpu-a",
                                           "gpu-b", "--log-line", LOG_LINE], d)

    assert summary["transport"] == "stdio", summary
    assert len(summary["tools"]) == 8, summary
    assert "gpu-a" in summary["conflict"], summary
    assert summary["progress"], summary
    assert lab.state("gpu-a") == "stopped"
    assert lab.state("gpu-b") == "stopped"
    assert lab.gpu_holders() == []
