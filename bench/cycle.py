"""The cycle of operations of bench/soak.sh and bench/valgrind.sh, against a daemon with
the services gpu-a and gpu-b (gpu_required) and cpu-c: start gpu-a (200), start gpu-b
(409 naming gpu-a), force gpu-b (200), at most one GPU service running, start and stop
cpu-c (200 each), stop gpu-b (200), at most one GPU service running.

Usage: cycle.py PORT SECONDS: repeats the cycle until SECONDS have passed (at least once);
prints "cycles requests errors" and each error on stderr. Every request has a timeout;
the source address is 127.0.0.2 (loopback), so that the driver never competes with a
load from 127.0.0.1 for the daemon's per-client connection cap."""
import http.client
import json
import sys
import time

from benchlib import HOST

SOURCE = ("127.0.0.2", 0)
TIMEOUT = 30.0


class Driver:
    def __init__(self, port):
        self.port = port
        self.conn = None
        self.ops = 0
        self.errors = 0

    def call(self, method, path, body=None):
        self.ops += 1
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=TIMEOUT,
                                                       source_address=SOURCE)
            try:
                headers = {"Content-Type": "application/json"} if body else {}
                self.conn.request(method, path, body=body or b"", headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException) as e:
                self.conn.close()
                self.conn = None
                # A kept-alive connection the server closed between two requests is
                # retried once on a new one; anything else is an error.
                if attempt or not isinstance(e, (http.client.RemoteDisconnected,
                                                 ConnectionResetError, BrokenPipeError)):
                    return None, str(e).encode()
        return None, b"unreachable"

    def expect(self, method, path, status, body=None, contains=None):
        got, text = self.call(method, path, body)
        if got != status or (contains and contains.encode() not in text):
            self.errors += 1
            print(f"{method} {path} {body or ''}: {got} {text[:200]!r} "
                  f"(expected {status}{' with ' + contains if contains else ''})",
                  file=sys.stderr)

    def gpu_running(self):
        got, text = self.call("GET", "/services")
        if got != 200:
            self.errors += 1
            print(f"GET /services: {got} {text[:200]!r}", file=sys.stderr)
            return
        doc = json.loads(text)
        holders = [s["name"] for s in doc["services"]
                   if s.get("gpu_required") and s.get("state") in ("starting", "running", "stopping")]
        if len(holders) > 1:
            self.errors += 1
            print(f"two GPU services run at once: {holders}", file=sys.stderr)

    def cycle(self):
        self.expect("POST", "/services/gpu-a/start", 200)
        self.expect("POST", "/services/gpu-b/start", 409, contains="gpu-a")
        self.expect("POST", "/services/gpu-b/start", 200, body=b'{"force":true}')
        self.gpu_running()
        self.expect("POST", "/services/cpu-c/start", 200)
        self.expect("POST", "/services/cpu-c/stop", 200)
        self.expect("POST", "/services/gpu-b/stop", 200)
        self.gpu_running()


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    d = Driver(port)
    deadline = time.monotonic() + seconds
    cycles = 0
    while True:
        d.cycle()
        cycles += 1
        if time.monotonic() >= deadline:
            break
    print(cycles, d.ops, d.errors)


if __name__ == "__main__":
    main()
