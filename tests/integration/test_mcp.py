"""MCP at /mcp (issue 12, SPEC section 7), by raw requests: the session revisions
(initialize, Mcp-Session-Id, MCP-Protocol-Version, DELETE), the stateless revision
2026-07-28 (_meta, server/discover, the mirrored headers), the eight tools over real test
services (the GPU conflict as a tool error naming the holder, force, logs, progress
through an event stream), every bad input the issue lists, and the gate (keys, roles per
tool, refusals audited). The official SDKs and the conformance suite drive it in
test_mcp_sdk.py and test_mcp_conformance.py."""

import http.client
import json
import os
import re
import socket
import time

import pytest

from conftest import (HOST, manifest, parse_raw_response, raw_exchange, wait_until,
                      write_service)
from lifecycle_helpers import lab  # noqa: F401 (a fixture)
from test_gate import Keyed, bearer

MODERN = "2026-07-28"
SESSION_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
TOOLS = {"list_services", "service_status", "start_service", "stop_service",
         "restart_service", "service_logs", "rediscover", "gpu_status"}
JSON_HEADERS = {"Content-Type": "application/json",
                "Accept": "application/json, text/event-stream"}
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {}}


class Mcp:
    """A client of /mcp on one keep-alive connection: a session (initialize) or
    stateless 2026-07-28 requests."""

    def __init__(self, port, headers=None, timeout=30.0):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.extra = dict(headers or {})
        self.session = None
        self.version = None
        self.next_id = 1

    def close(self):
        self.conn.close()

    def post(self, body, headers=None, raw=False):
        """POSTs body (a dict, or bytes/str as they are); returns (status, headers,
        JSON body or None, raw bytes)."""
        h = dict(JSON_HEADERS)
        h.update(self.extra)
        if self.session:
            h["Mcp-Session-Id"] = self.session
        if self.version:
            h["MCP-Protocol-Version"] = self.version
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        self.conn.request("POST", "/mcp", body=data, headers=h)
        r = self.conn.getresponse()
        raw_body = r.read()
        parsed = None
        if raw_body and (r.getheader("Content-Type") or "").startswith("application/json"):
            parsed = json.loads(raw_body)
        return r.status, r, parsed, raw_body

    def request(self, method, params=None, headers=None):
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            msg["params"] = params
        return self.post(msg, headers)

    def initialize(self, version="2025-11-25"):
        status, r, body, _ = self.request("initialize", {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "test_mcp", "version": "1"}})
        assert status == 200, body
        self.session = r.getheader("Mcp-Session-Id")
        assert self.session and re.fullmatch(r"[0-9a-f]{32}", self.session), self.session
        self.version = body["result"]["protocolVersion"]
        status, _, _, raw = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert status == 202 and raw == b"", (status, raw)
        return body["result"]

    def call(self, tool, arguments=None, headers=None):
        """tools/call; returns the JSON-RPC result (asserting there is one)."""
        params = {"name": tool}
        if arguments is not None:
            params["arguments"] = arguments
        status, _, body, raw = self.request("tools/call", params, headers)
        assert status == 200 and body and "result" in body, (status, raw[:500])
        return body["result"]

    def modern(self, method, params=None, headers=None, meta=META):
        """A stateless 2026-07-28 request with its _meta and mirrored headers."""
        params = dict(params or {})
        if meta is not None:
            params["_meta"] = dict(meta)
        h = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
        if method == "tools/call":
            h["Mcp-Name"] = params.get("name")
        h.update(headers or {})
        return self.request(method, params, h)


def structured(result):
    """A tool's structuredContent, checked to be the same JSON as its text."""
    assert result["isError"] is False, result
    text = [c for c in result["content"] if c["type"] == "text"]
    assert len(text) == 1, result
    assert json.loads(text[0]["text"]) == result["structuredContent"], result
    return result["structuredContent"]


def error_text(result):
    assert result["isError"] is True, result
    assert "structuredContent" not in result, result
    return " ".join(c["text"] for c in result["content"] if c["type"] == "text")


