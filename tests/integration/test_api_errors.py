"""Routing (404, 405 with Allow, bad names), the lifecycle endpoints' input checks
for now, and request-body validation (400 on bad JSON, wrong types, unknown members)."""

import pytest

from conftest import assert_json_error, free_port, manifest, write_service

ROUTES = [
    # path, method it takes
    ("/health", "GET"),
    ("/services", "GET"),
    ("/services/a", "GET"),
    ("/services/a/status", "GET"),
    ("/services/a/start", "POST"),
    ("/services/a/stop", "POST"),
    ("/services/a/restart", "POST"),
    ("/services/a/logs", "GET"),
    ("/rediscover", "POST"),
]


@pytest.fixture
def app(nanny, services_dir):
    """A daemon with one good service 'a' (no health check: running once spawned) and one
    broken manifest named 'broken'."""
    write_service(services_dir, "a", manifest("a", port=free_port(), health="false"))
    write_service(services_dir, "broken", 'name: broken\nports: ["99999"]\n'
                  'command: ["sleep", "1"]\n')
    return nanny.serve(services_dir)


@pytest.mark.parametrize("path", [
    "/nope", "/index.html", "/dashboard", "/dashboard/", "/health/extra", "/service", "/services/a/frobnicate",
    "/services/a/status/extra", "/services/a/start/now", "/rediscover/x", "//health",
    "/services//status", "/HEALTH", "/health.json", "/api/services",
])
def test_unknown_path_is_json_404(app, path):
    for method in ("GET", "POST"):
        assert_json_error(app.request(method, path), 404, "not_found")


@pytest.mark.parametrize("path,takes", ROUTES)
def test_wrong_method_is_405_with_allow(app, path, takes):
    wrong = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    for method in wrong:
        if method == takes:
            continue
        r = app.request(method, path)
        assert_json_error(r, 405, "method_not_allowed")
        allow = [m.strip() for m in (r.headers.get("Allow") or "").split(",")]
        assert takes in allow, (method, path, r.headers.get("Allow"))
        assert method not in allow


@pytest.mark.parametrize("name", [
    "A", "Upper", "-dash-first", ".dot-first", "_under-first", "has%20space", "semi;colon",
    "a%2Bb", "caf%C3%A9", "a" * 64, "x" * 5000, "%2e%2e", "..", "a%22b", "a%3Cscript%3E",
])
def test_bad_names_are_400_bad_name_on_every_named_route(app, name):
    for suffix, method in (("", "GET"), ("/status", "GET"), ("/start", "POST"),
                           ("/stop", "POST"), ("/restart", "POST"), ("/logs", "GET")):
        r = app.request(method, f"/services/{name}{suffix}")
        # ".." is removed by some clients' path handling; a 404 route miss is also fine.
        if name == "..":
            assert r.status in (400, 404), r
            assert_json_error(r, r.status)
        else:
            assert_json_error(r, 400, "bad_name")
    app.assert_healthy()


def test_name_of_63_characters_is_valid(app):
    assert_json_error(app.get("/services/" + "a" * 63), 404, "not_found")


# --- start / restart ---------------------------------------------------------


@pytest.mark.parametrize("action", ["start", "restart"])
@pytest.mark.parametrize("body,headers", [
    (None, {}),
    ("", {}),
    ("{}", {"Content-Type": "application/json"}),
    ('{"force":true}', {"Content-Type": "application/json"}),
    ('{"force": false}', {"Content-Type": "application/json"}),
    # curl -d sends this Content-Type; the body is still read as JSON.
    ('{"force":true}', {"Content-Type": "application/x-www-form-urlencoded"}),
    ('{"force":true}', {"Content-Type": "text/plain"}),
    ('  \n {"force" : true}\n ', {}),
])
def test_start_accepts_valid_bodies(app, action, body, headers):
    r = app.post(f"/services/a/{action}", body=body, headers=headers)
    assert r.status == 200, r
    assert r.json()["state"] == "running"  # health: false: running once spawned
    assert r.json()["preempted"] == []


