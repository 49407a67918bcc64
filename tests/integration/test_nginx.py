"""The daemon behind a real nginx (issue 10, item 7; SPEC section 6): the shipped
deploy/nginx.conf and deploy/nanny-behind-nginx.yaml, run as they are but for what a
person edits (the certificate's two lines) and what a test must change (ports on
127.0.0.1, the upstream's port, no IPv6 listen, files in the test's folder).

nginx terminates TLS with a certificate the test makes (openssl: a CA and a server
certificate for 127.0.0.1 and nanny.example.com) and passes requests to the daemon on
loopback, whose trusted_proxies is nginx's address. Clients talk to nginx from other
loopback addresses (127.0.0.2, 127.0.0.3...), which nginx writes into X-Forwarded-For:
the daemon must see those as the clients, for the audit log, the throttle on wrong keys
and the rate limits, and believe nothing the client wrote into the header itself."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import HOST, free_port, manifest, wait_until, write_service
import lifecycle_helpers
from lifecycle_helpers import FAST_HEALTH, write_manifest, yaml_value
from test_gate import bearer, new_key, write_keys

NGINX = "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE_CONF = os.path.join(REPO, "deploy", "nginx.conf")
DAEMON_CONF = os.path.join(REPO, "deploy", "nanny-behind-nginx.yaml")

# The name people use, as in the shipped files (server_name is "_", the daemon's
# allowed_hosts names it).
NAME = "nanny.example.com"
START_TIMEOUT = 10.0
HTTP_TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK),
    reason=f"{NGINX} is missing: install Debian's nginx-light (./test.sh does)")


# --- certificates ---------------------------------------------------------------------


def openssl(*args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}:\n{r.stderr}"


def make_certificates(folder):
    """A CA and a server certificate it signed for 127.0.0.1 and NAME; returns the paths
    (ca, cert, key)."""
    os.makedirs(folder)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Service Nanny test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr",
            "-subj", f"/CN={NAME}", cwd=folder)
    with open(os.path.join(folder, "server.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{NAME},IP:127.0.0.1\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
            cwd=folder)
    return tuple(os.path.join(folder, f) for f in ("ca.pem", "server.pem", "server.key"))


# --- nginx ------------------------------------------------------------------------------


def substitute(text, pattern, replacement, what):
    """Replaces the one line of the shipped file that matches pattern; fails clearly when
    the file no longer has exactly one."""
    new, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert n == 1, (f"deploy/nginx.conf: expected one line of {what} (/{pattern}/), found "
                    f"{n}: update the test with the file")
    return new


def site_conf(https_port, http_port, upstream_port, cert, key):
    """deploy/nginx.conf with the test's ports, certificate and upstream."""
    with open(SITE_CONF) as f:
        text = f.read()
    text = substitute(text, r"^(\s*server\s+)127\.0\.0\.1:8080;",
                      rf"\g<1>127.0.0.1:{upstream_port};", "the upstream")
    text = substitute(text, r"^(\s*listen\s+)80;", rf"\g<1>127.0.0.1:{http_port};",
                      "listen 80")
    text = substitute(text, r"^(\s*listen\s+)443(\s)", rf"\g<1>127.0.0.1:{https_port}\2",
                      "listen 443")
    # The test's loopback only: no IPv6 listen.
    text = substitute(text, r"^\s*listen\s+\[::\]:80;\n", "", "listen [::]:80")
    text = substitute(text, r"^\s*listen\s+\[::\]:443[^\n]*\n", "", "listen [::]:443")
    # The two lines a person edits.
    text = substitute(text, r"^(\s*ssl_certificate\s+)\S+;", rf"\g<1>{cert};",
                      "ssl_certificate")
    text = substitute(text, r"^(\s*ssl_certificate_key\s+)\S+;", rf"\g<1>{key};",
                      "ssl_certificate_key")
    return text


