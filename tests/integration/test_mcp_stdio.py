"""`nanny mcp` (issue 12 item 4, SPEC section 7 "MCP"): an MCP server on stdio, a bridge
that posts each JSON-RPC line of stdin to the daemon's /mcp and writes each answer as one
line of stdout. Driven here against a small fake MCP HTTP server in the test (JSON, SSE
and 202 answers, the headers it was sent recorded), and against the real daemon: the
session's id and protocol version forwarded after initialize, the stateless revision's
headers, a streamed answer written event by event while other requests go on, the
errors of stdin's lines and of an absent or refusing daemon, and DELETE at the end."""

import json
import queue
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import clean_env, free_port, manifest, nanny_binary, wait_until, write_service

READ_TIMEOUT = 15
SESSION = "0123456789abcdef0123456789abcdef"
STATELESS = "2026-07-28"


class FakeMcp:
    """An MCP endpoint at /mcp on a free loopback port. It records every request (method,
    path, headers, JSON body) and answers by the JSON-RPC method: initialize with a
    session, notifications with 202, tools/call of "slow" with an SSE stream (two
    progress notifications, then the response once `release` is set), a few test/...
    methods with HTTP errors, anything else with a JSON result that echoes it."""

    def __init__(self):
        self.requests = []
        self.release = threading.Event()
        self.issued = []  # the session ids given, in order
        self.live = set()  # those it knows: clear() is a restart
        self.refuse_initialize = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def record(self, body):
                fake.requests.append({"method": self.command, "path": self.path,
                                      "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": body})

            def send(self, status, body, content_type="application/json", headers=()):
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_DELETE(self):
                self.record(None)
                fake.live.discard(self.headers.get("Mcp-Session-Id"))
                self.send_response(204)
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.record(body)
                method, rid = body.get("method"), body.get("id")
                result = lambda r: json.dumps({"jsonrpc": "2.0", "id": rid, "result": r})
                session = self.headers.get("Mcp-Session-Id")
                if session is not None and session not in fake.live:
                    self.send(404, json.dumps({"jsonrpc": "2.0", "id": rid, "error": {
                        "code": -32001, "message": "Session not found"}}))
                elif method == "initialize" and fake.refuse_initialize:
                    self.send(503, '{"error":"unavailable","message":"not now"}')
                elif method == "initialize":
                    session = SESSION if not fake.issued else f"{len(fake.issued):032x}"
                    fake.issued.append(session)
                    fake.live.add(session)
                    self.send(200, result({"protocolVersion": "2025-06-18", "capabilities": {},
                                           "serverInfo": {"name": "fake", "version": "1"}}),
                              headers=[("Mcp-Session-Id", session)])
                elif method is None or method.startswith("notifications/"):
                    self.send_response(202)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif method == "tools/call" and body["params"]["name"] == "slow":
                    self.stream(body, rid)
                elif method == "test/unauthorized":
                    self.send(401, '{"error":"unauthorized","message":"this needs an API key"}')
                elif method == "test/boom":
                    self.send(500, "boom\n", "text/plain")
                elif method == "test/bad-header":
                    self.send(400, json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                        "code": -32020, "message": "Mcp-Method does not match the body"}}))
                else:
                    self.send(200, result({"echo": body}))

            def stream(self, body, rid):
                """Two progress notifications, then (once released) the response."""
                token = body["params"]["_meta"]["progressToken"]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for n in (1, 2):
                    note = {"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": n,
                                       "message": f"step {n}"}}
                    self.wfile.write(f"event: message\ndata: {json.dumps(note)}\n\n".encode())
                    self.wfile.flush()
                fake.release.wait(READ_TIMEOUT)
                final = {"jsonrpc": "2.0", "id": rid,
                         "result": {"content": [{"type": "text", "text": "healthy"}]}}
                self.wfile.write(f"event: message\r\ndata: {json.dumps(final)}\r\n\r\n".encode())
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def by_method(self, method):
        return [r for r in self.requests if r["body"] and r["body"].get("method") == method]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Bridge:
    """`nanny mcp` running, stdin written line by line, stdout read line by line."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen([nanny_binary(), "mcp", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=clean_env(env))
        self.lines = queue.Queue()
        self.stderr = []
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put),
                                       daemon=True),
                      threading.Thread(target=self._pump,
                                       args=(self.proc.stderr, self.stderr.append), daemon=True)]
        for t in self.pumps:
            t.start()

    @staticmethod
    def _pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink(line.decode())

    def send(self, message):
        text = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self):
        """The next line of stdout: one JSON-RPC message."""
        try:
            line = self.lines.get(timeout=READ_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no line from nanny mcp; stderr: {''.join(self.stderr)}")
        assert line.endswith("\n") and "\n" not in line[:-1], line
        return json.loads(line)

    def request(self, rid, method, params=None):
        message = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.read()

    def close(self):
        """Ends stdin; the exit code, and stdout's lines left."""
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=30)
        for t in self.pumps:
            t.join(timeout=READ_TIMEOUT)
        left = []
        while not self.lines.empty():
            left.append(self.lines.get())
        return rc, left

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def fake():
    f = FakeMcp()
    yield f
    f.close()


