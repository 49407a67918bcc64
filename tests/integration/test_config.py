"""Configuration: flags, environment, the YAML config file, and their precedence. A bad
flag or config file stops the daemon at start with exit code 2 and a message naming the
flag or FILE:LINE."""

import json
import socket
import subprocess

import pytest

from conftest import (HOST, LISTENING_RE, free_port, http_request, manifest, wait_until,
                      write_service)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def two_folders(workdir):
    """Two services folders told apart by their one service's name."""
    a = workdir / "services-a"
    b = workdir / "services-b"
    write_service(a, "x", manifest("from-a"))
    write_service(b, "x", manifest("from-b"))
    return a, b


# --- bad flags -------------------------------------------------------------------


@pytest.mark.parametrize("args,names", [
    (["serve", "--bogus"], "--bogus"),
    (["serve", "--listen"], "--listen"),
    (["serve", "--config"], "--config"),
    (["serve", "--log-level"], "--log-level"),
    (["serve", "--listen", "nope"], "--listen"),
    (["serve", "--listen", "127.0.0.1"], "--listen"),
    (["serve", "--listen", "127.0.0.1:99999"], "--listen"),
    (["serve", "--listen", "127.0.0.1:-1"], "--listen"),
    (["serve", "--listen", "127.0.0.1:80x"], "--listen"),
    (["serve", "--listen", "999.1.1.1:80"], "--listen"),
    (["serve", "--listen", ""], "listen"),
    (["serve", "--log-level", "loud"], "--log-level"),
    (["serve", "--log-format", "xml"], "--log-format"),
    (["serve", "--services", ""], "--services"),
    (["serve", "--state-dir", ""], "--state-dir"),
    (["serve", "extra-argument"], "extra-argument"),
    (["serve", "-x"], "-x"),
    (["frobnicate"], "frobnicate"),
    ([], "usage"),
])
def test_bad_flags_exit_2_naming_the_flag(nanny, services_dir, args, names):
    if args and args[0] == "serve" and "--services" not in args:
        # Before the flag under test, which may be one missing its value.
        args = ["serve", "--services", str(services_dir)] + args[1:]
    rc, out, err = nanny.run(args)
    assert rc == 2, (rc, err)
    assert names in err, err
    assert "listening" not in err


def test_help_and_version(nanny):
    rc, out, err = nanny.run(["serve", "--help"])
    assert rc == 0
    for flag in ("--listen", "--services", "--config", "--state-dir"):
        assert flag in out
    rc, out, _ = nanny.run(["version"])
    assert rc == 0 and out.strip()


def test_missing_services_folder_exits_2(nanny, workdir):
    missing = workdir / "does-not-exist"
    rc, _, err = nanny.run(["serve", "--listen", "127.0.0.1:0", "--services", str(missing)])
    assert rc == 2, err
    assert str(missing) in err


def test_services_folder_that_is_a_file_exits_2(nanny, workdir):
    f = write(workdir / "file", "x")
    rc, _, err = nanny.run(["serve", "--listen", "127.0.0.1:0", "--services", f])
    assert rc == 2, err
    assert f in err


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"])
def test_non_loopback_listen_needs_insecure(nanny, services_dir, listen):
    rc, _, err = nanny.run(["serve", "--listen", listen, "--services", str(services_dir)])
    assert rc == 2, err
    assert "--insecure" in err
    assert "listening" not in err


def test_non_loopback_listen_from_config_needs_insecure(nanny, services_dir, workdir):
    cfg = write(workdir / "nanny.yaml", f"listen: 0.0.0.0:0\nservices: {services_dir}\n")
    rc, _, err = nanny.run(["serve", "--config", cfg])
    assert rc == 2, err
    assert "insecure" in err


def test_port_in_use_fails_to_start(nanny, services_dir):
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc, _, err = nanny.run(["serve", "--listen", f"127.0.0.1:{port}",
                                "--services", str(services_dir)])
    assert rc != 0, err
    assert f"127.0.0.1:{port}" in err


# --- environment and precedence ----------------------------------------------------


def test_env_settings_are_used(nanny, two_folders, workdir):
    a, _ = two_folders
    d = nanny.serve(services=None, listen=None, state=False,
                    env={"NANNY_LISTEN": "127.0.0.1:0", "NANNY_SERVICES": str(a),
                         "NANNY_STATE_DIR": str(workdir)})
    assert d.service_names() == ["from-a"]


def test_flags_win_over_env(nanny, two_folders):
    a, b = two_folders
    d = nanny.serve(services=b, env={"NANNY_SERVICES": str(a),
                                     "NANNY_LISTEN": "127.0.0.1:1"})
    assert d.service_names() == ["from-b"]
    assert d.port != 1


