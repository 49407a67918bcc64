"""Bad input and limits: body cap (413), path tricks, long URLs and headers, malformed
HTTP, many concurrent clients and slow clients. Nothing a client sends may crash the
daemon, make it block, or go unanswered; every error is JSON."""

import concurrent.futures
import json
import re
import socket
import threading

import pytest

from conftest import (HOST, assert_json_error, free_port, http_request, manifest,
                      parse_raw_response, raw_exchange, write_service)

BODY_MAX = 64 * 1024
ANSWER_TIMEOUT = 10.0  # a request the daemon must answer gets this long


@pytest.fixture
def app(nanny, services_dir):
    write_service(services_dir, "a", manifest("a", port=free_port()))
    return nanny.serve(services_dir)


def raw_answer(port, data, timeout=ANSWER_TIMEOUT, **kw):
    """The daemon's answer to raw bytes; fails when it gives none in time."""
    try:
        out = raw_exchange(port, data, timeout=timeout, **kw)
    except socket.timeout:
        pytest.fail(f"no answer within {timeout}s to {data[:120]!r}...", pytrace=False)
    assert out, f"the daemon hung up without answering {data[:120]!r}..."
    return parse_raw_response(out)


def chunked(payload, size=8192):
    out = b""
    for i in range(0, len(payload), size):
        part = payload[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


# --- body cap ----------------------------------------------------------------


def test_body_of_exactly_64k_is_read(app):
    body = b'{"force":true}' + b" " * (BODY_MAX - 14)
    assert len(body) == BODY_MAX
    assert app.post("/services/a/start", body=body).status == 200
    bad = b'{"force":1}' + b" " * (BODY_MAX - 11)
    assert_json_error(app.post("/services/a/start", body=bad), 400, "bad_request")


@pytest.mark.parametrize("path", ["/services/a/start", "/services/a/restart",
                                  "/services/a/stop", "/rediscover", "/services/nope/start"])
def test_body_over_64k_with_content_length_is_413(app, path):
    body = b" " * (BODY_MAX + 1)
    assert_json_error(app.post(path, body=body), 413, "body_too_large")
    # Larger bodies: the daemon may answer and hang up before the client has sent it all,
    # so send it raw, ignoring a broken pipe, and read the answer.
    for size in (1024 * 1024, 4 * 1024 * 1024):
        req = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n" % size + b"x" * size)
        status, headers, out = raw_answer(app.port, req)
        assert status == 413, (size, out)
        assert headers.get("content-type") == "application/json"
        assert b"body_too_large" in out
    app.assert_healthy()


def test_chunked_body_over_64k_is_413(app):
    payload = b'{"force":true}' + b" " * BODY_MAX
    req = (b"POST /services/a/start HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Type: application/json\r\nConnection: close\r\n\r\n" + chunked(payload))
    status, headers, body = raw_answer(app.port, req)
    assert status == 413
    assert headers.get("content-type") == "application/json"
    assert b"body_too_large" in body
    app.assert_healthy()


def test_chunked_body_within_cap_is_read(app):
    payload = b'{"force":true}' + b" " * (BODY_MAX - 14)
    req = (b"POST /services/a/start HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + chunked(payload))
    status, _, body = raw_answer(app.port, req)
    assert status == 200, body


def test_huge_declared_content_length_is_413_without_sending_it(app):
    for length in (b"70000", b"10000000000", b"18446744073709551615"):
        req = (b"POST /services/a/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length +
               b"\r\nConnection: close\r\n\r\n")
        status, headers, body = raw_answer(app.port, req)
        assert status == 413, (length, body)
        assert headers.get("content-type") == "application/json", (length, headers, body)
    app.assert_healthy()


def test_endless_chunked_body_is_cut_off(app):
    """A client streaming megabytes past the cap is answered 413 or hung up on; either
    way it does not tie the daemon up."""
    payload = chunked(b" " * (4 * 1024 * 1024), size=65536)
    req = (b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + payload)
    try:
        out = raw_exchange(app.port, req, timeout=ANSWER_TIMEOUT)
    except socket.timeout:
        pytest.fail("the daemon neither answered nor hung up on an endless body")
    if out:
        assert parse_raw_response(out)[0] == 413
    app.assert_healthy()


def test_many_oversized_bodies_in_parallel(app):
    def one(_):
        return http_request(app.port, "POST", "/services/a/start", body=b"{" * (BODY_MAX + 10))

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(30), timeout=60))
    for r in results:
        assert_json_error(r, 413, "body_too_large")
    app.assert_healthy()


# --- path tricks and long requests ---------------------------------------------