@pytest.mark.parametrize("action", ["start", "restart"])
@pytest.mark.parametrize("body", [
    "{", "}", "not json", "force=true", '{"force":true', '{"force":tru}', "[]", "[true]",
    '"force"', "true", "null", "1", '{"force":"yes"}', '{"force":1}', '{"force":null}',
    '{"force":{}}', '{"force":[true]}', '{"other":1}', '{"force":true,"extra":false}',
    '{"force":true,"force":false}', '{"force":true} {"force":true}', "\x00",
    '{"force":true}\x00', "\xff\xfe", '{"\\ud800":1}', "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000,
])
def test_start_rejects_bad_bodies_with_400(app, action, body):
    r = app.post(f"/services/a/{action}", body=body.encode("latin-1"),
                 headers={"Content-Type": "application/json"})
    assert_json_error(r, 400, "bad_request")


@pytest.mark.parametrize("action", ["start", "restart"])
def test_start_wait_healthy_is_accepted(app, action):
    r = app.post(f"/services/a/{action}?wait=healthy")
    assert r.status == 200, r
    assert r.json()["state"] == "running"


@pytest.mark.parametrize("action", ["start", "restart"])
@pytest.mark.parametrize("bad", ["now", "", "HEALTHY", "running", "1", "healthy%20",
                                 "healthy%00", "healthy%00junk"])
def test_start_other_wait_values_are_400(app, action, bad):
    assert_json_error(app.post(f"/services/a/{action}?wait={bad}"), 400, "bad_request")


@pytest.mark.parametrize("action", ["start", "restart", "stop"])
def test_lifecycle_unknown_service_is_404(app, action):
    assert_json_error(app.post(f"/services/nope/{action}"), 404, "not_found")


@pytest.mark.parametrize("action", ["start", "restart", "stop"])
def test_lifecycle_broken_manifest_is_422(app, action):
    body = assert_json_error(app.post(f"/services/broken/{action}"), 422, "invalid_manifest")
    assert body["message"]


# --- stop --------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, "", "{}", " { } ", "\n"])
def test_stop_accepts_empty_body(app, body):
    r = app.post("/services/a/stop", body=body)
    assert r.status == 200, r
    assert r.json()["state"] == "stopped"


@pytest.mark.parametrize("body", ['{"force":true}', '{"x":1}', "{", "[]", "null", "stop",
                                  "\x00\x00"])
def test_stop_rejects_any_other_body(app, body):
    assert_json_error(app.post("/services/a/stop", body=body), 400, "bad_request")


# --- logs --------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?tail=50", "?tail=0", "?tail=10000", "?tail=99999999",
                                   "?tail=99999999999999999999"])
def test_logs_valid_tail(app, query):
    r = app.get(f"/services/a/logs{query}")
    assert r.status == 200, r
    assert r.headers.get("Content-Type", "").startswith("text/plain")


@pytest.mark.parametrize("tail", ["abc", "-1", "1.5", "", "+5", "%205", "5x", "0x10", "1e3",
                                  "9" * 40])
def test_logs_bad_tail_is_400(app, tail):
    assert_json_error(app.get(f"/services/a/logs?tail={tail}"), 400, "bad_request")


def test_logs_unknown_and_broken_service(app):
    assert_json_error(app.get("/services/nope/logs"), 404, "not_found")
    assert_json_error(app.get("/services/broken/logs"), 422, "invalid_manifest")


# --- rediscover bodies -------------------------------------------------------


@pytest.mark.parametrize("body", [None, "", "{}"])
def test_rediscover_accepts_empty_body(app, body):
    r = app.post("/rediscover", body=body)
    assert r.status == 200, r
    assert r.content_type == "application/json"


@pytest.mark.parametrize("body", ["{", '{"force":true}', "[]", "x"])
def test_rediscover_rejects_bodies(app, body):
    assert_json_error(app.post("/rediscover", body=body), 400, "bad_request")


def test_errors_never_leave_the_daemon_unhealthy(app):
    for _ in range(3):
        app.post("/services/a/start", body="{")
        app.get("/services/ZZ")
        app.request("DELETE", "/services")
    app.assert_healthy()
