"""Swaps and the GPU queue (issue 14 items 3 to 5; SPEC section 7 "Proxy and on demand"):
a proxied request for a GPU service whose GPU is taken either swaps (its priority is above
the holder's, or the config says gpu_conflict: preempt) or waits in the GPU queue. A swap
never cuts a request in flight: the holder is stopped once its proxied requests have
ended, or after swap_grace (then they are cut, and the log says so); while the swap is
pending the holder still takes new requests until swap_max_wait (none with swap_drain).
The queue is served by priority, then first come; a client that goes leaves it; it is
bounded (429); GET /gpus shows it (and each placed service's requests in flight), and so
does the waiting service's status.

The box is the seed's: one GPU of unknown size, every service gpu_required. The services
are tests/fixtures/upstream.py (see test_proxy.py); a request "in flight" is its /sse
stream, which ends when the upstream has sent its events. Nothing asserts a duration:
order is asserted by what is seen while something else is still going on."""

import concurrent.futures
import socket
import time

import pytest

from conftest import HOST
from lifecycle_helpers import json_error
from test_proxy import STREAM_TIMEOUT, RawStream, plab  # noqa: F401  (plab: the fixture)

WAIT = 30.0  # the longest a held request is waited for


def gpus(lab):
    r = lab.d.get("/gpus")
    assert r.status == 200, r
    return r.json()


def queue(lab):
    return gpus(lab)["queue"]


def wait_queue(lab, pred, timeout=15.0, message="queue"):
    deadline = time.monotonic() + timeout
    q = None
    while time.monotonic() < deadline:
        q = queue(lab)
        if pred(q):
            return q
        time.sleep(0.05)
    raise AssertionError(f"{message} not seen within {timeout}s: {q}")


def queued(q, name):
    return next((e for e in q if e["service"] == name), None)


class Held:
    """A request sent on a raw socket whose answer is not read yet: it is held by the
    daemon. close() is the client going away."""

    def __init__(self, port, path, body=None):
        self.sock = socket.create_connection((HOST, port), timeout=WAIT)
        if body is None:
            head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n"
        else:
            head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.sock.sendall(head.encode() + (body or b""))

    def close(self):
        self.sock.close()


def serve(plab, config="", **services):
    """Adds GPU upstream services NAME=priority and starts the daemon."""
    for name, priority in services.items():
        plab.add_upstream(name, gpu=True, extra={"priority": str(priority)})
    plab.serve(config=config or None)


def test_a_cold_request_waits_in_the_queue_until_the_holder_stops(plab):
    serve(plab, a=0, b=0)
    plab.start_running("a")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        answer = ex.submit(plab.proxy, "GET", "/s/b/echo?queued=1", timeout=WAIT)
        q = wait_queue(plab, lambda q: queued(q, "b"))
        entry = queued(q, "b")
        assert entry["requests"] == 1 and entry["swap"] is False, entry
        assert entry["holders"] == ["a"] and entry["priority"] == 0, entry
        assert isinstance(entry["age_ms"], int) and entry["since"], entry
        st = plab.status("b")
        assert st["state"] == "stopped" and st["waiting"]["requests"] == 1, st
        assert st["waiting"]["swap"] is False, st
        # Same priority, gpu_conflict: refuse: it waits; the holder runs on.
        assert plab.state("a") == "running"
        assert not answer.done()
        r = plab.d.post("/services/a/stop", timeout=WAIT)
        assert r.status == 200, r
        r = answer.result(timeout=WAIT)
    assert r.status == 200, r
    assert r.json()["path"] == "/echo?queued=1"
    assert plab.state("b") == "running"
    assert queue(plab) == []
    assert plab.status("b")["waiting"] is None


