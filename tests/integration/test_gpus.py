"""Every GPU on the box (SPEC section 7 "GPUs", issue 15): a config-described box of two
24 GiB GPUs (no NVIDIA library or nvidia-smi is tried), whole-GPU services side by side
with their own CUDA_VISIBLE_DEVICES, memory-based packing, the 409's holders (the set
whose stop makes room, lowest priority then least recently used first), force stopping
exactly that set, 422 gpu_impossible, GET /gpus, and placements kept across a daemon
restart. The seed's one-GPU rule on a box no inventory describes is test_gpu.py's.
"""

from lifecycle_helpers import (  # noqa: F401 (lab is a fixture)
    json_error,
    lab,
    start_answer,
)
from compose_helpers import (  # noqa: F401 (clab, docker_engine, testsvc_image are fixtures)
    clab,
    docker_engine,
    testsvc_image,
)
from sse_client import SSE
from test_gate import bearer, new_key, write_keys

import json
import os
import subprocess
import time

from conftest import nanny_binary

GIB = 1 << 30

TWO_GPUS = """\
gpus:
  - {index: 0, name: "Test GPU A", memory: 24GiB}
  - {index: 1, name: "Test GPU B", memory: 24GiB}
nvml_library: ""
nvidia_smi: ""
"""


def gpu_env(svc):
    """The GPU variables in the environment of the service's own process."""
    pid = svc.wait_own_pid()
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
    return {k: env[k.encode()].decode()
            for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "NANNY_GPU_DEVICES",
                      "CUDA_DEVICE_ORDER")
            if k.encode() in env}


def devices_of(svc):
    env = gpu_env(svc)
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"], env
    assert env["CUDA_VISIBLE_DEVICES"] == env["NANNY_GPU_DEVICES"], env
    # CUDA numbers the GPUs as NVML and nvidia-smi do, which the devices name.
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID", env
    return env["CUDA_VISIBLE_DEVICES"]


def gpus(lab):
    r = lab.d.get("/gpus")
    assert r.status == 200, r
    assert r.content_type == "application/json", r
    return r.json()


def services_per_gpu(lab):
    return [sorted(g["services"]) for g in gpus(lab)["gpus"]]


def add(lab, name, need=None, **kw):
    """A GPU test service; need is the manifest's gpu: mapping as text."""
    extra = dict(kw.pop("extra", {}))
    if need is not None:
        extra["gpu"] = need
    return lab.add(name, gpu=True, extra=extra, **kw)


def conflict(resp, holders):
    body = json_error(resp, 409, "gpu_conflict")
    assert body["holders"] == holders, body
    assert body["holder"] == holders[0], body
    return body


def test_gpus_of_a_config_described_box(lab):
    lab.add("cpu")
    lab.serve(config=TWO_GPUS)
    page = gpus(lab)
    assert page["source"] == "config", page
    assert [g["index"] for g in page["gpus"]] == [0, 1], page
    assert [g["name"] for g in page["gpus"]] == ["Test GPU A", "Test GPU B"], page
    for g in page["gpus"]:
        assert g["memory"] == {"total": 24 * GIB, "used": 0, "free": 24 * GIB,
                               "reserved": 0}, g
        assert g["services"] == [] and g["foreign"] == [], g
        assert g["utilization"] is None, g
    assert page["queue"] == [] and page["holders"] == [], page


def test_the_seeds_box_has_one_gpu_of_unknown_size(lab):
    add(lab, "a")
    lab.serve(config='nvml_library: ""\nnvidia_smi: ""\n')
    page = gpus(lab)
    assert page["source"] == "none", page
    assert len(page["gpus"]) == 1, page
    assert page["gpus"][0]["memory"]["total"] is None, page
    start_answer(lab.start("a", wait=True), "a", states="running")
    assert devices_of(lab.svcs["a"]) == "0"
    assert services_per_gpu(lab) == [["a"]]


