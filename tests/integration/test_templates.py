"""The files users copy and deploy: services/_template, the example services, deploy/ and
the daemon's docker-compose.yml.

The daemon must load the template (copied to a folder, as `nanny new` and the seed's
`cp -r _template ...` do) and every example service without an error or a warning; Debian's
docker-compose 1.29.2 must accept their compose files (`config` needs no Docker engine);
systemd must accept the unit. Missing tools fail the tests: ./test.sh installs them.
"""

import os
import re
import shutil
import subprocess

import pytest

from conftest import nanny_binary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = os.path.join(REPO, "services")
TEMPLATE = os.path.join(SERVICES, "_template")
SD_API = os.path.join(SERVICES, "minimal-sd-api")
DEPLOY = os.path.join(REPO, "deploy")
# The daemon's own compose file is in the root, where the seed runs `docker compose up -d`.
NANNY_COMPOSE = os.path.join(REPO, "docker-compose.yml")

GPU_OPEN = "# >>> gpu"
GPU_CLOSE = "# <<< gpu"


def copy_service(src, services_dir, folder):
    dst = os.path.join(str(services_dir), folder)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def serve_apart(nanny, services, workdir):
    """A daemon on services that cannot reach a Docker engine. The examples' names are
    their compose projects: a developer's own daemon (./start.sh) may run minimal-sd-api
    or a service made from the template on the default engine, and a daemon under test
    reaching that engine would adopt those containers, and stop them when it stops."""
    return nanny.serve(services, extra_args=["--docker-host",
                                             os.path.join(str(workdir), "no-engine.sock")])


def assert_clean_service(daemon, name, **expected):
    """GET /services lists name with no manifest error or warning, and the expected fields."""
    body = daemon.services()
    assert body["errors"] == [], body["errors"]
    by_name = {s["name"]: s for s in body["services"]}
    assert name in by_name, f"{name} is not listed: {sorted(by_name)}"
    s = by_name[name]
    assert s["warnings"] == [], s["warnings"]
    assert s["manifest_error"] is None, s["manifest_error"]
    for key, value in expected.items():
        assert s[key] == value, f"{name}: {key} is {s[key]!r}, expected {value!r}"
    return s


def docker_compose():
    path = shutil.which("docker-compose")
    if not path:
        pytest.fail("docker-compose is not installed: it is the Debian package docker-compose "
                    "(./test.sh installs it)", pytrace=False)
    return path


