"""Reads the bad-HTTP catalogue (tests/integration/bad_http/*.http; see its README)."""

import os
import re

CATALOGUE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_http")

_ESCAPE = re.compile(rb"\\\*(\d+):(\\x[0-9a-fA-F]{2}|\\.|.)|\\x([0-9a-fA-F]{2})|\\(.)", re.S)
_SIMPLE = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def _one(esc):
    if esc.startswith(b"\\x"):
        return bytes([int(esc[2:], 16)])
    if esc.startswith(b"\\"):
        if esc[1:] not in _SIMPLE:
            raise ValueError(f"unknown escape {esc!r}")
        return _SIMPLE[esc[1:]]
    return esc


def decode_request(text):
    """The bytes of a request written with the catalogue's escapes."""
    raw = b"".join(line.rstrip(b"\r") for line in text.split(b"\n"))

    def sub(m):
        if m.group(1):
            return _one(m.group(2)) * int(m.group(1))
        if m.group(3):
            return bytes([int(m.group(3), 16)])
        return _one(b"\\" + m.group(4))

    return _ESCAPE.sub(sub, raw)


class Case:
    def __init__(self, name, expect, request, half_close):
        self.name = name
        self.expect = expect  # set of ints and/or "close"
        self.request = request
        self.half_close = half_close

    def __repr__(self):
        return f"<Case {self.name} expect={sorted(map(str, self.expect))}>"


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    head, sep, body = data.partition(b"\n---\n")
    if not sep:
        raise ValueError(f"{path}: no '---' line before the request")
    expect, half_close = set(), False
    for line in head.decode().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(":")
        if key == "expect":
            for word in value.split():
                expect.add("close" if word == "close" else int(word))
        elif key == "half_close":
            half_close = value.strip() == "yes"
        else:
            raise ValueError(f"{path}: unknown key {key!r}")
    if not expect:
        raise ValueError(f"{path}: no expect line")
    return Case(os.path.basename(path)[:-5], expect, decode_request(body), half_close)


def cases():
    return [load(os.path.join(CATALOGUE, n))
            for n in sorted(os.listdir(CATALOGUE)) if n.endswith(".http")]


def exchange(host, port, case, timeout):
    """Sends a case; returns the status of the first answer, "close" when the server hung
    up without one, or "open" when it did neither within timeout seconds."""
    import socket

    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(case.request)
            if case.half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                return "open"
            if not chunk:
                break
            out += chunk
            m = re.match(rb"HTTP/1\.[01] (\d{3}) ", out)
            if m and b"\r\n\r\n" in out:
                return int(m.group(1))
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", out)
    return int(m.group(1)) if m else "close"
