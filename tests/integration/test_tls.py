"""HTTPS on the daemon's listener (--tls-cert/--tls-key): verified by curl and Python with
a CA the test makes with Debian's openssl; keep-alive, suspended requests, bodies and slow
clients over TLS; a certificate and key that do not belong together, missing or garbage
files refused at start with the file named; SIGHUP swaps in a new certificate for new
connections while the open ones go on, and a reload that fails keeps the old one."""

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import HOST, free_port, http_request, manifest, raw_exchange, write_service

ANSWER_TIMEOUT = 10.0
PROMPT_CLOSE = 15.0  # a stuck connection is closed long before libmicrohttpd's 60 s
IDLE_CLOSE = 30.0  # the idle timeout is 10 s

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="needs the openssl command (Debian: openssl)")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


class Pki:
    """A CA and two server certificates it signed, for 127.0.0.1 and localhost: "one"
    (an EC key, serial 0x1001) and "two" (an RSA key, serial 0x2002)."""

    def __init__(self, root):
        self.root = root
        self.ca = str(root / "ca.pem")
        ca_key = str(root / "ca.key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2",
                "-subj", "/CN=nanny test CA")
        ext = root / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        self.serials = {}
        for name, serial, newkey in (("one", 0x1001, ["ec", "-pkeyopt",
                                                      "ec_paramgen_curve:P-256"]),
                                     ("two", 0x2002, ["rsa:2048"])):
            key, csr, cert = (str(root / f"{name}.{ext_}") for ext_ in ("key", "csr", "pem"))
            openssl("req", "-newkey", *newkey, "-nodes", "-keyout", key, "-out", csr,
                    "-subj", f"/CN=nanny-{name}")
            openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key,
                    "-set_serial", str(serial), "-days", "2", "-extfile", str(ext),
                    "-out", cert)
            self.serials[name] = serial

    def cert(self, name):
        return str(self.root / f"{name}.pem")

    def key(self, name):
        return str(self.root / f"{name}.key")

    def context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        return ctx


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def install(pki, name, folder):
    """Copies certificate and key `name` to folder/server.pem and folder/server.key, each
    replaced in one rename (what a certificate renewal does)."""
    cert, key = str(folder / "server.pem"), str(folder / "server.key")
    for src, dst in ((pki.cert(name), cert), (pki.key(name), key)):
        shutil.copyfile(src, dst + ".new")
        os.chmod(dst + ".new", 0o600)
        os.replace(dst + ".new", dst)
    return cert, key


def serve_tls(nanny, services_dir, pki, cert, key, **kw):
    return nanny.serve(services_dir, extra_args=["--tls-cert", cert, "--tls-key", key],
                       ssl_context=pki.context(), **kw)


def peer_serial(sock):
    """The serial number of the certificate the server showed on this TLS socket."""
    return int(sock.getpeercert()["serialNumber"], 16)


def open_connection(pki, port):
    conn = http.client.HTTPSConnection(HOST, port, timeout=ANSWER_TIMEOUT,
                                       context=pki.context())
    conn.connect()
    return conn


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


@pytest.fixture
def tls_daemon(nanny, services_dir, pki, tmp_path):
    cert, key = install(pki, "one", tmp_path)
    return serve_tls(nanny, services_dir, pki, cert, key)


# --- serving ------------------------------------------------------------------------


def test_listening_line_says_https(tls_daemon):
    assert any(f"listening on https://127.0.0.1:{tls_daemon.port}" in line
               for line in tls_daemon.lines), tls_daemon.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_verifies_the_certificate_with_the_ca(tls_daemon, pki, tmp_path):
    url = f"https://127.0.0.1:{tls_daemon.port}/health"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    ok = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", pki.ca, url],
                        capture_output=True, text=True, timeout=30, env=env)
    assert ok.returncode == 0, ok.stderr
    assert '"status":"ok"' in ok.stdout, ok.stdout
    by_name = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", pki.ca, "--resolve",
         f"localhost:{tls_daemon.port}:127.0.0.1",
         f"https://localhost:{tls_daemon.port}/health"],
        capture_output=True, text=True, timeout=30, env=env)
    assert by_name.returncode == 0, by_name.stderr
    # Without our CA, the certificate is not trusted (curl: 60, peer certificate).
    untrusted = subprocess.run(["curl", "-sS", "--max-time", "10", url],
                               capture_output=True, text=True, timeout=30, env=env)
    assert untrusted.returncode == 60, (untrusted.returncode, untrusted.stderr)
    assert untrusted.stdout == ""
    tls_daemon.assert_healthy()


