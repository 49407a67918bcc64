"""`nanny keys add|ls|rm`: the API keys file from the command line (issue 10, part 2).

The file keeps names, roles and SHA-256 hashes, never a key; add prints the new key once,
alone on stdout's last line; the file is written with mode 0600 and refused when group or
others may read it. Without --keys the file is the one the daemon reads by default,
STATE_DIR/keys.yaml (or NANNY_KEYS, or keys_file in the config file).
"""

import hashlib
import json
import os
import re
import stat

KEY_RE = re.compile(r"^nanny_[0-9a-f]{64}$")


def keys(nanny, workdir, *args, env=None):
    """Runs `nanny keys ARGS` with the state folder in workdir (and env on top)."""
    e = {"NANNY_STATE_DIR": str(workdir / "state")}
    e.update(env or {})
    return nanny.run(["keys"] + list(args), env=e, cwd=str(workdir))


def added_key(out):
    """The key that add printed, alone on the last line."""
    lines = out.strip("\n").split("\n")
    assert KEY_RE.match(lines[-1]), out
    return lines[-1]


def test_add_prints_key_once_and_keeps_only_its_hash(nanny, workdir):
    rc, out, err = keys(nanny, workdir, "add", "alice", "--role", "admin")
    assert rc == 0, err
    key = added_key(out)
    path = workdir / "state" / "keys.yaml"
    assert f"added key 'alice' (role admin) to {path}" in out
    assert "SIGHUP" in out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert key not in text and key[6:] not in text
    assert "sha256:" + hashlib.sha256(key.encode()).hexdigest() in text
    assert "name: alice" in text and "role: admin" in text

    # A second key is appended; the first one stays.
    rc, out, err = keys(nanny, workdir, "add", "ci-bot", "--role", "user")
    assert rc == 0, err
    other = added_key(out)
    assert other != key
    text = path.read_text()
    assert hashlib.sha256(key.encode()).hexdigest() in text
    assert hashlib.sha256(other.encode()).hexdigest() in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(workdir / "state")) == ["keys.yaml"]  # no temporary file left


def test_add_same_name_twice_fails(nanny, workdir):
    assert keys(nanny, workdir, "add", "alice", "--role", "admin")[0] == 0
    before = (workdir / "state" / "keys.yaml").read_text()
    rc, out, err = keys(nanny, workdir, "add", "alice", "--role", "user")
    assert rc == 1
    assert "'alice' exists already" in err
    assert out == ""
    assert (workdir / "state" / "keys.yaml").read_text() == before


def test_ls_lists_names_and_roles_never_hashes(nanny, workdir):
    for name, role in [("alice", "admin"), ("bob", "viewer"), ("ops", "operator")]:
        assert keys(nanny, workdir, "add", name, "--role", role)[0] == 0
    rc, out, err = keys(nanny, workdir, "ls")
    assert rc == 0, err
    rows = [line.split() for line in out.strip().split("\n")]
    assert rows == [["alice", "admin"], ["bob", "viewer"], ["ops", "operator"]]
    assert "sha256" not in out and "nanny_" not in out

    rc, out, err = keys(nanny, workdir, "ls", "--json")
    assert rc == 0, err
    body = json.loads(out)
    assert body["file"] == str(workdir / "state" / "keys.yaml")
    assert body["keys"] == [
        {"name": "alice", "role": "admin"},
        {"name": "bob", "role": "viewer"},
        {"name": "ops", "role": "operator"},
    ]


def test_ls_without_a_file_lists_nothing(nanny, workdir):
    rc, out, err = keys(nanny, workdir, "ls")
    assert rc == 0
    assert out == ""
    assert "no keys" in err
    assert not (workdir / "state" / "keys.yaml").exists()


def test_rm(nanny, workdir):
    assert keys(nanny, workdir, "add", "alice", "--role", "admin")[0] == 0
    rc, out, err = keys(nanny, workdir, "add", "bob", "--role", "user")
    bob = added_key(out)
    rc, out, err = keys(nanny, workdir, "rm", "alice")
    assert rc == 0, err
    assert "removed key 'alice'" in out
    assert keys(nanny, workdir, "ls")[1].split() == ["bob", "user"]
    text = (workdir / "state" / "keys.yaml").read_text()
    assert "alice" not in text and hashlib.sha256(bob.encode()).hexdigest() in text

    rc, out, err = keys(nanny, workdir, "rm", "alice")
    assert rc == 1
    assert "no key named 'alice'" in err

    # The last one: the file stays, with no key.
    assert keys(nanny, workdir, "rm", "bob")[0] == 0
    assert keys(nanny, workdir, "ls")[1] == ""
    assert "keys: []" in (workdir / "state" / "keys.yaml").read_text()


def test_rm_without_a_file_fails(nanny, workdir):
    rc, out, err = keys(nanny, workdir, "rm", "alice")
    assert rc == 1
    assert "no keys file" in err


