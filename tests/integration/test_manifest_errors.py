"""Every manifest error of issue 2: each one is listed under "errors" of GET /services with
its folder, path, line and a message, is logged with FILE:LINE, and never hides the good
services beside it."""

import os

import pytest

from conftest import manifest, write_service

GOOD = manifest("good", port=8099)

ANY_LINE = object()  # the problem has no line of its own (whole file): any line >= 0


def check_error(d, services_dir, bad_folder, line, contains=(), bad_name=None,
                good=("good",)):
    body = d.services()
    names = sorted(s["name"] for s in body["services"])
    for g in good:
        assert g in names, f"good service {g} hidden by a broken one: {body}"
    errs = [e for e in body["errors"] if e.get("folder") == bad_folder]
    assert errs, f"no error for folder {bad_folder}: {body['errors']}"
    e = errs[0]
    assert set(e) >= {"folder", "path", "name", "line", "message"}, e
    assert e["path"] == os.path.join(os.path.realpath(services_dir), bad_folder, "service.yaml")
    assert isinstance(e["line"], int)
    if line is ANY_LINE:
        assert e["line"] >= 0, e
    else:
        assert e["line"] == line, e
    assert isinstance(e["message"], str) and len(e["message"]) > 10, e
    msg = e["message"].lower()
    for word in contains:
        assert word.lower() in msg, f"{word!r} not in {e['message']!r}"
    if bad_name is not None:
        assert bad_name not in names or bad_name in good, names
    # Logged once as FILE:LINE: message.
    if line is not ANY_LINE:
        assert f"{e['path']}:{e['line']}:" in d.stderr, d.stderr
    else:
        assert e["path"] in d.stderr, d.stderr
    health = d.get_json("/health")
    assert health["manifest_errors"] == len(body["errors"])
    assert health["services"] == len(body["services"])
    return e


def serve_with(nanny, services_dir, files):
    write_service(services_dir, "good", GOOD)
    for folder, text in files.items():
        write_service(services_dir, folder, text)
    return nanny.serve(services_dir)