def assert_rpc_error(status, body, want_status, code, words=()):
    assert status == want_status, (status, body)
    assert body and body.get("jsonrpc") == "2.0" and "error" in body, body
    assert body["error"]["code"] == code, body
    for w in words:
        assert w in body["error"]["message"], body
    return body["error"]


@pytest.fixture
def mcp(daemon):
    c = Mcp(daemon.port)
    yield c
    c.close()


# --- the session revisions ---------------------------------------------------------


@pytest.mark.parametrize("asked,got", [(v, v) for v in SESSION_VERSIONS] +
                         [("2024-11-05", "2025-11-25"), ("2099-01-01", "2025-11-25")])
def test_initialize_negotiates_the_version(mcp, asked, got):
    result = mcp.initialize(asked)
    assert result["protocolVersion"] == got
    assert result["serverInfo"]["name"] == "service-nanny"
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert "force" in result["instructions"] and "GPU" in result["instructions"]


def test_session_lifecycle(daemon, mcp):
    mcp.initialize()
    status, _, body, _ = mcp.request("ping")
    assert status == 200 and body == {"jsonrpc": "2.0", "id": body["id"], "result": {}}
    status, _, body, _ = mcp.request("tools/list")
    tools = body["result"]["tools"]
    assert {t["name"] for t in tools} == TOOLS
    for t in tools:
        assert t["description"] and t["inputSchema"]["type"] == "object", t
        assert t["outputSchema"]["type"] == "object", t
    # A session accepts every version it speaks, whatever it negotiated.
    status, _, body, _ = mcp.request("ping", headers={"MCP-Protocol-Version": "2025-03-26"})
    assert status == 200 and body["result"] == {}
    # Another client's session is its own.
    other = Mcp(daemon.port)
    other.initialize("2025-06-18")
    assert other.session != mcp.session
    # DELETE ends it: then 404, the other goes on.
    mcp.conn.request("DELETE", "/mcp", headers={"Mcp-Session-Id": mcp.session})
    r = mcp.conn.getresponse()
    r.read()
    assert r.status == 200
    status, _, body, _ = mcp.request("ping")
    assert_rpc_error(status, body, 404, -32001, ["Session not found"])
    mcp.conn.request("DELETE", "/mcp", headers={"Mcp-Session-Id": mcp.session})
    r = mcp.conn.getresponse()
    assert r.status == 404 and json.loads(r.read())["error"]["code"] == -32001
    status, _, body, _ = other.request("ping")
    assert status == 200
    other.close()


def test_session_errors(mcp):
    status, _, body, _ = mcp.request("tools/list")
    assert_rpc_error(status, body, 400, -32000, ["Mcp-Session-Id", "initialize"])
    status, _, body, _ = mcp.request("tools/list", headers={"Mcp-Session-Id": "f" * 32})
    assert_rpc_error(status, body, 404, -32001)
    mcp.initialize()
    for bad in ("2000-01-01", "2099-01-01", "invalid-protocol-version"):
        status, _, body, _ = mcp.request("tools/list", headers={"MCP-Protocol-Version": bad})
        assert_rpc_error(status, body, 400, -32000, ["unsupported protocol version"])
    status, _, body, _ = mcp.request("initialize", {"protocolVersion": 7})
    assert_rpc_error(status, body, 400, -32602, ["protocolVersion"])


def test_get_is_not_a_stream(daemon):
    r = daemon.get("/mcp", headers={"Accept": "text/event-stream"})
    assert r.status == 405 and "POST" in r.headers["Allow"], r