def compose_config(compose_file, cwd, env=None):
    """Runs `docker-compose -f FILE config -q`; fails the test with its output if refused."""
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    run_env.update(env or {})
    r = subprocess.run([docker_compose(), "-f", str(compose_file), "config", "-q"],
                       cwd=str(cwd), env=run_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"docker-compose config refused {compose_file}:\n{r.stderr}{r.stdout}"


def compose_config_text(compose_file, cwd):
    r = subprocess.run([docker_compose(), "-f", str(compose_file), "config"], cwd=str(cwd),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def as_new_service(folder, name, port, gpu):
    """What `nanny new NAME [--gpu] [--port N]` does to a copy of the template (its contract
    with the template): the name and the host port replaced everywhere, and for a CPU
    service gpu_required false and the lines between the GPU markers commented out."""
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        with open(path) as f:
            text = f.read()
        text = text.replace("my-service", name).replace("8001", str(port))
        if entry == "service.yaml" and not gpu:
            text = text.replace("gpu_required: true", "gpu_required: false")
        if entry == "docker-compose.yml" and not gpu:
            lines, inside = [], False
            for line in text.split("\n"):
                if line.strip() == GPU_CLOSE:
                    inside = False
                if inside and line.strip():
                    line = re.sub(r"^(\s*)", r"\1# ", line, count=1)
                if line.strip() == GPU_OPEN:
                    inside = True
                lines.append(line)
            text = "\n".join(lines)
        with open(path, "w") as f:
            f.write(text)


# --- the template ------------------------------------------------------------------


def test_template_loads_as_my_service(nanny, services_dir, workdir):
    copy_service(TEMPLATE, services_dir, "my-service")
    d = serve_apart(nanny, services_dir, workdir)
    assert_clean_service(d, "my-service", gpu_required=True, port=8001, ports=["8001:8000"],
                         driver="compose", folder="my-service", state="stopped")


def test_template_keeps_the_nanny_new_contract():
    with open(os.path.join(TEMPLATE, "service.yaml")) as f:
        manifest = f.read()
    assert re.search(r"^name: my-service$", manifest, re.M), manifest
    assert manifest.count("gpu_required: true") == 1
    with open(os.path.join(TEMPLATE, "docker-compose.yml")) as f:
        compose = f.read()
    stripped = [line.strip() for line in compose.split("\n")]
    assert stripped.count(GPU_OPEN) == 1 and stripped.count(GPU_CLOSE) == 1, compose
    block = compose.split(GPU_OPEN)[1].split(GPU_CLOSE)[0]
    for needle in ("devices:", "driver: nvidia", 'device_ids: ["${NANNY_GPU_DEVICES:-0}"]',
                   "capabilities: [gpu]"):
        assert needle in block, f"{needle} is not between the GPU markers:\n{block}"
    assert '"8001:8000"' in compose
    for entry in ("service.yaml", "docker-compose.yml", "README.md", "SETUP.md"):
        with open(os.path.join(TEMPLATE, entry)) as f:
            assert "my-service" in f.read(), f"{entry} does not name the service my-service"


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
def test_template_made_into_a_new_service(nanny, services_dir, workdir, gpu):
    name, port = ("vision-api", 8003) if gpu else ("text-tools", 8042)
    folder = copy_service(TEMPLATE, services_dir, name)
    as_new_service(folder, name, port, gpu)
    d = serve_apart(nanny, services_dir, workdir)
    assert_clean_service(d, name, gpu_required=gpu, port=port, ports=[f"{port}:8000"],
                         driver="compose")
    compose_file = os.path.join(folder, "docker-compose.yml")
    compose_config(compose_file, folder)
    config = compose_config_text(compose_file, folder)
    assert f"  {name}:" in config and f"published: {port}" in config, config
    assert ("driver: nvidia" in config) == gpu, config


def test_template_compose_file_is_valid(tmp_path):
    folder = copy_service(TEMPLATE, tmp_path, "my-service")
    compose_config(os.path.join(folder, "docker-compose.yml"), folder)


# --- the example services ----------------------------------------------------------


def test_minimal_sd_api_loads(nanny, services_dir, workdir):
    copy_service(SD_API, services_dir, "minimal-sd-api")
    d = serve_apart(nanny, services_dir, workdir)
    s = assert_clean_service(d, "minimal-sd-api", gpu_required=True, port=8000,
                             ports=["8000:8000"], driver="compose")
    assert s["health"]["ok"] is None  # never started: no check yet


def test_minimal_sd_api_compose_file_is_valid(tmp_path):
    folder = copy_service(SD_API, tmp_path, "minimal-sd-api")
    compose_config(os.path.join(folder, "docker-compose.yml"), folder)
    assert "driver: nvidia" in compose_config_text(
        os.path.join(folder, "docker-compose.yml"), folder)


def test_repository_services_folder_loads_cleanly(nanny, workdir):
    d = serve_apart(nanny, SERVICES, workdir)
    body = d.services()
    assert body["errors"] == [], body["errors"]
    examples = sorted(e for e in os.listdir(SERVICES)
                      if not e.startswith(("_", "."))
                      and os.path.isfile(os.path.join(SERVICES, e, "service.yaml")))
    assert sorted(s["folder"] for s in body["services"]) == examples
    assert "minimal-sd-api" in examples
    for s in body["services"]:
        assert s["warnings"] == [] and s["manifest_error"] is None, s
        # Not a rule of the daemon, but of the examples users copy.
        assert s["name"] == s["folder"], f"{s['folder']}: name {s['name']!r}"


# --- deploy/ -----------------------------------------------------------------------


def test_deploy_compose_file_is_valid(tmp_path):
    compose_config(NANNY_COMPOSE, tmp_path)
    compose_config(NANNY_COMPOSE, tmp_path, env={"SERVICES_DIR": str(tmp_path)})


def test_deploy_compose_file_builds_from_the_root():
    """One compose file for the daemon, in the root (`docker compose up -d` there, as the
    seed does); it builds deploy/Dockerfile with the repository as the context."""
    assert not os.path.exists(os.path.join(DEPLOY, "docker-compose.yml")), \
        "a second copy of the daemon's compose file is in deploy/"
    text = compose_config_text(NANNY_COMPOSE, REPO)
    assert re.search(rf"^\s+context: {re.escape(REPO)}/?$", text, re.M), text
    assert re.search(r"^\s+dockerfile: deploy/Dockerfile$", text, re.M), text
    assert os.path.isfile(os.path.join(REPO, "deploy", "Dockerfile"))


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.fail("systemd-analyze is not installed: it is in the Debian package systemd",
                    pytrace=False)
    with open(os.path.join(DEPLOY, "service-nanny.service")) as f:
        unit = f.read()
    for setting in ("Type=simple", "KillMode=process", "Restart=on-failure",
                    "StateDirectory=service-nanny", "After=network-online.target docker.service"):
        assert re.search(rf"^{re.escape(setting)}$", unit, re.M), f"no {setting} in the unit"
    # verify insists that ExecStart's binary exists: point it at the daemon under test.
    unit, count = re.subn(r"^ExecStart=/usr/local/bin/nanny ", f"ExecStart={nanny_binary()} ",
                          unit, flags=re.M)
    assert count == 1, "ExecStart does not run /usr/local/bin/nanny"
    path = tmp_path / "service-nanny.service"
    path.write_text(unit)
    r = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                       timeout=120)
    output = r.stdout + r.stderr
    # verify also reports on other units of this machine; only ours matter.
    ours = [line for line in output.splitlines() if "service-nanny.service" in line]
    assert ours == [], "\n".join(ours)
    assert r.returncode == 0, output


def test_deploy_uses_the_daemons_real_flags(nanny):
    rc, out, err = nanny.run(["serve", "--help"])
    assert rc == 0, err
    known = set(re.findall(r"--[a-z][a-z-]+", out + err))
    sources = {}
    with open(os.path.join(DEPLOY, "service-nanny.service")) as f:
        sources["service-nanny.service"] = re.findall(r"^ExecStart=(.*)$", f.read(), re.M)[0]
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        sources["Dockerfile"] = f.read().split("\nCMD ", 1)[1]
    with open(NANNY_COMPOSE) as f:
        sources["docker-compose.yml"] = f.read().split("command:", 1)[1].split("volumes:")[0]
    for name, text in sources.items():
        flags = re.findall(r"(?<![\w-])--[a-z][a-z-]+", text)
        assert flags, f"{name}: no flags found in {text!r}"
        unknown = sorted(set(flags) - known)
        assert not unknown, f"{name} passes {unknown}, unknown to `nanny serve --help`"


def test_deploy_dockerfile_installs_the_build_dependencies():
    with open(os.path.join(REPO, "scripts", "deps.sh")) as f:
        deps = re.search(r"^DEPS_BUILD=\(([^)]*)\)", f.read(), re.M)
    assert deps, "no DEPS_BUILD=(...) in scripts/deps.sh"
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        dockerfile = f.read()
    missing = [p for p in deps.group(1).split()
               if not re.search(rf"\s{re.escape(p)}\s", dockerfile)]
    assert not missing, f"deploy/Dockerfile does not install {missing} (DEPS_BUILD)"