class Nginx:
    """nginx in the foreground, one process as the current user, everything of it in
    folder: the main config wraps the shipped site file in an http block, as Debian's
    /etc/nginx/nginx.conf includes conf.d/*.conf."""

    def __init__(self, folder, upstream_port, cert, key):
        self.folder = folder
        self.https_port = free_port()
        self.http_port = free_port()
        os.makedirs(folder)
        site = os.path.join(folder, "service-nanny.conf")
        with open(site, "w") as f:
            f.write(site_conf(self.https_port, self.http_port, upstream_port, cert, key))
        temp = {k: os.path.join(folder, k) for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        self.error_log = os.path.join(folder, "error.log")
        self.conf = os.path.join(folder, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {self.error_log} info;
events {{
    worker_connections 256;
}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {site};
}}
""")
        self.proc = subprocess.Popen(
            [NGINX, "-p", folder + "/", "-c", self.conf, "-e", self.error_log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not start (rc={self.proc.returncode}):\n"
                                     f"{self.log()}\nconfig:\n{open(site).read()}")
            time.sleep(0.05)

    def _listening(self):
        for port in (self.https_port, self.http_port):
            try:
                socket.create_connection((HOST, port), timeout=1).close()
            except OSError:
                return False
        return True

    def log(self):
        try:
            with open(self.error_log) as f:
                return f.read()[-4000:]
        except OSError:
            return "(no error log)"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


class Front:
    """The daemon (with a key per role unless keys=False) behind nginx, and a client that
    talks HTTPS to nginx from any loopback address."""

    def __init__(self, nanny, workdir, services_dir, config=None, keys=True):
        self.workdir = workdir
        self.ca, cert, key = make_certificates(str(workdir / "pki"))
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.keys = {}
        args = ["--config", config or DAEMON_CONF]
        if keys:
            self.keys = {role: new_key() for role in ("viewer", "operator", "admin")}
            path = write_keys(workdir / "keys.yaml",
                              [(f"{role}-key", role, k) for role, k in self.keys.items()])
            args += ["--keys", path]
        self.state = workdir / "state"
        self.d = nanny.serve(services_dir, extra_args=args)
        # The shipped config has no key the daemon does not know.
        name = os.path.basename(args[1])
        warned = [line for line in self.d.lines if "warning" in line and name in line]
        assert not warned, warned
        # The daemon is stopped by the nanny fixture, nginx by close() (or at once
        # when it fails to start).
        self.nginx = Nginx(str(workdir / "nginx"), self.d.port, cert, key)

    def request(self, method, path, role=None, source="127.0.0.2", headers=None,
                host=NAME, timeout=HTTP_TIMEOUT, body=None):
        h = {"Host": host}
        if role:
            h.update(bearer(self.keys[role]))
        h.update(headers or {})
        conn = http.client.HTTPSConnection(HOST, self.nginx.https_port, context=self.ctx,
                                           timeout=timeout, source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Response(r.status, r.headers, r.read())
        finally:
            conn.close()

    def audit(self):
        p = self.state / "audit.log"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def close(self):
        if self.nginx:
            self.nginx.stop()


@pytest.fixture
def front(nanny, workdir, services_dir):
    write_service(services_dir, "idle", manifest("idle"))
    f = Front(nanny, workdir, services_dir)
    yield f
    f.close()


def config_with(workdir, **replace):
    """The shipped daemon config with some settings' lines replaced (None: removed)."""
    with open(DAEMON_CONF) as f:
        text = f.read()
    for key, value in replace.items():
        line = "" if value is None else f"{key}: {value}\n"
        text, n = re.subn(rf"^{key}:.*\n", line, text, flags=re.MULTILINE)
        assert n == 1, f"deploy/nanny-behind-nginx.yaml has no {key}: line"
    path = workdir / "nanny.yaml"
    path.write_text(text)
    return str(path)


# --- the tests -------------------------------------------------------------------------


def test_keys_roles_and_changes_through_nginx(front):
    r = front.request("GET", "/services", role="viewer")
    assert r.status == 200, r
    assert [s["name"] for s in r.json()["services"]] == ["idle"], r
    r = front.request("POST", "/services/idle/start", role="operator")
    assert r.status == 200 and r.json()["state"] == "running", r
    assert front.request("GET", "/services/idle/status", role="viewer").json()["state"] == "running"
    r = front.request("POST", "/services/idle/stop", role="viewer")
    assert r.status == 403 and r.json()["error"] == "forbidden", r
    r = front.request("POST", "/services/idle/stop", role="operator")
    assert r.status == 200 and r.json()["state"] == "stopped", r
    # Without a key: 401, with the challenge nginx passes on.
    r = front.request("GET", "/services")
    assert r.status == 401 and r.json()["error"] == "unauthorized", r
    assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
    # GET /health needs no key, and then shows only status and version.
    r = front.request("GET", "/health")
    assert r.status == 200 and set(r.json()) == {"status", "version"}, r


def test_curl_with_the_ca_as_the_readme_does(front):
    """The README's check: curl verifies nginx's certificate with the CA."""
    url = f"https://{NAME}:{front.nginx.https_port}/services/idle/status"
    resolve = f"{NAME}:{front.nginx.https_port}:127.0.0.1"
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", front.ca, "--resolve",
                        resolve, "-H", f"Authorization: Bearer {front.keys['viewer']}", url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "idle", r.stdout
    # Without the CA, curl refuses the certificate: TLS is real.
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "--resolve", resolve, url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 60, (r.returncode, r.stderr)


def test_plain_http_redirects_to_https(front):
    conn = http.client.HTTPConnection(HOST, front.nginx.http_port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/services?x=1", headers={"Host": NAME,
                                                      **bearer(front.keys["viewer"])})
        r = conn.getresponse()
        r.read()
    finally:
        conn.close()
    assert r.status == 301, r.status
    assert r.headers["Location"] == f"https://{NAME}/services?x=1", r.headers