def test_sessions_are_bounded_and_expire(nanny, services_dir, workdir):
    cfg = workdir / "nanny.yaml"
    cfg.write_text("mcp: {sessions: 100, session_idle: 2s}\n")
    # Under ASan, freed memory waits in a quarantine first: measure without one.
    asan = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0").lstrip(":")
    d = nanny.serve(services_dir, extra_args=["--config", str(cfg)],
                    env={"ASAN_OPTIONS": asan})
    c = Mcp(d.port)
    rss = []
    first = None
    for i in range(10000):
        c.session = None
        status, r, _, _ = c.request("initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "abandoner", "version": "1"}})
        assert status == 200
        if i == 0:
            first = r.getheader("Mcp-Session-Id")
        if i in (1000, 9999):
            with open(f"/proc/{d.pid}/status") as f:
                rss.append(int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)))
    last = r.getheader("Mcp-Session-Id")
    # The oldest went when the 101st began; the newest lives.
    c.session, c.version = first, "2025-11-25"
    status, _, body, _ = c.request("ping")
    assert_rpc_error(status, body, 404, -32001)
    c.session = last
    status, _, _, _ = c.request("ping")
    assert status == 200
    # 9,000 more sessions did not grow the daemon by more than a few MiB.
    assert rss[1] - rss[0] < 8 * 1024, rss
    # Idle for longer than session_idle: gone.
    time.sleep(3)
    status, _, body, _ = c.request("ping")
    assert_rpc_error(status, body, 404, -32001)
    c.close()
    d.assert_healthy()


# --- bad input -----------------------------------------------------------------------


BAD_MESSAGES = [
    (b"not json", 400, -32700),
    (b"", 400, -32700),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"', 400, -32700),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, -32600),
    (b'"ping"', 400, -32600),
    (b'{"jsonrpc":"2.0","method":"tools/list"}', 400, -32600),  # a request without id
    (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, -32600),
    (b'{"id":1,"method":"ping"}', 400, -32600),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', 400, -32600),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', 400, -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":7}', 400, -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', 400, -32600),
    (b'{"jsonrpc":"2.0","id":1}', 400, -32600),
    (b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}', 400, -32700),  # duplicate key
]


@pytest.mark.parametrize("body,status,code", BAD_MESSAGES)
def test_bad_messages(mcp, body, status, code):
    mcp.initialize()
    got, _, parsed, raw = mcp.post(body)
    assert_rpc_error(got, parsed, status, code)
    got, _, parsed, _ = mcp.request("ping")  # and it goes on serving
    assert got == 200 and parsed["result"] == {}


BAD_CALLS = [
    ("no_such_tool", {}, ["unknown tool", "no_such_tool"]),
    ("service_status", {}, ["arguments.name", "missing"]),
    ("service_status", {"name": 7}, ["arguments.name", "string"]),
    ("service_status", {"name": ""}, ["arguments.name"]),
    ("start_service", {"name": "x", "force": "yes"}, ["arguments.force", "boolean"]),
    ("start_service", {"name": "x", "wait_healthy": 1}, ["arguments.wait_healthy"]),
    ("start_service", {"name": "x", "colour": "red"}, ["arguments.colour", "not an argument"]),
    ("service_logs", {"name": "x", "tail": -1}, ["arguments.tail", "0 to 10000"]),
    ("service_logs", {"name": "x", "tail": 100001}, ["arguments.tail"]),
    ("service_logs", {"name": "x", "tail": "5"}, ["arguments.tail", "integer"]),
    ("list_services", {"all": True}, ["arguments.all"]),
]


@pytest.mark.parametrize("tool,args,words", BAD_CALLS)
def test_arguments_that_fail_the_schema(mcp, tool, args, words):
    mcp.initialize()
    status, _, body, _ = mcp.request("tools/call", {"name": tool, "arguments": args})
    assert_rpc_error(status, body, 200, -32602, words)


def test_bad_params_and_methods(mcp):
    mcp.initialize()
    cases = [
        ("tools/call", {"arguments": {}}, -32602, "params.name"),
        ("tools/call", {"name": "list_services", "arguments": [1]}, -32602, "arguments"),
        ("resources/list", {}, -32601, "resources/list"),
        ("no/such", None, -32601, "no/such"),
    ]
    for method, params, code, word in cases:
        status, _, body, _ = mcp.request(method, params)
        assert_rpc_error(status, body, 200, code, [word])
    # Notifications and a client's responses are acknowledged, nothing more.
    for msg in ({"jsonrpc": "2.0", "method": "notifications/cancelled",
                 "params": {"requestId": 1}},
                {"jsonrpc": "2.0", "id": 99, "result": {}}):
        status, _, _, raw = mcp.post(msg)
        assert status == 202 and raw == b""


