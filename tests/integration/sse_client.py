"""A small server-sent events client for the tests: reads GET /events from a socket,
decodes the chunked body, splits it into events and comments, and lets a test
stop reading (a slow reader) or close at will."""

import json
import select
import socket
import time

from conftest import HOST


class Event:
    def __init__(self, fields):
        self.id = fields.get("id")
        self.type = fields.get("event", "message")
        self.raw = fields.get("data")
        self.data = json.loads(self.raw) if self.raw else None

    @property
    def epoch(self):
        return self.id.split("-")[0]

    @property
    def seq(self):
        return int(self.id.split("-")[1])

    def __repr__(self):
        return f"Event({self.id} {self.type} {self.raw})"


class SSE:
    """GET /events on port; blocks until the daemon's first comment says it is subscribed.
    A raw socket with its own chunked decoder: http.client loses its place in a chunked
    body when a read times out."""

    def __init__(self, port, headers=None, rcvbuf=None, timeout=10.0, path="/events",
                 hello=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.raw = b""       # bytes read and not decoded yet
        self.buf = b""       # the decoded body not yet split into blocks
        self.ended = False   # the last chunk came, or the connection closed
        self.comments = []
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if not self._recv(deadline):
                raise AssertionError(f"no answer to GET {path}: {self.raw!r}")
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:])}
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.length = int(self.headers.get("content-length", "-1"))
        self.hello = None
        if self.status == 200 and hello:
            self.hello = self._next_block(timeout)

    def header(self, name):
        return self.headers.get(name.lower())

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing more in time; so far: %r" % (self.raw + self.buf)[-300:])
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("nothing more in time; so far: %r"
                               % (self.raw + self.buf)[-300:]) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.ended = True
            return False
        self.raw += data
        return True

    def _decode(self):
        """Moves whole chunks from raw to buf."""
        if not self.chunked:
            self.buf += self.raw
            self.raw = b""
            return
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.ended = True
                self.raw = b""
                return
            if len(rest) < size + 2:
                return
            self.buf += rest[:size]
            self.raw = rest[size + 2:]

    def _read_some(self, deadline):
        """More body bytes into buf; False at the end of the stream."""
        before = len(self.buf)
        while len(self.buf) == before:
            self._decode()
            if len(self.buf) > before:
                return True
            if self.ended or not self._recv(deadline):
                self._decode()
                return len(self.buf) > before

    def _next_block(self, timeout):
        """The next block (event or comment) as text, or None at the end of the stream."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buf:
            if not self._read_some(deadline):
                return None
        block, self.buf = self.buf.split(b"\n\n", 1)
        return block.decode()

    def next(self, timeout=10.0):
        """The next event (comments are kept in .comments), or None at the end."""
        deadline = time.monotonic() + timeout
        while True:
            block = self._next_block(max(0.01, deadline - time.monotonic()))
            if block is None:
                return None
            fields = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                key, _, value = line.partition(":")
                fields[key] = value[1:] if value.startswith(" ") else value
            if fields:
                return Event(fields)

    def until(self, pred, timeout=10.0):
        """Events up to and including the first for which pred is true."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(0.01, deadline - time.monotonic()))
            if ev is None:
                raise AssertionError(f"the stream ended before the event; got {got}")
            got.append(ev)
            if pred(ev):
                return got

    def rest(self, timeout=10.0):
        """Every event until the stream ends."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next(max(0.01, deadline - time.monotonic()))
            if ev is None:
                return got
            got.append(ev)

    def lines(self, n, timeout=10.0):
        """The next n lines of the body (a followed log), without their newline; fewer when
        the stream ends first."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            while b"\n" not in self.buf:
                if not self._read_some(deadline):
                    return got
            line, self.buf = self.buf.split(b"\n", 1)
            got.append(line.decode("utf-8", "replace"))
        return got

    def body_rest(self, timeout=10.0):
        """Everything until the stream ends."""
        deadline = time.monotonic() + timeout
        while self._read_some(deadline):
            pass
        rest, self.buf = self.buf, b""
        return rest.decode("utf-8", "replace")

    def readable(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def close(self):
        self.sock.close()