def test_the_daemon_still_checks_the_host(front):
    """nginx passes the client's Host on: a name the config does not allow is refused by
    the daemon behind it (DNS rebinding), the one in allowed_hosts is served."""
    r = front.request("GET", "/services", role="viewer", host="evil.example.net")
    assert r.status == 403 and r.json()["error"] == "forbidden_host", r
    assert front.request("GET", "/services", role="viewer", host=NAME).status == 200


def test_the_audit_names_the_client_behind_nginx(front):
    assert front.request("GET", "/services", source="127.0.0.2").status == 401
    r = front.request("POST", "/services/idle/start", role="operator", source="127.0.0.3")
    assert r.status == 200, r
    # A client that writes its own X-Forwarded-For is not believed: nginx appends the
    # address it sees, and that rightmost one is the client.
    r = front.request("POST", "/services/idle/stop", source="127.0.0.4",
                      headers={"X-Forwarded-For": "203.0.113.66"})
    assert r.status == 401, r
    entries = wait_until(lambda: len(front.audit()) >= 3 and front.audit(),
                         message="three audit entries")
    got = [(e["who"], e["action"], e["service"], e["status"]) for e in entries]
    assert got == [
        ("127.0.0.2", "list", None, 401),
        ("operator-key", "start", "idle", 200),
        ("127.0.0.4", "stop", "idle", 401),
    ], got
    assert all(e["who"] != "127.0.0.1" for e in entries), entries


def test_wrong_keys_are_throttled_per_client_behind_nginx(front):
    """All clients come from nginx's address: the throttle must count each real client,
    or one guesser would lock everybody out."""
    statuses = []
    for i in range(50):
        # A different forged X-Forwarded-For each time changes nothing.
        r = front.request("GET", "/services", source="127.0.0.2",
                          headers={"X-API-Key": new_key(),
                                   "X-Forwarded-For": f"198.51.100.{i}"})
        statuses.append(r.status)
        if r.status == 429:
            break
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    r = front.request("GET", "/services", role="viewer", source="127.0.0.2")
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1, r
    # Another client behind the same nginx is not slowed.
    assert front.request("GET", "/services", role="viewer", source="127.0.0.3").status == 200
    refused = [e for e in front.audit() if e["status"] in (401, 429)]
    assert refused and {e["who"] for e in refused} == {"127.0.0.2"}, refused