def test_bad_transport(daemon, mcp):
    mcp.initialize()
    status, _, body, _ = mcp.request("ping", headers={"Content-Type": "text/plain"})
    assert_rpc_error(status, body, 415, -32000, ["application/json"])
    status, _, body, _ = mcp.request("ping", headers={"Accept": "text/html"})
    assert_rpc_error(status, body, 406, -32000)
    for ctype in ("text/plain; x=application/json", "application/jsonl"):
        status, _, body, _ = mcp.request("ping", headers={"Content-Type": ctype})
        assert_rpc_error(status, body, 415, -32000)
    status, _, body, _ = mcp.request("ping", headers={"Accept": "application/json-seq"})
    assert_rpc_error(status, body, 406, -32000)
    for accept in ("*/*", "application/*", "text/event-stream, Application/JSON;q=0.9"):
        status, _, body, _ = mcp.request("ping", headers={"Accept": accept,
                                                          "Content-Type": "application/json; charset=utf-8"})
        assert status == 200, (accept, body)
    status, _, body, _ = mcp.post(b'{"jsonrpc":"2.0","id":1,"method":"ping"}', headers={
        "MCP-Protocol-Version": None})
    assert status == 200
    # 1 MiB of params: refused whole, bounded, the daemon goes on.
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "list_services", "arguments": {"x": "y" * (1 << 20)}}})
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n"
            f"Content-Type: application/json\r\nMcp-Session-Id: {mcp.session}\r\n"
            f"Content-Length: {len(big)}\r\n\r\n")
    status, headers, body = parse_raw_response(raw_exchange(daemon.port,
                                                            (head + big).encode()))
    assert status == 413 and headers["content-type"] == "application/json", (status, body)
    mcp.close()
    mcp.conn = http.client.HTTPConnection(HOST, daemon.port, timeout=30)
    status, _, body, _ = mcp.request("ping")
    assert status == 200


# --- the stateless revision -----------------------------------------------------------


def test_stateless_discover_list_and_call(daemon, mcp):
    write_service(daemon_services(daemon), "idle", manifest("idle"))
    daemon.post("/rediscover")
    status, r, body, _ = mcp.modern("server/discover")
    assert status == 200, body
    res = body["result"]
    assert res["resultType"] == "complete"
    assert MODERN in res["supportedVersions"] and "2025-11-25" in res["supportedVersions"]
    assert res["capabilities"]["tools"] == {"listChanged": False}
    assert res["serverInfo"]["name"] == "service-nanny" and res["instructions"]
    assert r.getheader("Mcp-Session-Id") is None
    status, _, body, _ = mcp.modern("tools/list")
    res = body["result"]
    assert {t["name"] for t in res["tools"]} == TOOLS
    assert res["resultType"] == "complete" and res["ttlMs"] >= 0 and res["cacheScope"]
    status, _, body, _ = mcp.modern("tools/call", {"name": "service_status",
                                                    "arguments": {"name": "idle"}})
    assert status == 200 and body["result"]["resultType"] == "complete"
    assert structured(body["result"])["state"] == "stopped"