def test_bad_env_value_exits_2_naming_the_variable(nanny, services_dir):
    rc, _, err = nanny.run(["serve", "--services", str(services_dir)],
                           env={"NANNY_LISTEN": "not-an-address"})
    assert rc == 2, err
    assert "NANNY_LISTEN" in err


def test_bad_env_value_overridden_by_a_flag(nanny, services_dir):
    """A flag wins over the environment. Whether a bad, overridden variable is still an
    error is the daemon's call (naming the variable); it must never be used."""
    d = nanny.spawn(["serve", "--listen", "127.0.0.1:0", "--services", str(services_dir)],
                    env={"NANNY_LISTEN": "not-an-address"})
    try:
        rc = d.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        d.wait_listening()  # still running: listening where the flag said
        d.assert_healthy()
        return
    d.wait_exit()
    assert rc == 2 and "NANNY_LISTEN" in d.stderr, (rc, d.stderr)


def test_env_wins_over_config_file(nanny, two_folders, workdir):
    a, b = two_folders
    cfg = write(workdir / "nanny.yaml", f"services: {a}\nlisten: 127.0.0.1:0\n")
    d = nanny.serve(services=None, listen=None, extra_args=["--config", cfg],
                    env={"NANNY_SERVICES": str(b)})
    assert d.service_names() == ["from-b"]


def test_flag_wins_over_config_file(nanny, two_folders, workdir):
    a, b = two_folders
    cfg = write(workdir / "nanny.yaml", f"services: {a}\nlisten: 127.0.0.1:1\n")
    d = nanny.serve(services=b, extra_args=["--config", cfg])
    assert d.service_names() == ["from-b"]


def test_config_from_env(nanny, two_folders, workdir):
    a, b = two_folders
    cfg_a = write(workdir / "a.yaml", f"services: {a}\nlisten: 127.0.0.1:0\n")
    cfg_b = write(workdir / "b.yaml", f"services: {b}\nlisten: 127.0.0.1:0\n")
    d = nanny.serve(services=None, listen=None, env={"NANNY_CONFIG": cfg_a})
    assert d.service_names() == ["from-a"]
    d2 = nanny.serve(services=None, listen=None, extra_args=["--config", cfg_b],
                     env={"NANNY_CONFIG": cfg_a})
    assert d2.service_names() == ["from-b"]


# --- the config file ---------------------------------------------------------------


def test_full_config_file(nanny, two_folders, workdir):
    a, _ = two_folders
    text = f"""\
# every key
listen: 127.0.0.1:0
services: {a}
state_dir: {workdir}
log_level: info
log_format: text
insecure: false
gpu_conflict: preempt
compose_command: docker compose
allowed_hosts: [localhost, 127.0.0.1]
allowed_origins: ["http://localhost:3000"]
stop_services_on_exit: false
"""
    cfg = write(workdir / "nanny.yaml", text)
    d = nanny.serve(services=None, listen=None, state=False, extra_args=["--config", cfg])
    assert d.service_names() == ["from-a"]
    assert "warning" not in d.stderr, d.stderr


def test_config_paths_are_relative_to_the_file(nanny, workdir):
    conf_dir = workdir / "etc"
    conf_dir.mkdir()
    write_service(conf_dir / "svc", "x", manifest("relative"))
    cfg = write(conf_dir / "nanny.yaml", "services: svc\nlisten: 127.0.0.1:0\n")
    other = workdir / "elsewhere"
    other.mkdir()
    d = nanny.serve(services=None, listen=None, extra_args=["--config", cfg], cwd=str(other))
    assert d.service_names() == ["relative"]


def test_config_unknown_key_is_a_warning_with_line(nanny, services_dir, workdir):
    cfg = write(workdir / "nanny.yaml", "listen: 127.0.0.1:0\n\nlisten_backlog: 5\n")
    d = nanny.serve(services_dir, extra_args=["--config", cfg])
    d.assert_healthy()
    assert f"{cfg}:3:" in d.stderr, d.stderr
    assert "listen_backlog" in d.stderr