def test_bad_usage(nanny, workdir):
    rc, out, err = keys(nanny, workdir, "add", "alice", "--role", "root")
    assert rc == 2
    assert "unknown role 'root'" in err and "user, viewer, operator, admin" in err
    rc, out, err = keys(nanny, workdir, "add", "alice")
    assert rc == 2 and "--role" in err
    rc, out, err = keys(nanny, workdir, "add", "a b", "--role", "user")
    assert rc == 2 and "not a valid key name" in err
    rc, out, err = keys(nanny, workdir, "add", "--role", "user")
    assert rc == 2 and "NAME" in err
    rc, out, err = keys(nanny, workdir, "frobnicate")
    assert rc == 2 and "unknown command" in err
    rc, out, err = keys(nanny, workdir)
    assert rc == 2
    rc, out, err = keys(nanny, workdir, "ls", "extra")
    assert rc == 2 and "unexpected argument" in err
    assert not (workdir / "state").exists()  # nothing was written

    rc, out, err = keys(nanny, workdir, "--help")
    assert rc == 0 and "nanny keys add NAME --role" in out
    rc, out, err = nanny.run(["--help"])
    assert rc == 0 and "keys" in out


def test_which_file(nanny, workdir):
    # --keys names it.
    other = workdir / "elsewhere" / "api-keys.yaml"
    rc, out, err = keys(nanny, workdir, "add", "a", "--role", "user", "--keys", str(other))
    assert rc == 0, err
    assert stat.S_IMODE(os.stat(other).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(other.parent).st_mode) == 0o700
    assert not (workdir / "state" / "keys.yaml").exists()
    assert keys(nanny, workdir, "ls", "--keys", str(other))[1].split() == ["a", "user"]

    # NANNY_KEYS, as the daemon reads it.
    rc, out, err = keys(nanny, workdir, "ls", env={"NANNY_KEYS": str(other)})
    assert out.split() == ["a", "user"]

    # --state-dir, as for nanny serve.
    rc, out, err = keys(nanny, workdir, "add", "b", "--role", "viewer", "--state-dir",
                        str(workdir / "s2"))
    assert rc == 0, err
    assert (workdir / "s2" / "keys.yaml").exists()

    # keys_file in the config file, relative to it; the config may listen beyond
    # loopback (its keys are being made).
    conf = workdir / "conf" / "nanny.yaml"
    conf.parent.mkdir()
    conf.write_text("listen: 0.0.0.0:8443\ntls_cert: cert.pem\ntls_key: key.pem\n"
                    "keys_file: my-keys.yaml\n")
    rc, out, err = keys(nanny, workdir, "add", "c", "--role", "admin", "--config", str(conf))
    assert rc == 0, err
    assert (workdir / "conf" / "my-keys.yaml").exists()
    rc, out, err = keys(nanny, workdir, "ls", env={"NANNY_CONFIG": str(conf)})
    assert out.split() == ["c", "admin"]

    # A bad config file is a usage error, as for nanny serve.
    conf.write_text("keys_file: [\n")
    rc, out, err = keys(nanny, workdir, "ls", "--config", str(conf))
    assert rc == 2 and str(conf) in err


def test_refuses_a_file_open_to_others(nanny, workdir):
    assert keys(nanny, workdir, "add", "alice", "--role", "admin")[0] == 0
    path = workdir / "state" / "keys.yaml"
    before = path.read_text()
    for mode in (0o644, 0o640, 0o604):
        os.chmod(path, mode)
        for args in (["ls"], ["add", "bob", "--role", "user"], ["rm", "alice"]):
            rc, out, err = keys(nanny, workdir, *args)
            assert rc == 1, (mode, args)
            assert f"permissions {mode:04o} are too open" in err, err
            assert f"chmod 600 {path}" in err
            assert "nanny_" not in out
        assert path.read_text() == before
        assert stat.S_IMODE(os.stat(path).st_mode) == mode  # left as it was


def test_refuses_a_symlink_and_a_bad_file(nanny, workdir):
    real = workdir / "real.yaml"
    real.write_text("keys: []\n")
    os.chmod(real, 0o600)
    link = workdir / "link.yaml"
    link.symlink_to(real)
    rc, out, err = keys(nanny, workdir, "add", "a", "--role", "user", "--keys", str(link))
    assert rc == 1
    assert "is a symbolic link; name the file itself" in err
    assert os.path.islink(link) and real.read_text() == "keys: []\n"

    bad = workdir / "bad.yaml"
    bad.write_text("keys:\n  - name: alice\n    role: root\n    hash: sha256:" + "0" * 64 + "\n")
    os.chmod(bad, 0o600)
    rc, out, err = keys(nanny, workdir, "add", "a", "--role", "user", "--keys", str(bad))
    assert rc == 1
    assert f"{bad}:3: keys[0].role: unknown role 'root'" in err
    assert "role: root" in bad.read_text()  # not overwritten

    empty = workdir / "empty.yaml"
    empty.write_text("# nothing yet\n")
    os.chmod(empty, 0o600)
    rc, out, err = keys(nanny, workdir, "ls", "--keys", str(empty))
    assert rc == 1 and "the keys file is empty" in err
