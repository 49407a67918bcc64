"""The per-client connection cap behind a trusted proxy (issue 9, item 3): a proxy in
`trusted_proxies` carries many clients, so its connections are not capped per address
at accept; each request through it counts against the client its X-Forwarded-For names
(read from the right, past trusted hops, as nginx's real_ip_recursive), and a client
over the cap gets 503 too_many_connections and its connection closed. A peer that is not
trusted counts as itself whatever it sends.

Each test failed on the code before: it knew no trusted_proxies (the daemon refused to
start), and it capped the proxy's own connections at accept."""

import json
import socket

import pytest

from conftest import HOST, parse_raw_response, wait_until

CAP = 4
# Requests held open stay counted until the daemon's 10 s idle timeout: every wait here
# is far shorter than that.
WAIT = 5.0


def serve(nanny, services_dir, trusted="127.0.0.1", extra=()):
    return nanny.serve(services_dir, extra_args=[
        "--max-connections-per-client", str(CAP), "--trusted-proxies", trusted, *extra])


def connect_from(source, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10.0)
    s.bind((source, 0))
    s.connect((HOST, port))
    return s


def forwarded_header(xff):
    if xff is None:
        return ""
    if isinstance(xff, str):
        xff = [xff]
    return "".join(f"X-Forwarded-For: {v}\r\n" for v in xff)


def hold(port, xff, source="127.0.0.1"):
    """A connection whose request is in progress: its headers sent, its body not."""
    s = connect_from(source, port)
    s.sendall((f"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n"
               f"{forwarded_header(xff)}\r\n").encode())
    return s


def read_all(s):
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def ask(port, xff, source="127.0.0.1"):
    """GET /health from source with this X-Forwarded-For (keep-alive asked for): returns
    (status, JSON body, whether the daemon closed the connection after the answer), or
    (None, None, True) when it closed the connection without an answer."""
    with connect_from(source, port) as s:
        s.sendall((f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"{forwarded_header(xff)}\r\n").encode())
        out = b""
        while b"\r\n\r\n" not in out:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return (None, None, True) if not out else (*answer(out), True)
            out += chunk
        status, headers, _ = parse_raw_response(out)
        length = int(headers.get("content-length", "0"))
        while len(out.partition(b"\r\n\r\n")[2]) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        status, body = answer(out)
        # A kept connection stays open: the read times out; a closed one ends.
        s.settimeout(1.0)
        try:
            closed = s.recv(1) == b""
        except socket.timeout:
            closed = False
        except ConnectionResetError:
            closed = True
        return status, body, closed


def answer(raw):
    status, _, body = parse_raw_response(raw)
    return status, json.loads(body) if body else None


def until_refused(port, xff, source="127.0.0.1"):
    """Asks until the daemon has read the held requests and refuses this client; returns
    the refusal. Fails when it keeps answering (no cap for this client)."""
    return wait_until(lambda: (lambda r: r if r[0] == 503 else None)(ask(port, xff, source)),
                      timeout=WAIT, message=f"a 503 for X-Forwarded-For {xff}")


def close_all(socks):
    for s in socks:
        s.close()


def test_requests_through_a_proxy_count_by_their_client(nanny, services_dir):
    d = serve(nanny, services_dir)
    # More connections from the proxy than the cap: a proxy is not capped at accept.
    held = [hold(d.port, "203.0.113.7") for _ in range(CAP)]
    held += [hold(d.port, "203.0.113.8") for _ in range(CAP - 1)]
    try:
        status, body, closed = until_refused(d.port, "203.0.113.7")
        assert body["error"] == "too_many_connections", body
        assert "203.0.113.7" in body["message"] and str(CAP) in body["message"], body
        assert "max_connections_per_client" in body["message"], body
        assert closed, "the refused connection was kept open"
        # Another client behind the same proxy has room for one more, and is answered
        # on a connection that stays open.
        status, body, closed = ask(d.port, "203.0.113.8")
        assert status == 200 and body["status"] == "ok" and not closed, (status, body, closed)
        # The proxy's own requests (no header) count as the proxy's, not as anyone's.
        assert ask(d.port, None)[0] == 200
        d.wait_for_log(r"203\.0\.113\.7 has 4 requests in progress through the proxy "
                       r"127\.0\.0\.1 \(max_connections_per_client\)")
    finally:
        close_all(held)
    # Once its requests are gone, the client is served again.
    wait_until(lambda: ask(d.port, "203.0.113.7")[0] == 200, timeout=WAIT,
               message="203.0.113.7 served again")
    d.assert_healthy()


