"""`nanny new NAME`: a service folder copied from the template, with its name and port
filled in, that the daemon then lists as it is (issue 4, part 4).

The tests bring their own template, which keeps the contract of services/_template:
`my-service` is the name, `8001` the host port, `gpu_required: true` the GPU flag, and the
lines between `# >>> gpu` and `# <<< gpu` in docker-compose.yml what only a GPU service
needs.
"""

import os
import stat

import pytest

TEMPLATE_FILES = {
    "service.yaml": (
        "# The manifest of my-service.\n"
        "name: my-service\n"
        "description: my-service, made from the template\n"
        'ports: ["8001:8000"]\n'
        "gpu_required: true\n"
        "driver: compose\n"
        "health:\n"
        "  path: /health\n"
        "  # port: 8001\n"
        "stop_timeout: 10s\n"
    ),
    "docker-compose.yml": (
        "services:\n"
        "  my-service:\n"
        "    build: .\n"
        "    ports:\n"
        '      - "8001:8000"\n'
        "    # >>> gpu\n"
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        "            - driver: nvidia\n"
        "              count: all\n"
        "              capabilities: [gpu]\n"
        "    # <<< gpu\n"
        '    restart: "no"\n'
    ),
    "Dockerfile": "FROM scratch\nEXPOSE 8000\n",
    "app.py": "#!/usr/bin/env python3\nprint('my-service listens on 8000, host port 8001')\n",
    "SETUP.md": "# Setting up my-service\n",
    "README.md": "# my-service\n",
}


def make_template(path):
    os.makedirs(path)
    for name, text in TEMPLATE_FILES.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    os.chmod(os.path.join(path, "app.py"), 0o755)
    return path


@pytest.fixture
def services(services_dir):
    """A services folder holding the test template as _template."""
    make_template(os.path.join(str(services_dir), "_template"))
    return services_dir


def new(nanny, services, *args, env=None, cwd=None):
    argv = ["new"]
    if services is not None:
        argv += ["--services", str(services)]
    argv += list(args)
    return nanny.run(argv, env=env, cwd=cwd)


def read(path):
    with open(path) as f:
        return f.read()


def leftovers(services):
    """Entries of the services folder that a failed `nanny new` must not leave."""
    return sorted(e for e in os.listdir(str(services)) if e.startswith("."))


def test_creates_cpu_and_gpu_services_with_ports_in_order(nanny, services):
    created = []
    for name, gpu, port in [
        ("alpha", False, 8010),
        ("big-model", True, 8001),
        ("beta", False, 8011),
        ("big-model-2", True, 8002),
    ]:
        rc, out, err = new(nanny, services, name, *(["--gpu"] if gpu else []))
        assert rc == 0, err
        path = os.path.join(str(services), name)
        kind = "GPU" if gpu else "CPU"
        assert out.splitlines()[0] == f"created {path} (port {port}, {kind})"
        assert "app.py" in out
        assert "curl -X POST http://localhost:8080/rediscover" in out
        assert err == ""
        created.append(name)

    alpha = os.path.join(str(services), "alpha")
    assert sorted(os.listdir(alpha)) == sorted(TEMPLATE_FILES)
    manifest = read(os.path.join(alpha, "service.yaml"))
    assert "name: alpha\n" in manifest
    assert 'ports: ["8010:8000"]' in manifest
    assert "gpu_required: false\n" in manifest
    assert "  # port: 8010\n" in manifest
    compose = read(os.path.join(alpha, "docker-compose.yml"))
    assert "  alpha:\n" in compose
    assert '"8010:8000"' in compose
    assert "    # >>> gpu\n    # deploy:\n      # resources:\n" in compose
    assert "              # capabilities: [gpu]\n    # <<< gpu\n" in compose
    assert stat.S_IMODE(os.stat(os.path.join(alpha, "app.py")).st_mode) == 0o755
    assert read(os.path.join(alpha, "README.md")) == "# alpha\n"

    big = os.path.join(str(services), "big-model")
    assert "gpu_required: true\n" in read(os.path.join(big, "service.yaml"))
    compose = read(os.path.join(big, "docker-compose.yml"))
    assert "    # >>> gpu\n    deploy:\n" in compose
    assert "# capabilities" not in compose
    assert leftovers(services) == []


def test_explicit_port(nanny, services):
    rc, out, err = new(nanny, services, "pinned", "--port", "8050")
    assert rc == 0, err
    assert "(port 8050, CPU)" in out
    assert 'ports: ["8050:8000"]' in read(os.path.join(str(services), "pinned", "service.yaml"))
    # The next free one is still the first of the range.
    rc, out, err = new(nanny, services, "next")
    assert rc == 0, err
    assert "(port 8010, CPU)" in out


@pytest.mark.parametrize(
    "args, rc, message",
    [
        (["alpha"], 1, "alpha already exists"),
        (["other", "--port", "8010"], 1, "port 8010 is already used by service alpha"),
        (["other", "--port", "8080"], 1, "port 8080 is Service Nanny's own"),
        (["Bad_Name"], 1, '"Bad_Name" is not a valid service name'),
        (["_hidden"], 1, "is not a valid service name"),
        (["other", "--port", "0"], 2, "--port: '0' is not a port number 1..65535"),
        (["other", "--port", "70000"], 2, "is not a port number"),
        (["other", "--port", "abc"], 2, "is not a port number"),
        (["one", "two"], 2, "unexpected argument 'two'"),
        (["other", "--colour"], 2, "--colour: unknown option"),
        (["other", "--port"], 2, "unknown option or missing value"),
        ([], 2, "give the new service's NAME"),
    ],
)
def test_refusals(nanny, services, args, rc, message):
    assert new(nanny, services, "alpha")[0] == 0
    before = sorted(os.listdir(str(services)))
    got_rc, out, err = new(nanny, services, *args)
    assert got_rc == rc, (out, err)
    assert err.startswith("nanny new: "), err
    assert message in err
    assert out == ""
    assert sorted(os.listdir(str(services))) == before


