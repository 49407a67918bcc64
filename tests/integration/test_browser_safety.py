"""Browser safety: a web page the user visits can reach 127.0.0.1 too. Requests whose Host
is not the daemon's own name (DNS rebinding) and state-changing requests from a foreign
Origin are refused with 403; curl, which sends no Origin, works as in the seed."""

import pytest

from conftest import assert_json_error, free_port, http_request, manifest, write_service


@pytest.fixture
def app(nanny, services_dir):
    write_service(services_dir, "a", manifest("a", port=free_port()))
    return nanny.serve(services_dir)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"])
def test_loopback_hosts_with_our_port_are_served(app, host):
    r = app.get("/services/a", headers={"Host": f"{host}:{app.port}"})
    assert r.status == 200, r


def test_loopback_host_without_port_is_served(app):
    assert app.get("/health", headers={"Host": "localhost"}).status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost:1", "10.0.0.1:{port}", "localhost.:{port}"])
def test_foreign_hosts_are_refused(app, host):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host."""
    host = host.format(port=app.port)
    for path in ("/health", "/services", "/services/a/status"):
        assert_json_error(app.get(path, headers={"Host": host}), 403, "forbidden_host")
    assert_json_error(app.post("/rediscover", headers={"Host": host}), 403, "forbidden_host")


def test_foreign_origin_cannot_change_anything(app):
    """A cross-site form or fetch(no-cors) POST carries the page's Origin."""
    for origin in ("http://evil.example", "null", "http://localhost:1", "https://localhost"):
        headers = {"Origin": origin, "Content-Type": "text/plain"}
        assert_json_error(app.post("/rediscover", body="{}", headers=headers), 403,
                          "forbidden_origin")
        assert_json_error(app.post("/services/a/start", body='{"force":true}', headers=headers),
                          403, "forbidden_origin")


def test_own_origin_and_no_origin_may_change(app):
    assert app.post("/rediscover", headers={"Origin": f"http://127.0.0.1:{app.port}"}).status == 200
    assert app.post("/rediscover", headers={"Origin": f"http://localhost:{app.port}"}).status == 200
    # curl sends no Origin: the seed's command lines keep working.
    assert app.post("/rediscover").status == 200


def test_reads_from_a_foreign_origin_are_not_refused(app):
    """Reading is harmless here: without CORS headers the page cannot see the answer."""
    r = app.get("/services", headers={"Origin": "http://evil.example"})
    assert r.status == 200
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers.keys()}


def test_config_allows_more_hosts_and_origins(nanny, services_dir, workdir):
    write_service(services_dir, "a", manifest("a", port=free_port()))
    config = workdir / "nanny.yaml"
    config.write_text("allowed_hosts: [gpu-box.local]\n"
                      "allowed_origins: [\"http://dashboard.local:3000\"]\n")
    d = nanny.serve(services_dir, extra_args=["--config", str(config)])
    assert d.get("/health", headers={"Host": f"gpu-box.local:{d.port}"}).status == 200
    assert d.get("/health", headers={"Host": "GPU-BOX.local"}).status == 200
    r = http_request(d.port, "POST", "/rediscover",
                     headers={"Origin": "http://dashboard.local:3000"})
    assert r.status == 200
    assert_json_error(d.post("/rediscover", headers={"Origin": "http://dashboard.local:3001"}),
                      403, "forbidden_origin")