def test_two_whole_gpu_services_side_by_side_and_a_third_refused(lab):
    a, b, c = add(lab, "a"), add(lab, "b"), add(lab, "c")
    lab.serve(config=TWO_GPUS)
    start_answer(lab.start("a", wait=True), "a", states="running", preempted=[])
    start_answer(lab.start("b", wait=True), "b", states="running", preempted=[])
    assert devices_of(a) == "0"
    assert devices_of(b) == "1"
    assert services_per_gpu(lab) == [["a"], ["b"]]
    # a started first: the least recently used, so the one whose stop makes room.
    body = conflict(lab.start("c"), ["a"])
    assert body["message"] == "a is using the GPU", body
    assert lab.state("c") == "stopped"
    b_pid = b.own_pid()
    start_answer(lab.start("c", force=True, wait=True), "c", states="running",
                 preempted=["a"])
    assert lab.state("a") == "stopped"
    lab.assert_no_processes("a", "force stops the holder fully")
    assert b.own_pid() == b_pid, "force stopped a service that was not in the way"
    assert devices_of(c) == "0"
    assert services_per_gpu(lab) == [["c"], ["b"]]


def test_priority_orders_the_holders(lab):
    add(lab, "a", extra={"priority": "5"})
    add(lab, "b")
    add(lab, "both", "{count: 2}")
    lab.serve(config=TWO_GPUS)
    start_answer(lab.start("b", wait=True), "b", states="running")
    start_answer(lab.start("a", wait=True), "a", states="running")
    # Both must go; the lower priority first although a was used last.
    body = conflict(lab.start("both"), ["b", "a"])
    assert body["message"] == "b and a are using the GPUs it needs", body
    start_answer(lab.start("both", force=True, wait=True), "both", states="running",
                 preempted=["a", "b"])
    assert devices_of(lab.svcs["both"]) == "0,1"
    assert services_per_gpu(lab) == [["both"], ["both"]]


def test_memory_packing(lab):
    for name in ("m1", "m2", "m3", "m4"):
        add(lab, name, "{count: 1, memory: 8GiB}")
    add(lab, "whole")
    lab.serve(config=TWO_GPUS)
    for name in ("m1", "m2", "m3"):
        start_answer(lab.start(name, wait=True), name, states="running")
        assert devices_of(lab.svcs[name]) == "0", name
    page = gpus(lab)
    assert page["gpus"][0]["memory"] == {"total": 24 * GIB, "used": 24 * GIB, "free": 0,
                                         "reserved": 24 * GIB}, page
    start_answer(lab.start("m4", wait=True), "m4", states="running")
    assert devices_of(lab.svcs["m4"]) == "1"
    assert services_per_gpu(lab) == [["m1", "m2", "m3"], ["m4"]]
    # A whole GPU: the least recently used go first until one GPU is empty, so all three
    # on GPU 0 (greedy, as SPEC says), not m4, the most recent.
    conflict(lab.start("whole"), ["m1", "m2", "m3"])
    start_answer(lab.start("whole", force=True, wait=True), "whole", states="running",
                 preempted=["m1", "m2", "m3"])
    assert devices_of(lab.svcs["whole"]) == "0"
    # Shared services pack beside m4, never beside the whole-GPU one...
    for name in ("m1", "m2"):
        start_answer(lab.start(name, wait=True), name, states="running")
        assert devices_of(lab.svcs[name]) == "1", name
    assert services_per_gpu(lab) == [["whole"], ["m1", "m2", "m4"]]
    # ...and when that one is full, stopping the least recently used of them makes room.
    conflict(lab.start("m3"), ["m4"])


def test_impossible_requests_are_422_and_stop_nothing(lab):
    add(lab, "a")
    add(lab, "three", "{count: 3}")
    add(lab, "huge", "{count: 1, memory: 30GiB}")
    add(lab, "pinned", extra={"devices": "[5]"})
    lab.serve(config=TWO_GPUS)
    start_answer(lab.start("a", wait=True), "a", states="running")
    pid = lab.svcs["a"].own_pid()
    for name in ("three", "huge", "pinned"):
        for force in (None, True):
            body = json_error(lab.start(name, force=force), 422, "gpu_impossible")
            assert "more than this box can ever give" in body["message"], body
            assert [g["memory"] for g in body["gpus"]] == [24 * GIB, 24 * GIB], body
            assert body["need"] is not None, body
            assert lab.state(name) == "stopped"
    assert body["need"]["devices"] == [5], body
    assert lab.svcs["a"].own_pid() == pid, "an impossible start stopped something"
    assert lab.state("a") == "running"


def test_gpu_required_stays_exclusive(lab):
    add(lab, "shared", "{count: 1, memory: 4GiB}")
    add(lab, "x")
    add(lab, "y")
    lab.serve(config=TWO_GPUS)
    start_answer(lab.start("shared", wait=True), "shared", states="running")
    start_answer(lab.start("x", wait=True), "x", states="running")
    assert devices_of(lab.svcs["x"]) == "1", "a whole GPU goes where no one is"
    # y needs a whole GPU: shared (GPU 0) or x (GPU 1) must go; shared was used first.
    conflict(lab.start("y"), ["shared"])