def test_refuses_a_name_another_service_has(nanny, services):
    folder = os.path.join(str(services), "some-folder")
    os.makedirs(folder)
    with open(os.path.join(folder, "service.yaml"), "w") as f:
        f.write('name: taken\ncommand: ["sleep", "1000"]\nports: ["8010"]\n')
    rc, out, err = new(nanny, services, "taken")
    assert rc == 1
    assert "the service in folder some-folder is already named taken" in err
    assert not os.path.exists(os.path.join(str(services), "taken"))


def test_no_free_port_left(nanny, services):
    for i in range(9):
        assert new(nanny, services, f"gpu{i}", "--gpu")[0] == 0
    rc, out, err = new(nanny, services, "gpu9", "--gpu")
    assert rc == 1
    assert "no free GPU port left" in err and "8001-8009" in err
    assert not os.path.exists(os.path.join(str(services), "gpu9"))
    assert leftovers(services) == []


def test_refuses_a_symlink_in_the_template(nanny, services):
    os.symlink("/etc/hostname", os.path.join(str(services), "_template", "linked.txt"))
    rc, out, err = new(nanny, services, "foo")
    assert rc == 1
    assert "linked.txt is a symlink" in err
    assert not os.path.exists(os.path.join(str(services), "foo"))
    assert leftovers(services) == []


def test_broken_template_leaves_nothing(nanny, services):
    compose = os.path.join(str(services), "_template", "docker-compose.yml")
    with open(compose, "w") as f:
        f.write("services:\n  # >>> gpu\n  x: 1\n")
    rc, out, err = new(nanny, services, "foo")
    assert rc == 1
    assert "docker-compose.yml:2: the gpu block opened here has no" in err
    assert not os.path.exists(os.path.join(str(services), "foo"))
    assert leftovers(services) == []


def test_template_option_and_missing_template(nanny, services, workdir):
    elsewhere = make_template(os.path.join(str(workdir), "my-template"))
    rc, out, err = new(nanny, services, "foo", "--template", elsewhere)
    assert rc == 0, err
    rc, out, err = new(nanny, services, "bar", "--template", os.path.join(str(workdir), "none"))
    assert rc == 1
    assert "cannot read the template folder" in err


def test_services_folder_from_env_config_and_default(nanny, services, workdir):
    rc, out, err = nanny.run(["new", "from-env"], env={"NANNY_SERVICES": str(services)})
    assert rc == 0, err
    assert os.path.isdir(os.path.join(str(services), "from-env"))

    # The config file's services: is relative to the file, as for `nanny serve`.
    config = os.path.join(str(workdir), "nanny.yaml")
    with open(config, "w") as f:
        f.write("services: services\n")
    rc, out, err = nanny.run(["new", "from-config"], env={"NANNY_CONFIG": config}, cwd="/")
    assert rc == 0, err
    assert os.path.isdir(os.path.join(str(services), "from-config"))

    # The default is ./services.
    rc, out, err = nanny.run(["new", "from-default"], cwd=str(workdir))
    assert rc == 0, err
    assert out.splitlines()[0] == "created ./services/from-default (port 8012, CPU)"

    rc, out, err = nanny.run(["new", "x"], env={"NANNY_SERVICES": "/nonexistent/services"})
    assert rc == 1
    assert "cannot read the services folder /nonexistent/services" in err


def test_help_and_usage(nanny):
    rc, out, err = nanny.run(["new", "--help"])
    assert rc == 0
    assert out.startswith("usage: nanny new NAME [--gpu] [--port N]")
    rc, out, err = nanny.run(["--help"])
    assert rc == 0
    assert "  new " in out


def test_daemon_lists_the_new_services(nanny, services):
    for args in (["cpu-one"], ["gpu-one", "--gpu"], ["cpu-two"]):
        rc, out, err = new(nanny, services, *args)
        assert rc == 0, err
    daemon = nanny.serve(services)
    body = daemon.services()
    assert body["errors"] == []
    got = {s["name"]: (s["port"], s["gpu_required"], s["driver"]) for s in body["services"]}
    assert got == {
        "cpu-one": (8010, False, "compose"),
        "gpu-one": (8001, True, "compose"),
        "cpu-two": (8011, False, "compose"),
    }
    for s in body["services"]:
        assert s["warnings"] == [] and s.get("manifest_error") is None, s
        assert s["description"] == f"{s['name']}, made from the template"

    # One made while the daemon runs: the rescan sees it whole and nothing else.
    rc, out, err = new(nanny, services, "late", "--gpu")
    assert rc == 0, err
    r = daemon.post("/rediscover")
    assert r.status == 200, r
    body = r.json()
    assert body["errors"] == []
    late = [s for s in body["services"] if s["name"] == "late"]
    assert [(s["port"], s["gpu_required"]) for s in late] == [(8002, True)]
    assert sorted(daemon.service_names()) == ["cpu-one", "cpu-two", "gpu-one", "late"]