# (id, manifest text, expected line or ANY_LINE, words the message holds)
SINGLE_CASES = [
    ("yaml-syntax-unclosed-flow", 'name: x\ncommand: ["sleep", "1"\nhealth: false\n', ANY_LINE,
     ["yaml"]),
    ("yaml-syntax-bad-indent", "name: x\n  command: sleep 1\n bad: [\n", 2, ["yaml"]),
    ("yaml-syntax-tab", "name: x\n\tcommand: sleep 1\n", 2, []),
    ("yaml-two-documents", "name: x\ncommand: sleep 1\nhealth: false\n---\nname: y\n", 4,
     []),
    ("empty-file", "", ANY_LINE, ["empty"]),
    ("only-comments", "# nothing here\n\n   \n", ANY_LINE, ["empty"]),
    ("top-level-list", "- name: x\n- command: y\n", 1, ["mapping"]),
    ("top-level-scalar", "just some text\n", 1, ["mapping"]),
    ("missing-name", 'description: no name\ncommand: ["sleep", "1"]\nhealth: false\n', 1,
     ["name"]),
    ("bad-name-upper", 'command: ["sleep", "1"]\nhealth: false\nname: MyService\n', 3,
     ["name"]),
    ("bad-name-space", 'command: ["sleep", "1"]\nhealth: false\nname: "my service"\n', 3,
     ["name"]),
    ("bad-name-leading-dash", 'command: ["sleep", "1"]\nhealth: false\nname: -svc\n', 3,
     ["name"]),
    ("bad-name-slash", 'command: ["sleep", "1"]\nhealth: false\nname: "../etc"\n', 3,
     ["name"]),
    ("name-too-long", 'command: ["sleep", "1"]\nhealth: false\nname: ' + "a" * 64 + "\n", 3,
     ["63"]),
    ("bad-port-string", 'name: x\ncommand: ["sleep", "1"]\nports:\n  - "8050"\n  - "http"\n',
     5, ["port"]),
    ("bad-port-ip", 'name: x\ncommand: ["sleep", "1"]\nports: ["1.2.3:8050:80"]\n', 3,
     ["port"]),
    ("port-out-of-range", 'name: x\ncommand: ["sleep", "1"]\nports: ["70000"]\n', 3,
     ["range"]),
    ("port-zero", 'name: x\ncommand: ["sleep", "1"]\nports: ["0:80"]\n', 3, ["range"]),
    ("container-port-out-of-range", 'name: x\ncommand: ["sleep", "1"]\n\nports: ["8051:65536"]\n',
     4, ["range"]),
    ("same-host-port-twice", 'name: x\ncommand: ["sleep", "1"]\nports:\n  - "8052:1"\n'
     '  - "8052:2"\n', 5, ["8052"]),
    ("bad-duration-stop-timeout", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\n'
     "stop_timeout: 5 minutes\n", 4, ["stop_timeout"]),
    ("bad-duration-health-interval", 'name: x\ncommand: ["sleep", "1"]\nports: ["8053"]\n'
     "health:\n  interval: fast\n", 5, ["interval"]),
    ("bad-duration-negative", 'name: x\ncommand: ["sleep", "1"]\nports: ["8054"]\n'
     "health:\n  path: /h\n  timeout: -2s\n", 6, ["timeout"]),
    ("bad-duration-unit", 'name: x\ncommand: ["sleep", "1"]\nports: ["8055"]\n'
     "health:\n  start_period: 10d\n", 5, ["start_period"]),
    ("unknown-driver", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\ndriver: docker\n', 4,
     ["driver"]),
    ("process-driver-without-command", "name: x\nhealth: false\ndriver: process\n", 3,
     ["command"]),
    ("no-driver-no-command-no-compose", "name: x\nhealth: false\n", 1, ["command"]),
    ("compose-driver-without-compose-file", 'name: x\nports: ["8056:80"]\ndriver: compose\n', 3,
     ["compose"]),
    ("compose-file-missing", 'name: x\nports: ["8057:80"]\ncompose_file: nope.yml\n', 3,
     ["nope.yml"]),
    ("health-without-port", 'name: x\ncommand: ["sleep", "1"]\n', 1, ["port"]),
    ("bad-restart", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nrestart: sometimes\n', 4,
     ["restart"]),
    ("bad-health-path", 'name: x\ncommand: ["sleep", "1"]\nports: ["8058"]\nhealth:\n'
     "  path: health\n", 5, ["path"]),
    ("bad-env-key", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nenv:\n  1BAD: x\n', 5,
     ["env"]),
    ("duplicate-key", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nname: y\n', 4,
     ["twice"]),
]


@pytest.mark.parametrize("text,line,contains", [c[1:] for c in SINGLE_CASES],
                         ids=[c[0] for c in SINGLE_CASES])
def test_manifest_error(nanny, services_dir, text, line, contains):
    d = serve_with(nanny, services_dir, {"bad": text})
    check_error(d, services_dir, "bad", line, contains)
    assert "x" not in d.service_names()


