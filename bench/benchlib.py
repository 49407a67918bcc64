"""What the Python helpers of bench/lifecycle.sh and bench/compose.sh share: the daemon
on one kept-alive connection, free loopback ports, and failing with a message. The
scripts find it through PYTHONPATH (bench/lib.sh sets it)."""

import http.client
import json
import os
import random
import socket
import sys
import time

HOST = "127.0.0.1"


def fail(msg):
    print(f"{os.path.basename(sys.argv[0])}: {msg}", file=sys.stderr)
    sys.exit(1)


class Daemon:
    """One kept-alive connection to the daemon; every call and wait within deadline s."""

    def __init__(self, port, deadline):
        self.deadline = deadline
        self.conn = http.client.HTTPConnection(HOST, port, timeout=deadline)

    def call(self, method, path, expect=200, timeout=None):
        self.conn.timeout = timeout or self.deadline
        if self.conn.sock is not None:
            self.conn.sock.settimeout(self.conn.timeout)
        try:
            self.conn.request(method, path, body=b"" if method == "POST" else None)
            r = self.conn.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            fail(f"{method} {path}: {e}")
        if expect is not None and r.status != expect:
            fail(f"{method} {path} answered {r.status}: {body[:300]!r}")
        return r.status, body

    def status(self, name):
        return json.loads(self.call("GET", f"/services/{name}/status")[1])

    def wait_state(self, name, states):
        deadline = time.monotonic() + self.deadline
        while True:
            st = self.status(name)
            if st["state"] in states:
                return st
            if time.monotonic() > deadline:
                fail(f"{name} is {st['state']} after {self.deadline:.0f} s, "
                     f"not {'/'.join(states)}")
            time.sleep(0.01)


def free_ports(n):
    """n loopback ports in 20000-40000 that nothing is bound to, outside the kernel's
    ephemeral range when possible: the pollers connect to a service's port before it
    listens, and an outgoing connection must never take it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    pool = [p for p in range(20000, 40000) if not lo <= p <= hi] or list(range(20000, 40000))
    got = []
    for _ in range(500):
        p = random.choice(pool)
        if p in got:
            continue
        s = socket.socket()
        try:
            s.bind((HOST, p))
            got.append(p)
        except OSError:
            pass
        finally:
            s.close()
        if len(got) == n:
            print(" ".join(map(str, got)))
            return
    fail("no free ports")