def test_pinned_service_goes_where_it_is_pinned(lab):
    add(lab, "a")
    add(lab, "p", extra={"devices": "[0]"})
    lab.serve(config=TWO_GPUS)
    start_answer(lab.start("a", wait=True), "a", states="running")
    assert devices_of(lab.svcs["a"]) == "0"
    conflict(lab.start("p"), ["a"])
    start_answer(lab.start("p", force=True, wait=True), "p", states="running",
                 preempted=["a"])
    assert devices_of(lab.svcs["p"]) == "0"


def test_placements_survive_a_daemon_restart(lab):
    a, b = add(lab, "a"), add(lab, "b")
    add(lab, "c")
    lab.serve(config=TWO_GPUS, keep_services=True)
    start_answer(lab.start("b", wait=True), "b", states="running")
    start_answer(lab.start("a", wait=True), "a", states="running")
    pids = (a.own_pid(), b.own_pid())
    lab.d.terminate()
    # The state file is a cache: what runs says where it runs (its CUDA_VISIBLE_DEVICES)
    # wins over a record that says otherwise.
    path = os.path.join(lab.state_dir, "state.json")
    with open(path) as f:
        doc = json.load(f)
    assert doc["services"]["a"]["gpu_devices"] == 2, doc
    assert doc["services"]["b"]["gpu_devices"] == 1, doc
    doc["services"]["a"]["gpu_devices"], doc["services"]["b"]["gpu_devices"] = 1, 2
    with open(path, "w") as f:
        json.dump(doc, f)
    lab.serve(config=TWO_GPUS)
    lab.wait_state("a", "running")
    lab.wait_state("b", "running")
    assert (a.own_pid(), b.own_pid()) == pids
    assert services_per_gpu(lab) == [["b"], ["a"]]
    lab.d.wait_for_log("a: runs on GPUs 1 by its environment, not 0 as recorded")
    # The least recently used of the two holders is the one named.
    body = json_error(lab.start("c"), 409, "gpu_conflict")
    assert body["holder"] in ("a", "b") and len(body["holders"]) == 1, body


def fake_nvml():
    build = os.environ.get("NANNY_BUILD_DIR") or os.path.dirname(nanny_binary())
    path = os.path.join(build, "tests", "fakes", "nvml", "libnvidia-ml.so.1")
    assert os.path.exists(path), path
    return path


def write_box(path, processes):
    """Two 24 GiB GPUs as the fake NVML tells them, with processes [(gpu, pid, bytes)]."""
    used = [sum(m for g, _, m in processes if g == i) for i in (0, 1)]
    box = {"gpus": [{"name": "Fake H100", "uuid": f"GPU-{i}", "total": 24 * GIB,
                     "used": used[i], "util": 10 * i} for i in (0, 1)],
           "processes": [{"gpu": g, "pid": p, "memory": m} for g, p, m in processes]}
    with open(path + ".new", "w") as f:
        json.dump(box, f)
    os.replace(path + ".new", path)