# Wrong type for each field: (field, text, line of the bad value)
WRONG_TYPES = [
    ("name-list", 'name: [a, b]\ncommand: ["sleep", "1"]\nhealth: false\n', 1),
    ("name-map", 'name: {a: 1}\ncommand: ["sleep", "1"]\nhealth: false\n', 1),
    ("description", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\ndescription: [a]\n', 4),
    ("ports-string", 'name: x\ncommand: ["sleep", "1"]\nports: "8060:80"\n', 3),
    ("ports-map", 'name: x\ncommand: ["sleep", "1"]\nports: {a: 1}\n', 3),
    ("ports-item-list", 'name: x\ncommand: ["sleep", "1"]\nports:\n  - [8061]\n', 4),
    ("gpu_required-string", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\n'
     "gpu_required: maybe\n", 4),
    ("gpu_required-number", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\n'
     "gpu_required: 3\n", 4),
    ("gpu_required-list", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\n'
     "gpu_required: [true]\n", 4),
    ("driver", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\ndriver: [process]\n', 4),
    ("compose_file", 'name: x\nports: ["8062:80"]\ncompose_file: [a.yml]\n', 3),
    ("command-map", "name: x\nhealth: false\ncommand: {run: app}\n", 3),
    ("command-list-of-lists", "name: x\nhealth: false\ncommand: [[a]]\n", 3),
    ("workdir", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nworkdir: [a]\n', 4),
    ("env-scalar", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nenv: 5\n', 4),
    ("env-value-list", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nenv:\n  A: [1]\n', 5),
    ("health-number", 'name: x\ncommand: ["sleep", "1"]\nports: ["8063"]\nhealth: 5\n', 4),
    ("health-list", 'name: x\ncommand: ["sleep", "1"]\nports: ["8064"]\nhealth: [a]\n', 4),
    ("health.port", 'name: x\ncommand: ["sleep", "1"]\nports: ["8065"]\nhealth:\n'
     "  port: http\n", 5),
    ("health.path", 'name: x\ncommand: ["sleep", "1"]\nports: ["8066"]\nhealth:\n'
     "  path: [a]\n", 5),
    ("stop_timeout-list", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\n'
     "stop_timeout: [1]\n", 4),
    ("stop_timeout-bool", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\n'
     "stop_timeout: true\n", 4),
    ("restart-list", 'name: x\ncommand: ["sleep", "1"]\nhealth: false\nrestart: [no]\n', 4),
]


@pytest.mark.parametrize("text,line", [c[1:] for c in WRONG_TYPES],
                         ids=[c[0] for c in WRONG_TYPES])
def test_wrong_type_for_field(nanny, services_dir, text, line):
    d = serve_with(nanny, services_dir, {"bad": text})
    check_error(d, services_dir, "bad", line)
    assert "x" not in d.service_names()


def test_duplicate_name_later_folder_is_the_error(nanny, services_dir):
    d = serve_with(nanny, services_dir, {
        "b-second": manifest("dup", description="second"),
        "a-first": manifest("dup", description="first"),
    })
    e = check_error(d, services_dir, "b-second", 1, ["dup"])
    assert e["name"] == "dup"
    assert "a-first" in e["message"]
    listed = d.get_json("/services/dup")
    assert listed["folder"] == "a-first"
    assert listed["description"] == "first"
    assert [x for x in d.services()["errors"] if x["folder"] == "a-first"] == []


def test_two_services_on_one_host_port(nanny, services_dir):
    d = serve_with(nanny, services_dir, {
        "a-owner": manifest("owner", port="8070:80"),
        "b-thief": 'name: thief\ncommand: ["sleep", "1"]\nports:\n  - "9001:1"\n'
                   '  - "8070:8000"\n',
    })
    e = check_error(d, services_dir, "b-thief", 5, ["8070"])
    assert e["name"] == "thief"
    assert "thief" not in d.service_names()
    assert d.get_json("/services/owner")["port"] == 8070


def test_udp_and_tcp_on_the_same_port_do_not_clash(nanny, services_dir):
    write_service(services_dir, "a", manifest("a", port="8071:80"))
    write_service(services_dir, "b", manifest("b", port="8071:80/udp"))
    d = nanny.serve(services_dir)
    assert d.services()["errors"] == []
    assert d.service_names() == ["a", "b"]


def test_manifest_over_1_mib(nanny, services_dir):
    head = manifest("big")
    text = head + "# " + "x" * (1024 * 1024) + "\n"
    d = serve_with(nanny, services_dir, {"big": text})
    check_error(d, services_dir, "big", ANY_LINE, ["1 mib"])
    assert "big" not in d.service_names()


def test_manifest_of_exactly_1_mib_is_read(nanny, services_dir):
    head = manifest("fits")
    pad = 1024 * 1024 - len(head) - 3
    text = head + "# " + "x" * pad + "\n"
    assert len(text) == 1024 * 1024
    d = serve_with(nanny, services_dir, {"fits": text})
    assert "fits" in d.service_names(), d.services()["errors"]


def test_manifest_symlink_outside_services_folder(nanny, services_dir, workdir):
    outside = workdir / "outside"
    outside.mkdir()
    (outside / "service.yaml").write_text(manifest("evil"))
    (services_dir / "evil").mkdir()
    os.symlink(outside / "service.yaml", services_dir / "evil" / "service.yaml")
    d = serve_with(nanny, services_dir, {})
    check_error(d, services_dir, "evil", ANY_LINE, ["outside"])
    assert "evil" not in d.service_names()


def test_manifest_symlink_with_dotdot_escape(nanny, services_dir, workdir):
    (workdir / "secret.yaml").write_text(manifest("sneaky"))
    (services_dir / "sneaky").mkdir()
    os.symlink("../../secret.yaml", services_dir / "sneaky" / "service.yaml")
    d = serve_with(nanny, services_dir, {})
    check_error(d, services_dir, "sneaky", ANY_LINE, ["outside"])
    assert "sneaky" not in d.service_names()


def test_service_folder_symlink_outside_services_folder(nanny, services_dir, workdir):
    outside = workdir / "elsewhere"
    outside.mkdir()
    (outside / "service.yaml").write_text(manifest("elsewhere"))
    os.symlink(outside, services_dir / "linked")
    d = serve_with(nanny, services_dir, {})
    check_error(d, services_dir, "linked", ANY_LINE, ["outside"])
    assert "elsewhere" not in d.service_names()


def test_manifest_symlink_inside_services_folder_is_fine(nanny, services_dir):
    write_service(services_dir, "_shared", manifest("shared-one"), filename="one.yaml")
    (services_dir / "one").mkdir()
    os.symlink("../_shared/one.yaml", services_dir / "one" / "service.yaml")
    d = serve_with(nanny, services_dir, {})
    assert d.services()["errors"] == []
    s = d.get_json("/services/shared-one")
    assert s["folder"] == "one"


def test_dangling_symlink_manifest(nanny, services_dir):
    (services_dir / "dangling").mkdir()
    os.symlink("does-not-exist.yaml", services_dir / "dangling" / "service.yaml")
    d = serve_with(nanny, services_dir, {})
    check_error(d, services_dir, "dangling", ANY_LINE)


def test_manifest_that_is_a_directory(nanny, services_dir):
    (services_dir / "weird" / "service.yaml").mkdir(parents=True)
    d = serve_with(nanny, services_dir, {})
    check_error(d, services_dir, "weird", ANY_LINE)


def test_manifest_that_is_a_fifo_does_not_block(nanny, services_dir):
    (services_dir / "fifo").mkdir()
    os.mkfifo(services_dir / "fifo" / "service.yaml")
    d = serve_with(nanny, services_dir, {})
    check_error(d, services_dir, "fifo", ANY_LINE)


def test_unreadable_manifest(nanny, services_dir):
    path = write_service(services_dir, "locked", manifest("locked"))
    os.chmod(path, 0)
    try:
        d = serve_with(nanny, services_dir, {})
        if os.access(path, os.R_OK):
            # Running as root: the file is readable after all, so it is a service.
            assert "locked" in d.service_names()
        else:
            check_error(d, services_dir, "locked", ANY_LINE)
    finally:
        os.chmod(path, 0o644)


def test_binary_garbage_manifest(nanny, services_dir):
    d = serve_with(nanny, services_dir, {"garbage": bytes(range(256)) * 8})
    check_error(d, services_dir, "garbage", ANY_LINE)


def test_invalid_utf8_manifest(nanny, services_dir):
    d = serve_with(nanny, services_dir,
                   {"latin1": b'name: x\ndescription: "caf\xe9"\ncommand: sleep 1\n'})
    check_error(d, services_dir, "latin1", ANY_LINE)


def test_yaml_alias_bomb_is_bounded(nanny, services_dir):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 12):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    text = "name: bomb\ncommand: sleep 1\nhealth: false\n" + "\n".join(lines) + "\n"
    d = serve_with(nanny, services_dir, {"bomb": text})
    d.assert_healthy()
    assert "good" in d.service_names()


def test_deeply_nested_yaml_is_bounded(nanny, services_dir):
    text = "name: deep\ncommand: sleep 1\nhealth: false\nenv: " + "[" * 20000 + "]" * 20000
    d = serve_with(nanny, services_dir, {"deep": text + "\n"})
    d.assert_healthy()
    check_error(d, services_dir, "deep", ANY_LINE)


def test_many_broken_manifests_do_not_hide_good_ones(nanny, services_dir):
    files = {}
    for i, (_, text, _, _) in enumerate(SINGLE_CASES):
        files[f"bad-{i:02d}"] = text
    for i in range(5):
        files[f"ok-{i}"] = manifest(f"ok-{i}")
    d = serve_with(nanny, services_dir, files)
    names = d.service_names()
    assert names == sorted(["good"] + [f"ok-{i}" for i in range(5)]), names
    folders = {e["folder"] for e in d.services()["errors"]}
    assert folders == {f"bad-{i:02d}" for i in range(len(SINGLE_CASES))}