def test_rate_limit_per_client_behind_nginx(nanny, workdir, services_dir):
    """Without keys the rate limit is per client address: per real client behind nginx."""
    write_service(services_dir, "idle", manifest("idle"))
    config = config_with(workdir, rate_limit="{rps: 1, burst: 3}", keys_file=None)
    f = Front(nanny, workdir, services_dir, config=config, keys=False)
    try:
        statuses = [f.request("GET", "/services", source="127.0.0.2").status for _ in range(3)]
        assert statuses == [200, 200, 200], statuses
        r = wait_until(lambda: (lambda r: r.status == 429 and r)(
            f.request("GET", "/services", source="127.0.0.2",
                      headers={"X-Forwarded-For": "127.0.0.9"})),
            timeout=10, interval=0, message="127.0.0.2 over its rate limit")
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"] == "rate_limited", r
        # The other client has its own bucket.
        assert f.request("GET", "/services", source="127.0.0.3").status == 200
        refused = [e for e in f.audit() if e["status"] == 429]
        assert refused and {e["who"] for e in refused} == {"127.0.0.2"}, refused
    finally:
        f.close()


def test_a_slow_answer_passes_through(nanny, workdir, services_dir):
    """POST start?wait=healthy on a service healthy only after a second: nginx holds the
    request until the daemon answers, and passes the answer on."""
    port = free_port()
    pidfile = str(workdir / "slow.pid")
    write_manifest(services_dir, "slow", "process", port, False, "2s", True, FAST_HEALTH,
                   more={"command": yaml_value([lifecycle_helpers.testsvc_binary(), "--port", str(port),
                                                "--health-after", "1000",
                                                "--write-pidfile", pidfile])})
    f = Front(nanny, workdir, services_dir)
    try:
        r = f.request("POST", "/services/slow/start?wait=healthy", role="operator")
        assert r.status == 200, r
        body = r.json()
        assert body["state"] == "running" and body["is_healthy"] is True, body
        r = f.request("POST", "/services/slow/stop", role="operator")
        assert r.status == 200 and r.json()["state"] == "stopped", r
    finally:
        f.close()


def test_a_websocket_and_a_large_upload_pass_through_nginx(nanny, workdir, services_dir):
    """deploy/nginx.conf's location for the daemon's proxy: a WebSocket is upgraded end to
    end (nginx, the daemon, the service), and an upload past nginx's default 1 MiB body
    cap streams to the service whole."""
    from test_proxy import PYTHON, UPSTREAM, WebSocket, big_body
    port = free_port()
    write_service(services_dir, "web",
                  f"name: web\nports: [\"{port}\"]\nhealth: {{path: /health}}\n"
                  f"command: [\"{PYTHON}\", \"{UPSTREAM}\", \"--port\", \"{port}\", "
                  f"\"--tag\", \"{workdir}\"]\n")
    f = Front(nanny, workdir, services_dir)
    try:
        auth = bearer(f.keys["operator"])
        raw = socket.create_connection((HOST, f.nginx.https_port), timeout=HTTP_TIMEOUT)
        sock = f.ctx.wrap_socket(raw, server_hostname=NAME)
        ws = WebSocket(f.nginx.https_port, "/s/web/ws", sock=sock, host=NAME, headers=auth,
                       timeout=HTTP_TIMEOUT)
        assert ws.status == 101, (ws.status, ws.buf)
        assert ws.accept_ok(), ws.headers
        seen = json.loads(ws.recv()[1])
        assert seen["x-forwarded-proto"] == "https", seen
        for payload in (b"through nginx", os.urandom(200000)):
            ws.send(payload, 2)
            assert ws.recv() == (2, payload)
        ws.close()
        payload = big_body(3 * 1024 * 1024)
        r = f.request("POST", "/s/web/sink", role="operator", timeout=60,
                      headers={"Content-Type": "application/octet-stream"}, body=payload)
        assert r.status == 200, r
        assert r.json()["bytes"] == len(payload), r
    finally:
        f.close()
