"""Scale: at least 10,000 service folders are discovered and served (issue 2, "Bad input
and limits")."""

import concurrent.futures
import os
import time

from conftest import http_request, manifest, wait_until, write_service

COUNT = 10_000
BUDGET_S = 60  # generous for the ASan build; the normal build takes a few seconds


def make_services(root, count):
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        name = f"svc-{i:05d}"
        write_service(root, name, manifest(name, port=20000 + i))


def test_ten_thousand_services(nanny, services_dir):
    began = time.monotonic()
    make_services(services_dir, COUNT)
    # Two broken ones on top: a duplicate name and a port clash.
    write_service(services_dir, "zz-dup", manifest("svc-00001", port=40001))
    write_service(services_dir, "zz-clash", manifest("clash", port=20005))
    d = nanny.serve(services_dir, start_timeout=BUDGET_S)

    r = http_request(d.port, "GET", "/services", timeout=BUDGET_S)
    assert r.status == 200
    body = r.json()
    names = [s["name"] for s in body["services"]]
    assert len(names) == COUNT
    assert set(names) == {f"svc-{i:05d}" for i in range(COUNT)}
    assert sorted(e["folder"] for e in body["errors"]) == ["zz-clash", "zz-dup"]

    health = d.get_json("/health")
    assert health["services"] == COUNT
    assert health["manifest_errors"] == 2
    s = d.get_json("/services/svc-09999")
    assert s["port"] == 20000 + 9999 and s["folder"] == "svc-09999"

    # Many status reads at once stay correct.
    def one(i):
        return http_request(d.port, "GET", f"/services/svc-{i:05d}/status", timeout=BUDGET_S)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for i, r in zip(range(0, COUNT, 37), pool.map(one, range(0, COUNT, 37))):
            assert r.status == 200 and r.json()["name"] == f"svc-{i:05d}"

    # A rescan of them all, and a change among them noticed automatically.
    rd = http_request(d.port, "POST", "/rediscover", timeout=BUDGET_S)
    assert rd.status == 200
    assert len(rd.json()["services"]) == COUNT
    write_service(services_dir, "svc-05000", manifest("svc-05000", port=25000,
                                                      description="edited"))
    wait_until(lambda: d.get_json("/services/svc-05000")["description"] == "edited",
               timeout=10, message="an edit among 10,000 services")
    d.assert_healthy()
    assert d.terminate() == 0, d.stderr[-2000:]
    elapsed = time.monotonic() - began
    assert elapsed < 2 * BUDGET_S, f"took {elapsed:.1f}s"