def wait_gpus(lab, check, timeout=15):
    """GET /gpus until check(page) holds (the inventory reads NVML every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        page = gpus(lab)
        if check(page) or time.monotonic() > deadline:
            return page
        time.sleep(0.2)


def test_foreign_usage_counts_and_services_are_told_from_it(lab, workdir):
    """NVML (the fake library) sees a process no service owns using 20 GiB of GPU 0: it is
    listed as foreign, and placement counts it; once it is gone, the next reading frees
    the room. A service's own process on a GPU is its, not foreign."""
    box = str(workdir / "nvml-box.json")
    foreign = subprocess.Popen(["sleep", "60"])
    try:
        write_box(box, [(0, foreign.pid, 20 * GIB)])
        add(lab, "small", "{count: 1, memory: 8GiB}")
        add(lab, "big", "{count: 1, memory: 20GiB}")
        lab.serve(config=f'nvml_library: "{fake_nvml()}"\nnvidia_smi: ""\n',
                  env={"FAKE_NVML_BOX": box})
        page = gpus(lab)
        assert page["source"] == "nvml", page
        g0, g1 = page["gpus"]
        assert g0["uuid"] == "GPU-0" and g1["utilization"] == 10, page
        assert g0["foreign"] == [{"pid": foreign.pid, "memory": 20 * GIB}], page
        assert g0["memory"]["used"] == 20 * GIB and g0["memory"]["free"] == 4 * GIB, page
        # 8 GiB does not fit beside the foreign 20 GiB: GPU 1.
        start_answer(lab.start("small", wait=True), "small", states="running")
        assert devices_of(lab.svcs["small"]) == "1"
        # 20 GiB fits on neither GPU as they are: stopping small makes room on GPU 1.
        conflict(lab.start("big"), ["small"])
        # The service's own process shows up on GPU 1: it is small's, not foreign.
        small_pid = lab.svcs["small"].own_pid()
        write_box(box, [(0, foreign.pid, 20 * GIB), (1, small_pid, 6 * GIB)])
        page = wait_gpus(lab, lambda p: p["gpus"][1]["memory"]["used"] == 6 * GIB)
        assert page["gpus"][1]["memory"]["used"] == 6 * GIB, page
        assert page["gpus"][1]["foreign"] == [] and page["gpus"][1]["services"] == ["small"]
        # The foreign process ends: GPU 0 has room for big again.
        write_box(box, [(1, small_pid, 6 * GIB)])
        page = wait_gpus(lab, lambda p: p["gpus"][0]["foreign"] == [])
        assert page["gpus"][0]["foreign"] == [], page
        start_answer(lab.start("big", wait=True), "big", states="running")
        assert devices_of(lab.svcs["big"]) == "0"
    finally:
        foreign.kill()
        foreign.wait()


def test_a_service_using_more_than_it_declares_is_reported_and_with_enforce_stopped(
        lab, workdir):
    """NVML (the fake library) lists a service's own process using more GPU memory than
    its gpu.memory declares: its status carries a gpu_warning and a gpu_overuse event is
    published, both cleared when it is back within; with gpu.enforce: true it is stopped,
    and its last_error says why. A foreign process using as much is no service's."""
    box = str(workdir / "nvml-box.json")
    write_box(box, [])
    add(lab, "loose", "{count: 1, memory: 8GiB}")
    add(lab, "strict", "{count: 1, memory: 4GiB, enforce: true}")
    lab.serve(config=f'nvml_library: "{fake_nvml()}"\nnvidia_smi: ""\n',
              env={"FAKE_NVML_BOX": box})
    sse = SSE(lab.d.port)
    try:
        for name in ("loose", "strict"):
            start_answer(lab.start(name, wait=True), name, states="running")
        loose, strict = (int(devices_of(lab.svcs[n])) for n in ("loose", "strict"))
        loose_pid, strict_pid = (lab.svcs[n].own_pid() for n in ("loose", "strict"))
        assert lab.status("loose")["gpu_warning"] is None

        # loose uses 10 GiB of the 8 it declares; strict keeps within its 4.
        write_box(box, [(loose, loose_pid, 10 * GIB), (strict, strict_pid, 3 * GIB)])
        st = lab.wait_status("loose", lambda s: s["gpu_warning"] is not None, timeout=15)
        assert f"uses 10240 MiB of GPU {loose}" in st["gpu_warning"], st
        assert "8192 MiB its gpu.memory declares" in st["gpu_warning"], st
        assert st["state"] == "running", st
        got = sse.until(lambda e: e.type == "gpu_overuse", timeout=15)
        want = {"service": "loose", "over": True, "gpu": loose, "used": 10 * GIB,
                "declared": 8 * GIB, "enforced": False}
        assert {k: got[-1].data.get(k) for k in want} == want, got[-1].data
        assert lab.status("strict")["gpu_warning"] is None
        assert lab.state("strict") == "running"

        # Back within: the warning goes, and an event says so.
        write_box(box, [(loose, loose_pid, 6 * GIB), (strict, strict_pid, 3 * GIB)])
        lab.wait_status("loose", lambda s: s["gpu_warning"] is None, timeout=15)
        got = sse.until(lambda e: e.type == "gpu_overuse", timeout=15)
        assert got[-1].data["over"] is False and got[-1].data["used"] == 6 * GIB, got[-1]

        # strict goes over with gpu.enforce: it is stopped, and says why.
        write_box(box, [(loose, loose_pid, 6 * GIB), (strict, strict_pid, 5 * GIB)])
        lab.wait_state("strict", ["stopped"], timeout=20)
        st = lab.status("strict")
        assert st["last_error"].startswith("stopped: uses 5120 MiB of GPU"), st
        assert "gpu.enforce" in st["last_error"], st
        got = sse.until(lambda e: e.type == "gpu_overuse" and e.data["service"] == "strict",
                        timeout=15)
        assert got[-1].data["enforced"] is True, got[-1]
        lab.wait_no_processes("strict")
        assert lab.state("loose") == "running"
    finally:
        sse.close()


