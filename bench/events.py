"""The figures of issue 11, measured against a running daemon (bench/events.sh starts it):

  event     state change -> event at a GET /events client: POST /services/ev/stop and
            /start on one kept-alive connection, and the time from sending the request to
            the state event's arrival on the events stream (an upper bound of the
            publish-to-client latency: it includes the request's own handling); the
            request's own answer time is printed beside it as the reference
  follow    a service's line -> `nanny logs -f` prints it: the service is `cat` of a FIFO
            this script writes to; the time from the write to the line on nanny's stdout,
            beside `tail -F` of the same log file as the reference
  clients   1,000 /events clients held open (each read as events come, ~10 events/s
            published meanwhile): p99 of GET /services/ev/status under wrk, beside the
            same wrk run with no client; and the daemon's memory per client (VmRSS)

Usage: python3 bench/events.py PORT DAEMON_PID NANNY_BIN FIFO LOGFILE
All traffic goes to 127.0.0.1; every wait has a deadline."""

import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

from benchlib import HOST, Daemon, fail

RUNS = int(os.environ.get("BENCH_EVENT_RUNS", "40"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "1000"))
WRK_SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "8"))
DEADLINE = 10.0


def sse_connect(port):
    s = socket.create_connection((HOST, port), timeout=DEADLINE)
    s.sendall(f"GET /events HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    got = b""
    while b": events after" not in got:
        chunk = s.recv(65536)
        if not chunk:
            fail("GET /events closed before its first line")
        got += chunk
    return s


def wait_for(s, needle, deadline):
    """Reads s until needle has come; the moment it came."""
    got = b""
    while needle not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"no {needle!r} on the events stream in time")
        s.settimeout(left)
        chunk = s.recv(65536)
        if not chunk:
            fail("the events stream ended")
        got += chunk
    return time.monotonic()


def bench_event(port):
    d = Daemon(port, DEADLINE)
    s = sse_connect(port)
    lat, answer = [], []
    for i in range(RUNS):
        for action, to in (("start", "running"), ("stop", "stopped")):
            needle = f'"service":"ev","from":'.encode()
            t0 = time.monotonic()
            d.call("POST", f"/services/ev/{action}")
            t_answer = time.monotonic()
            t_event = wait_for(s, needle, time.monotonic() + DEADLINE)
            # The answer may come after the event: both are measured from the send.
            lat.append((t_event - t0) * 1000)
            answer.append((t_answer - t0) * 1000)
            d.wait_state("ev", (to,))
            # Drain what else this change published before the next one.
            s.settimeout(0.05)
            try:
                while s.recv(65536):
                    pass
            except socket.timeout:
                pass
    s.close()
    med, ref = statistics.median(lat), statistics.median(answer)
    print(f"event    request sent -> state event at an /events client: median {med:.2f} ms, "
          f"p90 {sorted(lat)[int(len(lat) * 0.9)]:.2f} ms ({len(lat)} changes); the request's "
          f"own answer: median {ref:.2f} ms; ratio {med / ref:.2f} (target: median < 5 ms)")
    return med


def line_reader(proc, out, ready):
    for line in proc.stdout:
        out.append((time.monotonic(), line.rstrip("\n")))
        ready.set()


