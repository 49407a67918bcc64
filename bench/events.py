"""The figures of issue 11, measured against a running daemon (bench/events.sh starts it):

  event     state change -> event at a GET /events client: the service `ev` is killed
            (SIGKILL) and the time to its state event (running -> failed) on the events
            stream is measured, beside the time the kernel takes to tell this script of
            the death through a pidfd (the reference: the change itself)
  follow    a service's line -> `nanny logs -f` prints it: the service is `cat` of a FIFO
            this script writes to; the time from the write to the line on nanny's stdout,
            beside `tail -F` of the same log file as the reference
  clients   1,000 /events clients held open: p99 of GET /services/ev/status under wrk
            (one thread, 8 connections), idle, with ~10 discovery events/s (a folder added
            and removed, POST /rediscover) and with ~10 starts or stops/s, each beside the
            same run with no client; and the daemon's memory per client (VmRSS)

Usage: python3 bench/events.py PORT DAEMON_PID NANNY_BIN FIFO LOGFILE PIDFILE
All traffic goes to 127.0.0.1; every wait has a deadline."""

import os
import re
import resource
import select
import signal
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


def bench_event(port, pidfile):
    """The service `ev` runs `sleep` (its pid in pidfile); the state change is its death:
    SIGKILL at t0, then the moment the kernel tells this script (a pidfd: the reference)
    and the moment the daemon's state event (running -> failed) reaches the events
    stream."""
    d = Daemon(port, DEADLINE)
    s = sse_connect(port)
    lat, ref = [], []
    for i in range(RUNS):
        try:
            os.remove(pidfile)
        except FileNotFoundError:
            pass
        d.call("POST", "/services/ev/start")
        d.wait_state("ev", ("running",))
        deadline = time.monotonic() + DEADLINE
        pid = None
        while pid is None:
            try:
                with open(pidfile) as f:
                    pid = int(f.read())
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    fail("ev never wrote its pid")
                time.sleep(0.001)
        pidfd = os.pidfd_open(pid)
        # What the start published is read before the measure.
        s.settimeout(0.05)
        try:
            while s.recv(65536):
                pass
        except socket.timeout:
            pass
        s.setblocking(True)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        t_ref = t_event = None
        got = b""
        while t_ref is None or t_event is None:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("no death or no event in time")
            ready, _, _ = select.select([pidfd, s], [], [], left)
            now = time.monotonic()
            if pidfd in ready and t_ref is None:
                t_ref = now
            if s in ready:
                got += s.recv(65536)
                if t_event is None and b'"to":"failed"' in got:
                    t_event = now
        os.close(pidfd)
        lat.append((t_event - t0) * 1000)
        ref.append((t_ref - t0) * 1000)
        d.wait_state("ev", ("failed", "stopped"))
    s.close()
    med, rmed = statistics.median(lat), statistics.median(ref)
    print(f"event    a service dies -> its state event at an /events client: median "
          f"{med:.2f} ms, p90 {sorted(lat)[int(len(lat) * 0.9)]:.2f} ms ({len(lat)} deaths); "
          f"the kernel telling this script (pidfd): median {rmed:.2f} ms; ratio "
          f"{med / rmed:.1f} (target: median < 5 ms)")
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
    out = subprocess.run(["timeout", "-k", "5", str(WRK_SECONDS + 30), "wrk", "-t1", "-c8",
                          f"-d{WRK_SECONDS}s", "--latency",
                          f"http://{HOST}:{port}/services/ev/status"],
                         capture_output=True, text=True).stdout
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)$", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m or not rps:
        fail(f"could not read wrk's output:\n{out}")
    v = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return v, float(rps.group(1))


def churn_thread(port, kind, stop, services_dir):
    """Publishes events until stop is set, some 10 a second: `rediscover` adds and removes
    a service folder (a discovery event each, no process started), `lifecycle` starts and
    stops `ev` (state events; each start forks a process)."""
    d = Daemon(port, DEADLINE)
    folder = os.path.join(services_dir, "churn")
    i = 0
    while not stop.is_set():
        if kind == "rediscover":
            if i % 2 == 0:
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, "service.yaml"), "w") as f:
                    f.write('name: churn\ncommand: ["sleep", "1"]\nhealth: false\n')
            else:
                os.remove(os.path.join(folder, "service.yaml"))
            d.call("POST", "/rediscover")
        else:
            d.call("POST", "/services/ev/start" if i % 2 == 0 else "/services/ev/stop")
        i += 1
        time.sleep(0.1)


def wrk_with(port, kind, services_dir):
    stop = threading.Event()
    t = threading.Thread(target=churn_thread, args=(port, kind, stop, services_dir))
    if kind:
        t.start()
    try:
        time.sleep(0.3)
        return wrk_p99(port)
    finally:
        stop.set()
        if kind:
            t.join(DEADLINE)


def bench_clients(port, pid, services_dir):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CLIENTS + 256), hard))
    runs = {}
    for kind in (None, "rediscover", "lifecycle"):
        runs[(0, kind)] = wrk_with(port, kind, services_dir)
    rss0 = rss_kib(pid)
    socks = [sse_connect(port) for _ in range(CLIENTS)]
    rss1 = rss_kib(pid)
    received = 0
    for kind in (None, "rediscover", "lifecycle"):
        runs[(CLIENTS, kind)] = wrk_with(port, kind, services_dir)
        # What came to the clients is read between runs: during one, what ~10 s of
        # events bring fits in each socket's buffer, and reading would take the cores
        # that the daemon and wrk share.
        for c in socks:
            c.setblocking(False)
            try:
                while True:
                    data = c.recv(1 << 20)
                    if not data:
                        fail("the daemon ended an events stream")
                    received += len(data)
            except BlockingIOError:
                pass
    rss2 = rss_kib(pid)
    for c in socks:
        c.close()
    what = {None: "idle", "rediscover": "~10 discovery events/s",
            "lifecycle": "~10 starts or stops/s (forks)"}
    for kind in (None, "rediscover", "lifecycle"):
        (p0, r0), (p1, r1) = runs[(0, kind)], runs[(CLIENTS, kind)]
        print(f"clients  {what[kind]:<30} GET /services/ev/status p99: {p1:7.3f} ms with "
              f"{CLIENTS} /events clients ({r1:.0f} req/s), {p0:7.3f} ms with none "
              f"({r0:.0f} req/s); ratio {p1 / p0:.2f} (target: p99 < 2 ms)")
    print(f"memory   daemon VmRSS {rss0} KiB with no client, {rss1} KiB with {CLIENTS} idle, "
          f"{rss2} KiB after the runs ({received / 1e6:.1f} MB of events read by the "
          f"clients): {(rss1 - rss0) / CLIENTS:.1f} KiB per idle client, "
          f"{(rss2 - rss0) / CLIENTS:.1f} KiB per client after events flowed")


def main():
    port, pid, nanny, fifo, logfile, pidfile = sys.argv[1:7]
    port = int(port)
    which = os.environ.get("BENCH_ONLY", "event follow clients").split()
    if "event" in which:
        bench_event(port, pidfile)
    if "follow" in which:
        bench_follow(port, nanny, fifo, logfile)
    if "clients" in which:
        bench_clients(port, int(pid), os.path.dirname(os.path.dirname(fifo)) + "/services")


main()
