"""The reverse proxy, first step (issue 14 item 1; SPEC section 7 "Proxy and on demand"):
`/s/NAME/PATH?Q` forwards `PATH?Q` to the running service's port on 127.0.0.1 and streams
the answer back. The upstream is tests/fixtures/upstream.py, run by the daemon as a process
service's command, so it is what a real service would be: the daemon starts it, checks
its /health and stops it.

What is asserted: the request as the upstream sees it (method, path and query as sent,
body, the X-Forwarded-* headers, Host, hop-by-hop headers dropped), the redirect of
`/s/NAME` to `/s/NAME/`, the answer as the client sees it (status, headers less the
hop-by-hop ones, bodies whole whatever their framing), server-sent events passed on as
they come, an upstream that dies mid-answer never looking like a complete answer, the
errors in SPEC's shape, the gate's `user` role and the daemon's key kept from the
upstream, the body cap, and a daemon that stays healthy when a client goes away. Also:
a request for a stopped service starts it (one start for many requests; `on_demand:
reject` answers 503; a broken manifest answers 422 and starts nothing), WebSockets pass
through, and another upgrade (h2c) is ignored.

Nothing here asserts an absolute latency: streaming is checked by the order of events
(the first event reaches the client well before the upstream sends the last one). Every
wait is bounded; the daemon, its services and the upstreams are stopped at the end."""

import base64
import concurrent.futures
import ctypes
import errno
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

import pytest

from conftest import (HOST, HTTP_TIMEOUT, free_port, manifest, parse_raw_response, raw_exchange,
                      replace_file, wait_until, write_service)
from lifecycle_helpers import Lab, Svc, json_error, ok_status, pid_alive, read_argv
from test_gate import bearer, get_from, new_key, write_keys
from test_http_faults import wait_closed
from test_http_limits import chunked

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UPSTREAM = os.path.join(REPO, "tests", "fixtures", "upstream.py")
# Debian's python3 runs the upstream (the daemon's environment may not have the test's).
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

BODY_MAX = 64 * 1024      # the server's cap on a request body (src/http/server.h)
STREAM_TIMEOUT = 20.0     # the longest any one answer is read for


# --- the upstream's bodies (as tests/fixtures/upstream.py makes them) ---------------------