def test_plain_http_on_the_tls_port_gets_no_answer(tls_daemon):
    out = raw_exchange(tls_daemon.port,
                       b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                       timeout=ANSWER_TIMEOUT)
    assert b"HTTP/1." not in out and b'"status"' not in out, out[:300]
    tls_daemon.assert_healthy()


def test_two_requests_on_one_tls_connection(tls_daemon, pki):
    conn = open_connection(pki, tls_daemon.port)
    try:
        sock = conn.sock
        assert peer_serial(sock) == pki.serials["one"]
        assert get(conn, "/health")[0] == 200
        assert get(conn, "/services")[0] == 200
        assert conn.sock is sock, "the second request needed a new connection"
    finally:
        conn.close()


def test_suspended_requests_and_bodies_over_tls(nanny, services_dir, pki, tmp_path):
    """POST /rediscover is answered after a suspend; a 64 KiB body is read in full, a
    larger one refused: all over one kept-alive TLS connection, and from 20 threads."""
    write_service(services_dir, "a", manifest("a", port=free_port()))
    cert, key = install(pki, "one", tmp_path)
    d = serve_tls(nanny, services_dir, pki, cert, key)
    conn = open_connection(pki, d.port)
    try:
        sock = conn.sock
        for _ in range(3):
            conn.request("POST", "/rediscover")
            r = conn.getresponse()
            assert r.status == 200, r.read()
            assert [s["name"] for s in json.loads(r.read())["services"]] == ["a"]
        conn.request("POST", "/services/nope/start", body=b" " * (64 * 1024))
        r = conn.getresponse()
        assert r.status == 404, r.read()
        r.read()
        assert conn.sock is sock
    finally:
        conn.close()
    # A larger body is refused from its Content-Length (and the connection closed: a
    # client still sending it over TLS would see the close, not the answer).
    raw = socket.create_connection((HOST, d.port), timeout=ANSWER_TIMEOUT)
    with pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"POST /services/nope/start HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Length: 65537\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 413 "), "no 413"

    def one(i):
        path = ["/health", "/services", "/services/a"][i % 3]
        if i % 4 == 0:
            return http_request(d.port, "POST", "/rediscover", timeout=30,
                                ssl_context=pki.context()).status
        return http_request(d.port, "GET", path, timeout=30, ssl_context=pki.context()).status

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(200), timeout=120))
    assert statuses == [200] * 200
    d.assert_healthy()


