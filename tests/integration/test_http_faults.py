"""No request can stall the loop (issue 9, item 3): a hostile request must not keep the
daemon's loop from its timers, signals and child exits; idle connections close; one
client address cannot take every connection; a health probe reads a bounded body.

Each test here failed on the code before the fix: the loop spun on a 0 ms timer for 60 s
during a chunk-size line longer than libmicrohttpd's read buffer, idle connections were
held 60 s, one address could take all 1024 connections, and a health probe read an
endless body until its timeout."""

import os
import shutil
import signal
import socket
import sys
import textwrap
import time

import pytest

import bad_http_catalogue
from conftest import HOST, NannyFactory, free_port, wait_until, write_service
import lifecycle_helpers
from lifecycle_helpers import lab, start_answer  # noqa: F401 (lab is a fixture)

# A stuck connection must be closed long before libmicrohttpd's own 60 s.
PROMPT_CLOSE = 15.0
# The idle timeout is 10 s; the old code held an idle connection 60 s.
IDLE_CLOSE = 30.0

LONG_LINES = {
    "chunk-size-line": b"0" * 40000 + b"1\r\nx\r\n0\r\n\r\n",
    "chunk-extension": b"1;ext=" + b"e" * 40000 + b"\r\nx\r\n0\r\n\r\n",
}


