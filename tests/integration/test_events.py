"""GET /events (issue 11, part 5; SPEC section 7): server-sent events from the event hub,
in order, with ids EPOCH-SEQ that resume through Last-Event-ID, a reset when they cannot,
keepalive comments, and a cap on what a slow reader can make the daemon hold."""

import os
import signal
import socket
import threading

import pytest

from conftest import HOST, manifest, wait_until, write_service
from lifecycle_helpers import lab  # noqa: F401 (a fixture)
from sse_client import SSE
from test_gate import new_key, write_keys


def states(events, name):
    return [(e.data["from"], e.data["to"]) for e in events
            if e.type == "state" and e.data["service"] == name]


def test_state_events_come_in_order_with_growing_ids(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    sse = SSE(d.port)
    assert sse.header("Content-Type") == "text/event-stream"
    assert sse.hello.startswith(": events after ")
    assert d.post("/services/a/start").status == 200
    assert d.post("/services/a/stop").status == 200
    got = sse.until(lambda e: e.type == "state" and e.data["to"] == "stopped")
    assert states(got, "a") == [("stopped", "starting"), ("starting", "running"),
                                ("running", "stopping"), ("stopping", "stopped")]
    for e in got:
        if e.type == "state":
            assert set(e.data) == {"service", "from", "to", "reason", "time"}, e
            assert e.data["time"].endswith("Z"), e
    assert len({e.epoch for e in got}) == 1
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    sse.close()


def test_last_event_id_resumes_with_exactly_what_was_missed(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    sse = SSE(d.port)
    assert d.post("/services/a/start").status == 200
    assert d.post("/services/a/stop").status == 200
    got = sse.until(lambda e: e.type == "state" and e.data["to"] == "stopped")
    sse.close()
    middle = [e for e in got if e.type == "state"][1]  # starting -> running

    again = SSE(d.port, headers={"Last-Event-ID": middle.id})
    rest = again.until(lambda e: e.type == "state" and e.data["to"] == "stopped")
    assert [(e.id, e.raw) for e in rest] == [(e.id, e.raw) for e in got if e.seq > middle.seq]
    again.close()

    # Up to date: nothing is replayed, and what comes next comes.
    last = SSE(d.port, headers={"Last-Event-ID": got[-1].id})
    assert d.post("/services/a/start").status == 200
    ev = last.next()
    assert ev.type == "state" and ev.data["from"] == "stopped", ev
    last.close()


@pytest.mark.parametrize("last_id, why", [
    ("banana", "not an id"),
    ("12-", "not an id"),
    ("-5", "not an id"),
    ("1-1", "restarted"),
    ("{epoch}-999999", "ahead"),
])
def test_an_id_that_cannot_resume_gets_a_reset(nanny, services_dir, last_id, why):
    d = nanny.serve(services_dir)
    epoch = SSE(d.port).hello.split()[-1].split("-")[0]
    sse = SSE(d.port, headers={"Last-Event-ID": last_id.format(epoch=epoch)})
    ev = sse.next()
    assert ev.type == "reset" and why in ev.data["reason"], ev
    assert ev.epoch == epoch
    sse.close()


def test_an_id_of_the_previous_daemon_gets_a_reset(nanny, services_dir, workdir):
    write_service(services_dir, "a", manifest("a"))
    state = os.path.join(str(workdir), "state")
    d = nanny.serve(services_dir, state=state)
    sse = SSE(d.port)
    assert d.post("/services/a/start").status == 200
    ev = sse.until(lambda e: e.type == "state")[-1]
    sse.close()
    d.terminate()
    d2 = nanny.serve(services_dir, state=state)
    sse = SSE(d2.port, headers={"Last-Event-ID": ev.id})
    reset = sse.next()
    assert reset.type == "reset" and "restarted" in reset.data["reason"], reset
    assert reset.epoch != ev.epoch
    sse.close()


def test_an_id_older_than_the_history_gets_a_reset(nanny, services_dir):
    d = nanny.serve(services_dir)
    first = SSE(d.port)
    epoch = first.hello.split()[-1].split("-")[0]
    first.close()
    # More discovery events than the history keeps (1,024), each one a rescan that
    # adds or removes a service, over one connection.
    conn = socket.create_connection((HOST, d.port), timeout=10)
    f = conn.makefile("rb")
    for i in range(1030):
        if i % 2 == 0:
            write_service(services_dir, "x", manifest("x"))
        else:
            os.remove(os.path.join(str(services_dir), "x", "service.yaml"))
        conn.sendall(b"POST /rediscover HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        status = f.readline()
        assert b" 200 " in status, status
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
    conn.close()
    sse = SSE(d.port, headers={"Last-Event-ID": f"{epoch}-1"})
    ev = sse.next()
    assert ev.type == "reset" and "no longer kept" in ev.data["reason"], ev
    # A recent id still resumes.
    recent = SSE(d.port, headers={"Last-Event-ID": f"{epoch}-1000"})
    ev = recent.next()
    assert ev.type == "discovery" and ev.seq == 1001, ev
    sse.close()
    recent.close()


def test_discovery_events_carry_the_diff(nanny, services_dir):
    d = nanny.serve(services_dir)
    sse = SSE(d.port)
    write_service(services_dir, "b", manifest("b"))
    assert d.post("/rediscover").status == 200
    ev = sse.until(lambda e: e.type == "discovery")[-1]
    assert ev.data["added"] == ["b"], ev
    sse.close()


def test_health_and_gpu_events_and_a_forced_start_stops_the_holder_first(lab):
    lab.add("a", gpu=True)
    lab.add("b", gpu=True)
    d = lab.serve()
    sse = SSE(d.port)
    r = lab.start("a", wait=True)
    assert r.status == 200, r
    got = sse.until(lambda e: e.type == "health" and e.data["service"] == "a")
    health = got[-1].data
    assert health["ok"] is True and health["status_code"] == 200, health
    assert isinstance(health["latency_ms"], int) and health["error"] is None, health
    gpu = [e for e in got if e.type == "gpu"]
    assert gpu and gpu[0].data["holders"] == ["a"] and gpu[0].data["queue"] == [], gpu

    r = lab.start("b", force=True, wait=True)
    assert r.status == 200, r
    got = sse.until(lambda e: e.type == "state" and e.data["service"] == "b"
                    and e.data["to"] == "running")
    order = [(e.data["service"], e.data["to"]) for e in got if e.type == "state"]
    assert order.index(("a", "stopped")) < order.index(("b", "starting")), order
    gpu = [e.data["holders"] for e in got if e.type == "gpu"]
    assert gpu[-1] == ["b"], gpu
    for name in ("a", "b"):  # each service's from is its previous to
        pairs = states(got, name)
        assert all(p[1] == q[0] for p, q in zip(pairs, pairs[1:])), pairs
    sse.close()


def test_keepalive_comments_on_an_idle_stream(nanny, services_dir):
    d = nanny.serve(services_dir, env={"NANNY_TEST_SSE_KEEPALIVE": "100ms"})
    sse = SSE(d.port)
    with pytest.raises(TimeoutError):
        sse.next(timeout=1.0)  # no event: only comments
    assert sse.comments.count("keepalive") >= 2, sse.comments
    sse.close()


def test_a_reader_that_falls_behind_gets_a_last_reset_and_is_disconnected(nanny,
                                                                         services_dir):
    d = nanny.serve(services_dir)
    # It never reads while the events come: its socket buffer stays small.
    slow = SSE(d.port, rcvbuf=4096)
    # This one reads as they come, in a thread.
    fast = SSE(d.port)
    fast_got = []
    stop = threading.Event()

    def follow():
        while not stop.is_set():
            try:
                ev = fast.next(timeout=0.2)
            except TimeoutError:
                continue
            if ev is None:
                return
            fast_got.append(ev)

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        # Discovery events of some 13 KB each, 100 of them: far past the cap.
        names = [f"svc-{i:03d}-" + "n" * 50 for i in range(200)]
        for rnd in range(100):
            for n in names:
                if rnd % 2 == 0:
                    write_service(services_dir, n, manifest(n))
                else:
                    os.remove(os.path.join(str(services_dir), n, "service.yaml"))
            assert d.post("/rediscover").status == 200
        # The daemon still answers; the last event published is...
        assert d.get("/health").status == 200
        probe = SSE(d.port)
        last = int(probe.hello.split()[-1].split("-")[1])
        probe.close()
        # ...what the reader that keeps up gets to, with no reset.
        wait_until(lambda: fast_got and fast_got[-1].seq >= last, timeout=30,
                   message="the fast reader has every event")
    finally:
        stop.set()
        reader.join()
    assert all(e.type == "discovery" for e in fast_got), [e for e in fast_got if e.type != "discovery"]
    # The slow one gets what was buffered, a last reset, then the end of its stream.
    rest = slow.rest(timeout=30)
    assert rest and rest[-1].type == "reset", rest[-3:]
    assert "too slowly" in rest[-1].data["reason"], rest[-1]
    assert rest[-2].seq < last
    assert slow.ended
    slow.close()
    fast.close()


def test_events_pass_the_gate(nanny, services_dir, workdir):
    keys = os.path.join(str(workdir), "keys.yaml")
    reader = new_key()
    write_keys(keys, [("reader", "viewer", reader)])
    d = nanny.serve(services_dir, extra_args=["--keys", keys])
    refused = SSE(d.port)
    assert refused.status == 401
    refused.close()
    sse = SSE(d.port, headers={"Authorization": f"Bearer {reader}"})
    assert sse.status == 200 and sse.hello.startswith(": events after")
    sse.close()


def test_the_daemon_stops_promptly_with_clients_following(nanny, services_dir):
    d = nanny.serve(services_dir)
    clients = [SSE(d.port) for _ in range(5)]
    clients[0].close()  # one already gone
    d.signal(signal.SIGTERM)
    d.wait_exit()
    for c in clients[1:]:
        assert c.rest(timeout=5) == []
        assert c.ended
        c.close()


def test_head_of_events_answers_and_the_connection_goes_on(nanny, services_dir):
    d = nanny.serve(services_dir)
    conn = socket.create_connection((HOST, d.port), timeout=10)
    conn.sendall(b"HEAD /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"text/event-stream" in head, head
    # The same connection serves the next request.
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    more = b""
    while b"HTTP/1.1 200" not in more:
        chunk = conn.recv(4096)
        assert chunk, f"the connection closed after HEAD: {more!r}"
        more += chunk
    conn.close()


def test_no_new_stream_once_the_daemon_is_stopping(lab):
    # A service that ignores SIGTERM keeps the stopping daemon busy for its stop_timeout.
    lab.add("s", ["--ignore-sigterm"], health=False, stop_timeout="5s")
    d = lab.serve()
    assert lab.start("s").status == 200
    lab.wait_state("s", ("running",))
    kept = socket.create_connection((HOST, d.port), timeout=10)
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += kept.recv(4096)
    d.signal(signal.SIGTERM)
    d.wait_for_log("stopping the services")
    # A kept-alive connection still brings requests; a stream would hold the end up.
    kept.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = kept.recv(4096)
        if not chunk:
            break
        answer += chunk
    kept.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer
    d.wait_exit()