def test_slow_tls_client_is_not_cut_and_does_not_block_others(tls_daemon, pki):
    """A TLS client that sends half a request and waits is answered when it completes;
    the others are served meanwhile (the daemon's stuck-connection search reads the
    socket's unread bytes, which with TLS are records not yet decrypted)."""
    raw = socket.create_connection((HOST, tls_daemon.port), timeout=ANSWER_TIMEOUT)
    slow = pki.context().wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        slow.sendall(b"GET /services HTTP/1.1\r\nHo")
        for _ in range(5):
            tls_daemon.assert_healthy()
        time.sleep(1.5)  # past the stuck-connection timeout, were it given one
        for _ in range(5):
            tls_daemon.assert_healthy()
        slow.sendall(b"st: 127.0.0.1\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            chunk = slow.recv(65536)
            if not chunk:
                break
            out += chunk
        assert out.startswith(b"HTTP/1.1 200"), out[:200]
    finally:
        slow.close()


def test_long_chunk_line_over_tls_is_closed_promptly(tls_daemon, pki):
    """The stuck-connection rule works through TLS too: a 40 KB chunk-size line is
    closed long before libmicrohttpd's own timeout, and others are served meanwhile."""
    raw = socket.create_connection((HOST, tls_daemon.port), timeout=ANSWER_TIMEOUT)
    hostile = pki.context().wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        hostile.sendall(b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + b"0" * 40000 +
                        b"1\r\nx\r\n0\r\n\r\n")
        tls_daemon.assert_healthy()
        hostile.settimeout(PROMPT_CLOSE)
        started = time.monotonic()
        while True:
            try:
                chunk = hostile.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            except socket.timeout:
                pytest.fail(f"the daemon kept the connection open for {PROMPT_CLOSE}s",
                            pytrace=False)
            if not chunk:
                break
            assert time.monotonic() - started < PROMPT_CLOSE, "the daemon kept sending"
    finally:
        hostile.close()
    tls_daemon.assert_healthy()


def test_a_handshake_that_never_completes_is_closed(tls_daemon):
    """A client that connects and sends half a TLS record, then nothing, is closed by the
    idle timeout (10 s), as a plain one is; others are served meanwhile."""
    with socket.create_connection((HOST, tls_daemon.port), timeout=ANSWER_TIMEOUT) as s:
        s.sendall(b"\x16\x03\x01")  # the start of a handshake record's header
        tls_daemon.assert_healthy()
        s.settimeout(IDLE_CLOSE)
        started = time.monotonic()
        out = b""
        while True:  # at most a TLS alert (0x15), then the end
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                pytest.fail(f"the daemon kept a stalled handshake open for {IDLE_CLOSE}s",
                            pytrace=False)
            if not chunk:
                break
            out += chunk
            assert time.monotonic() - started < IDLE_CLOSE, "the daemon kept sending"
        assert out == b"" or out[:1] == b"\x15", out[:100]
    tls_daemon.assert_healthy()


# --- refused at start ------------------------------------------------------------


def run_serve(nanny, services_dir, tmp_path, cert, key):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return nanny.run(["serve", "--listen", "127.0.0.1:0", "--services", str(services_dir),
                      "--state-dir", str(state), "--tls-cert", cert, "--tls-key", key])


def test_a_key_that_does_not_match_refuses_to_start(nanny, services_dir, pki, tmp_path):
    rc, _, err = run_serve(nanny, services_dir, tmp_path, pki.cert("one"), pki.key("two"))
    assert rc == 2, err
    assert "does not match" in err, err
    assert pki.cert("one") in err and pki.key("two") in err, err
    assert "listening on" not in err


# case: which file is bad ("cert" or "key") and what it holds.
UNUSABLE = {
    "missing cert": ("cert", None),
    "missing key": ("key", None),
    "garbage cert": ("cert", b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                             b"-----END CERTIFICATE-----\n" + bytes(range(256))),
    "garbage key": ("key", b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n"),
    "empty cert": ("cert", b""),
    "key as cert": ("cert", "key"),
    "cert as key": ("key", "cert"),
    "folder as key": ("key", "folder"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_files_refuse_to_start(nanny, services_dir, pki, tmp_path, case):
    which, content = UNUSABLE[case]
    bad = tmp_path / "bad.pem"
    if content is None:
        pass  # missing
    elif content == "key":
        bad.write_bytes(open(pki.key("one"), "rb").read())
    elif content == "cert":
        bad.write_bytes(open(pki.cert("one"), "rb").read())
    elif content == "folder":
        bad = tmp_path / "a-folder"
        bad.mkdir()
    else:
        bad.write_bytes(content)
    cert = str(bad) if which == "cert" else pki.cert("one")
    key = str(bad) if which == "key" else pki.key("one")
    rc, _, err = run_serve(nanny, services_dir, tmp_path, cert, key)
    assert rc == 2, err
    assert f"TLS {'certificate' if which == 'cert' else 'key'} {bad}" in err, err
    if content is None:
        assert "No such file or directory" in err, err
    assert "listening on" not in err


# --- reload on SIGHUP -------------------------------------------------------------


def hangup(d):
    """Sends SIGHUP; returns the log line the TLS reload wrote."""
    start = len(d.lines)
    d.signal(signal.SIGHUP)
    return d.wait_for_log(r"SIGHUP: (reloaded the TLS certificate.*|TLS .*)", start=start).group(0)


def test_sighup_serves_a_new_certificate_and_keeps_open_connections(nanny, services_dir, pki,
                                                                     tmp_path):
    cert, key = install(pki, "one", tmp_path)
    d = serve_tls(nanny, services_dir, pki, cert, key)
    before = open_connection(pki, d.port)
    try:
        assert get(before, "/health")[0] == 200
        assert peer_serial(before.sock) == pki.serials["one"]
        install(pki, "two", tmp_path)
        line = hangup(d)
        assert "reloaded the TLS certificate" in line and "nanny-two" in line, line
        after = open_connection(pki, d.port)
        try:
            assert peer_serial(after.sock) == pki.serials["two"]
            assert get(after, "/health")[0] == 200
        finally:
            after.close()
        # The connection opened before goes on, with the certificate it had.
        sock = before.sock
        assert get(before, "/services")[0] == 200
        assert before.sock is sock
        assert peer_serial(sock) == pki.serials["one"]
        # And back again: the first pair, reloaded a second time.
        install(pki, "one", tmp_path)
        assert "reloaded the TLS certificate" in hangup(d)
        assert get(before, "/health")[0] == 200
    finally:
        before.close()
    with socket.create_connection((HOST, d.port), timeout=ANSWER_TIMEOUT) as raw:
        with pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert peer_serial(s) == pki.serials["one"]
    d.assert_healthy()


@pytest.mark.parametrize("case", ["garbage cert", "missing key", "mismatched pair"])
def test_a_failed_reload_keeps_the_old_certificate(nanny, services_dir, pki, tmp_path, case):
    cert, key = install(pki, "one", tmp_path)
    d = serve_tls(nanny, services_dir, pki, cert, key)
    if case == "garbage cert":
        with open(cert, "wb") as f:
            f.write(b"garbage\n")
    elif case == "missing key":
        os.unlink(key)
    else:
        shutil.copyfile(pki.cert("two"), cert)
    line = hangup(d)
    assert "reloaded" not in line, line
    named = cert if case == "garbage cert" else key
    assert named in line, line
    if case == "mismatched pair":
        assert "does not match" in line and cert in line, line
    assert any("still serving the certificate loaded before" in x for x in d.lines), d.stderr
    conn = open_connection(pki, d.port)
    try:
        assert peer_serial(conn.sock) == pki.serials["one"]
        assert get(conn, "/health")[0] == 200
    finally:
        conn.close()
    # A good pair afterwards is taken.
    install(pki, "two", tmp_path)
    assert "reloaded the TLS certificate" in hangup(d)
    conn = open_connection(pki, d.port)
    try:
        assert peer_serial(conn.sock) == pki.serials["two"]
    finally:
        conn.close()


def test_a_websocket_over_the_daemons_own_https_is_refused_501(nanny, services_dir, pki,
                                                               tmp_path):
    """Under the daemon's own TLS, libmicrohttpd 0.9.75 relays a handed-over connection's
    bytes 4 at a time (its 8-byte emergency buffer: the 101's write buffer took the
    connection's whole memory pool): a WebSocket is refused there (501, saying to terminate
    TLS in front), not served badly; the service is not even started."""
    from test_proxy import PYTHON, UPSTREAM, WebSocket
    port = free_port()
    write_service(services_dir, "web",
                  f"name: web\nports: [\"{port}\"]\nhealth: {{path: /health}}\n"
                  f"command: [\"{PYTHON}\", \"{UPSTREAM}\", \"--port\", \"{port}\", "
                  f"\"--tag\", \"{tmp_path}\"]\n")
    cert, key = install(pki, "one", tmp_path)
    d = serve_tls(nanny, services_dir, pki, cert, key)
    raw = socket.create_connection((HOST, d.port), timeout=ANSWER_TIMEOUT)
    sock = pki.context().wrap_socket(raw, server_hostname=HOST)
    ws = WebSocket(d.port, "/s/web/ws", sock=sock, timeout=ANSWER_TIMEOUT)
    assert ws.status == 501, (ws.status, ws.buf)
    assert json.loads(ws.buf)["error"] == "upgrade_not_supported", ws.buf
    ws.close()
    r = d.get("/services/web", timeout=ANSWER_TIMEOUT)
    assert r.status == 200 and r.json()["state"] == "stopped", r