@pytest.fixture
def bridges():
    started = []

    def start(*args, env=None):
        b = Bridge(*args, env=env)
        started.append(b)
        return b

    yield start
    for b in started:
        b.kill()


INITIALIZE = {"protocolVersion": "2025-06-18", "capabilities": {},
              "clientInfo": {"name": "test", "version": "1"}}


def test_session_headers_key_and_delete_at_the_end(fake, bridges):
    b = bridges("--url", fake.url, env={"NANNY_KEY": "k-123"})
    answer = b.request(1, "initialize", INITIALIZE)
    assert answer["id"] == 1 and answer["result"]["protocolVersion"] == "2025-06-18"
    b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert b.request(2, "tools/list")["result"]["echo"]["method"] == "tools/list"
    wait_until(lambda: fake.by_method("notifications/initialized"))  # posted beside it

    init = fake.by_method("initialize")[0]["headers"]
    assert "mcp-session-id" not in init
    assert "mcp-protocol-version" not in init
    assert init["content-type"] == "application/json"
    assert "application/json" in init["accept"] and "text/event-stream" in init["accept"]
    for method in ("notifications/initialized", "tools/list"):
        h = fake.by_method(method)[0]["headers"]
        assert h["mcp-session-id"] == SESSION, method
        assert h["mcp-protocol-version"] == "2025-06-18", method
        assert h["authorization"] == "Bearer k-123", method

    rc, left = b.close()
    assert rc == 0 and left == [], (left, b.stderr)  # the 202 wrote nothing
    deletes = [r for r in fake.requests if r["method"] == "DELETE"]
    assert len(deletes) == 1 and deletes[0]["path"] == "/mcp"
    assert deletes[0]["headers"]["mcp-session-id"] == SESSION
    assert deletes[0]["headers"]["authorization"] == "Bearer k-123"


def test_a_restarted_daemon_gets_a_new_session_and_the_request_goes_again(fake, bridges):
    b = bridges("--url", fake.url)
    b.request(1, "initialize", INITIALIZE)
    b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    wait_until(lambda: fake.by_method("notifications/initialized"))  # no answer to wait for
    assert "result" in b.request(2, "tools/list")
    fake.live.clear()  # the daemon restarted: it knows no session
    answer = b.request(3, "tools/call", {"name": "service_status", "arguments": {"name": "x"}})
    assert answer["id"] == 3 and answer["result"]["echo"]["params"]["name"] == "service_status"
    assert len(fake.issued) == 2
    second = fake.issued[1]
    sent = [(r["body"]["method"], r["headers"].get("mcp-session-id")) for r in fake.requests]
    assert sent == [("initialize", None), ("notifications/initialized", SESSION),
                    ("tools/list", SESSION), ("tools/call", SESSION),  # 404
                    ("initialize", None), ("notifications/initialized", second),
                    ("tools/call", second)], sent
    rc, left = b.close()
    assert rc == 0 and left == [], left  # the bridge's own initialize is not written
    assert fake.requests[-1]["method"] == "DELETE"
    assert fake.requests[-1]["headers"]["mcp-session-id"] == second


