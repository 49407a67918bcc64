"""Clean shutdown: SIGTERM/SIGINT stop the daemon with exit code 0, close the listening
socket, and answer the requests already in flight."""

import concurrent.futures
import json
import http.client
import signal
import socket

import pytest

from conftest import HOST, manifest, parse_raw_response, wait_until, write_service


def connect_refused(port):
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def read_all(sock):
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def open_request_awaiting_body(port, path, body_len):
    """Sends a POST's headers with Expect: 100-continue and waits for the 100, which
    proves the daemon has taken the request in; the body is left to send."""
    s = socket.create_connection((HOST, port), timeout=20)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {body_len}\r\n"
              "Content-Type: application/json\r\nExpect: 100-continue\r\n"
              "Connection: close\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        assert chunk, f"hung up before 100 Continue: {got!r}"
        got += chunk
    assert got.startswith(b"HTTP/1.1 100"), got
    return s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(nanny, services_dir, signum):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    d.assert_healthy()
    port = d.port
    d.signal(signum)
    assert d.wait_exit() == 0, d.stderr
    assert "nanny: info: stopped" in d.lines, d.stderr
    assert connect_refused(port)


def test_sigterm_right_after_start(nanny, services_dir):
    d = nanny.serve(services_dir)
    assert d.terminate() == 0, d.stderr
    assert "nanny: info: stopped" in d.lines


def test_sigterm_with_idle_keepalive_connections(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    conns = []
    try:
        for _ in range(10):
            c = http.client.HTTPConnection(HOST, d.port, timeout=10)
            c.request("GET", "/services/a")
            r = c.getresponse()
            assert r.status == 200
            r.read()
            conns.append(c)  # kept alive, idle
        assert d.terminate() == 0, d.stderr
    finally:
        for c in conns:
            c.close()
    assert connect_refused(d.port)


def test_request_in_flight_is_answered(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    port = d.port
    s = open_request_awaiting_body(port, "/services/a/start", 14)
    try:
        start = len(d.lines)
        d.signal(signal.SIGTERM)
        d.wait_for_log("stopping", start=start, timeout=10)
        # New connections are refused while the one in flight is still served.
        wait_until(lambda: connect_refused(port), message="the listening socket closed")
        assert d.proc.poll() is None, "exited with a request in flight"
        s.sendall(b'{"force":true}')
        status, headers, body = parse_raw_response(read_all(s))
        # Answered, in JSON: a start while the daemon stops its services is refused.
        assert status == 503, body
        assert json.loads(body)["error"] == "backend_unavailable"
        assert headers.get("content-type") == "application/json"
    finally:
        s.close()
    assert d.wait_exit() == 0, d.stderr
    assert "nanny: info: stopped" in d.lines


def test_suspended_rediscover_in_flight_is_answered(nanny, services_dir):
    """POST /rediscover waits for a scan on a worker thread; a SIGTERM meanwhile still
    gets the request a JSON answer."""
    for i in range(3000):
        write_service(services_dir, f"s{i:04d}", manifest(f"s{i:04d}"))
    d = nanny.serve(services_dir, start_timeout=60)
    s = open_request_awaiting_body(d.port, "/rediscover", 2)
    try:
        start = len(d.lines)
        d.signal(signal.SIGTERM)
        d.wait_for_log("stopping", start=start, timeout=10)
        s.sendall(b"{}")
        status, headers, body = parse_raw_response(read_all(s))
        assert status in (200, 503), body[:300]
        assert headers.get("content-type") == "application/json"
        assert body
    finally:
        s.close()
    assert d.wait_exit(timeout=60) == 0, d.stderr[-3000:]


def test_unfinished_request_does_not_hold_shutdown_forever(nanny, services_dir):
    d = nanny.serve(services_dir)
    s = open_request_awaiting_body(d.port, "/rediscover", 100)
    try:
        d.signal(signal.SIGTERM)
        # The body never comes: the daemon gives up after its drain deadline.
        assert d.wait_exit(timeout=30) == 0, d.stderr
    finally:
        s.close()
    assert "nanny: info: stopped" in d.lines


def test_second_sigterm_stops_at_once(nanny, services_dir):
    d = nanny.serve(services_dir)
    s = open_request_awaiting_body(d.port, "/rediscover", 100)
    try:
        start = len(d.lines)
        d.signal(signal.SIGTERM)
        d.wait_for_log("stopping", start=start, timeout=10)
        d.signal(signal.SIGTERM)
        assert d.wait_exit(timeout=10) == 0, d.stderr
    finally:
        s.close()


def test_sighup_then_sigterm(nanny, services_dir):
    for i in range(500):
        write_service(services_dir, f"s{i:03d}", manifest(f"s{i:03d}"))
    d = nanny.serve(services_dir)
    d.signal(signal.SIGHUP)
    d.signal(signal.SIGTERM)  # while the rescan may still run on its worker thread
    assert d.wait_exit() == 0, d.stderr


def test_stop_during_load(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    port = d.port

    def hammer(_):
        n = 0
        for _ in range(200):
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=10)
                c.request("GET", "/services")
                r = c.getresponse()
                body = r.read()
                assert r.status == 200 and body, (r.status, body[:100])
                n += 1
                c.close()
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected,
                    BrokenPipeError):
                break
        return n

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(hammer, i) for i in range(8)]
        wait_until(lambda: d.get("/health").status == 200, message="daemon up")
        d.signal(signal.SIGTERM)
        for f in futures:
            f.result(timeout=120)  # an AssertionError inside means a bad answer
    assert d.wait_exit() == 0, d.stderr


def test_sigterm_as_soon_as_the_port_accepts(nanny, services_dir):
    """The listening socket accepts connections (into its backlog) as soon as it exists;
    a SIGTERM from then on must be a clean stop, not death by the signal's default
    action. 5,000 services make the rest of the start-up take a while."""
    for i in range(5000):
        write_service(services_dir, f"s{i:04d}", manifest(f"s{i:04d}"))
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    d = nanny.spawn(["serve", "--listen", f"127.0.0.1:{port}", "--services", str(services_dir),
                     "--state-dir", str(services_dir.parent)])
    wait_until(lambda: not connect_refused(port) or d.proc.poll() is not None, timeout=30,
               interval=0.002, message="the port accepting connections")
    d.signal(signal.SIGTERM)
    rc = d.wait_exit()
    assert rc == 0, f"exit status {rc} (negative: killed by that signal); stderr:\n{d.stderr}"
    assert "nanny: info: stopped" in d.lines