def raw_post(mcp, headers, method):
    """A stateless request with headers given as pairs (a name may repeat): (status, body)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": {"_meta": META}}).encode()
    port = mcp.conn.port
    head = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    status, _, data = parse_raw_response(raw_exchange(port, head.encode() + body))
    return status, json.loads(data)


def daemon_services(daemon):
    return daemon.argv[daemon.argv.index("--services") + 1]


def test_stateless_errors(mcp):
    call = {"name": "list_services", "arguments": {}}
    # The version header and the body disagree, or it is missing.
    status, _, body, _ = mcp.modern("tools/list", headers={"MCP-Protocol-Version": "2025-11-25"})
    assert_rpc_error(status, body, 400, -32020, ["MCP-Protocol-Version"])
    status, _, body, _ = mcp.modern("tools/list", headers={"MCP-Protocol-Version": None})
    assert_rpc_error(status, body, 400, -32020, ["missing"])
    # A mirrored header twice, with another value: refused, not half read.
    r = raw_post(mcp, [("MCP-Protocol-Version", MODERN), ("MCP-Protocol-Version", "2025-11-25"),
                       ("Mcp-Method", "tools/list")], "tools/list")
    assert_rpc_error(r[0], r[1], 400, -32020, ["more than once"])
    # The mirrored method and name.
    status, _, body, _ = mcp.modern("tools/list", headers={"Mcp-Method": "tools/call"})
    assert_rpc_error(status, body, 400, -32020, ["Mcp-Method"])
    status, _, body, _ = mcp.modern("tools/list", headers={"Mcp-Method": None})
    assert_rpc_error(status, body, 400, -32020, ["Mcp-Method"])
    status, _, body, _ = mcp.modern("tools/call", call, headers={"Mcp-Name": "gpu_status"})
    assert_rpc_error(status, body, 400, -32020, ["Mcp-Name"])
    status, _, body, _ = mcp.modern("tools/call", call, headers={"Mcp-Name": None})
    assert_rpc_error(status, body, 400, -32020, ["Mcp-Name"])
    # An unsupported version: -32022 with what we speak.
    meta = dict(META, **{"io.modelcontextprotocol/protocolVersion": "2099-01-01"})
    status, _, body, _ = mcp.modern("tools/list", meta=meta,
                                    headers={"MCP-Protocol-Version": "2099-01-01"})
    err = assert_rpc_error(status, body, 400, -32022)
    assert err["data"]["requested"] == "2099-01-01" and MODERN in err["data"]["supported"]
    # A malformed envelope, or none under a 2026-07-28 header.
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN}
    status, _, body, _ = mcp.modern("tools/list", meta=meta)
    assert_rpc_error(status, body, 400, -32602, ["clientCapabilities"])
    status, _, body, _ = mcp.modern("tools/list", meta=None)
    assert_rpc_error(status, body, 400, -32602, ["_meta"])
    # No handshake in this revision.
    status, _, body, _ = mcp.modern("initialize", {"protocolVersion": MODERN})
    assert_rpc_error(status, body, 200, -32601, ["initialize"])
    status, _, body, _ = mcp.modern("tools/list")
    assert status == 200


# --- the tools over real services ------------------------------------------------------


@pytest.fixture
def gpu_lab(lab):
    lab.add("gpu-a", gpu=True)
    lab.add("gpu-b", gpu=True, args=["--health-after", "600"])
    lab.add("cpu", args=["--print-lines", "6"])
    lab.serve()
    c = Mcp(lab.d.port)
    c.initialize()
    yield lab, c
    c.close()


def test_tools_run_the_services(gpu_lab):
    lab, c = gpu_lab
    listed = structured(c.call("list_services"))
    assert sorted(s["name"] for s in listed["services"]) == ["cpu", "gpu-a", "gpu-b"]
    assert listed["errors"] == []
    st = structured(c.call("service_status", {"name": "cpu"}))
    assert st == lab.d.get_json("/services/cpu/status")
    assert st["state"] == "stopped"

    st = structured(c.call("start_service", {"name": "gpu-a", "wait_healthy": True}))
    assert st["state"] == "running" and st["is_healthy"] is True and st["preempted"] == []
    # The GPU rule: a tool error naming the holder and force.
    text = error_text(c.call("start_service", {"name": "gpu-b"}))
    assert "gpu-a" in text and "force" in text
    assert lab.state("gpu-b") == "stopped"
    gpu = structured(c.call("gpu_status"))
    assert gpu["holder"] == "gpu-a" and gpu["holders"] == ["gpu-a"] and gpu["queue"] == []
    assert {"name": "gpu-a", "state": "running"} in gpu["gpu_services"]
    st = structured(c.call("start_service", {"name": "gpu-b", "force": True,
                                             "wait_healthy": True}))
    assert st["state"] == "running" and st["preempted"] == ["gpu-a"]
    assert lab.state("gpu-a") == "stopped"

    structured(c.call("start_service", {"name": "cpu", "wait_healthy": True}))
    lines = wait_until(lambda: (lambda ls: ls if len(ls) == 3 else None)(
        structured(c.call("service_logs", {"name": "cpu", "tail": 3}))["lines"]),
        message="three lines of cpu's logs")
    assert all(line.startswith("testsvc:") for line in lines), lines
    st = structured(c.call("restart_service", {"name": "cpu"}))
    assert st["state"] in ("starting", "running")
    for name in ("cpu", "gpu-b"):
        assert structured(c.call("stop_service", {"name": name}))["state"] == "stopped"
    assert structured(c.call("gpu_status"))["holder"] is None

    # Unknown services are tool errors, as are broken manifests.
    assert "no service named 'nosuch'" in error_text(c.call("service_status",
                                                            {"name": "nosuch"}))
    write_service(lab.services_dir, "broken", "name: broken\ncommand: 7\n")
    lab.add("fresh")
    diff = structured(c.call("rediscover"))  # (the folder's watch may have seen it first)
    assert "fresh" in [s["name"] for s in diff["services"]] and len(diff["errors"]) == 1, diff
    assert set(diff) == {"services", "added", "removed", "changed", "errors"}
    assert "invalid" in error_text(c.call("start_service", {"name": "broken"}))

    # Each call that changes things is one audit line with the REST API's status.
    def audited():
        path = os.path.join(lab.state_dir, "audit.log")
        if not os.path.exists(path):
            return None
        lines = [json.loads(line) for line in open(path) if line.strip()]
        got = [(e["action"], e["service"], e["status"]) for e in lines]
        return got if ("start", "broken", 422) in got else None
    got = wait_until(audited, message="the audit of the MCP calls")
    for entry in [("start", "gpu-a", 200), ("start", "gpu-b", 409), ("start", "gpu-b", 200),
                  ("restart", "cpu", 200), ("stop", "gpu-b", 200), ("rediscover", None, 200)]:
        assert entry in got, (entry, got)
    assert not [e for e in got if e[0] in ("status", "list", "logs", "gpu")], got


def read_events(sock_file):
    """Reads server-sent events until the stream ends: a list of parsed data."""
    out = []
    data = []
    for raw in sock_file:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            out.append(json.loads("\n".join(data)))
            data = []
    return out


def test_progress_through_an_event_stream(gpu_lab):
    lab, c = gpu_lab
    structured(c.call("start_service", {"name": "gpu-a", "wait_healthy": True}))
    body = json.dumps({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {
        "name": "start_service", "_meta": {"progressToken": "tok-1"},
        "arguments": {"name": "gpu-b", "force": True, "wait_healthy": True}}})
    c.conn.request("POST", "/mcp", body=body, headers=dict(
        JSON_HEADERS, **{"Mcp-Session-Id": c.session, "MCP-Protocol-Version": c.version}))
    r = c.conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    events = read_events(r)
    progress = [e for e in events if e.get("method") == "notifications/progress"]
    final = events[-1]
    assert final["id"] == 42 and structured(final["result"])["state"] == "running", final
    assert len(progress) == len(events) - 1 and progress, events
    assert all(p["params"]["progressToken"] == "tok-1" for p in progress)
    values = [p["params"]["progress"] for p in progress]
    assert values == sorted(values) and len(set(values)) == len(values), values
    messages = " | ".join(p["params"]["message"] for p in progress)
    assert "gpu-a is stopped to free the GPU for gpu-b" in messages, messages
    assert "gpu-b: stopped -> starting" in messages and "starting -> running" in messages
    # Without a progress token (or without wait_healthy) the answer is plain JSON.
    status, r, body, _ = c.request("tools/call", {"name": "stop_service",
                                                  "arguments": {"name": "gpu-b"},
                                                  "_meta": {"progressToken": 5}})
    assert status == 200 and r.getheader("Content-Type") == "application/json"


def test_client_gone_during_a_waiting_start(gpu_lab):
    lab, c = gpu_lab
    lab.add("slow", args=["--health-after", "1500"])
    lab.rediscover()
    for progress in (True, False):
        params = {"name": "start_service", "arguments": {"name": "slow", "wait_healthy": True}}
        if progress:
            params["_meta"] = {"progressToken": 1}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": params}).encode()
        head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{lab.d.port}\r\n"
                f"Content-Type: application/json\r\n"
                f"Accept: application/json, text/event-stream\r\n"
                f"Mcp-Session-Id: {c.session}\r\nMCP-Protocol-Version: {c.version}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection((HOST, lab.d.port), timeout=10) as s:
            s.sendall(head + body)
            wait_until(lambda: lab.state("slow") == "starting", message="slow starting")
        # The start goes on without its client.
        wait_until(lambda: lab.state("slow") == "running", timeout=15,
                   message="slow running after its client went")
        structured(c.call("stop_service", {"name": "slow"}))
    lab.d.assert_healthy()


# --- the gate --------------------------------------------------------------------------


def test_gate_keys_and_roles(nanny, workdir, services_dir):
    k = Keyed(nanny, workdir, services_dir)
    anonymous = Mcp(k.d.port)
    status, r, body, _ = anonymous.request("initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x"}})
    assert status == 401 and r.getheader("WWW-Authenticate").startswith("Bearer"), body
    user = Mcp(k.d.port, headers=bearer(k.keys["user"]))
    status, _, _, _ = user.request("initialize", {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x"}})
    assert status == 403

    viewer = Mcp(k.d.port, headers=bearer(k.keys["viewer"]))
    viewer.initialize()
    assert structured(viewer.call("service_status", {"name": "idle"}))["state"] == "stopped"
    text = error_text(viewer.call("start_service", {"name": "idle"}))
    assert "viewer" in text and "operator" in text, text
    text = error_text(viewer.call("rediscover"))
    assert "admin" in text
    assert k.req("GET", "/services/idle/status", "viewer").json()["state"] == "stopped"

    operator = Mcp(k.d.port, headers=bearer(k.keys["operator"]))
    operator.initialize()
    assert structured(operator.call("start_service", {"name": "idle"}))["state"] in (
        "starting", "running")
    assert structured(operator.call("stop_service", {"name": "idle"}))["state"] == "stopped"
    # A wrong key in the middle of a session is refused like anywhere else.
    status, _, _, _ = viewer.request("ping", headers=bearer("nanny_" + "0" * 64))
    assert status == 401

    def audited():
        lines = k.audit_lines()
        refused = [e for e in lines if e["who"] == "viewer-key" and e["status"] == 403]
        started = [e for e in lines if e["who"] == "operator-key" and e["action"] == "start"]
        return (refused, started) if len(refused) >= 2 and started else None
    refused, started = wait_until(audited, message="the refusals and the start audited")
    assert {(e["action"], e["service"]) for e in refused} >= {("start", "idle"),
                                                             ("rediscover", None)}
    assert started[0]["service"] == "idle" and started[0]["status"] == 200
    for c in (anonymous, user, viewer, operator):
        c.close()


def test_browser_safety(daemon):
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x"}}})
    evil = "evil.example.com"
    for headers in ({"Host": evil}, {"Origin": f"http://{evil}"},
                    {"Host": evil, "Origin": f"http://{evil}"}):
        r = daemon.request("POST", "/mcp", body=init, headers=dict(JSON_HEADERS, **headers))
        assert r.status == 403, (headers, r)
    own = f"127.0.0.1:{daemon.port}"
    r = daemon.request("POST", "/mcp", body=init,
                       headers=dict(JSON_HEADERS, Host=own, Origin=f"http://{own}"))
    assert r.status == 200, r