@pytest.mark.parametrize("path", [
    "/services/..%2F..%2Fetc/status",
    "/services/..%2F..%2Fetc%2Fpasswd",
    "/services/%2e%2e%2f%2e%2e%2fetc/status",
    "/services/../../etc/passwd",
    "/../../../etc/passwd",
    "/services/a/../../health/x",
    "/services/%2fetc%2fpasswd/status",
    "/services/a%5c..%5c/status",
    "/services/" + "a" * 64 + "/status",
    "/services/" + "b" * 1000 + "/status",
    "/services/" + "c" * 20000 + "/start",
    "/services/%ff%fe/status",
    "/services/%c0%ae%c0%ae/status",
    "/services/a%0d%0aX-Injected:%20yes/status",
])
def test_path_tricks_are_4xx_and_harmless(app, path):
    r = app.get(path)
    assert 400 <= r.status < 500, r
    assert r.headers.get("X-Injected") is None
    assert_json_error(r, r.status)
    app.assert_healthy()


@pytest.mark.parametrize("path", [
    "/services/a%00evil/status",
    "/services/a%00/status",
    "/services/a%00",
    "/services/%00a/status",
    "/services/a%00/start",
])
def test_nul_in_name_is_rejected_not_truncated(app, path):
    """A name with a NUL byte must not be read as the name before it ('a')."""
    method = "POST" if path.endswith("/start") else "GET"
    r = app.request(method, path)
    assert 400 <= r.status < 500, f"{path}: the NUL cut the name short: {r!r}"
    assert_json_error(r, r.status)
    app.assert_healthy()


@pytest.mark.parametrize("size", [40 * 1024, 200 * 1024, 1024 * 1024])
def test_very_long_url_is_4xx(app, size):
    req = b"GET /services/" + b"a" * size + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    status, _, _ = raw_answer(app.port, req)
    assert 400 <= status < 500, status
    app.assert_healthy()


@pytest.mark.parametrize("kind", ["one-huge-header", "many-headers"])
def test_huge_headers_are_4xx(app, kind):
    if kind == "one-huge-header":
        extra = b"X-Big: " + b"a" * (256 * 1024) + b"\r\n"
    else:
        extra = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(5000))
    req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"Connection: close\r\n\r\n"
    status, _, _ = raw_answer(app.port, req)
    assert 400 <= status < 500, status
    app.assert_healthy()


OVERSIZED_OR_MALFORMED = {
    "long-url": b"GET /services/" + b"a" * (64 * 1024) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Connection: close\r\n\r\n",
    "huge-header": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (64 * 1024) +
                   b"\r\nConnection: close\r\n\r\n",
    "bad-content-length": b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n"
                          b"Connection: close\r\n\r\n",
    "negative-content-length": b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5"
                               b"\r\nConnection: close\r\n\r\n",
    "bad-chunk-size": b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked"
                      b"\r\nConnection: close\r\n\r\nzz\r\n",
    "header-without-colon": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nthis is not a header\r\n"
                            b"Connection: close\r\n\r\n",
    "http-2-version": b"GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
}


# libmicrohttpd answers these itself, before any handler of ours runs; with Debian 12's
# 0.9.75 it sends a fixed HTML body that cannot be replaced. The status must be right and
# the daemon unharmed (test below); the body being JSON is a known gap, kept as a strict
# xfail so that it turns red the day the library lets us fix it.
PROTOCOL_ERROR_STATUS = {
    "long-url": (414,),
    "huge-header": (431,),
    "bad-content-length": (400,),
    "negative-content-length": (400,),
    "bad-chunk-size": (400,),
    "header-without-colon": (400,),
    "http-2-version": (505,),
}


@pytest.mark.parametrize("kind", list(OVERSIZED_OR_MALFORMED))
def test_protocol_errors_get_the_right_status(app, kind):
    out = raw_exchange(app.port, OVERSIZED_OR_MALFORMED[kind], timeout=ANSWER_TIMEOUT)
    status, _, _ = parse_raw_response(out)
    assert status in PROTOCOL_ERROR_STATUS[kind], status
    app.assert_healthy()


@pytest.mark.xfail(strict=True, reason="libmicrohttpd 0.9.75 answers protocol errors itself "
                                       "with a fixed HTML body")
@pytest.mark.parametrize("kind", list(OVERSIZED_OR_MALFORMED))
def test_protocol_errors_are_answered_with_json(app, kind):
    """SPEC section 3: every error is JSON, never HTML, never empty -- also the ones
    the HTTP layer produces before a handler runs."""
    out = raw_exchange(app.port, OVERSIZED_OR_MALFORMED[kind], timeout=ANSWER_TIMEOUT)
    status, headers, body = parse_raw_response(out)
    assert 400 <= status < 600, status
    rest = out.partition(b"\r\n\r\n")[2][len(body):]
    assert rest == b"", f"more than one response or trailing bytes: {out[:600]!r}"
    assert headers.get("content-type") == "application/json", f"{headers} {body[:200]!r}"
    doc = json.loads(body)
    assert isinstance(doc.get("error"), str) and isinstance(doc.get("message"), str), doc
    app.assert_healthy()


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="libmicrohttpd 0.9.75 has no room left in the connection's pool to "
                          "write the answer's head")
