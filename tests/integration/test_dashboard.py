"""The dashboard at GET / (issue 13 part 2, SPEC section 7): its files as HTTP answers
(Content-Type, Content-Security-Policy, ETag, no key needed), then the page itself in
Debian's headless Chromium driven by playwright-core (tests/mcp/dashboard.mjs, installed
by tests/mcp/install.sh): the services listed, a click that starts one and turns its
state word running without a reload, a 409 naming the GPU's holder and the force button,
a followed log, changes made by another client (curl) shown live, the key asked for once
and a viewer refused a start in words, a phone's viewport, a reconnection to a new
daemon, and nothing fetched from outside.

Screenshots are saved into $NANNY_ARTEFACTS (./test.sh sets it and prints it), else
into the test's temporary folder.
"""

import json
import os
import queue
import shutil
import subprocess
import threading

import pytest

from conftest import assert_json_error, clean_env, free_port
from lifecycle_helpers import lab  # noqa: F401 (a fixture)
from mcp_helpers import MCP_DIR, client_node, run_script
from test_gate import bearer, new_key, write_keys

CHROMIUM = "/usr/bin/chromium"
BROWSER_TIMEOUT = 420.0  # seconds for one browser scenario, the ASan daemon included
ASSETS = {
    "/": "text/html; charset=utf-8",
    "/dashboard/app.js": "text/javascript; charset=utf-8",
    "/dashboard/style.css": "text/css; charset=utf-8",
}


def artefacts(request, tmp_path):
    """The folder for this test's screenshots: $NANNY_ARTEFACTS/TEST, else under tmp."""
    root = os.environ.get("NANNY_ARTEFACTS") or str(tmp_path / "artefacts")
    folder = os.path.join(root, request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def require_chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: it is the Debian package chromium "
                    "(scripts/deps.sh installs it)", pytrace=False)


def browse(scenario, daemon, folder, *args):
    """Runs one scenario of dashboard.mjs and checks what holds for every page: no
    request left 127.0.0.1, no script error, every screenshot written."""
    require_chromium()
    url = f"http://127.0.0.1:{daemon.port}/"
    out = run_script("dashboard.mjs", [scenario, url, folder, *args], daemon,
                     env={"NANNY_CHROMIUM": CHROMIUM}, timeout=BROWSER_TIMEOUT)
    return check_pages(out, url)


def check_pages(out, url):
    """What holds for every scenario's pages; returns out."""
    assert out["requests"], out
    assert out["outside"] == [], out["outside"]
    assert all(u.startswith(url) for u in out["requests"]), out["requests"]
    # Chromium logs each refused fetch (the 409, the 401s) as "Failed to load resource";
    # anything else is the page's own error.
    errors = [e for e in out["consoleErrors"] if not e.startswith("Failed to load resource")]
    assert errors == [], errors
    for shot in out["screenshots"]:
        assert os.path.getsize(shot) > 1000, shot
    return out


# --- the files, over HTTP ---------------------------------------------------------------

def test_files_are_served_with_their_headers(lab):
    d = lab.serve()
    for path, content_type in ASSETS.items():
        r = d.get(path)
        assert r.status == 200, (path, r)
        assert r.headers["Content-Type"] == content_type, (path, r.headers)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp, csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
        assert r.headers["Cache-Control"] == "no-cache", r.headers
        assert r.headers["X-Content-Type-Options"] == "nosniff", r.headers
        etag = r.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"'), etag
        again = d.get(path, headers={"If-None-Match": etag})
        assert again.status == 304 and again.body == b"", again
        assert again.headers["ETag"] == etag, again.headers
        assert d.get(path, headers={"If-None-Match": '"other"'}).status == 200
        head = d.request("HEAD", path)
        assert head.status == 200 and head.body == b"", head
        assert head.headers["Content-Type"] == content_type, head.headers
    page = d.get("/").body.decode()
    assert '<meta name="viewport"' in page
    assert "<script>" not in page and "http://" not in page and "https://" not in page


def test_files_take_get_only(lab):
    d = lab.serve()
    for path in ASSETS:
        r = d.post(path)
        assert_json_error(r, 405, "method_not_allowed")
        assert r.headers["Allow"] == "GET, HEAD", r.headers


def test_files_need_no_key_and_the_data_does(lab, workdir):
    viewer = new_key()
    keys = write_keys(os.path.join(str(workdir), "keys.yaml"), [("v", "viewer", viewer)])
    d = lab.serve(extra_args=["--keys", keys])
    for path in ASSETS:
        assert d.get(path).status == 200, path
    assert_json_error(d.get("/services"), 401, "unauthorized")
    assert_json_error(d.get("/events"), 401, "unauthorized")
    assert d.get("/services", headers=bearer(viewer)).status == 200