def hostile_chunked(kind):
    return (b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n" + LONG_LINES[kind])


def wait_closed(sock, timeout):
    """Reads until the server hangs up; returns what it sent. Fails when it keeps the
    connection open longer than timeout seconds."""
    sock.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        except socket.timeout:
            pytest.fail(f"the daemon kept the connection open for {timeout}s", pytrace=False)
        if not chunk:
            return out
        out += chunk
        if time.monotonic() > deadline:
            pytest.fail("the daemon kept sending", pytrace=False)


def connect_from(source, port, timeout=10.0):
    """A TCP connection to the daemon from a given loopback source address."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((HOST, port))
    return s


def get_health_from(source, port, timeout=10.0):
    """GET /health from a source address; returns the status code."""
    with connect_from(source, port, timeout) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 "), out[:200]
    return int(out[9:12])


# --- the loop keeps running during a hostile request --------------------------------


@pytest.mark.parametrize("kind", list(LONG_LINES))
def test_long_chunk_line_does_not_stall_the_loop(lab, kind):
    """While a chunked request with a 40 KB chunk-size line (or extension) is in, a
    service killed with -9 is reported failed, and the connection is closed promptly."""
    a = lab.add("a", health=False, restart="no")
    d = lab.serve()
    start_answer(lab.start("a"), "a")
    lab.wait_state("a", "running")
    pid = a.wait_pidfile_pid()
    hostile = socket.create_connection((HOST, d.port), timeout=10)
    try:
        hostile.sendall(hostile_chunked(kind))
        time.sleep(0.3)  # let the daemon read it and get stuck, if it does
        os.kill(pid, signal.SIGKILL)
        lab.wait_state("a", "failed", timeout=5)
        wait_closed(hostile, PROMPT_CLOSE)
    finally:
        hostile.close()
    d.assert_healthy()
    # The timers still run: a new start goes through its steps.
    start_answer(lab.start("a"), "a")
    lab.wait_state("a", "running")


def test_sigterm_is_honoured_during_a_long_chunk_line(nanny, services_dir):
    d = nanny.serve(services_dir)
    hostile = socket.create_connection((HOST, d.port), timeout=10)
    try:
        hostile.sendall(hostile_chunked("chunk-size-line"))
        time.sleep(0.3)
        assert d.terminate(timeout=10) == 0
    finally:
        hostile.close()


def test_health_probes_run_during_long_chunk_lines(lab):
    """Timers: a service whose health check starts failing is seen unhealthy while hostile
    requests keep coming."""
    lab.add("a", ["--health", "flap", "--flap-period", "1500"])
    d = lab.serve()
    start_answer(lab.start("a", wait=True), "a", states="running")
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection((HOST, d.port), timeout=10)
            s.sendall(hostile_chunked("chunk-extension"))
            socks.append(s)
        lab.wait_state("a", "unhealthy", timeout=8)
        for s in socks:
            wait_closed(s, PROMPT_CLOSE)
    finally:
        for s in socks:
            s.close()
    d.assert_healthy()


# --- connections -----------------------------------------------------------------------


def test_idle_connection_is_closed_after_10s(daemon):
    """A connection that sends nothing is closed (10 s), not kept 60 s."""
    s = socket.create_connection((HOST, daemon.port), timeout=10)
    t0 = time.monotonic()
    try:
        assert wait_closed(s, IDLE_CLOSE) == b""
    finally:
        s.close()
    assert time.monotonic() - t0 >= 5, "closed at once: that is not an idle timeout"
    daemon.assert_healthy()


def test_idle_keepalive_connection_is_closed_too(daemon):
    s = socket.create_connection((HOST, daemon.port), timeout=10)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        out = wait_closed(s, IDLE_CLOSE)
    finally:
        s.close()
    assert out.startswith(b"HTTP/1.1 200"), out[:200]


def test_connections_per_client_are_capped(nanny, services_dir, workdir):
    cfg = workdir / "nanny.yaml"
    cfg.write_text("max_connections_per_client: 5\n")
    d = nanny.serve(services_dir, extra_args=["--config", str(cfg)])
    held = [connect_from("127.0.0.1", d.port) for _ in range(5)]
    try:
        # Let the daemon take them all before the one too many.
        for s in held:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        extra = connect_from("127.0.0.1", d.port)
        try:
            assert wait_closed(extra, PROMPT_CLOSE) == b""
        finally:
            extra.close()
        # Another address is served.
        assert get_health_from("127.0.0.2", d.port) == 200
        d.wait_for_log(r"127\.0\.0\.1 holds 5 connections \(max_connections_per_client\)")
    finally:
        for s in held:
            s.close()
    # Once they are gone, the address is served again (a connection made before the
    # daemon has seen the others close may still be refused).
    def served():
        try:
            return get_health_from("127.0.0.1", d.port) == 200
        except OSError:
            return False

    wait_until(served, timeout=5)


def test_per_client_cap_from_flag_and_environment(nanny, services_dir):
    for extra, env in ((["--max-connections-per-client", "3"], None),
                       ([], {"NANNY_MAX_CONNECTIONS_PER_CLIENT": "3"})):
        d = nanny.serve(services_dir, extra_args=extra, env=env)
        held = [connect_from("127.0.0.1", d.port) for _ in range(3)]
        try:
            for s in held:
                s.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(0.3)
            with connect_from("127.0.0.1", d.port) as extra_sock:
                assert wait_closed(extra_sock, PROMPT_CLOSE) == b""
        finally:
            for s in held:
                s.close()
        assert d.terminate() == 0


@pytest.mark.parametrize("value", ["0", "-1", "x", "65537"])
def test_bad_per_client_cap_is_refused(nanny, services_dir, value):
    rc, _, err = nanny.run(["serve", "--listen", "127.0.0.1:0", "--services", str(services_dir),
                            "--max-connections-per-client", value])
    assert rc != 0
    assert "--max-connections-per-client" in err, err


def open_many(source, port, count):
    """Opens count connections from source (connected, sending nothing); some may be
    closed by the daemon at once, which is fine."""
    socks = []
    for _ in range(count):
        try:
            socks.append(connect_from(source, port, timeout=5))
        except OSError:
            break
    return socks


@pytest.mark.parametrize("config", ["", "max_connections_per_client: 2000\n"])
def test_1100_idle_connections_from_one_address_leave_room_for_others(nanny, services_dir,
                                                                      workdir, config):
    """With the default cap, and with the cap raised past the connection limit (then the
    reserve keeps the last slots for addresses that hold few)."""
    args = []
    if config:
        cfg = workdir / "nanny.yaml"
        cfg.write_text(config)
        args = ["--config", str(cfg)]
    d = nanny.serve(services_dir, extra_args=args)
    socks = open_many("127.0.0.1", d.port, 1100)
    try:
        assert len(socks) > 1000
        for source in ("127.0.0.2", "127.0.0.3"):
            assert get_health_from(source, d.port) == 200
    finally:
        for s in socks:
            s.close()
    d.assert_healthy()


# --- health probes -------------------------------------------------------------------

ENDLESS_SERVER = textwrap.dedent("""\
    import socket, sys
    port, sent_file = int(sys.argv[1]), sys.argv[2]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    block = b"x" * 65536
    total = 0
    while True:
        c, _ = srv.accept()
        c.settimeout(30)
        try:
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n")
            while True:
                c.sendall(block)
                total += len(block)
        except OSError:
            pass
        c.close()
        with open(sent_file + ".tmp", "w") as f:
            f.write(str(total))
        import os
        os.replace(sent_file + ".tmp", sent_file)
""")


def test_health_probe_reads_a_bounded_body(lab, workdir):
    """A service whose /health sends 200 and a body that never ends: the probe reads
    64 KiB, ends, and counts as healthy; it does not read until its timeout."""
    script = workdir / "endless.py"
    script.write_text(ENDLESS_SERVER)
    sent = workdir / "sent"
    port = free_port()
    lab.add("a", health={"timeout": "3s", "interval": "1s"}, port=port,
            command=[sys.executable, str(script), str(port), str(sent)])
    lab.serve()
    r = lab.start("a", wait=True)
    assert r.status == 200, r
    s = lab.wait_state("a", "running")
    assert s["health"]["ok"] is True, s
    wait_until(lambda: sent.exists(), timeout=10)
    # What the server could write before the probe hung up: the 64 KiB read plus what
    # the socket buffers hold, far from the gigabytes of a read to the timeout.
    assert int(sent.read_text()) < 64 * 1024 * 1024, sent.read_text()
    assert lab.status("a")["health"]["latency_ms"] < 3000


# --- the catalogue of bad HTTP inputs (tests/integration/bad_http) ----------------------

CATALOGUE = bad_http_catalogue.cases()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """One daemon for the whole catalogue, running a service with a fast health check
    (its checked_at shows that the loop's timers run)."""
    root = tmp_path_factory.mktemp("bad_http")
    services = root / "services"
    services.mkdir()
    port = free_port()
    testsvc = lifecycle_helpers.testsvc_binary()
    write_service(services, "a", textwrap.dedent(f"""\
        name: a
        command: ["{testsvc}", "--port", "{port}"]
        ports: ["{port}"]
        health:
          path: /health
          interval: 100ms
          timeout: 1s
        """))
    factory = NannyFactory(root)
    try:
        d = factory.serve(services)
        r = d.post("/services/a/start?wait=healthy", timeout=30)
        assert r.status == 200, r
        yield d
        d.post("/services/a/stop", timeout=30)
    finally:
        factory.close()
        shutil.rmtree(root, ignore_errors=True)


def test_the_catalogue_has_at_least_60_cases():
    assert len(CATALOGUE) >= 60
    assert len({c.name for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_bad_http(target, case):
    """The daemon answers with the expected status, or closes the connection where that
    is expected, promptly; then it still answers, takes a signal and runs its timers."""
    got = bad_http_catalogue.exchange(HOST, target.port, case, PROMPT_CLOSE)
    assert got in case.expect, f"{case.name}: expected {sorted(map(str, case.expect))}, got {got}"
    target.assert_healthy()
    # Signals reach the loop: SIGHUP rescans and says so.
    start = len(target.lines)
    target.signal(signal.SIGHUP)
    target.wait_for_log(r"SIGHUP: rescanning", timeout=5, start=start)
    # Timers run: the health check of the service goes on.
    before = target.get_json("/services/a/status")["health"]["checked_at"]
    wait_until(lambda: target.get_json("/services/a/status")["health"]["checked_at"] != before,
               timeout=5, message="a new health check")