def test_a_compose_service_is_told_its_containers_processes(clab, workdir):
    """A process NVML lists in a compose service's container (its cgroup names one of the
    project's containers) counts against that service: over its gpu.memory it gets a
    gpu_warning, and it is not foreign."""
    box = str(workdir / "nvml-box.json")
    write_box(box, [])
    svc = add(clab, None, "{count: 1, memory: 1GiB}")
    name = svc.name
    clab.serve(config=f'nvml_library: "{fake_nvml()}"\nnvidia_smi: ""\n',
               env={"FAKE_NVML_BOX": box})
    start_answer(clab.start(name, wait=True), name, states="running")
    pid = int(clab.engine.docker("inspect", "-f", "{{.State.Pid}}",
                                 svc.container()).stdout.strip())
    assert pid > 0
    write_box(box, [(0, pid, 2 * GIB)])
    st = clab.wait_status(name, lambda s: s["gpu_warning"] is not None, timeout=15)
    assert "uses 2048 MiB of GPU 0, more than the 1024 MiB" in st["gpu_warning"], st
    page = gpus(clab)
    assert page["gpus"][0]["foreign"] == [], page
    assert page["gpus"][0]["memory"]["used"] == 2 * GIB, page


def test_a_compose_placement_is_read_back_from_its_container(clab):
    """After a daemon restart a compose service is placed where its container runs: the
    NVIDIA_VISIBLE_DEVICES of its processes (what Docker sets from a device request's
    device_ids; here the compose file sets it from NANNY_GPU_DEVICES, as no NVIDIA runtime
    is at hand), over a state record that says otherwise."""
    svc = add(clab, None, compose_extra={
        "environment": '{NVIDIA_VISIBLE_DEVICES: "${NANNY_GPU_DEVICES}"}'})
    name = svc.name
    clab.serve(config=TWO_GPUS, keep_services=True)
    start_answer(clab.start(name, wait=True), name, states="running")
    assert services_per_gpu(clab) == [[name], []]
    clab.d.terminate()
    path = os.path.join(clab.state_dir, "state.json")
    with open(path) as f:
        doc = json.load(f)
    assert doc["services"][name]["gpu_devices"] == 1, doc
    doc["services"][name]["gpu_devices"] = 2
    with open(path, "w") as f:
        json.dump(doc, f)
    clab.serve(config=TWO_GPUS)
    clab.wait_state(name, "running")
    clab.d.wait_for_log(f"{name}: runs on GPUs 0 by its environment, not 1 as recorded")
    assert services_per_gpu(clab) == [[name], []]


def test_gpu_enforce_needs_a_declared_memory(lab):
    add(lab, "whole", "{count: 1, enforce: true}")
    add(lab, "typo", "{count: 1, memory: 4GiB, enforce: sometimes}")
    lab.serve(config=TWO_GPUS)
    for name, words in (("whole", "gpu.enforce stops a service that uses more than its "
                                  "gpu.memory"),
                        ("typo", "gpu.enforce")):
        body = json_error(lab.start(name), 422, "invalid_manifest")
        assert words in body["manifest_error"]["message"], body


def test_gpus_needs_a_reader_key_and_get(nanny, workdir, services_dir):
    keys = {role: new_key() for role in ("user", "viewer")}
    path = write_keys(workdir / "keys.yaml", [(f"{r}-key", r, k) for r, k in keys.items()])
    d = nanny.serve(services_dir, extra_args=["--keys", path, "--nvml-library", "",
                                              "--nvidia-smi", ""])
    r = d.get("/gpus")
    assert r.status == 401 and r.json()["error"] == "unauthorized", r
    assert d.get("/gpus", headers=bearer(keys["user"])).status == 403
    r = d.get("/gpus", headers=bearer(keys["viewer"]))
    assert r.status == 200 and len(r.json()["gpus"]) == 1, r
    r = d.request("HEAD", "/gpus", headers=bearer(keys["viewer"]))
    assert r.status == 200 and r.body == b"", r
    assert d.post("/gpus", headers=bearer(keys["viewer"])).status == 405