def test_a_new_session_that_cannot_be_opened_fails_the_request(fake, bridges):
    b = bridges("--url", fake.url)
    b.request(1, "initialize", INITIALIZE)
    fake.live.clear()
    fake.refuse_initialize = True
    answer = b.request(2, "tools/list")
    assert answer["id"] == 2 and answer["error"]["code"] == -32603
    assert "a new one could not be opened" in answer["error"]["message"], answer
    assert "HTTP 503" in answer["error"]["message"]
    assert b.close() == (0, [])


def test_stateless_message_carries_its_version_method_and_tool_name(fake, bridges):
    b = bridges("--url", fake.url, "--key", "k-456")
    meta = {"io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientCapabilities": {}}
    answer = b.request("a", "tools/call", {"name": "service_status",
                                           "arguments": {"name": "hello"}, "_meta": meta})
    assert answer["id"] == "a"
    assert b.request("b", "server/discover", {"_meta": meta})["id"] == "b"

    call = fake.by_method("tools/call")[0]["headers"]
    assert call["mcp-protocol-version"] == STATELESS
    assert call["mcp-method"] == "tools/call"
    assert call["mcp-name"] == "service_status"
    assert call["authorization"] == "Bearer k-456"
    assert "mcp-session-id" not in call
    discover = fake.by_method("server/discover")[0]["headers"]
    assert discover["mcp-method"] == "server/discover" and "mcp-name" not in discover
    rc, _ = b.close()
    assert rc == 0
    assert not any(r["method"] == "DELETE" for r in fake.requests)  # no session to end


def test_a_header_value_with_a_line_break_is_refused(fake, bridges):
    b = bridges("--url", fake.url)
    meta = {"io.modelcontextprotocol/protocolVersion": STATELESS}
    answer = b.request(3, "tools/call", {"name": "x\r\nX-Evil: 1", "_meta": meta})
    assert answer["id"] == 3 and answer["error"]["code"] == -32600
    assert "tool name" in answer["error"]["message"]
    assert fake.by_method("tools/call") == []
    assert b.close()[0] == 0


def test_a_streamed_answer_is_written_event_by_event_while_others_go_on(fake, bridges):
    b = bridges("--url", fake.url)
    b.request(1, "initialize", INITIALIZE)
    b.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "p"}}})
    for n in (1, 2):
        note = b.read()
        assert note["method"] == "notifications/progress", note
        assert note["params"]["progress"] == n and note["params"]["progressToken"] == "p"
    # The stream is still open: a ping goes by it.
    pong = b.request(3, "ping")
    assert pong["id"] == 3 and "result" in pong
    fake.release.set()
    final = b.read()
    assert final["id"] == 2 and final["result"]["content"][0]["text"] == "healthy"
    assert fake.by_method("tools/call")[0]["headers"]["mcp-session-id"] == SESSION
    assert b.close() == (0, [])


def test_stdin_lines_that_are_no_message(fake, bridges):
    b = bridges("--url", fake.url)
    b.send("this is not json")
    answer = b.read()
    assert answer == {"jsonrpc": "2.0", "id": None,
                      "error": {"code": -32700, "message": answer["error"]["message"]}}
    assert answer["error"]["message"].startswith("Parse error")
    b.send('[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]')
    answer = b.read()
    assert answer["id"] is None and answer["error"]["code"] == -32600
    b.send("42")
    assert b.read()["error"]["code"] == -32600
    b.send("")  # a blank line is nothing
    assert b.request(4, "ping")["id"] == 4
    assert [r["body"]["method"] for r in fake.requests] == ["ping"]
    assert b.close() == (0, [])