def test_a_head_just_under_the_limit_is_answered(app):
    """A request head up to the connection's 32 KiB gets an answer, whatever its size: its
    own (200), or 431 once the head and libmicrohttpd's records of it fill the pool. A
    head about 100 bytes short of that is read, and handled, but its answer is never sent
    (the window moves with the answer's own headers: a range is tried). Only that silence
    is the expected failure: a hang, another status or a hurt daemon fail."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: %s\r\nConnection: close\r\n\r\n"
    fixed = len(head % b"")
    silent = []
    for size in range(32 * 1024 - 600, 32 * 1024 - fixed + 1, 25):
        try:
            out = raw_exchange(app.port, head % (b"a" * size), timeout=ANSWER_TIMEOUT)
        except socket.timeout:
            pytest.fail(f"a head with an X-Pad of {size} bytes: no answer and no close",
                        pytrace=False)
        if not out:
            silent.append(size)
            continue
        status, _, _ = parse_raw_response(out)
        if status not in (200, 431):
            pytest.fail(f"a head with an X-Pad of {size} bytes: {status}", pytrace=False)
    try:
        app.assert_healthy()
    except AssertionError as e:
        pytest.fail(f"the daemon is hurt: {e}", pytrace=False)
    assert not silent, f"no answer to a head with an X-Pad of {silent} bytes"


def test_unsupported_transfer_encoding_is_answered(app):
    """RFC 9112 6.1: a request with a transfer coding the server does not know gets 501
    (or 400) -- not silence until the idle timeout."""
    req = (b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n"
           b"Connection: close\r\n\r\n")
    status, _, _ = raw_answer(app.port, req)
    assert status in (400, 501), status
    app.assert_healthy()


def test_a_hundred_query_parameters_are_fine(app):
    req = (b"GET /health?" + b"a=b&" * 100 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Connection: close\r\n\r\n")
    status, _, _ = raw_answer(app.port, req)
    assert status == 200
    app.assert_healthy()


@pytest.mark.parametrize("count", [500, 1000, 3000])
def test_many_query_parameters_never_hang(app, count):
    """Past about 400 parameters libmicrohttpd 0.9.75 runs out of its per-connection
    memory and closes the connection; it must do so at once, not at the idle timeout."""
    req = (b"GET /health?" + b"a=b&" * count + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Connection: close\r\n\r\n")
    try:
        out = raw_exchange(app.port, req, timeout=ANSWER_TIMEOUT)
    except socket.timeout:
        pytest.fail(f"no answer and no hang-up within {ANSWER_TIMEOUT}s")
    if out:
        status, _, _ = parse_raw_response(out)
        assert status == 200 or 400 <= status < 500, status
    app.assert_healthy()


@pytest.mark.xfail(strict=True, reason="libmicrohttpd 0.9.75 cannot build an answer once a "
                                       "connection's memory is spent; it hangs up")
@pytest.mark.parametrize("count", [500, 3000])
def test_many_query_parameters_are_answered(app, count):
    """A query string of COUNT parameters (4 bytes each) gets an answer, 200 or 4xx."""
    req = (b"GET /health?" + b"a=b&" * count + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Connection: close\r\n\r\n")
    status, _, _ = raw_answer(app.port, req)
    assert status == 200 or 400 <= status < 500, status
    app.assert_healthy()


def test_long_query_value_is_answered(app):
    r = app.get("/services/a/logs?tail=" + "9" * 20000)
    assert_json_error(r, 400, "bad_request")
    r = app.get("/health?x=" + "y" * 20000)
    assert r.status == 200


def test_garbage_does_not_hurt(app):
    for junk in (b"GARBAGE\r\n\r\n", b"\x00\x01\x02\xff" * 100, b"\r\n" * 1000,
                 b"GET\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"Host: 127.0.0.1\r\n" * 10 + b"\r\n",
                 bytes(range(256)) * 50):
        try:
            raw_exchange(app.port, junk, timeout=2, shutdown_write=True)
        except socket.timeout:
            pass  # an unfinished request may wait for more; it must not block others
        app.assert_healthy()


def test_pipelined_requests_are_all_answered(app):
    req = (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
           b"GET /services/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
           b"POST /services/a/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
           b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    out = raw_exchange(app.port, req, timeout=ANSWER_TIMEOUT)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert statuses == [200, 200, 200, 404], out[:1000]


# --- many clients ----------------------------------------------------------------


def test_200_requests_from_20_threads(app):
    plan = [
        ("GET", "/health", None, 200),
        ("GET", "/services", None, 200),
        ("GET", "/services/a", None, 200),
        ("GET", "/services/a/status", None, 200),
        ("GET", "/services/nope", None, 404),
        ("POST", "/services/a/start", "{", 400),
        ("POST", "/services/a/start", '{"force":true}', 200),
        ("DELETE", "/services", None, 405),
        ("POST", "/rediscover", None, 200),
        ("GET", "/services/a/logs?tail=x", None, 400),
    ]

    def one(i):
        method, path, body, want = plan[i % len(plan)]
        r = http_request(app.port, method, path, body=body, timeout=30)
        return i, want, r

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(200), timeout=120))
    assert len(results) == 200
    for i, want, r in results:
        assert r.status == want, (plan[i % len(plan)], r)
        assert r.content_type == "application/json"
        r.json()
    app.assert_healthy()


def test_concurrent_rediscover_requests(app, services_dir):
    def one(i):
        return http_request(app.port, "POST", "/rediscover", timeout=30)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(40), timeout=120))
    for r in results:
        assert r.status == 200, r
        assert [s["name"] for s in r.json()["services"]] == ["a"]


def test_slow_client_does_not_block_others(app):
    """A client that sends half a request and waits must not stall the others."""
    slow = socket.create_connection((HOST, app.port), timeout=ANSWER_TIMEOUT)
    try:
        slow.sendall(b"GET /services/a HTTP/1.1\r\nHo")
        for _ in range(5):
            app.assert_healthy()
        # The slow request still gets its answer when it completes.
        slow.sendall(b"st: 127.0.0.1\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = slow.recv(65536)
            if not chunk:
                break
            out += chunk
        assert parse_raw_response(out)[0] == 200
    finally:
        slow.close()


def test_half_sent_body_does_not_block_others(app):
    slow = socket.create_connection((HOST, app.port), timeout=ANSWER_TIMEOUT)
    try:
        slow.sendall(b"POST /services/a/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 14\r\n"
                     b"Connection: close\r\n\r\n{\"for")
        for _ in range(5):
            app.assert_healthy()
        slow.sendall(b'ce":true}')
        out = b""
        while True:
            chunk = slow.recv(65536)
            if not chunk:
                break
            out += chunk
        assert parse_raw_response(out)[0] == 200
    finally:
        slow.close()


def test_many_idle_connections_do_not_block_others(app):
    socks = []
    try:
        for i in range(200):
            s = socket.create_connection((HOST, app.port), timeout=ANSWER_TIMEOUT)
            if i % 2:
                s.sendall(b"GET /health HTTP/1.1\r\n")  # never finished
            socks.append(s)
        for _ in range(5):
            app.assert_healthy()
    finally:
        for s in socks:
            s.close()
    app.assert_healthy()


def test_client_that_hangs_up_early_does_no_harm(app):
    for _ in range(50):
        s = socket.create_connection((HOST, app.port), timeout=5)
        s.sendall(b"GET /services HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.close()
        s = socket.create_connection((HOST, app.port), timeout=5)
        s.sendall(b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    app.assert_healthy()
    assert app.service_names() == ["a"]


def test_requests_during_rescans(app, services_dir):
    """Readers keep getting consistent answers while the folder changes under them."""
    stop = threading.Event()
    errors = []

    def reader():
        while not stop.is_set():
            try:
                r = http_request(app.port, "GET", "/services", timeout=30)
                if r.status != 200:
                    errors.append(r)
                else:
                    r.json()
            except Exception as e:  # noqa: BLE001 - any failure counts
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            write_service(services_dir, f"churn-{i}", manifest(f"churn-{i}"))
            http_request(app.port, "POST", "/rediscover", timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:5]
    assert len(app.service_names()) == 31


def test_accepts_again_after_hitting_its_connection_limit(nanny, services_dir):
    """With few file descriptors the daemon takes few connections; once a crowd of
    clients that filled them all leaves at once, new clients are served again (the
    server must not stay deaf with its listening socket parked)."""
    import shutil as _shutil
    from conftest import Daemon, clean_env, nanny_binary, HOST

    prlimit = _shutil.which("prlimit")
    assert prlimit, "prlimit (util-linux) is needed for this test"
    write_service(services_dir, "a", manifest("a", port=free_port()))
    state = services_dir.parent / "state"
    state.mkdir(exist_ok=True)
    d = Daemon([prlimit, "--nofile=64:64", nanny_binary(), "serve", "--listen", "127.0.0.1:0",
                "--services", str(services_dir), "--state-dir", str(state)], clean_env())
    nanny.daemons.append(d)
    d.wait_listening()
    for _ in range(3):
        crowd = []
        for _ in range(80):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect((HOST, d.port))
            except OSError:
                s.close()
                continue
            crowd.append(s)
        for s in crowd:
            s.close()
        d.assert_healthy()