def test_a_swap_waits_for_the_holders_request_in_flight(plab):
    serve(plab, a=0, b=5)
    plab.start_running("a")
    stream = RawStream(plab.d.port, "/s/a/sse?n=6&interval_ms=400", timeout=STREAM_TIMEOUT)
    assert stream.status == 200, stream.headers
    g = gpus(plab)
    assert g["gpus"][0]["in_flight"] == {"a": 1}, g
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        answer = ex.submit(plab.proxy, "GET", "/s/b/echo?swap=1", timeout=WAIT)
        entry = queued(wait_queue(plab, lambda q: queued(q, "b")), "b")
        assert entry["swap"] is True and entry["holders"] == ["a"], entry
        plab.d.wait_for_log("a: to be swapped out for b")
        # The holder's request goes on to its end, the holder running meanwhile.
        assert plab.state("a") == "running"
        assert not answer.done()
        stream.read_to_end()
        stream.close()
        assert stream.complete and stream.body.count(b"data:") == 6, stream.body
        r = answer.result(timeout=WAIT)
    assert r.status == 200, r
    assert r.json()["path"] == "/echo?swap=1"
    assert plab.state("a") == "stopped" and plab.state("b") == "running"
    assert not [line for line in plab.d.lines if "swap_grace went by" in line]


def test_swap_grace_cuts_the_requests_that_outlast_it(plab):
    serve(plab, config="swap_grace: 1s\n", a=0, b=5)
    plab.start_running("a")
    stream = RawStream(plab.d.port, "/s/a/sse?n=100&interval_ms=300", timeout=STREAM_TIMEOUT)
    assert stream.status == 200, stream.headers
    r = plab.proxy("GET", "/s/b/echo?grace=1", timeout=WAIT)
    assert r.status == 200, r
    plab.d.wait_for_log("a: swap_grace went by: swapped out for b with 1 proxied request")
    stream.read_to_end()
    stream.close()
    assert not stream.complete, "a cut stream must not look whole"
    assert plab.state("a") == "stopped" and plab.state("b") == "running"


def test_swap_max_wait_then_new_requests_for_the_holder_are_held(plab):
    serve(plab, config="swap_max_wait: 500ms\n", a=0, b=5)
    plab.start_running("a")
    stream = RawStream(plab.d.port, "/s/a/sse?n=10&interval_ms=500", timeout=STREAM_TIMEOUT)
    assert stream.status == 200, stream.headers
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        answer = ex.submit(plab.proxy, "GET", "/s/b/echo", timeout=WAIT)
        wait_queue(plab, lambda q: queued(q, "b"))
        # Until swap_max_wait, the holder still takes new requests...
        early = plab.proxy("GET", "/s/a/echo?early=1")
        assert early.status == 200 and early.json()["path"] == "/echo?early=1", early
        # ...after it, a new one waits (for the holder to be started again).
        time.sleep(0.6)
        late = Held(plab.d.port, "/s/a/echo?late=1")
        entry = queued(wait_queue(plab, lambda q: queued(q, "a")), "a")
        assert entry["requests"] == 1, entry
        assert plab.state("a") == "running"
        late.close()
        wait_queue(plab, lambda q: not queued(q, "a"), message="the late client gone")
        stream.read_to_end()
        stream.close()
        assert stream.complete, stream.body
        assert answer.result(timeout=WAIT).status == 200
    assert plab.state("b") == "running"


def test_swap_drain_holds_new_requests_for_the_holder_at_once(plab):
    plab.add_upstream("a", gpu=True, extra={"swap_drain": "true"})
    plab.add_upstream("b", gpu=True, extra={"priority": "5"})
    plab.serve()
    plab.start_running("a")
    stream = RawStream(plab.d.port, "/s/a/sse?n=6&interval_ms=400", timeout=STREAM_TIMEOUT)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        answer = ex.submit(plab.proxy, "GET", "/s/b/echo", timeout=WAIT)
        wait_queue(plab, lambda q: queued(q, "b"))
        late = Held(plab.d.port, "/s/a/echo?drained=1")
        assert queued(wait_queue(plab, lambda q: queued(q, "a")), "a")["requests"] == 1
        late.close()
        stream.read_to_end()
        stream.close()
        assert stream.complete
        assert answer.result(timeout=WAIT).status == 200