def test_a_line_past_the_bound_is_refused_and_the_next_one_served(fake, bridges):
    b = bridges("--url", fake.url)
    b.send('{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "'
           + "x" * (5 * 1024 * 1024) + '"}}')
    answer = b.read()
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert "longer than 4 MiB" in answer["error"]["message"]
    assert b.request(2, "ping")["id"] == 2
    assert [r["body"]["id"] for r in fake.requests] == [2]
    assert b.close() == (0, [])


def test_no_daemon_gives_each_request_an_error_and_eof_exits_0(bridges):
    url = f"http://127.0.0.1:{free_port()}"
    b = bridges("--url", url)
    b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    answer = b.request(7, "initialize", INITIALIZE)
    assert answer["id"] == 7 and answer["error"]["code"] == -32603
    assert url in answer["error"]["message"]
    answer = b.request("x", "tools/list")
    assert answer["id"] == "x" and answer["error"]["code"] == -32603
    rc, left = b.close()
    assert rc == 0 and left == []  # the notification's failure is only logged
    err = "".join(b.stderr)
    assert "notifications/initialized" in err and url in err


def test_http_errors_become_json_rpc_errors_for_the_request(fake, bridges):
    b = bridges("--url", fake.url)
    answer = b.request(1, "test/unauthorized")
    assert answer["id"] == 1 and answer["error"]["code"] == -32603
    assert "NANNY_KEY" in answer["error"]["message"]
    assert "this needs an API key" in answer["error"]["message"]
    answer = b.request(2, "test/boom")
    assert answer["id"] == 2 and answer["error"]["code"] == -32603
    assert "HTTP 500" in answer["error"]["message"] and "boom" in answer["error"]["message"]
    # The daemon's own JSON-RPC error is written as it is, with the request's id.
    answer = b.request(3, "test/bad-header")
    assert answer == {"jsonrpc": "2.0", "id": 3, "error": {
        "code": -32020, "message": "Mcp-Method does not match the body"}}
    assert b.close() == (0, [])
    assert "HTTP 401" in "".join(b.stderr)


def test_help_and_usage():
    r = subprocess.run([nanny_binary(), "mcp", "--help"], capture_output=True, text=True,
                       timeout=30, env=clean_env())
    assert r.returncode == 0 and '"mcpServers"' in r.stdout and "NANNY_KEY" in r.stdout
    r = subprocess.run([nanny_binary(), "mcp", "--bogus"], capture_output=True, text=True,
                       timeout=30, env=clean_env())
    assert r.returncode == 2 and "nanny mcp --help" in r.stderr
    r = subprocess.run([nanny_binary(), "--help"], capture_output=True, text=True,
                       timeout=30, env=clean_env())
    assert "  mcp " in r.stdout


# --- against the real daemon ---------------------------------------------------------------


def tool_call(b, rid, name, arguments, meta=None):
    params = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return b.request(rid, "tools/call", params)


