"""The read endpoints: GET /health, GET /services, GET /services/NAME[/status]."""

import http.client
import os
import re

from conftest import assert_json_error, manifest, write_service

STATUS_KEYS = {
    "name", "description", "driver", "gpu_required", "ports", "port", "state",
    "is_healthy", "started_at", "restarts", "last_error", "health", "folder", "warnings",
}
HEALTH_KEYS = {"ok", "status_code", "latency_ms", "checked_at", "error"}
STATES = {"stopped", "starting", "running", "unhealthy", "stopping", "failed"}


def check_status_shape(s):
    missing = STATUS_KEYS - set(s)
    assert not missing, f"status lacks {missing}: {s}"
    assert isinstance(s["name"], str)
    assert isinstance(s["description"], str)
    assert s["driver"] in ("process", "compose")
    assert isinstance(s["gpu_required"], bool)
    assert isinstance(s["ports"], list)
    assert s["port"] is None or isinstance(s["port"], int)
    assert s["state"] in STATES
    assert isinstance(s["is_healthy"], bool)
    assert isinstance(s["restarts"], int)
    assert isinstance(s["health"], dict) and HEALTH_KEYS <= set(s["health"]), s["health"]
    assert isinstance(s["warnings"], list)


def test_health_on_empty_folder(daemon):
    r = daemon.get("/health")
    assert r.status == 200
    assert r.content_type == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str) and re.match(r"\d+\.\d+", body["version"])
    assert body["services"] == 0
    assert body["manifest_errors"] == 0


def test_health_counts_services_and_errors(nanny, services_dir):
    write_service(services_dir, "one", manifest("one"))
    write_service(services_dir, "two", manifest("two", port=8011))
    write_service(services_dir, "broken", "name: [unclosed\n")
    d = nanny.serve(services_dir)
    body = d.get_json("/health")
    assert body["services"] == 2
    assert body["manifest_errors"] == 1


def test_health_version_matches_nanny_version(nanny, daemon):
    rc, out, _ = nanny.run(["version"])
    assert rc == 0
    assert daemon.get_json("/health")["version"] in out


def test_services_empty(daemon):
    r = daemon.get("/services")
    assert r.status == 200 and r.content_type == "application/json"
    assert r.json() == {"services": [], "errors": []}


def test_services_lists_every_service_with_full_status(nanny, services_dir):
    write_service(services_dir, "alpha", manifest("alpha", port="8012:8000",
                                                  description='"Alpha API"'))
    write_service(services_dir, "beta", manifest("beta"))
    d = nanny.serve(services_dir)
    body = d.services()
    assert body["errors"] == []
    by_name = {s["name"]: s for s in body["services"]}
    assert set(by_name) == {"alpha", "beta"}
    for s in body["services"]:
        check_status_shape(s)
        assert s["state"] == "stopped"
        assert s["is_healthy"] is False
        assert s["started_at"] is None
        assert s["restarts"] == 0
        assert s["last_error"] is None
        assert s["warnings"] == []
    a = by_name["alpha"]
    assert a["description"] == "Alpha API"
    assert a["driver"] == "process"
    assert a["gpu_required"] is False
    assert a["ports"] == ["8012:8000"]
    assert a["port"] == 8012
    assert a["folder"] == "alpha"
    assert by_name["beta"]["port"] is None
    assert by_name["beta"]["ports"] == []


def test_service_and_status_are_the_same_document(nanny, services_dir):
    write_service(services_dir, "svc-folder", manifest("my.svc_1", port=8013))
    d = nanny.serve(services_dir)
    listed = d.services()["services"][0]
    one = d.get_json("/services/my.svc_1")
    status = d.get_json("/services/my.svc_1/status")
    assert one == status == listed
    assert one["name"] == "my.svc_1"
    assert one["folder"] == "svc-folder"
    check_status_shape(one)


def test_status_with_trailing_slash(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    assert d.get_json("/services/a/status/")["name"] == "a"


def test_status_of_unknown_service_is_404(daemon):
    for path in ("/services/nope", "/services/nope/status"):
        body = assert_json_error(daemon.get(path), 404, "not_found")
        assert "nope" in body["message"]


def test_status_of_broken_manifest_is_422(nanny, services_dir):
    write_service(services_dir, "broken", 'name: broken\nports: ["http"]\n'
                  'command: ["sleep", "1"]\n')
    d = nanny.serve(services_dir)
    body = assert_json_error(d.get("/services/broken"), 422, "invalid_manifest")
    assert body["message"]


def test_gpu_and_full_manifest_fields(nanny, services_dir):
    text = """\
name: sd-api
description: Stable diffusion
ports: ["8000:8000", "8001:9000"]
gpu_required: true
command: "python3 -m http.server 8000"
workdir: .
env: {MODEL: sdxl, EMPTY: ~}
health:
  path: /ready
  port: 8001
  interval: 5s
  timeout: 2s
  start_period: 2m
stop_timeout: 1h
restart: on-failure
"""
    write_service(services_dir, "sd", text)
    d = nanny.serve(services_dir)
    body = d.services()
    assert body["errors"] == [], body["errors"]
    s = d.get_json("/services/sd-api")
    check_status_shape(s)
    assert s["gpu_required"] is True
    assert s["driver"] == "process"
    assert s["port"] == 8000
    assert s["ports"] == ["8000:8000", "8001:9000"]
    assert s["warnings"] == []


def test_driver_is_compose_when_folder_has_compose_file(nanny, services_dir):
    write_service(services_dir, "c", "name: c\nports: [\"8020:80\"]\n")
    with open(os.path.join(services_dir, "c", "docker-compose.yml"), "w") as f:
        f.write("services:\n  web:\n    image: nginx\n")
    for i, fname in enumerate(("compose.yaml", "compose.yml", "docker-compose.yaml")):
        write_service(services_dir, f"c{i}", f'name: c{i}\nports: ["{8021 + i}:80"]\n')
        with open(os.path.join(services_dir, f"c{i}", fname), "w") as f:
            f.write("services: {}\n")
    write_service(services_dir, "p", manifest("p"))
    d = nanny.serve(services_dir)
    body = d.services()
    assert body["errors"] == [], body["errors"]
    drivers = {s["name"]: s["driver"] for s in body["services"]}
    assert drivers == {"c": "compose", "c0": "compose", "c1": "compose", "c2": "compose",
                       "p": "process"}


def test_head_is_answered_like_get_without_body(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    for path in ("/health", "/services", "/services/a", "/services/a/status"):
        r = d.request("HEAD", path)
        assert r.status == 200, (path, r)
        assert r.content_type == "application/json"
        assert r.body == b""


def test_json_responses_are_utf8_json(nanny, services_dir):
    write_service(services_dir, "u", manifest("u", description='"Größe – 画像"'))
    d = nanny.serve(services_dir)
    assert d.get_json("/services/u")["description"] == "Größe – 画像"


def test_keep_alive_connection_serves_many_requests(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    try:
        for i in range(50):
            path = ("/health", "/services", "/services/a", "/services/nope")[i % 4]
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            assert r.status == (404 if path == "/services/nope" else 200), (path, body)
            assert body
    finally:
        conn.close()