def bench_follow(port, nanny, fifo, logfile):
    d = Daemon(port, DEADLINE)
    d.call("POST", "/services/follow/start")
    d.wait_state("follow", ("running",))
    w = open(fifo, "w")
    w.write("warm-up\n")
    w.flush()
    url = f"http://{HOST}:{port}"
    ours = subprocess.Popen([nanny, "logs", "follow", "-f", "-n", "0", "--url", url],
                            stdout=subprocess.PIPE, text=True)
    tail = subprocess.Popen(["tail", "-n", "0", "-F", logfile], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    got_ours, got_tail = [], []
    ev_ours, ev_tail = threading.Event(), threading.Event()
    threads = [threading.Thread(target=line_reader, args=(ours, got_ours, ev_ours), daemon=True),
               threading.Thread(target=line_reader, args=(tail, got_tail, ev_tail), daemon=True)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # both have subscribed
    lat, ref = [], []
    try:
        for i in range(RUNS):
            line = f"bench line {i}"
            t0 = time.monotonic()
            w.write(line + "\n")
            w.flush()
            deadline = time.monotonic() + DEADLINE
            for got, store in ((got_ours, lat), (got_tail, ref)):
                while not any(text == line for _, text in got):
                    if time.monotonic() > deadline:
                        fail(f"{line!r} never came through "
                             f"{'nanny logs -f' if got is got_ours else 'tail -F'}")
                    time.sleep(0.0005)
                store.append((next(t for t, text in got if text == line) - t0) * 1000)
            time.sleep(0.02)
    finally:
        ours.terminate()
        tail.terminate()
        ours.wait(5)
        tail.wait(5)
        w.close()
    med, rmed = statistics.median(lat), statistics.median(ref)
    print(f"follow   line written -> printed by nanny logs -f: median {med:.2f} ms, "
          f"max {max(lat):.2f} ms ({len(lat)} lines); tail -F of the log file: median "
          f"{rmed:.2f} ms; ratio {med / rmed:.2f} (target: median < 50 ms)")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def wrk_p99(port):
    out = subprocess.run(["timeout", "-k", "5", str(WRK_SECONDS + 30), "wrk", "-t2", "-c8",
                          f"-d{WRK_SECONDS}s", "--latency",
                          f"http://{HOST}:{port}/services/ev/status"],
                         capture_output=True, text=True).stdout
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m or not rps:
        fail(f"could not read wrk's output:\n{out}")
    v = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return v, float(rps.group(1))


def bench_clients(port, pid):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CLIENTS + 256), hard))
    ref_p99, ref_rps = wrk_p99(port)
    rss0 = rss_kib(pid)
    socks = [sse_connect(port) for _ in range(CLIENTS)]
    rss1 = rss_kib(pid)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    stop = threading.Event()
    received = [0]

    def drain():
        while not stop.is_set():
            for key, _ in sel.select(0.1):
                try:
                    received[0] += len(key.fileobj.recv(65536))
                except BlockingIOError:
                    pass

    def churn():
        d = Daemon(port, DEADLINE)
        while not stop.is_set():
            d.call("POST", "/services/ev/start")
            time.sleep(0.1)
            d.call("POST", "/services/ev/stop")
            time.sleep(0.1)

    threads = [threading.Thread(target=drain), threading.Thread(target=churn)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        p99, rps = wrk_p99(port)
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE)
    rss2 = rss_kib(pid)
    for s in socks:
        s.close()
    print(f"clients  {CLIENTS} /events clients (~10 events/s to each, {received[0] / 1e6:.1f} MB "
          f"read): GET /services/ev/status p99 {p99:.3f} ms at {rps:.0f} req/s; with no "
          f"client: p99 {ref_p99:.3f} ms at {ref_rps:.0f} req/s; ratio {p99 / ref_p99:.2f} "
          f"(target: p99 < 2 ms)")
    print(f"memory   daemon VmRSS {rss0} KiB with no client, {rss1} KiB with {CLIENTS} idle, "
          f"{rss2} KiB after the run: {(rss1 - rss0) / CLIENTS:.1f} KiB per idle client, "
          f"{(rss2 - rss0) / CLIENTS:.1f} KiB per client after events flowed")


def main():
    port, pid, nanny, fifo, logfile = sys.argv[1:6]
    port = int(port)
    which = os.environ.get("BENCH_ONLY", "event follow clients").split()
    if "event" in which:
        bench_event(port)
    if "follow" in which:
        bench_follow(port, nanny, fifo, logfile)
    if "clients" in which:
        bench_clients(port, int(pid))


main()
