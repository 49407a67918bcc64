"""Files outside the services folder (issue 9, item 6): a compose file, named by
compose_file or found in the service folder as a symlink, is held to the manifest's rule.
One that leads outside the services folder (symlinks and ".." resolved) makes the manifest
broken: GET /services/NAME answers 422 with the error, a start is refused, and no answer
or log line quotes the file's content."""

import json
import os

import pytest

from conftest import assert_json_error, free_port, write_service

SECRET = "SECRET-LINE-9f3c"
COMPOSE_TEXT = f"services:\n  app:\n    image: {SECRET}\n    bad: [\n"


def compose_manifest(name, extra=""):
    return f'name: {name}\nports: ["{free_port()}:80"]\n{extra}'


@pytest.fixture
def outside_file(workdir):
    outside = workdir / "outside"
    outside.mkdir()
    path = outside / "docker-compose.yml"
    path.write_text(COMPOSE_TEXT)
    return path


def assert_refused(d, name, folder, line):
    body = d.services()
    assert name not in [s["name"] for s in body["services"]], body
    errs = [e for e in body["errors"] if e.get("folder") == folder]
    assert errs, body
    assert errs[0]["line"] == line, errs
    assert "outside the services folder" in errs[0]["message"], errs

    r = d.get(f"/services/{name}")
    assert_json_error(r, 422, "invalid_manifest")
    assert "outside the services folder" in r.json()["manifest_error"]["message"], r
    r = d.post(f"/services/{name}/start")
    assert_json_error(r, 422, "invalid_manifest")
    for text in (json.dumps(body), r.body.decode("utf-8", "replace"), d.stderr):
        assert SECRET not in text, text


@pytest.mark.parametrize("given", ["absolute", "dotdot", "symlink"])
def test_compose_file_outside_is_refused(nanny, services_dir, workdir, outside_file, given):
    folder = services_dir / "leaky"
    folder.mkdir()
    if given == "absolute":
        value = str(outside_file)
    elif given == "dotdot":
        value = os.path.relpath(outside_file, folder)
        assert value.startswith("../")
    else:
        os.symlink(outside_file, folder / "stack.yml")
        value = "stack.yml"
    write_service(services_dir, "leaky", compose_manifest("leaky", f"compose_file: {value}\n"))
    d = nanny.serve(services_dir)
    assert_refused(d, "leaky", "leaky", 3)


def test_found_compose_file_symlink_outside_is_refused(nanny, services_dir, outside_file):
    folder = services_dir / "linked"
    folder.mkdir()
    os.symlink(outside_file, folder / "docker-compose.yml")
    write_service(services_dir, "linked", compose_manifest("linked"))
    d = nanny.serve(services_dir)
    assert_refused(d, "linked", "linked", 1)


def test_compose_file_inside_services_folder_is_fine(nanny, services_dir, outside_file):
    write_service(services_dir, "_shared", "services: {}\n", filename="compose.yml")
    folder = services_dir / "inside"
    folder.mkdir()
    os.symlink("../_shared/compose.yml", folder / "docker-compose.yml")
    write_service(services_dir, "inside", compose_manifest("inside"))
    write_service(services_dir, "given",
                  compose_manifest("given", "compose_file: ../_shared/compose.yml\n"))
    d = nanny.serve(services_dir)
    assert d.services()["errors"] == []
    for name in ("inside", "given"):
        s = d.get_json(f"/services/{name}")
        assert s["driver"] == "compose", s
