"""The seed's quick start and GPU arbitration flow, run as printed (test_seed_cheatsheet's
Shell) against compose services on the real Docker engine: a compose project of the
FROM scratch test image stands in for minimal-sd-api, another for upscale-api. Only
`localhost:8080` becomes the daemon's port and `localhost:8000` the service's."""

import json

from compose_helpers import clab, docker_engine, testsvc_image  # noqa: F401 (fixtures)
from test_seed_cheatsheet import (CHEAT_SHEET, QUICK_START_CHECK, QUICK_START_START, Shell,
                                  parses_to, wait_output)


def test_quick_start_with_a_compose_service(clab):
    sd = clab.add("minimal-sd-api", gpu=True)
    clab.serve()
    sh = Shell(clab)
    body = sh.run_json(QUICK_START_START)
    assert body.get("name") == "minimal-sd-api", body
    assert body.get("driver") == "compose", body
    # The answer comes once `up -d` returned: the container exists and runs.
    assert body.get("state") in ("starting", "running"), body
    assert sd.running(), "the start answered before its container ran"
    out = wait_output(sh, QUICK_START_CHECK, lambda out: parses_to(out, {"status": "ok"}),
                      service_port=sd.port)
    assert json.loads(out) == {"status": "ok"}


def test_gpu_arbitration_flow_with_compose_services(clab):
    sd = clab.add("minimal-sd-api", gpu=True)
    up = clab.add("upscale-api", gpu=True)
    clab.serve()
    sh = Shell(clab)
    a = sh.run_json(CHEAT_SHEET["Start a service"], name="minimal-sd-api")
    assert a.get("state") in ("starting", "running"), a
    # Service B (GPU) while A runs: 409 naming A, and B's project is not started.
    b = sh.run_json(CHEAT_SHEET["Start a service"], name="upscale-api")
    assert b.get("error") == "gpu_conflict", b
    assert b.get("holder") == "minimal-sd-api", b
    assert up.containers() == []
    # Forced: A's containers are gone before B starts, and B runs.
    f = sh.run_json(CHEAT_SHEET["Force start GPU service"], name="upscale-api")
    assert f.get("preempted") == ["minimal-sd-api"], f
    assert f.get("state") in ("starting", "running"), f
    assert sd.containers() == [], "the preempted service's containers are still there"
    assert clab.state("minimal-sd-api") == "stopped"
    wait_output(sh, CHEAT_SHEET["Check if healthy"], "true", name="upscale-api")
    logs = sh.run_ok(CHEAT_SHEET["Get logs"], name="upscale-api")
    assert all(line.startswith("app | ") for line in logs.splitlines()), logs
    stop = sh.run_json(CHEAT_SHEET["Stop a service"], name="upscale-api")
    assert stop.get("state") == "stopped", stop
    assert up.containers() == []