@pytest.mark.parametrize("text,line", [
    ("listen: 127.0.0.1:0\nservices: [unclosed, x\nlog_level: info\n", 3),
    ("listen: 127.0.0.1:0\n  bad indent: x\n", 2),
    ("- a\n- b\n", 1),
    ("log_level: loud\n", 1),
    ("listen: 127.0.0.1:0\nlog_format: xml\n", 2),
    ("\n\ngpu_conflict: fight\n", 3),
    ("insecure: perhaps\n", 1),
    ("stop_services_on_exit: [1]\n", 1),
    ("listen: nowhere\n", 1),
    ("listen: [127.0.0.1]\n", 1),
    ("services: {a: 1}\n", 1),
    ("allowed_hosts: localhost\n", 1),
    ("allowed_origins: [[a]]\n", 1),
    ("compose_command: [docker]\n", 1),
    ("log_level: info\nlog_level: debug\n", 2),
])
def test_bad_config_file_exits_2_with_file_and_line(nanny, services_dir, workdir, text, line):
    cfg = write(workdir / "nanny.yaml", text)
    rc, _, err = nanny.run(["serve", "--config", cfg, "--services", str(services_dir)])
    assert rc == 2, (rc, err)
    assert f"{cfg}:{line}:" in err, err
    assert "listening" not in err


def test_missing_config_file_exits_2(nanny, services_dir, workdir):
    cfg = str(workdir / "missing.yaml")
    rc, _, err = nanny.run(["serve", "--config", cfg, "--services", str(services_dir)])
    assert rc == 2, err
    assert cfg in err


def test_config_file_that_is_a_folder_exits_2(nanny, services_dir, workdir):
    rc, _, err = nanny.run(["serve", "--config", str(services_dir),
                            "--services", str(services_dir)])
    assert rc == 2, err
    assert str(services_dir) in err


def test_config_file_with_only_comments_means_defaults(nanny, services_dir, workdir):
    """An example config with every line commented out sets nothing: the defaults hold,
    as with an all-comments systemd unit drop-in or supervisord section."""
    cfg = write(workdir / "nanny.yaml", "# listen: 127.0.0.1:8080\n# log_level: info\n")
    d = nanny.serve(services_dir, extra_args=["--config", cfg])
    d.assert_healthy()


def test_empty_config_file_means_defaults(nanny, services_dir, workdir):
    cfg = write(workdir / "nanny.yaml", "")
    d = nanny.serve(services_dir, extra_args=["--config", cfg])
    d.assert_healthy()


def test_huge_config_file_exits_2(nanny, services_dir, workdir):
    cfg = write(workdir / "big.yaml", "listen: 127.0.0.1:0\n" + "#" * (2 * 1024 * 1024) + "\n")
    rc, _, err = nanny.run(["serve", "--config", cfg, "--services", str(services_dir)])
    assert rc == 2, err
    assert cfg in err


# --- logging options -------------------------------------------------------------------


def test_log_format_json(nanny, services_dir):
    write_service(services_dir, "bad", "name: [oops\n")
    d = nanny.serve(services_dir, extra_args=["--log-format", "json"])
    d.assert_healthy()
    assert d.terminate() == 0
    assert d.lines
    for line in d.lines:
        doc = json.loads(line)
        assert doc["level"] in ("error", "warning", "info", "debug"), doc
        assert isinstance(doc["message"], str)
    assert any("bad/service.yaml:" in json.loads(x)["message"] for x in d.lines), d.lines


def test_log_format_json_from_config(nanny, services_dir, workdir):
    cfg = write(workdir / "nanny.yaml", "log_format: json\n")
    d = nanny.serve(services_dir, extra_args=["--config", cfg])
    for line in d.lines:
        json.loads(line)


def test_log_level_warning_hides_info(nanny, services_dir, workdir):
    port = free_port()  # the daemon logs no "listening on" line to read it from
    write_service(services_dir, "w", manifest("w", unknown_key=1))
    d = nanny.spawn(["serve", "--listen", f"127.0.0.1:{port}", "--services", str(services_dir),
                     "--log-level", "warning"])
    d.wait_for_log("unknown_key")
    d.port = port
    wait_until(lambda: _answers(port), timeout=10, message="the daemon answering")
    assert d.terminate() == 0
    assert not any(": info: " in line for line in d.lines), d.lines
    assert not any(LISTENING_RE.search(line) for line in d.lines)


def _answers(port):
    try:
        return http_request(port, "GET", "/health", timeout=2).status == 200
    except OSError:
        return False


def test_config_warnings_follow_the_log_settings(nanny, services_dir, workdir):
    """A warning about the config file itself is logged in the format the file asks
    for (it used to be printed before the settings were known)."""
    cfg = workdir / "nanny.yaml"
    cfg.write_text("log_format: json\nfuture_knob: 1\n")
    d = nanny.serve(services_dir, extra_args=["--config", str(cfg)])
    d.assert_healthy()
    assert d.terminate() == 0
    docs = [json.loads(line) for line in d.lines]
    assert any(doc["level"] == "warning" and ":2: " in doc["message"]
               and "future_knob" in doc["message"] for doc in docs), docs
