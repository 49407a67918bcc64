"""`nanny check [DIR]`: every manifest validated offline, as discovery reads them, one
"PATH:LINE: message" per problem; exit 0 all valid, 1 any broken, 2 usage or an
unreadable folder (issue 11, part 3)."""

import os

from conftest import free_port, manifest, write_service


def check(nanny, *args, env=None, cwd=None):
    return nanny.run(["check", *map(str, args)], env=env, cwd=cwd)


def test_good_folder(nanny, services_dir):
    write_service(services_dir, "a", manifest("a", free_port()))
    write_service(services_dir, "b", manifest("b"))
    write_service(services_dir, "_template", "not: [valid")  # not a service folder
    rc, out, err = check(nanny, services_dir)
    assert rc == 0, out + err
    assert out == "2 services, no problems"
    assert err == ""


def test_broken_yaml_names_its_line(nanny, services_dir):
    write_service(services_dir, "good", manifest("good"))
    write_service(services_dir, "bad", "name: bad\ncommand: [sleep, 1000\nhealth: false\n")
    rc, out, err = check(nanny, services_dir)
    assert rc == 1, out + err
    lines = out.splitlines()
    path = f"{services_dir}/bad/service.yaml"
    problems = [line for line in lines if line.startswith(path + ":")]
    assert problems, out
    # The path as given, then the line the YAML parser stopped at.
    assert problems[0].split(":")[1].isdigit(), problems[0]
    assert int(problems[0].split(":")[1]) in (2, 3, 4), problems[0]
    assert not any("good/service.yaml" in line for line in lines), out
    assert lines[-1] == "2 services, 1 broken"


def test_two_services_on_one_port(nanny, services_dir):
    port = free_port()
    write_service(services_dir, "a", manifest("a", port))
    write_service(services_dir, "b", manifest("b", port))
    rc, out, err = check(nanny, services_dir)
    assert rc == 1, out + err
    # The later folder (by name) is the one in error, at its ports: line.
    problems = [line for line in out.splitlines() if "service.yaml" in line]
    assert len(problems) == 1, out
    assert problems[0].startswith(f"{services_dir}/b/service.yaml:3: "), problems[0]
    assert str(port) in problems[0]
    assert out.splitlines()[-1] == "2 services, 1 broken"


def test_unknown_field_is_a_warning_not_a_failure(nanny, services_dir):
    write_service(services_dir, "a", manifest("a", bogus_field="1"))
    rc, out, err = check(nanny, services_dir)
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith(f"{services_dir}/a/service.yaml:4: warning: "), lines[0]
    assert "bogus_field" in lines[0]
    assert lines[-1] == "1 services, no problems (1 warnings)"


def test_missing_folder_and_usage(nanny, workdir):
    missing = os.path.join(str(workdir), "nope")
    rc, out, err = check(nanny, missing)
    assert rc == 2
    assert f"cannot read the services folder {missing}" in err

    rc, out, err = check(nanny, "a", "b")
    assert rc == 2 and "unexpected argument" in err
    rc, out, err = check(nanny, "--frobnicate")
    assert rc == 2 and "see nanny check --help" in err

    rc, out, err = check(nanny, "--help")
    assert rc == 0 and "example" in out and "nanny check" in out


def test_default_folder_as_the_daemon_finds_it(nanny, services_dir, workdir):
    write_service(services_dir, "a", manifest("a"))
    rc, out, err = check(nanny, env={"NANNY_SERVICES": str(services_dir)})
    assert rc == 0, out + err
    assert out == "1 services, no problems"
    # The default ./services, relative to where it runs.
    rc, out, err = check(nanny, cwd=str(workdir))
    assert rc == 0, out + err
    assert out == "1 services, no problems"