def big_body(n):
    return b"".join(b"%09d\n" % i for i in range((n + 9) // 10))[:n]


def chunked_body(parts):
    return b"".join((f"part {i:04d} " + "x" * ((i * 37) % 700) + "\n").encode()
                    for i in range(parts))


# --- the lab ---------------------------------------------------------------------------


class ProxyLab(Lab):
    """Lab with upstream services: process services whose command runs upstream.py on
    their port, with --tag naming this test's folder, so that whatever outlives the
    daemon is found and killed at the end."""

    def __init__(self, nanny, services_dir, workdir):
        super().__init__(nanny, services_dir, workdir)
        self.tag = str(workdir)

    def add_upstream(self, name, port=None, **kw):
        if port is None:
            port = free_port()
        command = [PYTHON, UPSTREAM, "--port", str(port), "--tag", self.tag]
        return self.add(name, command=command, port=port, **kw)

    def add_text(self, name, text):
        """A service from a manifest's text (e.g. one with no port); stopped at the end
        like the others."""
        folder = os.path.dirname(write_service(self.services_dir, name, text))
        svc = Svc(name, None, os.path.join(self.pids_dir, f"{name}.pid"), False, folder)
        self.svcs[name] = svc
        return svc

    def start_running(self, name, headers=None):
        r = self.d.post(f"/services/{name}/start?wait=healthy", headers=headers or {},
                        timeout=30.0)
        assert r.status == 200, r
        assert r.json()["state"] == "running", r.json()
        return r.json()

    def upstream_pids(self):
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            argv = read_argv(int(entry))
            if argv and UPSTREAM in argv and self.tag in argv and pid_alive(int(entry)):
                out.append(int(entry))
        return out

    def kill_upstreams(self):
        pids = self.upstream_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        return pids

    def proxy(self, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
        return self.d.request(method, path, body=body, headers=headers, timeout=timeout)

    def assert_daemon_fine(self, name="web"):
        """The daemon answers its own /health and a proxied request; the service runs."""
        self.d.assert_healthy()
        r = self.proxy("GET", f"/s/{name}/echo?after=1")
        assert r.status == 200, r
        assert r.json()["path"] == "/echo?after=1", r.json()
        assert self.state(name) == "running"


@pytest.fixture
def plab(nanny, services_dir, workdir):
    lab = ProxyLab(nanny, services_dir, workdir)
    try:
        yield lab
    finally:
        try:
            lab.close()
        finally:
            lab.kill_upstreams()


@pytest.fixture
def web(plab):
    """A daemon with one running upstream service, "web"."""
    svc = plab.add_upstream("web")
    plab.serve()
    plab.start_running("web")
    return svc


# --- a client on a raw socket ----------------------------------------------------------


class RawStream:
    """One request on a raw socket. Reads the head, then the body as it comes, decoding
    its framing (Content-Length, chunked, or until the connection closes), and tells how
    the answer ended: complete (all the announced bytes, or the last chunk), or closed
    (the connection ended, by FIN or reset, before that)."""

    def __init__(self, port, path, method="GET", headers=None, body=b"", timeout=10.0,
                 host=None):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        head = f"{method} {path} HTTP/1.1\r\nHost: {host or f'{HOST}:{port}'}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        try:
            self.sock.sendall(head.encode() + b"\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered early (a refused body) and hung up
        self.raw = b""
        self.body = b""
        self.complete = False
        self.closed = False
        self.reset = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer head within {timeout}s: {self.raw[:300]!r}")
            if not self._recv(deadline):
                raise AssertionError(f"the connection ended before an answer head: "
                                     f"{self.raw[:300]!r}")
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.header_list = [(k.strip().lower(), v.strip())
                            for k, _, v in (line.partition(":") for line in lines[1:])]
        self.headers = {}
        for k, v in self.header_list:
            self.headers[k] = f"{self.headers[k]}, {v}" if k in self.headers else v
        te = self.headers.get("transfer-encoding", "").lower()
        if method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200:
            self.framing, self.length = "none", 0
        elif "chunked" in te:
            self.framing, self.length = "chunked", None
        elif "content-length" in self.headers:
            self.framing, self.length = "length", int(self.headers["content-length"])
        else:
            self.framing, self.length = "close", None
        self._state = "size"  # chunked: size, data, crlf or trailer
        self._chunk_left = 0
        self._decode()

    def _recv(self, deadline):
        """Reads once; False when the connection ended (FIN or reset) or time ran out."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(min(left, 1.0))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            self.closed = self.reset = True
            return False
        if not data:
            self.closed = True
            return False
        self.raw += data
        return True

    def _decode(self):
        if self.framing == "none":
            self.complete = True
        elif self.framing in ("length", "close"):
            self.body += self.raw
            self.raw = b""
            if self.framing == "length" and len(self.body) >= self.length:
                self.complete = True
        else:
            self._decode_chunked()

    def _decode_chunked(self):
        while not self.complete:
            if self._state == "size":
                line, sep, rest = self.raw.partition(b"\r\n")
                if not sep:
                    return
                size = int(line.split(b";")[0].strip(), 16)
                self.raw = rest
                if size == 0:
                    self._state = "trailer"
                else:
                    self._chunk_left = size
                    self._state = "data"
            elif self._state == "data":
                if not self.raw:
                    return
                take = min(self._chunk_left, len(self.raw))
                self.body += self.raw[:take]
                self.raw = self.raw[take:]
                self._chunk_left -= take
                if not self._chunk_left:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(self.raw) < 2:
                    return
                assert self.raw[:2] == b"\r\n", f"bad chunk end: {self.raw[:20]!r}"
                self.raw = self.raw[2:]
                self._state = "size"
            else:  # trailer lines, then an empty line
                line, sep, rest = self.raw.partition(b"\r\n")
                if not sep:
                    return
                self.raw = rest
                if not line:
                    self.complete = True

    def read_until(self, pred, timeout=STREAM_TIMEOUT):
        """Reads until pred() holds, the answer is complete or the connection ends, or
        timeout; returns pred()."""
        deadline = time.monotonic() + timeout
        while not pred() and not self.complete and not self.closed:
            if time.monotonic() >= deadline:
                break
            if not self._recv(deadline):
                break
            self._decode()
        return pred()

    def read_to_end(self, timeout=STREAM_TIMEOUT):
        """Reads until the answer is complete or the connection ends; fails after timeout
        (a truncated answer on a connection left open is a client waiting for ever)."""
        self.read_until(lambda: False, timeout)
        if self.framing == "close" and not self.closed:
            raise AssertionError(f"a close-delimited answer still open after {timeout}s")
        if not (self.complete or self.closed):
            raise AssertionError(
                f"neither complete nor closed after {timeout}s: framing {self.framing}, "
                f"{len(self.body)} body bytes, headers {self.headers}")
        return self

    def close(self, reset=False):
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def json_payload(size):
    """A JSON document of exactly size bytes."""
    base = json.dumps({"pad": ""})
    doc = json.dumps({"pad": "y" * (size - len(base))})
    assert len(doc) == size
    return doc.encode()


# --- 1. the request as the upstream sees it --------------------------------------------


def test_a_get_reaches_the_upstream_with_path_query_and_forwarded_headers(plab, web):
    port = plab.d.port
    conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/s/web/echo?x=1", headers={
            "Host": f"localhost:{port}",
            "X-Custom": "kept",
            "Accept": "application/json",
            "User-Agent": "proxy-test/1",
        })
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 200, (r.status, body[:300])
    assert (r.getheader("Content-Type") or "").startswith("application/json")
    seen = json.loads(body)
    assert seen["method"] == "GET"
    assert seen["path"] == "/echo?x=1", seen
    h = seen["headers"]
    assert h.get("x-forwarded-for") == "127.0.0.1", h
    assert h.get("x-forwarded-proto") == "http", h
    assert h.get("x-forwarded-host") == f"localhost:{port}", h
    assert h.get("host") == f"127.0.0.1:{web.port}", h
    assert h.get("x-custom") == "kept", h
    assert h.get("accept") == "application/json", h
    assert h.get("user-agent") == "proxy-test/1", h
    assert seen["body"] == ""


@pytest.mark.parametrize("size", [0, 1, 5000, BODY_MAX])
def test_a_post_body_up_to_the_cap_is_forwarded_whole(plab, web, size):
    payload = json_payload(size) if size >= 11 else b"x" * size
    r = plab.proxy("POST", "/s/web/echo", body=payload,
                   headers={"Content-Type": "application/json"})
    assert r.status == 200, r
    seen = r.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo"
    assert seen["body"].encode() == payload, (len(seen["body"]), size)
    assert seen["headers"].get("content-type") == "application/json", seen["headers"]


def test_a_chunked_request_body_is_forwarded_whole(plab, web):
    payload = json_payload(40000)
    s = RawStream(plab.d.port, "/s/web/echo", method="POST", body=chunked(payload, 3000),
                  headers={"Transfer-Encoding": "chunked",
                           "Content-Type": "application/json"})
    s.read_to_end()
    assert s.status == 200, (s.status, s.body[:300])
    assert s.complete
    seen = json.loads(s.body)
    assert seen["body"].encode() == payload, len(seen["body"])


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
def test_other_methods_are_forwarded(plab, web, method):
    body = b'{"m": 1}' if method in ("PUT", "PATCH") else None
    r = plab.proxy(method, "/s/web/echo/item/7?v=2", body=body)
    assert r.status == 200, r
    seen = r.json()
    assert seen["method"] == method
    assert seen["path"] == "/echo/item/7?v=2"
    assert seen["body"].encode() == (body or b"")


def test_path_and_query_are_forwarded_as_sent(plab, web):
    """The bytes of PATH?Q go on unchanged: no decoding of %XX, no reordering."""
    path = "/echo/a%20b/c%2Fd?q=x%26y&z=%2F&z=2&empty="
    r = plab.proxy("GET", "/s/web" + path)
    assert r.status == 200, r
    assert r.json()["path"] == path, r.json()


def test_hop_by_hop_request_headers_are_not_forwarded(plab, web):
    conn = http.client.HTTPConnection(HOST, plab.d.port, timeout=HTTP_TIMEOUT)
    try:
        conn.putrequest("GET", "/s/web/echo?hop=1")
        for k, v in [("Connection", "keep-alive, X-Secret-Hop"), ("X-Secret-Hop", "1"),
                     ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                     ("Proxy-Authorization", "Basic dXNlcjpwYXNz"), ("X-Other", "kept"),
                     ("X-Multi", "a"), ("X-Multi", "b"), ("kEEp-aLIVE", "x"),
                     ("x-forwarded-foo", "spoofed"),
                     # Names that only look like dropped ones, and more header bytes
                     # than the daemon's first buffer for them holds.
                     ("Hosts", "kept"), ("TEx", "kept"), ("Upgrades", "kept"),
                     ("Forwardedx", "kept"), ("X-Real-IPv6", "kept"),
                     ("X-Big", "b" * 3000)]:
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 200, (r.status, body[:300])
    h = json.loads(body)["headers"]
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "x-forwarded-foo"):
        assert name not in h, (name, h)
    assert "x-secret-hop" not in h.get("connection", "").lower(), h
    assert h.get("x-other") == "kept", h
    assert h.get("x-multi") == "a, b", h
    for name in ("hosts", "tex", "upgrades", "forwardedx", "x-real-ipv6"):
        assert h.get(name) == "kept", (name, h)
    assert h.get("x-big") == "b" * 3000, len(h.get("x-big", ""))


# --- 2. /s/NAME without a slash ---------------------------------------------------------


@pytest.mark.parametrize("path,location", [
    ("/s/web", "/s/web/"),
    ("/s/web?x=1&y=a%20b", "/s/web/?x=1&y=a%20b"),
])
def test_the_bare_service_path_redirects_to_its_slash(plab, web, path, location):
    r = plab.proxy("GET", path)
    assert r.status == 308, r
    assert r.headers.get("Location") == location, dict(r.headers)


# --- 3. the answer as the client sees it -----------------------------------------------


def test_hop_by_hop_response_headers_are_dropped(plab, web):
    s = RawStream(plab.d.port, "/s/web/hop")
    s.read_to_end()
    assert s.status == 200, s.headers
    assert s.complete and s.body == b"hop\n", (s.body, s.framing)
    assert "x-drop-me" not in s.headers, s.header_list
    assert "keep-alive" not in s.headers, s.header_list
    assert "x-drop-me" not in s.headers.get("connection", "").lower(), s.header_list
    assert s.headers.get("x-keep-me") == "1", s.header_list
    for name in ("dates", "tex", "upgrades", "connections", "content-lengths"):
        assert s.headers.get(name) == "kept", (name, s.header_list)
    # The upstream closing its connection does not end the client's: the next request
    # on the same client connection is answered (unless the daemon says it closes).
    if "close" not in s.headers.get("connection", "").lower() and not s.closed:
        s.sock.sendall(f"GET /s/web/echo?next=1 HTTP/1.1\r\nHost: {HOST}:{plab.d.port}"
                       "\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + 10
        while b"/echo?next=1" not in data and time.monotonic() < deadline:
            s.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = s.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:300]
    s.close()


@pytest.mark.parametrize("code", [201, 204, 404, 418, 500, 503])
def test_status_codes_and_bodies_pass_through(plab, web, code):
    r = plab.proxy("GET", f"/s/web/status/{code}")
    assert r.status == code, r
    if code == 204:
        assert r.body == b""
    else:
        assert r.content_type == "application/json", r
        assert r.json() == {"status": code}, r


# --- 4. bodies --------------------------------------------------------------------------


def test_a_big_body_arrives_whole(plab, web):
    n = 5_000_000
    r = plab.proxy("GET", f"/s/web/big?bytes={n}", timeout=60)
    assert r.status == 200, r
    assert len(r.body) == n
    assert r.body == big_body(n), "the body differs from what the upstream sent"


def test_a_chunked_body_arrives_whole(plab, web):
    s = RawStream(plab.d.port, "/s/web/chunked?parts=50")
    s.read_to_end()
    assert s.status == 200
    assert s.complete, (s.framing, len(s.body))
    assert s.body == chunked_body(50)
    r = plab.proxy("GET", "/s/web/chunked?parts=50")
    assert r.status == 200 and r.body == chunked_body(50)


def test_one_client_connection_carries_many_proxied_requests(plab, web):
    conn = http.client.HTTPConnection(HOST, plab.d.port, timeout=HTTP_TIMEOUT)
    try:
        for i in range(30):
            kind = i % 3
            path = (f"/s/web/echo?i={i}", "/s/web/status/404", "/s/web/chunked?parts=4")[kind]
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if kind == 0:
                assert r.status == 200 and json.loads(body)["path"] == f"/echo?i={i}", body
            elif kind == 1:
                assert r.status == 404 and json.loads(body) == {"status": 404}, body
            else:
                assert r.status == 200 and body == chunked_body(4), body
    finally:
        conn.close()


def test_concurrent_clients_each_get_their_own_answer(plab, web):
    def client(k):
        for i in range(10):
            r = plab.proxy("POST", f"/s/web/echo?c={k}&i={i}", body=f"{k}:{i}" * 100)
            assert r.status == 200, r
            seen = r.json()
            assert seen["path"] == f"/echo?c={k}&i={i}", seen
            assert seen["body"] == f"{k}:{i}" * 100
        return k

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert sorted(ex.map(client, range(8))) == list(range(8))


# --- 5. server-sent events ---------------------------------------------------------------


SSE3 = b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_server_sent_events_pass_through_unbuffered(plab, web):
    """Events 0, 1, 2 leave the upstream 0.7 s apart: event 0 must reach the client
    well before the stream ends (about 1.4 s later), not with it."""
    s = RawStream(plab.d.port, "/s/web/sse?n=3&interval_ms=700")
    assert s.status == 200, s.headers
    assert s.headers.get("content-type", "").startswith("text/event-stream"), s.headers
    assert s.read_until(lambda: b"data: 0\n\n" in s.body), (s.body, s.closed)
    t0 = time.monotonic()
    got_first_alone = b"data: 1" not in s.body
    s.read_to_end()
    t_end = time.monotonic()
    s.close()
    assert s.body == SSE3, s.body
    assert s.complete, (s.framing, s.closed)
    assert got_first_alone, "event 0 came together with event 1: the stream is buffered"
    assert t_end - t0 > 1.0, (
        f"event 0 reached the client only {t_end - t0:.3f}s before the end of the stream "
        "(the upstream sends the last event 1.4 s after the first): the stream is buffered")


def test_a_stream_in_progress_does_not_hold_up_other_requests(plab, web):
    s = RawStream(plab.d.port, "/s/web/sse?n=3&interval_ms=700")
    try:
        assert s.read_until(lambda: b"data: 0\n\n" in s.body)
        r = plab.proxy("GET", "/s/web/echo?during=1")
        assert r.status == 200 and r.json()["path"] == "/echo?during=1", r
        d = plab.d.get("/services/web/status")
        assert d.status == 200
        # Both were answered while the stream was still going: event 2 (sent 1.4 s after
        # event 0) has not reached the client yet.
        s.read_until(lambda: b"data: 2" in s.body, timeout=0.05)
        assert b"data: 2" not in s.body, "the other requests waited for the stream"
        s.read_to_end()
        assert s.complete and s.body == SSE3, s.body
    finally:
        s.close()


# --- 6. an upstream that dies mid-answer ------------------------------------------------


@pytest.mark.parametrize("path,sent", [
    ("/die", b"0123456789"),
    ("/die?rst=1", b"0123456789"),
    ("/die-chunked", b"the only chunk\n"),
])
def test_an_upstream_dying_mid_answer_never_looks_complete(plab, web, path, sent):
    s = RawStream(plab.d.port, f"/s/web{path}")
    try:
        s.read_to_end()
    finally:
        s.close()
    if s.status == 200:
        # The head went out before the upstream died: the answer must end visibly cut.
        assert s.framing in ("length", "chunked"), (
            f"a close-delimited answer cannot show that it was cut: {s.header_list}")
        assert not s.complete, (
            f"the client got a complete answer ({s.framing}, {len(s.body)} bytes) from an "
            "upstream that died mid-answer")
        assert s.closed, "the cut answer's connection stayed open"
        assert sent.startswith(s.body), s.body
        if s.framing == "length":
            assert s.length == 100000 and len(s.body) < s.length, (s.length, len(s.body))
    else:
        # The upstream died before the daemon sent a head: an error, never a fake 200.
        assert s.status == 502, (s.status, s.headers, s.body[:300])
        assert s.complete
        body = json.loads(s.body)
        assert body.get("error") and body.get("message"), body
    plab.assert_daemon_fine()


def test_a_small_answer_slower_than_proxy_read_timeout_in_all_arrives_whole(plab):
    # proxy_read_timeout bounds how long the service stays silent, not how long a small
    # answer (kept until whole, then sent at once) takes: 100 bytes at 10 every 250 ms.
    plab.add_upstream("web")
    plab.serve(config="proxy_read_timeout: 1s\n")
    plab.start_running("web")
    r = plab.proxy("GET", "/s/web/big?bytes=100&pace_ms=250", timeout=30.0)
    assert r.status == 200, r
    assert r.body == big_body(100)
    plab.assert_daemon_fine()


def test_a_stream_whose_service_goes_silent_for_proxy_read_timeout_is_cut(plab):
    """proxy_read_timeout is also the longest silence in a streamed answer, as nginx's is
    between two reads: events 3 s apart with a 1 s timeout end cut after the first (never
    a whole-looking stream), the log says why, and nothing stays in flight; events 300 ms
    apart go on for longer than the timeout in all and arrive whole."""
    plab.add_upstream("web", gpu=True)
    plab.serve(config="proxy_read_timeout: 1s\n")
    plab.start_running("web")
    s = RawStream(plab.d.port, "/s/web/sse?n=6&interval_ms=300", timeout=STREAM_TIMEOUT)
    s.read_to_end()
    s.close()
    assert s.status == 200 and s.complete, (s.status, s.body)
    assert s.body.count(b"data: ") == 6, s.body
    s = RawStream(plab.d.port, "/s/web/sse?n=3&interval_ms=3000", timeout=STREAM_TIMEOUT)
    s.read_to_end()
    s.close()
    assert s.status == 200, (s.status, s.body)
    assert not s.complete and s.closed, ("the cut stream looked whole", s.body)
    assert b"data: 0" in s.body and b"data: 1" not in s.body, s.body
    plab.d.wait_for_log("sent nothing for 1000 ms")
    wait_until(lambda: plab.d.get("/gpus").json()["gpus"][0]["in_flight"] == {"web": 0},
               timeout=5, message="web's count in flight back to 0")
    plab.assert_daemon_fine()


def test_a_target_with_a_space_is_400_and_never_reaches_the_service(plab, web):
    # libmicrohttpd takes "GET /a b HTTP/1.1" as the target "/a b": it cannot go on the
    # service's request line as it is.
    raw = raw_exchange(plab.d.port, b"GET /s/web/echo HTTP/1.1\tx HTTP/1.1\r\n"
                       b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status, headers, body = parse_raw_response(raw)
    assert status == 400, (status, headers, body[:300])
    assert json.loads(body)["error"] == "bad_request", body
    plab.assert_daemon_fine()


@pytest.mark.parametrize("rst", ["0", "1"])
def test_a_small_answer_cut_short_is_502_with_no_head_of_the_services(plab, web, rst):
    # An answer of known length up to 64 KiB goes out once whole (head and body in one
    # send): one that breaks off first never showed its head, so the client gets an error.
    r = plab.proxy("GET", f"/s/web/die?length=20&rst={rst}")
    body = json_error(r, 502)
    # Read first, the 10 bytes make it "broke off"; a reset can beat them to the daemon.
    assert "broke off" in body["message"] or "without answering" in body["message"], body
    plab.assert_daemon_fine()


@pytest.mark.parametrize("request_header", [0, 8000], ids=["small-request", "8k-request"])
def test_an_answer_head_too_large_to_pass_is_502_never_a_silent_close(plab, web,
                                                                       request_header):
    """libmicrohttpd builds the answer's head in what the request's own head left of the
    connection's 32 KiB, and closes the connection without a word when it does not fit.
    Every size is either passed whole or refused with a 502 that says why: with a small
    request, heads up to 30,000 bytes pass (nginx's default buffer takes 4-8 KiB)."""
    headers = {"X-Req": "r" * request_header} if request_header else None
    passed = refused = 0
    for n in range(20000, 40001, 500):
        s = RawStream(plab.d.port, f"/s/web/bighead?bytes={n}", headers=headers)
        s.read_to_end()
        s.close()
        if s.status == 200:
            assert s.complete and s.body == b"big head\n", (n, s.body[:200])
            assert s.headers["x-big"] == "b" * n, n
            assert not refused, f"{n} passed after a smaller head was refused"
            passed = n
        else:
            assert s.status == 502, (n, s.status, s.body[:300])
            body = json.loads(s.body)
            assert body["error"] == "upstream_error", body
            assert "bytes of headers" in body["message"], body
            refused += 1
    assert refused, "a 40,000-byte head cannot fit: it must be refused"
    assert passed >= (30000 if not request_header else 22000), passed
    plab.assert_daemon_fine()


@pytest.mark.parametrize("path", ["/close", "/garbage"])
def test_an_upstream_that_answers_no_http_head_is_502(plab, web, path):
    r = plab.proxy("GET", f"/s/web{path}")
    json_error(r, 502)
    plab.assert_daemon_fine()


# --- 7. errors ----------------------------------------------------------------------------


def test_an_unknown_service_is_404(plab, web):
    for path in ("/s/nosuch/", "/s/nosuch/echo?x=1"):
        json_error(plab.proxy("GET", path), 404, "not_found")


def test_a_stopped_service_that_rejects_on_demand_starts_is_503_with_retry_after(plab):
    plab.add_upstream("web", extra={"on_demand": "reject"})
    plab.serve()
    r = plab.proxy("GET", "/s/web/echo")
    json_error(r, 503, "service_not_running")
    retry = r.headers.get("Retry-After")
    assert retry is not None and retry.strip().isdigit(), dict(r.headers)
    assert plab.state("web") == "stopped"


def test_a_cold_request_starts_the_service_and_is_answered(plab):
    plab.add_upstream("web")
    plab.serve()
    assert plab.state("web") == "stopped"
    r = plab.proxy("GET", "/s/web/echo?cold=1", timeout=30)
    assert r.status == 200, r
    assert r.json()["path"] == "/echo?cold=1"
    assert plab.state("web") == "running"


def test_concurrent_cold_requests_start_the_service_once(plab):
    plab.add_upstream("web")
    plab.serve()
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        answers = list(ex.map(lambda i: plab.proxy("GET", f"/s/web/echo?i={i}", timeout=30),
                              range(10)))
    for i, r in enumerate(answers):
        assert r.status == 200, (i, r)
        assert r.json()["path"] == f"/echo?i={i}"
    assert plab.state("web") == "running"
    starts = [line for line in plab.d.lines if "web: started on demand" in line]
    assert len(starts) == 1, starts


def test_a_thousand_cold_requests_make_one_start(plab):
    """1,000 requests for a stopped service, held at once (from four loopback addresses:
    each may hold 256 connections), make one start, and each is answered by the service."""
    import resource
    import selectors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    plab.add_upstream("web")
    plab.serve(config="max_connections_per_client: 300\n")
    socks = []
    try:
        for i in range(1000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((f"127.0.0.{2 + i % 4}", 0))
            s.settimeout(30)
            s.connect((HOST, plab.d.port))
            s.sendall(f"GET /s/web/echo?i={i} HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            socks.append(s)
        answers = {}
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            answers[i] = b""
        open_ = len(socks)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(65536)
                if data:
                    answers[key.data] += data
                else:
                    sel.unregister(key.fileobj)
                    open_ -= 1
        sel.close()
    finally:
        for s in socks:
            s.close()
    assert open_ == 0, f"{open_} requests unanswered"
    for i, raw in answers.items():
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (i, raw[:200])
        assert json.loads(body)["path"] == f"/echo?i={i}", (i, body[:200])
    starts = [line for line in plab.d.lines if "web: started on demand" in line]
    assert len(starts) == 1, starts
    plab.d.assert_healthy()


def test_a_cold_service_that_never_turns_healthy_is_503_with_retry_after(plab):
    plab.add_upstream("web", gpu=True, health={"path": "/status/500", "start_period": "1s"})
    plab.serve()
    with concurrent.futures.ThreadPoolExecutor(5) as ex:
        answers = list(ex.map(lambda i: plab.proxy("GET", f"/s/web/echo?{i}", timeout=30),
                              range(5)))
    for r in answers:
        body = json_error(r, 503)
        assert body["error"] in ("service_starting", "service_not_running"), body
        retry = r.headers.get("Retry-After")
        assert retry is not None and retry.strip().isdigit(), dict(r.headers)
    # Stopped, and the GPU it held is free again.
    plab.wait_state("web", ("stopped", "failed"), timeout=15)
    g = plab.d.get("/gpus").json()
    assert g["holders"] == [] and g["queue"] == [], g
    plab.d.assert_healthy()


def test_an_upgrade_other_than_websocket_is_ignored(plab, web):
    """RFC 9110 7.8: a server may ignore an Upgrade. curl --http2 asks for h2c on every
    plain request: it gets its answer over HTTP/1.1, and the service sees neither the
    Upgrade nor the HTTP2-Settings its Connection names (hop-by-hop)."""
    h2c = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
           "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}
    r = plab.proxy("GET", "/s/web/echo?h2c=1", headers=h2c)
    assert r.status == 200, r
    assert "upgrade" not in {k.lower() for k in r.headers}, dict(r.headers)
    seen = r.json()
    assert seen["path"] == "/echo?h2c=1", seen
    for name in ("upgrade", "http2-settings", "connection"):
        assert name not in seen["headers"], seen["headers"]
    r = plab.proxy("POST", "/s/web/echo", body=b"x", headers={**h2c, "Upgrade": "websocket"})
    assert r.status == 200 and r.json()["body"] == "x", r  # only a GET opens a WebSocket
    plab.assert_daemon_fine()


# --- WebSockets -----------------------------------------------------------------------


def test_a_websocket_over_http_1_0_is_refused_400(plab, web):
    # RFC 6455 4.1: the handshake is HTTP/1.1 or later; an HTTP/1.0 client is told so
    # before the service is asked, rather than left with a closed connection.
    raw = raw_exchange(plab.d.port, (
        "GET /s/web/ws HTTP/1.0\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode())
    status, headers, body = parse_raw_response(raw)
    assert status == 400, (status, headers, body[:300])
    err = json.loads(body)
    assert err["error"] == "bad_request" and "HTTP/1.1" in err["message"], err
    plab.assert_daemon_fine()


class WebSocket:
    """A WebSocket client on a raw socket (RFC 6455): the handshake, masked frames out,
    frames in."""

    def __init__(self, port, path, headers=None, timeout=STREAM_TIMEOUT, sock=None, host=None):
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.sock = sock or socket.create_connection((HOST, port), timeout=timeout)
        head = (f"GET {path} HTTP/1.1\r\nHost: {host or f'{HOST}:{port}'}\r\n"
                "Upgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                "Sec-WebSocket-Version: 13\r\n")
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.sock.sendall(head.encode() + b"\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"closed before the answer's head: {raw!r}")
            raw += data
        head, self.buf = raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:])}
        if self.status != 101:  # the error's body, by its Content-Length
            want = int(self.headers.get("content-length", "0"))
            while len(self.buf) < want:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data

    def accept_ok(self):
        digest = hashlib.sha1((self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
        return self.headers.get("sec-websocket-accept") == base64.b64encode(
            digest.digest()).decode()

    def send(self, payload, opcode=1):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def _need(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the connection closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """(opcode, payload) of the next frame."""
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        return b0 & 0x0F, self._need(n)

    def closed_by_peer(self):
        """True once the connection ends (what is left unread is dropped)."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.sock.close()


def test_a_websocket_is_passed_through(plab, web):
    """The handshake goes to the service and its 101 back (the Sec-WebSocket-Accept is
    the service's), then messages both ways as they come, large ones too, and a close."""
    ws = WebSocket(plab.d.port, "/s/web/ws")
    assert ws.status == 101, (ws.status, ws.buf)
    assert ws.accept_ok(), ws.headers
    opcode, hello = ws.recv()
    seen = json.loads(hello)
    assert opcode == 1 and seen["x-forwarded-for"] == "127.0.0.1", seen
    assert seen["upgrade"] == "websocket" and "upgrade" in seen["connection"].lower(), seen
    for payload, opcode in ((b"hello", 1), (os.urandom(300000), 2), (b"", 1)):
        ws.send(payload, opcode)
        assert ws.recv() == (opcode, payload)
    ws.send(struct.pack("!H", 1000), opcode=8)
    assert ws.recv() == (8, struct.pack("!H", 1000))
    assert ws.closed_by_peer()
    ws.close()
    plab.assert_daemon_fine()
    # Its request is over for the daemon too: a stop finds nothing unanswered.
    plab.d.signal(signal.SIGTERM)
    assert plab.d.proc.wait(timeout=30) == 0
    assert not [line for line in plab.d.lines if "unanswered" in line], plab.d.lines[-5:]


def tcp_sockets(pid):
    """{(local port, remote port): fd} of process pid's TCP sockets on the loopback."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                inodes[fields[9]] = (local, remote)
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            found[inodes[target[8:-1]]] = int(fd)
    return found


def tcp_nodelay(pid, fd):
    """TCP_NODELAY on process pid's socket fd, read through a copy of it (pidfd_getfd,
    Linux 5.6; the daemon is the test's child, so it may); None when fd is gone (or is no
    socket any more) by then."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
        if copy < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOSYS, errno.EPERM):
                pytest.skip(f"pidfd_getfd cannot copy the daemon's sockets here: "
                            f"{os.strerror(err)}")
            if err == errno.EBADF:
                return None
            raise OSError(err, "pidfd_getfd")
        with socket.socket(fileno=copy) as s:
            return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    except OSError as e:
        if e.errno == errno.ENOTSOCK:
            return None
        raise
    finally:
        os.close(pidfd)


def test_a_websockets_messages_are_not_held_back_by_nagle(plab, web):
    """Once a WebSocket is passed through, both of the daemon's sockets for it send what
    they are given at once (TCP_NODELAY, as nginx does): with Nagle's algorithm, a message
    that arrives in two pieces had its second piece wait for the peer's delayed
    acknowledgement of the first, 40 ms a message (bench/proxy.sh measures it)."""
    ws = WebSocket(plab.d.port, "/s/web/ws")
    assert ws.status == 101, (ws.status, ws.buf)
    ws.recv()
    mine = ws.sock.getsockname()[1]
    sockets = tcp_sockets(plab.d.pid)
    to_client = sockets[(plab.d.port, mine)]
    to_service = [fd for (_, remote), fd in sockets.items() if remote == web.port]
    assert to_service, sockets
    assert tcp_nodelay(plab.d.pid, to_client)
    # The tunnel's, and any other (health checks, kept proxy connections): all of them. A
    # health check's may close meanwhile; the tunnel's lives as long as the WebSocket.
    seen = {fd: tcp_nodelay(plab.d.pid, fd) for fd in to_service}
    assert all(v for v in seen.values() if v is not None), seen
    assert any(v is not None for v in seen.values()), seen
    ws.send(b"still there")
    assert ws.recv() == (1, b"still there")
    ws.close()


def test_a_websockets_101_too_large_to_pass_is_502_never_a_silent_close(plab, web):
    """The service's 101 goes to the client with its headers, which libmicrohttpd builds
    where the request's head left room: a 101 whose headers would not fit is a 502 that
    says why, not a connection closed without a word; one that fits passes whole."""
    ws = WebSocket(plab.d.port, "/s/web/ws?head_bytes=20000")
    assert ws.status == 101, (ws.status, ws.buf[:300])
    assert ws.headers["x-big"] == "b" * 20000
    ws.recv()
    ws.send(b"fits")
    assert ws.recv() == (1, b"fits")
    ws.close()
    ws = WebSocket(plab.d.port, "/s/web/ws?head_bytes=40000")
    assert ws.status == 502, (ws.status, ws.buf[:300])
    body = json.loads(ws.buf)
    assert body["error"] == "upstream_error", body
    assert "101 carries" in body["message"] and "bytes of headers" in body["message"], body
    ws.close()
    plab.assert_daemon_fine()


@pytest.mark.parametrize("path, code, says", [
    ("/s/web/garbage", "upstream_error", "not HTTP"),
    ("/s/web/close", "upstream_error", "closed the connection before answering"),
    ("/s/deaf/ws", "upstream_unreachable", "does not accept connections"),
], ids=["not-http", "closed", "refused"])
def test_a_websocket_with_no_usable_answer_gets_a_proxied_calls_code(plab, path, code, says):
    """A WebSocket whose service gives no usable answer is told why with the code a plain
    proxied request would get: 502 upstream_error for an answer that is not HTTP or none
    before the service closed, 502 upstream_unreachable for a port nobody answers on."""
    plab.add_upstream("web")
    plab.add("deaf", command=["sleep", "1000"], health=False, port=free_port())
    plab.serve()
    plab.start_running("web")
    plab.start_running("deaf")
    ws = WebSocket(plab.d.port, path)
    assert ws.status == 502, (ws.status, ws.buf[:300])
    body = json.loads(ws.buf)
    assert body["error"] == code and says in body["message"], body
    ws.close()
    plab.assert_daemon_fine()


def test_a_websocket_to_a_stopped_service_starts_it(plab):
    plab.add_upstream("web")
    plab.serve()
    ws = WebSocket(plab.d.port, "/s/web/ws")
    assert ws.status == 101, (ws.status, ws.buf)
    ws.recv()
    ws.send(b"cold")
    assert ws.recv() == (1, b"cold")
    assert plab.state("web") == "running"
    ws.close()


def test_a_websocket_the_service_refuses_gets_its_status(plab, web):
    ws = WebSocket(plab.d.port, "/s/web/status/403")
    assert ws.status == 403, (ws.status, ws.buf)
    assert json.loads(ws.buf)["error"] == "upgrade_refused", ws.buf
    ws.close()
    ws = WebSocket(plab.d.port, "/v1/realtime")
    assert ws.status == 501, (ws.status, ws.buf)
    ws.close()
    plab.assert_daemon_fine()


def test_an_open_websocket_counts_in_flight_and_ends_with_the_daemon(plab):
    """A WebSocket is a request in flight while it is open (a swap waits for it); a daemon
    that stops closes it, and exits cleanly."""
    plab.add_upstream("web", gpu=True)
    plab.serve()
    plab.start_running("web")
    ws = WebSocket(plab.d.port, "/s/web/ws")
    assert ws.status == 101
    ws.recv()
    g = plab.d.get("/gpus").json()
    assert g["gpus"][0]["in_flight"] == {"web": 1}, g
    ws.send(b"x")
    assert ws.recv() == (1, b"x")
    plab.d.signal(signal.SIGTERM)
    assert ws.closed_by_peer()
    assert plab.d.proc.wait(timeout=30) == 0
    ws.close()


def test_a_service_with_no_port_is_409(plab):
    plab.add_text("noport", manifest("noport"))
    plab.serve()
    plab.start_running("noport")
    json_error(plab.proxy("GET", "/s/noport/"), 409, "no_port")


def test_a_running_service_that_refuses_connections_is_502(plab):
    plab.add("deaf", command=["sleep", "1000"], health=False, port=free_port())
    plab.serve()
    plab.start_running("deaf")
    json_error(plab.proxy("GET", "/s/deaf/echo"), 502, "upstream_unreachable")
    json_error(plab.proxy("POST", "/s/deaf/echo", body=b'{"a": 1}'), 502,
               "upstream_unreachable")
    plab.d.assert_healthy()


# --- 8. the gate --------------------------------------------------------------------------


@pytest.fixture
def keyed_web(plab, workdir):
    keys = {role: new_key() for role in ("user", "viewer", "operator", "admin")}
    path = write_keys(workdir / "keys.yaml", [(f"{r}-key", r, k) for r, k in keys.items()])
    plab.add_upstream("web")
    plab.serve(extra_args=["--keys", path])
    plab.start_running("web", headers=bearer(keys["operator"]))
    return keys


def test_the_proxy_needs_a_user_key(plab, keyed_web):
    keys = keyed_web
    r = plab.proxy("GET", "/s/web/echo")
    json_error(r, 401, "unauthorized")
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), dict(r.headers)
    json_error(plab.proxy("GET", "/s/web/echo", headers=bearer(new_key())), 401,
               "unauthorized")
    json_error(plab.proxy("GET", "/s/web/echo", headers=bearer(keys["viewer"])), 403,
               "forbidden")
    for role in ("user", "operator", "admin"):
        r = plab.proxy("GET", f"/s/web/echo?role={role}", headers=bearer(keys[role]))
        assert r.status == 200, (role, r)
        assert r.json()["path"] == f"/echo?role={role}"


@pytest.mark.parametrize("form", ["authorization", "x-api-key"])
def test_the_daemons_key_is_not_forwarded(plab, keyed_web, form):
    key = keyed_web["user"]
    headers = bearer(key) if form == "authorization" else {"X-API-Key": key}
    r = plab.proxy("POST", "/s/web/echo", body=b"{}", headers=headers)
    assert r.status == 200, r
    seen = r.json()["headers"]
    assert "authorization" not in seen, seen
    assert "x-api-key" not in seen, seen
    assert key not in json.dumps(seen), "the daemon's key reached the upstream"


# --- 9. bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Bad_Name", "a" * 64, "-dash", ".dot"])
def test_a_bad_service_name_is_400(plab, web, name):
    json_error(plab.proxy("GET", f"/s/{name}/echo"), 400, "bad_name")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_over_the_apis_cap_goes_whole_to_the_service(plab, web, framing):
    """/s/ streams request bodies as they come: the API's 64 KiB cap is for its own JSON,
    not for uploads. The service gets every byte, framed as the client framed it."""
    payload = big_body(3 * 1024 * 1024 + 7)
    if framing == "length":
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(len(payload))}
        body = payload
    else:
        headers = {"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"}
        body = chunked(payload, size=100000)
    s = RawStream(plab.d.port, "/s/web/sink", method="POST", headers=headers, body=body,
                  timeout=STREAM_TIMEOUT)
    s.read_to_end()
    s.close()
    assert s.status == 200, (s.status, s.body[:300])
    seen = json.loads(s.body)
    assert seen == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                    "framing": framing}, seen
    plab.assert_daemon_fine()


def test_a_json_body_over_the_v1_cap_is_413(plab):
    """/v1/ reads a JSON body whole to route it: past 16 MiB it is refused, in OpenAI's
    shape, and nothing starts."""
    plab.add_upstream("chat", extra={"models": "[m]"})
    plab.serve()
    payload = json_payload(16 * 1024 * 1024 + 1)
    s = RawStream(plab.d.port, "/v1/chat/completions", method="POST",
                  headers={"Content-Type": "application/json",
                           "Content-Length": str(len(payload))}, body=payload,
                  timeout=STREAM_TIMEOUT)
    s.read_to_end()
    s.close()
    assert s.status == 413, (s.status, s.body[:300])
    assert json.loads(s.body)["error"]["code"] == "body_too_large", s.body
    assert plab.state("chat") == "stopped"


def daemon_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_upload_to_a_stopped_service_waits_for_its_start_and_goes_whole(plab, framing):
    """The body of a request held for a start is not read meanwhile (nor lost): once the
    service runs, all of it goes, framed as sent."""
    plab.add_upstream("web")
    plab.serve()
    payload = big_body(700 * 1024 + 3)
    if framing == "length":
        headers = {"Content-Length": str(len(payload))}
        body = payload
    else:
        headers = {"Transfer-Encoding": "chunked"}
        body = chunked(payload, size=50000)
    s = RawStream(plab.d.port, "/s/web/sink", method="POST", headers=headers, body=body,
                  timeout=STREAM_TIMEOUT)
    s.read_to_end()
    s.close()
    assert s.status == 200, (s.status, s.body[:300])
    assert json.loads(s.body) == {"bytes": len(payload),
                                  "sha256": hashlib.sha256(payload).hexdigest(),
                                  "framing": framing}
    assert plab.state("web") == "running"


def sink_answer(sock, answer=b""):
    """Reads /sink's answer to an upload on sock (answer: what was read of it already),
    asserts it is 200, and returns its JSON {"bytes", "sha256", "framing"}."""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    return json.loads(body)


def test_a_large_upload_to_a_slow_service_keeps_the_daemons_memory_flat(plab, web):
    """100 MiB to a service that reads 40 MiB a second: the daemon holds at most its
    buffer of it (the client's side waits while the service's side is full)."""
    size, block = 100 * 1024 * 1024, 1024 * 1024
    digest = hashlib.sha256()
    before = daemon_rss(plab.d.pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], daemon_rss(plab.d.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with socket.create_connection((HOST, plab.d.port), timeout=STREAM_TIMEOUT) as sock:
            sock.sendall(f"POST /s/web/sink?rate={40 * 1024 * 1024} HTTP/1.1\r\n"
                         f"Host: {HOST}:{plab.d.port}\r\nContent-Length: {size}\r\n\r\n"
                         .encode())
            for i in range(size // block):
                part = bytes([i % 251]) * block
                digest.update(part)
                sock.sendall(part)
            seen = sink_answer(sock)
    finally:
        done.set()
        sampler.join()
    assert seen["bytes"] == size and seen["sha256"] == digest.hexdigest(), seen
    assert peak[0] - before < 24 * 1024 * 1024, (before, peak[0])
    plab.assert_daemon_fine()


def wait_body_cut(plab, name="web"):
    """Waits until the upstream's log says the body of its /sink request was cut."""
    def cut():
        r = plab.d.get(f"/services/{name}/logs?tail=50")
        return r.status == 200 and "sink: cut after" in r.body.decode("utf-8", "replace")
    wait_until(cut, timeout=10, message="the service seeing its body cut")


def test_client_timeout_closes_an_upload_that_stalls(plab):
    """A client that sends part of a body and then nothing, its connection left open: after
    the config's client_timeout (1 s here, 10 s by default) the daemon closes it and the
    service sees its request body cut."""
    plab.add_upstream("web")
    plab.serve(config="client_timeout: 1s\n")
    plab.start_running("web")
    with socket.create_connection((HOST, plab.d.port), timeout=8) as s:
        s.sendall(f"POST /s/web/sink HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                  "Content-Length: 5000000\r\n\r\n".encode() + b"x" * 100000)
        # Well before the default 10 s: the daemon closes it (no answer: its body is cut).
        assert s.recv(65536) == b""
    wait_body_cut(plab)
    plab.assert_daemon_fine()


def test_an_upload_that_pauses_is_not_closed_as_stuck(plab, web):
    """A fast upload keeps libmicrohttpd asking to run at once for long enough (200 ms)
    that the server looks for stuck connections: ones that hold bytes they do not read,
    which then get a 1 s timeout. One whose body is moving is not stuck: when its client
    then pauses for 2 s, well within client_timeout (10 s), it is not closed, and the
    service gets the whole body. (It failed 3 runs in 4 on a loaded machine, with two CPU
    hogs beside it, while the search took any connection holding unread bytes.)"""
    first, rest, block = 400 * 1024 * 1024, 1024 * 1024, 1024 * 1024
    digest = hashlib.sha256()
    with socket.create_connection((HOST, plab.d.port), timeout=STREAM_TIMEOUT) as sock:
        sock.sendall(f"POST /s/web/sink HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                     f"Content-Length: {first + rest}\r\n\r\n".encode())
        for i in range(first // block):
            part = bytes([i % 251]) * block
            digest.update(part)
            sock.sendall(part)
        time.sleep(2)
        part = b"z" * rest
        digest.update(part)
        sock.sendall(part)
        seen = sink_answer(sock)
    assert seen["bytes"] == first + rest and seen["sha256"] == digest.hexdigest(), seen
    plab.assert_daemon_fine()


def test_an_upload_that_moved_bytes_then_sticks_is_still_closed(plab):
    """The other side of the rule above: an upload whose body moved, then stops moving on
    a chunk-size line longer than libmicrohttpd's buffer (it holds bytes it cannot read),
    is taken for stuck at the next search and closed long before client_timeout (60 s
    here), and the service sees its body cut."""
    plab.add_upstream("web")
    plab.serve(config="client_timeout: 60s\n")
    plab.start_running("web")
    body = b"".join(b"%x\r\n" % (64 * 1024) + b"y" * (64 * 1024) + b"\r\n" for _ in range(64))
    with socket.create_connection((HOST, plab.d.port), timeout=20) as sock:
        sock.sendall(f"POST /s/web/sink HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode() + body)
        sock.sendall(b"0" * 40000 + b"1\r\nx\r\n0\r\n\r\n")
        # Closed by the stuck rule (in about 1.5 s), not by client_timeout's 60 s.
        wait_closed(sock, 30)
    wait_body_cut(plab)
    plab.assert_daemon_fine()


@pytest.mark.parametrize("cold", [False, True], ids=["running", "stopped"])
def test_an_upload_that_expects_100_continue_gets_it_and_arrives_whole(plab, cold):
    """curl sends `Expect: 100-continue` for a large body and waits for the 100 before
    sending it: the daemon says 100 Continue (to a stopped service too, which the request
    starts), then the body streams to the service whole."""
    plab.add_upstream("web")
    plab.serve()
    if not cold:
        plab.start_running("web")
    body = os.urandom(3 * 1024 * 1024)
    with socket.create_connection((HOST, plab.d.port), timeout=STREAM_TIMEOUT) as sock:
        sock.sendall(f"POST /s/web/sink HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                     f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
                     .encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            assert data, answer
            answer += data
        interim, _, answer = answer.partition(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue", interim
        sock.sendall(body)
        seen = sink_answer(sock, answer)
    assert seen["bytes"] == len(body), seen
    assert seen["sha256"] == hashlib.sha256(body).hexdigest(), seen
    plab.assert_daemon_fine()


def test_a_client_that_stops_mid_upload_cuts_the_services_body(plab, web):
    """Half a body, then the client goes: the service sees its request body cut (never a
    whole-looking one), and the daemon goes on."""
    with socket.create_connection((HOST, plab.d.port), timeout=10) as s:
        s.sendall(f"POST /s/web/sink HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                  "Content-Length: 5000000\r\n\r\n".encode() + b"x" * 300000)
        time.sleep(0.3)
    wait_body_cut(plab)
    plab.assert_daemon_fine()


def test_a_client_that_sends_half_a_body_and_goes_leaves_the_daemon_healthy(plab, web):
    for _ in range(3):
        with socket.create_connection((HOST, plab.d.port), timeout=10) as s:
            s.sendall(f"POST /s/web/echo HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 50000\r\n\r\n"
                      .encode() + b"x" * 20000)
            time.sleep(0.1)
        plab.assert_daemon_fine()


# --- 10. a client that goes away --------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_client_leaving_mid_stream_leaves_the_daemon_healthy(plab, web, reset):
    for _ in range(3):
        s = RawStream(plab.d.port, "/s/web/sse?n=200&interval_ms=50")
        assert s.read_until(lambda: b"data: 2\n\n" in s.body), s.body
        s.close(reset=reset)
        plab.assert_daemon_fine()
    # The same for a big body the client stops reading.
    s = RawStream(plab.d.port, "/s/web/big?bytes=20000000")
    assert s.read_until(lambda: len(s.body) > 100000)
    s.close(reset=reset)
    plab.assert_daemon_fine()
    # Later requests still stream.
    r = plab.proxy("GET", "/s/web/sse?n=3&interval_ms=0")
    assert r.status == 200 and r.body == SSE3, r


# --- OpenAI-style routing: /v1/ -----------------------------------------------------------


def openai_error(resp, status, code):
    """Asserts an error in OpenAI's shape {"error": {"message", "type", "code"}}."""
    assert resp.status == status, resp
    body = resp.json()
    err = body["error"]
    assert isinstance(err, dict), body
    assert err["code"] == code, body
    assert isinstance(err["message"], str) and err["message"], body
    types = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
    assert err["type"] == types.get(status, "server_error" if status >= 500
                                    else "invalid_request_error"), body
    return err


@pytest.fixture
def models(plab):
    """Two upstream services listing models: "chat" (with an alias) and "embed"; embed
    is left stopped, to be started by its first request."""
    chat = plab.add_upstream("chat", extra={"models": '["llama-3-8b", "org/model:q4"]',
                                            "model_aliases": '{gpt-4o: llama-3-8b}'})
    embed = plab.add_upstream("embed", extra={"models": '["bge-small"]'})
    plab.serve()
    plab.start_running("chat")
    return chat, embed


def test_models_are_listed_in_openais_shape_and_start_nothing(plab, models):
    r = plab.d.get("/v1/models")
    assert r.status == 200, r
    body = r.json()
    assert body["object"] == "list", body
    got = sorted((m["id"], m["owned_by"], m["object"]) for m in body["data"])
    assert got == [("bge-small", "embed", "model"), ("gpt-4o", "chat", "model"),
                   ("llama-3-8b", "chat", "model"), ("org/model:q4", "chat", "model")], got
    assert plab.state("embed") == "stopped"
    r = plab.d.get("/v1/models/org/model:q4")
    assert r.status == 200 and r.json()["owned_by"] == "chat", r
    openai_error(plab.d.get("/v1/models/nope"), 404, "model_not_found")
    openai_error(plab.d.post("/v1/models"), 405, "method_not_allowed")


def test_a_request_goes_to_the_service_listing_its_model_path_unchanged(plab, models):
    chat, embed = models
    for model in ("llama-3-8b", "gpt-4o", "org/model:q4"):
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        r = plab.d.post("/v1/chat/completions?x=1", body=body,
                        headers={"Content-Type": "application/json"})
        assert r.status == 200, r
        seen = r.json()
        assert seen["path"] == "/v1/chat/completions?x=1", seen
        assert seen["method"] == "POST" and json.loads(seen["body"]) == json.loads(body), seen
        assert seen["headers"]["host"] == f"127.0.0.1:{chat.port}", seen


def test_a_model_of_a_stopped_service_starts_it(plab, models):
    chat, embed = models
    r = plab.d.post("/v1/embeddings", body=json.dumps({"model": "bge-small", "input": "x"}),
                    timeout=30.0)
    assert r.status == 200, r
    assert r.json()["headers"]["host"] == f"127.0.0.1:{embed.port}", r.json()
    assert plab.state("embed") == "running"


@pytest.mark.parametrize("body, code", [
    (b"", "invalid_body"),
    (b"not json", "invalid_body"),
    (b"[1, 2]", "invalid_body"),
    (b'{"model": 7}', "model_missing"),
    (b'{"model": ""}', "model_missing"),
    (b'{"messages": []}', "model_missing"),
    (b'{"model": "' + b"m" * 300 + b'"}', "invalid_model"),
])
def test_a_body_without_a_usable_model_is_400(plab, models, body, code):
    openai_error(plab.d.post("/v1/chat/completions", body=body), 400, code)


def test_v1_ignores_an_h2c_upgrade_and_refuses_a_websocket(plab, models):
    """Under /v1/ an h2c upgrade is ignored like under /s/; a WebSocket is 501 (a GET has no
    body to route by), in OpenAI's shape."""
    r = plab.d.post("/v1/chat/completions", body=b'{"model": "gpt-4o"}',
                    headers={"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                             "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
    assert r.status == 200 and r.json()["path"] == "/v1/chat/completions", r
    assert "http2-settings" not in r.json()["headers"], r.json()
    openai_error(plab.d.get("/v1/realtime", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}), 501, "upgrade_not_supported")


def test_an_unknown_model_is_404_model_not_found(plab, models):
    err = openai_error(plab.d.post("/v1/chat/completions", body=b'{"model": "gpt-5"}'), 404,
                       "model_not_found")
    assert "gpt-5" in err["message"], err


def form(fields, boundary="nannyboundary42"):
    """A multipart/form-data body of (name, value bytes, filename or None) fields."""
    out = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_a_multipart_upload_is_routed_by_its_model_field(plab, models):
    """An upload (audio transcription) is routed by its form's "model" field, which is
    looked for in its first MiB only; the service gets the whole body, as sent."""
    audio = big_body(2 * 1024 * 1024)
    body, ctype = form([("model", b"gpt-4o", None), ("file", audio, "a.wav")])
    r = plab.d.post("/v1/audio/transcriptions", body=body, headers={"Content-Type": ctype},
                    timeout=30.0)
    assert r.status == 200, r
    seen = r.json()
    assert seen["path"] == "/v1/audio/transcriptions", seen
    assert seen["body"].encode() == body, (len(seen["body"]), len(body))
    assert plab.state("embed") == "stopped"  # chat's alias routed it


def test_a_form_whose_model_comes_too_late_or_never_is_400(plab, models):
    late, ctype = form([("file", big_body(1536 * 1024), "a.wav"), ("model", b"gpt-4o", None)])
    openai_error(plab.d.post("/v1/audio/transcriptions", body=late,
                             headers={"Content-Type": ctype}, timeout=30.0), 400, "model_missing")
    none, ctype = form([("file", b"RIFF", "a.wav")])
    openai_error(plab.d.post("/v1/audio/transcriptions", body=none,
                             headers={"Content-Type": ctype}), 400, "model_missing")
    long, ctype = form([("model", b"m" * 3000, None), ("file", b"RIFF", "a.wav")])
    openai_error(plab.d.post("/v1/audio/transcriptions", body=long,
                             headers={"Content-Type": ctype}), 400, "invalid_model")
    urlencoded = b"model=" + b"m" * 3000
    openai_error(plab.d.post("/v1/audio/transcriptions", body=urlencoded,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}),
                 400, "invalid_model")
    unknown, ctype = form([("model", b"whisper-9", None), ("file", b"RIFF", "a.wav")])
    openai_error(plab.d.post("/v1/audio/transcriptions", body=unknown,
                             headers={"Content-Type": ctype}), 404, "model_not_found")
    plab.assert_daemon_fine("chat")


@pytest.mark.parametrize("length, status, code", [(256, 404, "model_not_found"),
                                                   (257, 400, "invalid_model")])
def test_a_model_name_has_at_most_256_bytes_however_it_comes(plab, models, length, status,
                                                             code):
    """The bound is 256 bytes exactly, in a JSON body, a multipart form, a urlencoded form
    and the load path alike: 256 is looked up (and unknown), 257 is refused."""
    name = b"m" * length
    openai_error(plab.d.post("/v1/chat/completions", body=b'{"model": "' + name + b'"}'),
                 status, code)
    body, ctype = form([("model", name, None), ("file", b"RIFF", "a.wav")])
    openai_error(plab.d.post("/v1/audio/transcriptions", body=body,
                             headers={"Content-Type": ctype}), status, code)
    openai_error(plab.d.post("/v1/audio/transcriptions", body=b"model=" + name,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}),
                 status, code)
    openai_error(plab.d.post(f"/v1/models/{name.decode()}/load"), status, code)
    assert plab.state("embed") == "stopped"


def test_a_json_body_over_the_apis_cap_is_routed_whole(plab, models):
    """/v1/ reads a JSON body whole to route it (up to 16 MiB): a long prompt routes."""
    doc = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "z" * 300000}]}
    r = plab.d.post("/v1/chat/completions", body=json.dumps(doc).encode(), timeout=30.0)
    assert r.status == 200, r
    assert json.loads(r.json()["body"]) == doc


def test_v1_errors_of_the_upstream_side_are_in_openais_shape(plab):
    """A model whose service refuses connections: 502 in OpenAI's shape."""
    port = free_port()
    plab.add("dead", command=["sleep", "600"], port=port, health=False,
             extra={"models": '["dead-model"]'})
    plab.serve()
    plab.start_running("dead")
    openai_error(plab.d.post("/v1/completions", body=b'{"model": "dead-model"}'), 502,
                 "upstream_unreachable")


def test_v1_a_service_that_never_answers_is_504_in_openais_shape(plab):
    """The daemon's own deadline (proxy_read_timeout) answers a /v1/ request in OpenAI's
    shape too."""
    port = free_port()
    silent = ("import socket, time; s = socket.socket(); "
              f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)")
    plab.add("mute", command=[PYTHON, "-c", silent], port=port, health=False,
             extra={"models": '["mute-model"]'})
    plab.serve(config="proxy_read_timeout: 1s\n")
    plab.start_running("mute")
    deadline = time.monotonic() + 10
    while True:  # it listens (it has no health check to say so)
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "mute never listened"
            time.sleep(0.05)
    err = openai_error(plab.d.post("/v1/completions", body=b'{"model": "mute-model"}',
                                   timeout=30.0), 504, "timed_out")
    assert err["type"] == "server_error", err


def test_a_model_is_loaded_and_unloaded_explicitly(plab, models):
    chat, embed = models
    r = plab.d.post("/v1/models/bge-small/load", timeout=30.0)
    assert r.status == 200, r
    body = r.json()
    assert body["id"] == "bge-small" and body["owned_by"] == "embed", body
    assert body["service"]["state"] == "running", body
    assert plab.state("embed") == "running"
    # Loading what runs answers at once, the same way.
    r = plab.d.post("/v1/models/bge-small/load")
    assert r.status == 200 and r.json()["service"]["state"] == "running", r
    r = plab.d.post("/v1/models/gpt-4o/unload", timeout=30.0)
    assert r.status == 200, r
    assert r.json()["owned_by"] == "chat" and r.json()["service"]["state"] == "stopped", r
    plab.assert_no_processes("chat")
    openai_error(plab.d.post("/v1/models/nope/load"), 404, "model_not_found")
    openai_error(plab.d.get("/v1/models/bge-small/load"), 405, "method_not_allowed")


def test_unloading_needs_an_operator_key(plab, workdir):
    """And the gate's refusals under /v1/ are in OpenAI's shape, which its clients parse,
    with their headers: no key or a wrong one 401 authentication_error (WWW-Authenticate),
    too weak a role 403 permission_error, an address throttled for its wrong keys 429
    rate_limit_error (Retry-After)."""
    keys = {role: new_key() for role in ("viewer", "user", "operator")}
    path = write_keys(workdir / "keys.yaml", [(f"{r}-key", r, k) for r, k in keys.items()])
    plab.add_upstream("chat", extra={"models": '["m"]'})
    plab.serve(extra_args=["--keys", path])
    for headers in ({}, bearer(new_key())):
        r = plab.d.post("/v1/chat/completions", body=b'{"model": "m"}', headers=headers)
        openai_error(r, 401, "unauthorized")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), dict(r.headers)
    openai_error(plab.d.get("/v1/models", headers=bearer(keys["viewer"])), 403, "forbidden")
    wrong = bearer(new_key())
    got = [get_from("127.0.0.7", plab.d.port, "/v1/models", wrong) for _ in range(11)]
    assert [g[0] for g in got] == [401] * 10 + [429], [g[0] for g in got]
    status, headers, body = got[-1]
    assert int(headers["Retry-After"]) >= 1, dict(headers)
    err = json.loads(body)["error"]
    assert err["code"] == "rate_limited" and err["type"] == "rate_limit_error", err
    # /s/ keeps SPEC's shape.
    json_error(plab.proxy("GET", "/s/chat/echo"), 401, "unauthorized")
    r = plab.d.post("/v1/models/m/load", headers=bearer(keys["user"]), timeout=30.0)
    assert r.status == 200, r
    r = plab.d.post("/v1/models/m/unload", headers=bearer(keys["user"]))
    openai_error(r, 403, "forbidden")
    st = plab.d.get("/services/chat", headers=bearer(keys["operator"]))
    assert st.status == 200 and st.json()["state"] == "running", st
    r = plab.d.post("/v1/models/m/unload", headers=bearer(keys["operator"]), timeout=30.0)
    assert r.status == 200 and r.json()["service"]["state"] == "stopped", r


def test_idle_timeout_stops_a_service_and_the_next_request_starts_it(plab):
    """idle_timeout counts from the end of the last proxied request: the status shows when
    it will stop the service while none is in flight; a request in flight holds it off;
    once stopped, the next request starts it again."""
    plab.add_upstream("web", extra={"idle_timeout": "1500ms"})
    plab.serve()
    plab.start_running("web")
    # Started by the API and never proxied to: no idle stop pending.
    assert plab.status("web")["idle_stop_at"] is None
    assert plab.proxy("GET", "/s/web/echo").status == 200
    st = plab.wait_status("web", lambda s: s["idle_stop_at"] is not None, timeout=5)
    assert st["state"] == "running", st
    # A stream in flight for longer than idle_timeout holds the stop off.
    stream = RawStream(plab.d.port, "/s/web/sse?n=3&interval_ms=1000", timeout=STREAM_TIMEOUT)
    assert stream.status == 200, stream.headers
    assert plab.status("web")["idle_stop_at"] is None
    stream.read_to_end()
    stream.close()
    assert stream.complete, stream.body
    assert plab.state("web") == "running"
    # Then, idle: stopped, and the log says why.
    plab.wait_state("web", "stopped", timeout=15)
    plab.d.wait_for_log("web: no proxied request for its idle_timeout")
    assert plab.status("web")["idle_stop_at"] is None
    # The next request starts it again.
    r = plab.proxy("GET", "/s/web/echo", timeout=30.0)
    assert r.status == 200, r
    assert plab.state("web") == "running"


def test_a_start_on_demand_that_every_client_left_still_stops_when_idle(plab):
    """A cold request whose client goes away while the service starts: the start goes on,
    unanswered, and the service's idle clock runs from then (through the start, which
    here takes longer than idle_timeout), so it is stopped though no request ever reached
    it; not left running for nobody."""
    port = free_port()
    command = ["/bin/sh", "-c",
               f"sleep 2; exec {PYTHON} {UPSTREAM} --port {port} --tag {plab.tag}"]
    plab.add("web", command=command, port=port, extra={"idle_timeout": "1s"})
    plab.serve()
    with socket.create_connection((HOST, plab.d.port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(f"GET /s/web/echo HTTP/1.1\r\nHost: {HOST}:{plab.d.port}\r\n\r\n".encode())
        plab.wait_state("web", "starting", timeout=10)
    # Running, its idle stop is shown (the status shows it only while the service runs).
    st = plab.wait_status("web", lambda s: s["idle_stop_at"] is not None, timeout=20)
    assert st["state"] == "running", st
    plab.wait_state("web", "stopped", timeout=15)
    plab.d.wait_for_log("web: no proxied request for its idle_timeout")
    assert plab.status("web")["idle_stop_at"] is None
    plab.assert_no_processes("web")


def test_an_empty_framed_body_goes_with_content_length_zero(plab, web):
    r = plab.proxy("POST", "/s/web/echo", body=b"")
    assert r.status == 200, r
    seen = r.json()
    assert seen["method"] == "POST" and seen["body"] == "", seen
    assert seen["headers"].get("content-length") == "0", seen


def test_dot_segments_and_spoofable_forwarding_headers(plab, web):
    """The path goes as sent, dot segments and all (the service decides what they mean);
    Forwarded and X-Real-IP from the client are dropped like X-Forwarded-*."""
    s = RawStream(plab.d.port, "/s/web/echo/../x?a=1",
                  headers={"Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"})
    s.read_to_end()
    s.close()
    assert s.status == 200, s.headers
    seen = json.loads(s.body)
    assert seen["path"] == "/echo/../x?a=1", seen
    assert "forwarded" not in seen["headers"] and "x-real-ip" not in seen["headers"], seen
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1", seen


def test_an_escaped_prefix_is_refused(plab, web):
    s = RawStream(plab.d.port, "/%73/web/echo")
    s.read_to_end()
    s.close()
    assert s.status == 400, (s.status, s.body)
    assert json.loads(s.body)["error"] == "bad_request", s.body


def test_a_daemon_that_stops_cuts_a_stream_in_flight_visibly(plab, web):
    """SIGTERM while a proxied event stream is in flight: the client's answer ends without
    its last chunk, never as if the stream were whole."""
    s = RawStream(plab.d.port, "/s/web/sse?n=5&interval_ms=2000")
    assert s.status == 200, s.headers
    assert s.read_until(lambda: b"data: 0\n\n" in s.body), s.body
    plab.d.terminate()
    s.read_to_end()
    s.close()
    assert not s.complete, ("the stream looked whole", s.body)
    assert b"data: 4" not in s.body, s.body


def test_a_service_whose_manifest_is_broken_is_422_and_starts_nothing(plab):
    """Issue 14's bad input: a request for a service whose manifest is broken. Broken
    from the start, `/s/NAME/` is 422 invalid_manifest in SPEC's shape and starts
    nothing. Broken while it runs, the service is still served on the manifest it
    started with, by name and by model; once it stops, each of those is 422 (OpenAI's
    shape on `/v1/`), never a start from the broken file."""
    plab.add_text("broken", 'name: broken\nports: ["http"]\ncommand: ["sleep", "1"]\n')
    web = plab.add_upstream("web", extra={"models": '["m1"]'})
    plab.serve()
    for path in ("/s/broken/", "/s/broken/echo?x=1"):
        json_error(plab.proxy("GET", path), 422, "invalid_manifest")
    errors = plab.d.get("/services").json()["errors"]
    assert [e["name"] for e in errors] == ["broken"], errors
    json_error(plab.d.get("/services/broken"), 422, "invalid_manifest")
    plab.start_running("web")
    path = os.path.join(web.folder, "service.yaml")
    with open(path) as f:
        text = f.read()
    replace_file(path, text + "stop_timeout: [nonsense\n")
    plab.rediscover()
    assert plab.d.get("/services/web").json()["manifest_error"], "the edit did not break it"
    r = plab.proxy("GET", "/s/web/echo?still=1")
    assert r.status == 200 and r.json()["path"] == "/echo?still=1", r
    r = plab.d.post("/v1/chat/completions", body=b'{"model": "m1"}')
    assert r.status == 200 and r.json()["path"] == "/v1/chat/completions", r
    ok_status(plab.stop("web"), "web", states="stopped")
    json_error(plab.proxy("GET", "/s/web/echo"), 422, "invalid_manifest")
    # The model stays known (from the manifest it ran on): its owner's error, not 404.
    openai_error(plab.d.post("/v1/chat/completions", body=b'{"model": "m1"}'), 422,
                 "invalid_manifest")
    openai_error(plab.d.post("/v1/models/m1/load"), 422, "invalid_manifest")
    assert plab.state("web") == "stopped"
    plab.assert_no_processes("web")
