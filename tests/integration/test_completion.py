"""The bash completion completions/nanny.bash, sourced in `bash -c` with COMP_WORDS,
COMP_CWORD, COMP_LINE and COMP_POINT set as bash sets them, its function called, and
COMPREPLY read: the commands, each command's options (every option its --help lists), the
values of options, service names from a running daemon (--url on the line or NANNY_URL)
and key names for `keys rm`."""

import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import clean_env, free_port, manifest, nanny_binary, write_service

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPLETION = os.path.join(REPO, "completions", "nanny.bash")
OPTION_RE = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")

SCRIPT = r"""
. "$1" || exit 90
shift
COMP_LINE=$1
COMP_POINT=${#COMP_LINE}
shift
COMP_WORDS=("$@")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_nanny || exit 91
printf '%s\n' "${COMPREPLY[@]}"
complete -p nanny >/dev/null || exit 92
"""


def bash_words(line):
    """COMP_WORDS as bash makes them of line: split on blanks and at = and : (of the
    default COMP_WORDBREAKS), the separators kept as words; a last empty word when the
    line ends with a blank."""
    words = []
    for blank_word in line.split():
        words += [w for w in re.split(r"([=:])", blank_word) if w != ""]
    if line.endswith(" "):
        words.append("")
    return words


def complete(line, env=None):
    """COMPREPLY for the line (`nanny` is replaced by the binary under test)."""
    line = line.replace("nanny", nanny_binary(), 1)
    words = bash_words(line)
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", SCRIPT, "bash", COMPLETION,
                        line, *words], capture_output=True, text=True, timeout=30,
                       env=clean_env(env))
    assert r.returncode == 0, (r.returncode, r.stderr)
    return [w for w in r.stdout.split("\n") if w != ""]


def help_options(cmd):
    r = subprocess.run([nanny_binary(), cmd, "--help"], capture_output=True, text=True,
                       timeout=30, env=clean_env())
    assert r.returncode == 0, r.stderr
    return set(OPTION_RE.findall(r.stdout + r.stderr))


CLIENT_COMMANDS = ["health", "ls", "ps", "status", "start", "stop", "restart", "rediscover",
                   "logs"]


def test_commands():
    got = complete("nanny ")
    for cmd in CLIENT_COMMANDS + ["serve", "new", "keys", "check", "mcp", "version"]:
        assert cmd in got, got
    assert sorted(complete("nanny st")) == ["start", "status", "stop"]
    assert complete("nanny re") == ["restart", "rediscover"]


def test_options_of_start():
    got = complete("nanny start --")
    assert set(got) == {"--force", "--wait", "--timeout", "--url", "--key", "--cacert",
                        "--help"}, got
    assert complete("nanny start hello --w") == ["--wait"]


@pytest.mark.parametrize("cmd", CLIENT_COMMANDS + ["serve", "new", "keys", "check", "mcp"])
def test_every_option_of_the_help_is_offered(cmd):
    offered = set(complete(f"nanny {cmd} -"))
    missing = help_options(cmd) - offered
    assert not missing, f"nanny {cmd}: the completion lacks {sorted(missing)}"


def test_option_values():
    assert complete("nanny keys add bob --role ") == ["user", "viewer", "operator", "admin"]
    assert complete("nanny keys add bob -r op") == ["operator"]
    assert complete("nanny serve --log-level ") == ["error", "warning", "info", "debug"]
    assert complete("nanny serve --log-format=j") == ["json"]
    assert complete("nanny start x --timeout ") == []
    assert complete("nanny logs x -n ") == []
    assert complete("nanny keys ") == ["add", "ls", "rm"]


def test_files_and_folders(tmp_path):
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "sub").mkdir()
    assert complete(f"nanny ls --cacert {tmp_path}/c") == [f"{tmp_path}/ca.pem"]
    assert complete(f"nanny ls --cacert={tmp_path}/c") == [f"{tmp_path}/ca.pem"]
    assert complete(f"nanny check {tmp_path}/") == [f"{tmp_path}/sub"]
    assert complete(f"nanny new x --services {tmp_path}/") == [f"{tmp_path}/sub"]


def test_service_names_from_the_daemon(nanny, services_dir):
    for name in ("alpha", "beta.two", "gamma"):
        write_service(services_dir, name.replace(".", "-"), manifest(name))
    write_service(services_dir, "broken", "name: [\n")  # listed under errors only
    d = nanny.serve(services_dir)
    url = f"http://127.0.0.1:{d.port}"
    every = ["alpha", "beta.two", "gamma"]
    for cmd in ("status", "start", "stop", "restart", "logs"):
        assert complete(f"nanny {cmd} --url {url} ") == every, cmd
    assert complete(f"nanny start --url={url} --force b") == ["beta.two"]
    assert complete(f"nanny logs -n 5 --url {url} ") == every
    assert complete("nanny status ", env={"NANNY_URL": url}) == every
    assert complete(f"nanny start --url {url} alpha ") == []  # one NAME only
    assert complete(f"nanny ls --url {url} ") == []
    # The completion's daemon is the one on the line, not NANNY_URL.
    other = f"http://127.0.0.1:{free_port()}"
    assert complete(f"nanny start --url {url} ", env={"NANNY_URL": other}) == every


def test_no_daemon_offers_nothing_quickly():
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    assert complete(f"nanny start --url {url} ") == []
    assert time.monotonic() - t0 < 10


def test_key_names_for_keys_rm(nanny, tmp_path):
    keys = tmp_path / "keys.yaml"
    for name in ("alice", "bob"):
        rc, out, err = nanny.run(["keys", "add", name, "--role", "viewer", "--keys",
                                  str(keys)])
        assert rc == 0, err
    assert complete(f"nanny keys rm --keys {keys} ") == ["alice", "bob"]
    assert complete(f"nanny keys rm --keys={keys} a") == ["alice"]
    assert complete(f"nanny keys ls --keys {keys} ") == []


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
    r = subprocess.run(["shellcheck", COMPLETION], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