# --- the page, in Chromium --------------------------------------------------------------

def test_dashboard_in_chromium(lab, request, tmp_path):
    lab.add("cpu-svc")
    lab.add("gpu-a", gpu=True)
    lab.add("gpu-b", gpu=True)
    lab.add("chatty", ["--print-lines", "3", "--print-interval", "200"])
    d = lab.serve()
    out = browse("flow", d, artefacts(request, tmp_path), "cpu-svc", "gpu-a", "gpu-b", "chatty")

    assert sorted(out["listed"]) == ["chatty", "cpu-svc", "gpu-a", "gpu-b"], out
    assert out["cpuHealth"].startswith("healthy"), out
    # The 409 named the holder and offered the force button, which worked.
    assert "gpu-a is using the GPU" in out["conflict"], out
    assert out["forceVisible"] is True, out
    assert "gpu-a" in out["afterForce"], out
    # The log panel followed: numbered lines later than the first ones came.
    assert out["logs"]["later"] >= out["logs"]["first"] + 3, out
    # All of it without a reload, on one navigation.
    assert out["noReload"] is True and out["navigations"] == 1, out
    # On a phone: no sideways scrolling, every card and button inside, buttons tappable.
    phone = out["phone"]
    assert phone["width"] == 390 and phone["scrollWidth"] <= 390, phone
    assert phone["inside"] is True and phone["smallest"] >= 40, phone
    names = sorted(os.path.basename(s) for s in out["screenshots"])
    assert names == ["desktop-409.png", "desktop-logs.png", "desktop.png", "phone-full.png",
                     "phone.png"], names
    # What the page did is what the daemon says (the phone stopped gpu-b).
    assert lab.state("gpu-b") == "stopped"
    assert lab.state("gpu-a") == "stopped"
    assert lab.state("cpu-svc") == "running"
    assert lab.state("chatty") == "running"


def test_dashboard_with_keys_in_chromium(lab, workdir, request, tmp_path):
    operator, viewer = new_key(), new_key()
    keys = write_keys(os.path.join(str(workdir), "keys.yaml"),
                      [("ops", "operator", operator), ("watcher", "viewer", viewer)])
    lab.add("svc")
    d = lab.serve(extra_args=["--keys", keys])
    out = browse("keys", d, artefacts(request, tmp_path), "svc", operator, viewer)

    assert "refused" in out["askedAgain"], out
    assert out["stored"] is True, out
    assert out["operatorDialogs"] == 0, out  # asked once: no dialog open after
    assert out["refused"].startswith("Refused:") and "operator" in out["refused"], out
    assert out["operatorState"] == "stopped", out
    r = d.get("/services/svc/status", headers=bearer(viewer))
    assert r.status == 200 and r.json()["state"] == "stopped", r


def test_dashboard_reconnects_to_a_new_daemon(lab, request, tmp_path):
    # The page is live; its daemon stops and another starts on the same address (a
    # new epoch: its Last-Event-ID resumes nothing). The page says it lost the stream,
    # reconnects by itself, reads /services again and follows the new daemon's events.
    require_chromium()
    lab.add("svc")
    port = free_port()
    first = lab.nanny.serve(lab.services_dir, state=lab.state_dir, listen=f"127.0.0.1:{port}",
                            stop_services=False)
    url = f"http://127.0.0.1:{port}/"
    node = subprocess.Popen([client_node(), os.path.join(MCP_DIR, "dashboard.mjs"), "reconnect",
                             url, artefacts(request, tmp_path), "svc"],
                            cwd=MCP_DIR, env=clean_env({"NANNY_CHROMIUM": CHROMIUM}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in node.stdout] + [lines.put(None)],
                     daemon=True).start()
    try:
        line = lines.get(timeout=BROWSER_TIMEOUT)
        assert line == "READY\n", (line, node.stderr.read() if line is None else "")
        assert first.terminate() == 0, first.stderr[-3000:]
        lab.d = lab.nanny.serve(lab.services_dir, state=lab.state_dir,
                                listen=f"127.0.0.1:{port}")
        assert lab.start("svc").status == 200
        node.wait(timeout=BROWSER_TIMEOUT)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    stdout = []
    while (line := lines.get(timeout=30)) is not None:
        stdout.append(line)
    assert node.returncode == 0, (node.stderr.read()[-6000:], stdout)
    out = check_pages(json.loads(stdout[-1]), url)

    assert out["down"].startswith("reconnecting"), out
    assert out["rereads"] >= 1, out  # /services read again on reconnecting
    assert out["eventRequests"] >= 2, out
    assert out["noReload"] is True, out
    assert lab.state("svc") == "running"
