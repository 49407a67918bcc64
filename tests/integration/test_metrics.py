"""GET /metrics (issue 13, SPEC section 7): Prometheus' text format (OpenMetrics when
asked), checked by Debian's `promtool check metrics` and scraped by a real Prometheus that
the test starts; every service has every series from the start, the GPU holder and the
HTTP requests by route pattern; a large page is rendered in slices whose client may go."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import HOST, free_port, http_request, manifest, wait_until, write_service
from lifecycle_helpers import lab  # noqa: F401 (a fixture)
from test_gate import bearer, new_key, write_keys

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"
STATES = ("stopped", "starting", "running", "unhealthy", "stopping", "failed")
SERVICE_FAMILIES = ("nanny_service_up", "nanny_service_state", "nanny_service_healthy",
                    "nanny_service_restarts_total", "nanny_service_health_latency_seconds")
OPENMETRICS = "application/openmetrics-text"

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, ((label, value), ...)): float} and {family: type}; a sample twice fails."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            assert family not in types, f"family {family} twice"
            types[family] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample: {line!r}"
        labels = tuple(LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, f"sample twice: {line!r}"
        samples[key] = float(m.group(3))
    return samples, types


def value(samples, name, **labels):
    key = (name, tuple(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def scrape(d, accept=None, headers=None):
    h = dict(headers or {})
    if accept:
        h["Accept"] = accept
    r = d.get("/metrics", headers=h)
    assert r.status == 200, r
    return r


def promtool_check(text):
    """`promtool check metrics` on the page: exit 0 and nothing said (lint included)."""
    assert os.access(PROMTOOL, os.X_OK), "promtool is missing: ./test.sh installs prometheus"
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), (
        p.returncode, p.stdout.decode()[-2000:], p.stderr.decode()[-2000:])


def assert_service_series(samples, name, gpu):
    for family in SERVICE_FAMILIES:
        if family == "nanny_service_state":
            for s in STATES:
                value(samples, family, service=name, state=s)
        else:
            value(samples, family, service=name)
    assert sum(value(samples, "nanny_service_state", service=name, state=s)
               for s in STATES) == 1
    value(samples, "nanny_service_start_duration_seconds_count", service=name)
    value(samples, "nanny_service_start_duration_seconds_bucket", service=name, le="+Inf")
    holder = ("nanny_gpu_holder", (("service", name),))
    assert (holder in samples) == gpu, name


# --- the page -------------------------------------------------------------------------


def test_every_service_has_every_series_from_the_start(lab):
    lab.add("web")
    lab.add("g1", gpu=True)
    lab.add("g2", gpu=True)
    lab.add("plain", health=False)
    write_service(lab.services_dir, "broken", "name: broken\ncommand: 12\n")
    d = lab.serve()
    r = scrape(d)
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.body.decode()
    promtool_check(text)
    samples, types = parse(text)
    for name, gpu in (("web", False), ("g1", True), ("g2", True), ("plain", False)):
        assert_service_series(samples, name, gpu)
        assert value(samples, "nanny_service_state", service=name, state="stopped") == 1
        assert value(samples, "nanny_service_up", service=name) == 0
        assert math.isnan(value(samples, "nanny_service_health_latency_seconds", service=name))
    assert value(samples, "nanny_services") == 4
    assert value(samples, "nanny_manifest_errors") == 1
    assert value(samples, "nanny_gpu_queue_length") == 0
    assert types["nanny_service_start_duration_seconds"] == "histogram"
    assert types["nanny_service_restarts_total"] == "counter"
    assert types["nanny_http_requests_total"] == "counter"
    for family in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert family in types, family
    assert value(samples, "process_resident_memory_bytes") > 1e6
    assert abs(value(samples, "process_start_time_seconds") - time.time()) < 3600


def test_states_health_and_the_gpu_holder_follow_the_services(lab):
    lab.add("web")
    lab.add("g1", gpu=True)
    lab.add("g2", gpu=True)
    lab.add("plain", health=False)
    d = lab.serve()
    for name in ("web", "g1", "plain"):
        assert lab.start(name, wait=True).status == 200
    assert lab.start("g2").status == 409
    text = scrape(d).body.decode()
    promtool_check(text)
    samples, _ = parse(text)
    for name in ("web", "g1", "plain"):
        assert value(samples, "nanny_service_state", service=name, state="running") == 1
        assert value(samples, "nanny_service_state", service=name, state="stopped") == 0
        assert value(samples, "nanny_service_up", service=name) == 1
        assert value(samples, "nanny_service_start_duration_seconds_count", service=name) == 1
    assert value(samples, "nanny_service_healthy", service="web") == 1
    assert value(samples, "nanny_service_healthy", service="plain") == 0  # no check: up only
    assert value(samples, "nanny_service_health_latency_seconds", service="web") >= 0
    assert value(samples, "nanny_gpu_holder", service="g1") == 1
    assert value(samples, "nanny_gpu_holder", service="g2") == 0
    assert value(samples, "nanny_service_state", service="g2", state="stopped") == 1

    assert lab.start("g2", force=True, wait=True).status == 200
    lab.stop("web")
    samples, _ = parse(scrape(d).body.decode())
    assert value(samples, "nanny_gpu_holder", service="g1") == 0
    assert value(samples, "nanny_gpu_holder", service="g2") == 1
    assert value(samples, "nanny_service_state", service="g1", state="stopped") == 1
    assert value(samples, "nanny_service_up", service="web") == 0
    assert value(samples, "nanny_service_start_duration_seconds_count", service="g2") == 1


def test_restarts_total_only_grows(lab):
    lab.add("crashy", ["--crash-after", "300"], restart="on-failure")
    d = lab.serve()
    assert lab.start("crashy").status in (200, 202)

    def restarts():
        return value(parse(scrape(d).body.decode())[0], "nanny_service_restarts_total",
                     service="crashy")

    wait_until(lambda: restarts() >= 2, timeout=20, message="two automatic restarts")
    before = restarts()
    # A person's start clears the status' restarts; the counter keeps counting.
    lab.stop("crashy")
    r = lab.start("crashy")
    assert r.status in (200, 202) and r.json()["restarts"] == 0, r
    assert restarts() >= before
    wait_until(lambda: restarts() > before, timeout=20, message="a restart after the start")


def test_requests_are_counted_by_route_pattern_never_by_path(lab):
    lab.add("web")
    d = lab.serve()
    for _ in range(3):
        assert d.get("/services/web/status").status == 200
    assert d.get("/services/nosuch-1/status").status == 404
    assert d.get("/services/nosuch-2/status").status == 404
    assert d.get("/no/such/path/at/all").status == 404
    assert d.get("/services/web/status?x=1").status == 200
    assert d.post("/metrics").status == 405
    samples, _ = parse(scrape(d).body.decode())
    route = "/services/{name}/status"
    assert value(samples, "nanny_http_requests_total", route=route, code="200") == 4
    assert value(samples, "nanny_http_requests_total", route=route, code="404") == 2
    assert value(samples, "nanny_http_requests_total", route="other", code="404") == 1
    assert value(samples, "nanny_http_requests_total", route="/metrics", code="405") == 1
    assert value(samples, "nanny_http_request_duration_seconds_count", route=route) == 6
    assert value(samples, "nanny_http_request_duration_seconds_bucket", route=route,
                 le="+Inf") == 6
    routes = {dict(labels).get("route") for (name, labels) in samples
              if name.startswith("nanny_http_")}
    assert not any(r and ("web" in r or "nosuch" in r or "such/path" in r) for r in routes), routes
    # The scrape itself is counted once it is answered.
    samples, _ = parse(scrape(d).body.decode())
    assert value(samples, "nanny_http_requests_total", route="/metrics", code="200") >= 1


def test_openmetrics_when_asked(lab):
    lab.add("web")
    d = lab.serve()
    d.get("/services/web/status")
    prometheus_accept = ("application/openmetrics-text;version=1.0.0,"
                         "application/openmetrics-text;version=0.0.1;q=0.75,"
                         "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    r = scrape(d, accept=prometheus_accept)
    assert r.headers["Content-Type"] == (
        "application/openmetrics-text; version=1.0.0; charset=utf-8")
    text = r.body.decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    # The OpenMetrics parser of Prometheus' Python client, strict about the grammar.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["nanny_http_requests"].type == "counter"
    les = {s.labels["le"] for s in families["nanny_service_start_duration_seconds"].samples
           if "le" in s.labels}
    assert "1.0" in les and "+Inf" in les  # canonical floats, as OpenMetrics asks
    samples, types = parse(text)
    assert types["nanny_http_requests"] == "counter"  # a counter's family drops _total
    assert types["nanny_service_restarts"] == "counter"
    assert "nanny_http_requests_total" not in types
    value(samples, "nanny_service_restarts_total", service="web")
    # A media type that merely contains the words is not OpenMetrics.
    for accept in ("text/plain", "application/openmetrics-textual", "*/*", "x",
                   "application/openmetrics-text;q=0, text/plain",
                   "application/openmetrics-text; version=1.0.0; q=0.0"):
        r = scrape(d, accept=accept)
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), accept
        assert "# EOF" not in r.body.decode()


def test_head_and_query_and_keys(nanny, workdir, services_dir):
    keys = {role: new_key() for role in ("user", "viewer")}
    path = write_keys(workdir / "keys.yaml", [(f"{r}-key", r, k) for r, k in keys.items()])
    write_service(services_dir, "idle", manifest("idle"))
    d = nanny.serve(services_dir, extra_args=["--keys", path])
    r = d.get("/metrics")
    assert r.status == 401 and r.json()["error"] == "unauthorized"
    assert d.get("/metrics", headers=bearer(keys["user"])).status == 403
    r = d.get("/metrics?debug=1", headers=bearer(keys["viewer"]))
    assert r.status == 200 and b'nanny_service_up{service="idle"} 0' in r.body
    r = d.request("HEAD", "/metrics", headers=bearer(keys["viewer"]))
    assert r.status == 200 and r.body == b""
    assert d.request("PUT", "/metrics", headers=bearer(keys["viewer"])).status == 405


# --- a large page ---------------------------------------------------------------------


def many_services(services_dir, n, prefix="s"):
    for i in range(n):
        write_service(services_dir, f"{prefix}{i:04d}", manifest(f"{prefix}{i:04d}"))


def test_a_thousand_services_in_one_valid_page(nanny, services_dir):
    many_services(services_dir, 1000)
    d = nanny.serve(services_dir, extra_args=["--log-level", "debug"])
    text = scrape(d).body.decode()
    promtool_check(text)
    samples, _ = parse(text)
    for i in (0, 499, 999):
        assert_service_series(samples, f"s{i:04d}", False)
    assert value(samples, "nanny_services") == 1000
    # Rendered in slices (1.7 MB in 0.2 ms of the loop's time each): the log says how many.
    line = d.wait_for_log(r"metrics: a page of \d+ bytes for 1000 services in \d+ slices")
    assert int(re.search(r"in (\d+) slices", line.group(0)).group(1)) > 1, line.group(0)


def test_rescans_during_large_pages_never_break_one(nanny, services_dir):
    """Pages rendered in slices while a rescan adds and removes services in between: each
    page is whole and valid (one copy of every series), the daemon stays up."""
    many_services(services_dir, 800)
    d = nanny.serve(services_dir)
    stop = threading.Event()
    problems = []

    def churn():
        i = 0
        while not stop.is_set() and i < 40:
            folder = services_dir / f"s{i % 800:04d}"
            if folder.exists():
                shutil.rmtree(folder)
            else:
                write_service(services_dir, folder.name, manifest(folder.name))
            r = d.post("/rediscover")
            if r.status != 200:
                problems.append(r)
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(15):
            text = scrape(d).body.decode()
            samples, _ = parse(text)  # no sample twice
            n = value(samples, "nanny_services")
            ups = [k for k in samples if k[0] == "nanny_service_up"]
            assert len(ups) == n
    finally:
        stop.set()
        t.join(60)
    assert not problems, problems
    promtool_check(scrape(d).body.decode())


def test_scrapes_at_once_take_turns(nanny, services_dir):
    """Many clients scraping a large page at once: each gets a whole valid page, or, past
    the pages that may wait their turn, 503 with Retry-After; the daemon stays up."""
    many_services(services_dir, 1000)
    d = nanny.serve(services_dir)
    answers = []

    def scrape_once(i):
        accept = OPENMETRICS if i % 2 else None
        answers.append((i, d.get("/metrics", headers={"Accept": accept} if accept else {})))

    threads = [threading.Thread(target=scrape_once, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 24
    ok = 0
    for i, r in answers:
        if r.status == 503:
            assert r.json()["error"] == "busy" and r.headers["Retry-After"] == "1", r
            continue
        assert r.status == 200, r
        text = r.body.decode()
        samples, _ = parse(text)
        assert value(samples, "nanny_services") == 1000
        assert text.endswith("# EOF\n") == bool(i % 2)
        ok += 1
    assert ok >= 1
    assert d.get("/health").status == 200


def test_clients_that_go_during_a_large_page(nanny, services_dir):
    many_services(services_dir, 1500)
    d = nanny.serve(services_dir)
    for _ in range(20):
        s = socket.create_connection((HOST, d.port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.close()
    # Half a page read, then gone.
    s = socket.create_connection((HOST, d.port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    s.recv(1000)
    s.close()
    # The pages of clients that went are dropped as the server notices; until then they
    # hold their turns, and a scrape past the cap is told to come back.
    pages = []

    def whole_page():
        r = d.get("/metrics")
        assert r.status in (200, 503), r
        if r.status == 200:
            pages.append(r.body.decode())
        return bool(pages)

    wait_until(whole_page, timeout=30, interval=0.5, message="a whole page again")
    samples, _ = parse(pages[0])
    assert value(samples, "nanny_services") == 1500
    assert d.get("/health").status == 200


# --- a real Prometheus ----------------------------------------------------------------


def prometheus_query(port, query):
    q = urllib.parse.urlencode({"query": query})
    r = http_request(port, "GET", f"/api/v1/query?{q}", timeout=10)
    assert r.status == 200, r
    body = json.loads(r.body)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(workdir):
    """Starts Debian's Prometheus on a free port with a config the test writes; stopped
    and its data removed at the end."""
    assert os.access(PROMETHEUS, os.X_OK), "prometheus is missing: ./test.sh installs it"
    procs = []

    def start(target_port, key=None):
        port = free_port()
        cfg = workdir / "prometheus.yml"
        auth = f"    authorization:\n      credentials: {key}\n" if key else ""
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: nanny\n"
            f"{auth}    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        log = open(workdir / "prometheus.log", "wb")
        p = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={workdir / 'tsdb'}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
        procs.append((p, log))
        return port

    yield start
    for p, log in procs:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        log.close()


def test_prometheus_scrapes_states_and_the_gpu_holder(lab, prometheus, workdir):
    lab.add("web")
    lab.add("g1", gpu=True)
    lab.add("g2", gpu=True)
    key, op_key = new_key(), new_key()
    keys = write_keys(workdir / "keys.yaml", [("prom", "viewer", key), ("op", "operator", op_key)])
    d = lab.serve(extra_args=["--keys", keys])
    port = prometheus(d.port, key=key)

    def results(query):
        try:
            return prometheus_query(port, query)
        except (OSError, AssertionError):
            return None

    def one(query, expect):
        res = results(query)
        return bool(res) and len(res) == 1 and float(res[0]["value"][1]) == expect

    wait_until(lambda: one('up{job="nanny"}', 1), timeout=60,
               message="Prometheus scraping the daemon (up == 1)")
    wait_until(lambda: one('nanny_service_state{service="web",state="stopped"}', 1), timeout=30,
               message="web stopped in Prometheus")
    assert d.post("/services/g1/start", headers=bearer(op_key)).status in (200, 202)
    wait_until(lambda: one('nanny_gpu_holder{service="g1"}', 1), timeout=30,
               message="g1 the GPU holder in Prometheus")
    assert one('nanny_gpu_holder{service="g2"}', 0)
    wait_until(lambda: one('nanny_service_state{service="g1",state="running"}', 1), timeout=30,
               message="g1 running in Prometheus")
    res = results('sum by (route) (nanny_http_requests_total{route="/metrics"})')
    assert res and float(res[0]["value"][1]) >= 1
    # The Grafana dashboard's queries run on what Prometheus scraped.
    for expr in grafana_exprs():
        prometheus_query(port, expr)
    assert prometheus_query(port, "nanny_gpu_holder == 1")[0]["metric"]["service"] == "g1"


# --- the Grafana dashboard (deploy/grafana-dashboard.json) -------------------------------

GRAFANA = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "grafana-dashboard.json")
METRIC = re.compile(r"\b((?:nanny|process)_[a-z_]+)\b")


def grafana_exprs():
    """Every query of the dashboard, its variables given values Prometheus takes."""
    with open(GRAFANA) as f:
        dash = json.load(f)
    exprs = []
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            exprs.append(t["expr"].replace("$__rate_interval", "1m").replace("$service", ".*")
                         .replace("$job", ".*"))
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "service", "job"} <= names
    return exprs


def test_grafana_dashboard_queries_what_the_daemon_serves(lab, workdir):
    lab.add("g1", gpu=True)
    d = lab.serve()
    d.get("/services/g1/status")
    _, types = parse(scrape(d).body.decode())
    exprs = grafana_exprs()
    for expr in exprs:
        for name in METRIC.findall(expr):
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in types or (family in types and types[family] == "histogram"), (
                f"the dashboard queries {name}, which GET /metrics does not serve")
    # Every query is valid PromQL: promtool checks them as recording rules.
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = workdir / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    p = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, (p.stdout.decode()[-2000:], p.stderr.decode()[-2000:])