def test_recursive_and_repeated_headers(nanny, services_dir):
    """Past every trusted hop (10.0.0.0/8 here) to the first that is not; a client's own
    header to the left is not believed; two header lines are one list."""
    d = serve(nanny, services_dir, trusted="127.0.0.1,10.0.0.0/8")
    held = [hold(d.port, f"198.51.100.{i}, 203.0.113.9, 10.1.2.{i}") for i in range(CAP)]
    try:
        status, body, closed = until_refused(d.port, "203.0.113.9")
        assert "203.0.113.9" in body["message"], body
        # The same client written by a proxy that adds its own header line.
        assert ask(d.port, ["6.6.6.6", "203.0.113.9"])[0] == 503
        # A client that claims to be another one (left of the proxy's entry) is not.
        assert ask(d.port, "203.0.113.9, 203.0.113.10")[0] == 200
        assert ask(d.port, ["203.0.113.9", "203.0.113.10"])[0] == 200
    finally:
        close_all(held)


def test_malformed_header_counts_as_the_proxy(nanny, services_dir):
    d = serve(nanny, services_dir)
    held = [hold(d.port, "garbage, not-an-address") for _ in range(CAP)]
    try:
        status, body, _ = until_refused(d.port, None)
        assert "127.0.0.1" in body["message"], body
        assert ask(d.port, "[2001:db8::7]:443")[0] == 200
    finally:
        close_all(held)


def test_an_untrusted_peer_counts_as_itself(nanny, services_dir):
    """127.0.0.2 is not trusted: whatever X-Forwarded-For it sends, its connections are
    its own and capped at accept."""
    d = serve(nanny, services_dir)
    held = [hold(d.port, f"203.0.113.{i}", source="127.0.0.2") for i in range(CAP)]
    try:
        def refused_at_accept():
            status, body, closed = ask(d.port, "203.0.113.99", source="127.0.0.2")
            return status is None and closed

        wait_until(refused_at_accept, timeout=WAIT, message="127.0.0.2 closed at accept")
        d.wait_for_log(r"127\.0\.0\.2 holds 4 connections \(max_connections_per_client\)")
        # The trusted proxy is still served for the same client names.
        assert ask(d.port, "203.0.113.0")[0] == 200
    finally:
        close_all(held)


def test_trusted_proxies_from_file_and_environment(nanny, services_dir, workdir):
    cfg = workdir / "nanny.yaml"
    cfg.write_text('trusted_proxies: [127.0.0.1, "10.0.0.0/8", "::1"]\n'
                   f"max_connections_per_client: {CAP}\n")
    for extra, env in ((["--config", str(cfg)], None),
                       (["--max-connections-per-client", str(CAP)],
                        {"NANNY_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"})):
        d = nanny.serve(services_dir, extra_args=extra, env=env)
        held = [hold(d.port, "203.0.113.7") for _ in range(CAP)]
        try:
            until_refused(d.port, "203.0.113.7")
            assert ask(d.port, "203.0.113.8")[0] == 200
        finally:
            close_all(held)
        assert d.terminate() == 0
    # By default no proxy is trusted: 127.0.0.1 is capped at accept like any address,
    # and its header means nothing.
    d = nanny.serve(services_dir, extra_args=["--max-connections-per-client", str(CAP)])
    held = [hold(d.port, f"203.0.113.{i}") for i in range(CAP)]
    try:
        wait_until(lambda: ask(d.port, "203.0.113.99") == (None, None, True), timeout=WAIT,
                   message="127.0.0.1 closed at accept")
    finally:
        close_all(held)


@pytest.mark.parametrize("how,value,names", [
    ("flag", "127.0.0.1,nope", "'nope'"),
    ("flag", "10.0.0.0/33", "'10.0.0.0/33'"),
    ("flag", "10.0.0.1/8", "'10.0.0.1/8'"),
    ("flag", "127.0.0.1,,::1", "empty"),
    ("env", "[::1]", "'[::1]'"),
    ("file", "trusted_proxies:\n  - 127.0.0.1\n  - 10.0.0.300/8\n", ":3:"),
    ("file", "trusted_proxies: 127.0.0.1\n", ":1:"),
])
def test_bad_trusted_proxies_are_refused(nanny, services_dir, workdir, how, value, names):
    args = ["serve", "--listen", "127.0.0.1:0", "--services", str(services_dir)]
    env = None
    where = "--trusted-proxies"
    if how == "flag":
        args += ["--trusted-proxies", value]
    elif how == "env":
        env = {"NANNY_TRUSTED_PROXIES": value}
        where = "NANNY_TRUSTED_PROXIES"
    else:
        cfg = workdir / "nanny.yaml"
        cfg.write_text(value)
        args += ["--config", str(cfg)]
        where = "trusted_proxies"
    rc, _, err = nanny.run(args, env=env)
    assert rc == 2, err
    assert where in err and names in err, err