@pytest.mark.parametrize("body", [None, b'{"prompt": "hi"}'], ids=["get", "post"])
def test_disconnecting_waiters_leave_the_queue(plab, body):
    """Whether the request has a body or not: a held request's body waits unread (it goes
    to the service once started), and a client gone meanwhile is noticed all the same."""
    serve(plab, a=0, b=0)
    plab.start_running("a")
    first = Held(plab.d.port, "/s/b/echo?1", body)
    second = Held(plab.d.port, "/s/b/echo?2", body)
    wait_queue(plab, lambda q: queued(q, "b") and queued(q, "b")["requests"] == 2)
    first.close()
    wait_queue(plab, lambda q: queued(q, "b") and queued(q, "b")["requests"] == 1,
               message="one request left")
    second.close()
    wait_queue(plab, lambda q: q == [], message="an empty queue")
    assert plab.status("b")["waiting"] is None
    # Nobody waits for b: freeing the GPU starts nothing.
    assert plab.d.post("/services/a/stop", timeout=WAIT).status == 200
    time.sleep(0.3)
    assert plab.state("b") == "stopped"
    plab.d.assert_healthy()


def test_the_queue_is_served_by_priority_then_first_come(plab):
    serve(plab, a=10, low=1, high=5, low2=1)
    plab.start_running("a")
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        low = ex.submit(plab.proxy, "GET", "/s/low/echo", timeout=WAIT)
        wait_queue(plab, lambda q: queued(q, "low"))
        high = ex.submit(plab.proxy, "GET", "/s/high/echo", timeout=WAIT)
        wait_queue(plab, lambda q: queued(q, "high"))
        low2 = ex.submit(plab.proxy, "GET", "/s/low2/echo", timeout=WAIT)
        q = wait_queue(plab, lambda q: len(q) == 3)
        assert [e["service"] for e in q] == ["high", "low", "low2"], q
        assert plab.state("a") == "running"  # nobody's priority is above a's
        for name, answer in (("a", high), ("high", low), ("low", low2)):
            assert plab.d.post(f"/services/{name}/stop", timeout=WAIT).status == 200
            assert answer.result(timeout=WAIT).status == 200
            running = [n for n in ("a", "high", "low", "low2") if plab.state(n) == "running"]
            assert len(running) == 1, running
    assert queue(plab) == []


def test_a_full_queue_is_429_with_retry_after(plab):
    serve(plab, config="gpu_queue_max: 1\n", a=0, b=0)
    plab.start_running("a")
    held = Held(plab.d.port, "/s/b/echo?1")
    wait_queue(plab, lambda q: queued(q, "b"))
    r = plab.proxy("GET", "/s/b/echo?2", timeout=WAIT)
    json_error(r, 429, "queue_full")
    assert r.headers.get("Retry-After", "").isdigit(), dict(r.headers)
    assert queued(queue(plab), "b")["requests"] == 1
    held.close()


def test_min_resident_keeps_a_newly_started_holder(plab):
    serve(plab, config="min_resident: 10m\n", a=0, b=5)
    plab.start_running("a")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        answer = ex.submit(plab.proxy, "GET", "/s/b/echo", timeout=WAIT)
        entry = queued(wait_queue(plab, lambda q: queued(q, "b")), "b")
        assert entry["swap"] is False, entry
        time.sleep(0.5)
        assert plab.state("a") == "running"
        assert plab.d.post("/services/a/stop", timeout=WAIT).status == 200
        assert answer.result(timeout=WAIT).status == 200


def test_gpu_conflict_preempt_swaps_at_equal_priority(plab):
    serve(plab, config="gpu_conflict: preempt\n", a=0, b=0)
    plab.start_running("a")
    r = plab.proxy("GET", "/s/b/echo", timeout=WAIT)
    assert r.status == 200, r
    assert plab.state("a") == "stopped" and plab.state("b") == "running"


def test_a_plain_api_start_keeps_its_409_whatever_the_priorities(plab):
    serve(plab, a=0, b=5)
    plab.start_running("a")
    r = plab.d.post("/services/b/start", timeout=WAIT)
    body = json_error(r, 409)
    assert body["holder"] == "a", body
    assert plab.state("a") == "running"
