"""The seed's quick start and GPU arbitration flow, run as printed (test_seed_cheatsheet's
Shell) against compose services on the real Docker engine: a compose project of the
FROM scratch test image stands in for minimal-sd-api, another for upscale-api. Only
`localhost:8080` becomes the daemon's port, `localhost:8000` the service's, and the
services' names unique ones: a name is its compose project, and a developer's own daemon
(./start.sh) may run the real minimal-sd-api on the same engine, which a test must never
adopt, stop or remove."""

import json

from compose_helpers import (  # noqa: F401 (clab, docker_engine, testsvc_image are fixtures)
    clab,
    docker_engine,
    new_project_name,
    testsvc_image,
)
from test_seed_cheatsheet import (CHEAT_SHEET, QUICK_START_CHECK, QUICK_START_START, Shell,
                                  parses_to, wait_output)


def unique(seed_name):
    """A fresh service name for one the seed prints."""
    return f"{seed_name}-{new_project_name()}"


def test_quick_start_with_a_compose_service(clab):
    sd = clab.add(unique("minimal-sd-api"), gpu=True)
    clab.serve()
    sh = Shell(clab, rename={"minimal-sd-api": sd.name})
    body = sh.run_json(QUICK_START_START)
    assert body.get("name") == sd.name, body
    assert body.get("driver") == "compose", body
    # The answer comes once `up -d` returned: the container exists and runs.
    assert body.get("state") in ("starting", "running"), body
    assert sd.running(), "the start answered before its container ran"
    out = wait_output(sh, QUICK_START_CHECK, lambda out: parses_to(out, {"status": "ok"}),
                      service_port=sd.port)
    assert json.loads(out) == {"status": "ok"}


def test_gpu_arbitration_flow_with_compose_services(clab):
    sd = clab.add(unique("minimal-sd-api"), gpu=True)
    up = clab.add(unique("upscale-api"), gpu=True)
    clab.serve()
    sh = Shell(clab)
    a = sh.run_json(CHEAT_SHEET["Start a service"], name=sd.name)
    assert a.get("state") in ("starting", "running"), a
    # Service B (GPU) while A runs: 409 naming A, and B's project is not started.
    b = sh.run_json(CHEAT_SHEET["Start a service"], name=up.name)
    assert b.get("error") == "gpu_conflict", b
    assert b.get("holder") == sd.name, b
    assert up.containers() == []
    # Forced: A's containers are gone before B starts, and B runs.
    f = sh.run_json(CHEAT_SHEET["Force start GPU service"], name=up.name)
    assert f.get("preempted") == [sd.name], f
    assert f.get("state") in ("starting", "running"), f
    assert sd.containers() == [], "the preempted service's containers are still there"
    assert clab.state(sd.name) == "stopped"
    wait_output(sh, CHEAT_SHEET["Check if healthy"], "true", name=up.name)
    logs = sh.run_ok(CHEAT_SHEET["Get logs"], name=up.name)
    assert all(line.startswith("app | ") for line in logs.splitlines()), logs
    stop = sh.run_json(CHEAT_SHEET["Stop a service"], name=up.name)
    assert stop.get("state") == "stopped", stop
    assert up.containers() == []