def test_real_daemon_initialize_list_status_and_a_start_with_progress(nanny, services_dir):
    write_service(services_dir, "hello", manifest("hello"))
    d = nanny.serve(services_dir)
    b = Bridge("--url", f"http://127.0.0.1:{d.port}")
    try:
        init = b.request(1, "initialize", {**INITIALIZE, "protocolVersion": "2025-11-25"})
        assert init["result"]["protocolVersion"] == "2025-11-25", init
        assert init["result"]["serverInfo"]["name"]
        b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools = {t["name"] for t in b.request(2, "tools/list")["result"]["tools"]}
        assert {"list_services", "service_status", "start_service", "stop_service",
                "restart_service", "service_logs", "rediscover", "gpu_status"} <= tools

        status = tool_call(b, 3, "service_status", {"name": "hello"})["result"]
        assert not status.get("isError"), status
        assert status["structuredContent"]["name"] == "hello"
        assert status["structuredContent"]["state"] == "stopped"
        assert json.loads(status["content"][0]["text"])["name"] == "hello"

        b.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": {"name": "start_service",
                           "arguments": {"name": "hello", "wait_healthy": True},
                           "_meta": {"progressToken": "start-1"}}})
        seen = []
        while True:
            message = b.read()
            if message.get("id") == 4:
                break
            seen.append(message)
        assert not message["result"].get("isError"), message
        assert seen and all(m["method"] == "notifications/progress" and
                            m["params"]["progressToken"] == "start-1" for m in seen), seen
        assert tool_call(b, 5, "service_status", {"name": "hello"})[
            "result"]["structuredContent"]["state"] == "running"
        unknown = tool_call(b, 6, "service_status", {"name": "nope"})["result"]
        assert unknown["isError"] is True and "nope" in unknown["content"][0]["text"]
        assert not tool_call(b, 7, "stop_service", {"name": "hello"})["result"].get("isError")
        rc, left = b.close()
        assert rc == 0 and left == [], (left, b.stderr)
        assert "could not end the session" not in "".join(b.stderr)
    finally:
        b.kill()


def test_real_daemon_stateless_revision(daemon):
    b = Bridge("--url", f"http://127.0.0.1:{daemon.port}")
    meta = {"io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientCapabilities": {}}
    try:
        discover = b.request(1, "server/discover", {"_meta": meta})
        assert STATELESS in discover["result"]["supportedVersions"], discover
        listed = tool_call(b, 2, "list_services", {}, meta)["result"]
        assert listed["resultType"] == "complete" and not listed.get("isError"), listed
        assert "services" in listed["structuredContent"]
        assert b.close() == (0, [])
    finally:
        b.kill()


def test_real_daemon_with_keys(nanny, services_dir, workdir):
    from test_gate import new_key, write_keys

    write_service(services_dir, "hello", manifest("hello"))
    viewer = new_key()
    keys = write_keys(workdir / "keys.yaml", [("v", "viewer", viewer)])
    d = nanny.serve(services_dir, extra_args=["--keys", keys])
    url = f"http://127.0.0.1:{d.port}"

    b = Bridge("--url", url)  # no key
    try:
        answer = b.request(1, "initialize", INITIALIZE)
        assert answer["error"]["code"] == -32603 and "NANNY_KEY" in answer["error"]["message"]
        assert b.close() == (0, [])
    finally:
        b.kill()

    b = Bridge("--url", url, env={"NANNY_KEY": viewer})
    try:
        assert b.request(1, "initialize", INITIALIZE)["result"]["protocolVersion"]
        b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = tool_call(b, 2, "list_services", {})["result"]
        assert not listed.get("isError"), listed
        refused = tool_call(b, 3, "start_service", {"name": "hello"})["result"]
        assert refused["isError"] is True, refused
        assert b.close() == (0, [])
    finally:
        b.kill()


def test_real_daemon_restarted_under_the_bridge(nanny, services_dir):
    write_service(services_dir, "hello", manifest("hello"))
    port = free_port()
    d = nanny.serve(services_dir, listen=f"127.0.0.1:{port}")
    b = Bridge("--url", f"http://127.0.0.1:{port}")
    try:
        assert b.request(1, "initialize", INITIALIZE)["result"]["protocolVersion"]
        b.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert "result" in b.request(2, "tools/list")
        d.terminate()
        nanny.serve(services_dir, listen=f"127.0.0.1:{port}")
        status = tool_call(b, 3, "service_status", {"name": "hello"})
        assert status["id"] == 3 and not status["result"].get("isError"), status
        assert status["result"]["structuredContent"]["name"] == "hello"
        assert b.close() == (0, [])
        assert "opening a new one" in "".join(b.stderr)
    finally:
        b.kill()
