"""Discovery: which folders are services, warnings for unknown keys, POST /rediscover with
its added/removed/changed diff, automatic rediscovery on folder changes, and SIGHUP."""

import os
import re
import shutil
import signal
import time

import pytest

from conftest import START_TIMEOUT, manifest, replace_file, wait_until, write_service


def names_of(d):
    return d.service_names()


def wait_for_names(d, expected, message="services"):
    expected = sorted(expected)
    wait_until(lambda: names_of(d) == expected,
               message=f"{message}: GET /services lists {expected}")


# --- what is a service ----------------------------------------------------------


def test_ignored_folders(nanny, services_dir):
    write_service(services_dir, "_template", manifest("template"))
    write_service(services_dir, ".hidden", manifest("hidden"))
    write_service(services_dir, "_broken", "name: [oops\n")
    write_service(services_dir, ".git", ": not yaml at all [\n")
    os.makedirs(services_dir / "no-manifest")
    (services_dir / "no-manifest" / "README.md").write_text("not a service\n")
    write_service(services_dir, "wrong-case", manifest("wrong-case"), filename="Service.yaml")
    write_service(services_dir, "yml", manifest("yml"), filename="service.yml")
    (services_dir / "service.yaml").write_text(manifest("top-level-file"))
    (services_dir / "a-file").write_text(manifest("a-file"))
    write_service(services_dir, "real", manifest("real"))
    d = nanny.serve(services_dir)
    body = d.services()
    assert [s["name"] for s in body["services"]] == ["real"]
    assert body["errors"] == []
    assert d.get_json("/health")["services"] == 1


def test_folder_name_need_not_match_service_name(nanny, services_dir):
    write_service(services_dir, "Some Folder (v2)", manifest("svc"))
    d = nanny.serve(services_dir)
    s = d.get_json("/services/svc")
    assert s["folder"] == "Some Folder (v2)"


def test_symlinked_service_folder_inside_root(nanny, services_dir):
    write_service(services_dir, "_real", manifest("linked"))
    os.symlink("_real", services_dir / "linked")
    d = nanny.serve(services_dir)
    assert d.get_json("/services/linked")["folder"] == "linked"


def test_unknown_keys_are_warnings_with_lines(nanny, services_dir):
    text = ('name: fwd\ncommand: ["sleep", "1"]\nports: ["8030"]\nfuture_key: 1\n'
            "health:\n  path: /h\n  retries: 3\n")
    path = write_service(services_dir, "fwd", text)
    write_service(services_dir, "plain", manifest("plain"))
    d = nanny.serve(services_dir)
    body = d.services()
    assert body["errors"] == []
    s = d.get_json("/services/fwd")
    warnings = s["warnings"]
    assert len(warnings) == 2, warnings
    by_line = {w["line"]: w["message"] for w in warnings}
    assert set(by_line) == {4, 7}, warnings
    assert "future_key" in by_line[4]
    assert "retries" in by_line[7]
    assert d.get_json("/services/plain")["warnings"] == []
    real = os.path.join(os.path.realpath(services_dir), "fwd", "service.yaml")
    assert path.endswith("fwd/service.yaml")
    assert f"{real}:4:" in d.stderr and "future_key" in d.stderr
    assert f"{real}:7:" in d.stderr


def test_compose_warning_for_ignored_command(nanny, services_dir):
    write_service(services_dir, "c", 'name: c\nports: ["8031:80"]\ncommand: ["x"]\n')
    (services_dir / "c" / "compose.yaml").write_text("services: {}\n")
    d = nanny.serve(services_dir)
    s = d.get_json("/services/c")
    assert s["driver"] == "compose"
    assert [w["line"] for w in s["warnings"]] == [3], s["warnings"]


# --- POST /rediscover -------------------------------------------------------------


def test_rediscover_with_no_change(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    r = d.post("/rediscover")
    assert r.status == 200 and r.content_type == "application/json"
    body = r.json()
    assert set(body) >= {"services", "added", "removed", "changed", "errors"}
    assert [s["name"] for s in body["services"]] == ["a"]
    assert body["added"] == body["removed"] == body["changed"] == body["errors"] == []


def test_rediscover_reports_added_removed_changed(nanny, services_dir):
    write_service(services_dir, "keep", manifest("keep"))
    write_service(services_dir, "edit", manifest("edit", description="before"))
    write_service(services_dir, "gone", manifest("gone"))
    d = nanny.serve(services_dir)
    assert names_of(d) == ["edit", "gone", "keep"]

    write_service(services_dir, "new", manifest("new"))
    replace_file(str(services_dir / "edit" / "service.yaml"),
                 manifest("edit", description="after"))
    shutil.rmtree(services_dir / "gone")
    write_service(services_dir, "bad", "name: bad\nports: [nope]\ncommand: x\n")

    body = d.post("/rediscover").json()
    # The automatic rescan may have got there first; then the diff is empty, and a
    # second edit below checks the diff itself.
    listed = sorted(s["name"] for s in body["services"])
    assert listed == ["edit", "keep", "new"]
    assert [e["folder"] for e in body["errors"]] == ["bad"]
    assert body["errors"][0]["line"] == 2
    assert d.get_json("/services/edit")["description"] == "after"


def test_rediscover_diff_without_watcher_interference(nanny, services_dir, workdir):
    """The diff itself. Changes go through a manifest symlinked into '_shared', a folder
    the watcher ignores, so only the POST sees them."""
    shared = services_dir / "_shared"
    shared.mkdir()
    for n in ("one", "two", "three"):
        (shared / f"{n}.yaml").write_text(manifest(n, description="v1"))
        (services_dir / n).mkdir()
        os.symlink(f"../_shared/{n}.yaml", services_dir / n / "service.yaml")
    d = nanny.serve(services_dir)
    assert names_of(d) == ["one", "three", "two"]

    replace_file(str(shared / "one.yaml"), manifest("one", description="v2"))
    replace_file(str(shared / "two.yaml"), manifest("two-renamed"))
    replace_file(str(shared / "three.yaml"), "name: three\nports: [bad]\ncommand: x\n")
    body = d.post("/rediscover").json()
    assert body["changed"] == ["one"]
    assert body["added"] == ["two-renamed"]
    # "three" broke: it stays, with its last good manifest and the problem attached.
    assert body["removed"] == ["two"]
    assert [e["folder"] for e in body["errors"]] == ["three"]
    assert sorted(s["name"] for s in body["services"]) == ["one", "three", "two-renamed"]
    three = [s for s in body["services"] if s["name"] == "three"][0]
    assert three["manifest_error"]["line"] == 2

    # The daemon logs the error before it answers, but this test reads its stderr on
    # another thread: wait for the line rather than read once.
    real = os.path.join(os.path.realpath(services_dir), "three", "service.yaml")
    d.wait_for_log(re.escape(f"{real}:2:"), timeout=10)

    again = d.post("/rediscover").json()
    assert again["added"] == again["removed"] == again["changed"] == []
    assert [e["folder"] for e in again["errors"]] == ["three"]
    # The error is logged once, not at every rescan. The SIGHUP line comes after
    # whatever the second rescan logged: once it is read, so is all of that.
    start = len(d.lines)
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"SIGHUP: rescanning", start=start, timeout=10)
    assert d.stderr.count(f"{real}:2:") == 1, d.stderr


def test_fixing_a_manifest_brings_the_service_back(nanny, services_dir):
    path = write_service(services_dir, "svc", "name: svc\nports: [\n")
    d = nanny.serve(services_dir)
    assert names_of(d) == []
    replace_file(path, manifest("svc"))
    body = d.post("/rediscover").json()
    assert [s["name"] for s in body["services"]] == ["svc"]
    assert body["errors"] == []
    assert d.get_json("/health")["manifest_errors"] == 0


# --- automatic rediscovery ------------------------------------------------------------


def test_auto_rediscovery_new_folder(nanny, services_dir, workdir):
    write_service(services_dir, "first", manifest("first"))
    d = nanny.serve(services_dir)
    # Written outside, then moved in whole, as deploy tools do.
    staged = workdir / "staging"
    write_service(staged, "second", manifest("second"))
    os.rename(staged / "second", services_dir / "second")
    wait_for_names(d, ["first", "second"], "a folder moved in")
    # Made in place: mkdir, then write the manifest.
    write_service(services_dir, "third", manifest("third"))
    wait_for_names(d, ["first", "second", "third"], "a folder made in place")


def test_auto_rediscovery_manifest_added_later_to_existing_folder(nanny, services_dir):
    (services_dir / "later").mkdir()
    d = nanny.serve(services_dir)
    assert names_of(d) == []
    write_service(services_dir, "later", manifest("later"))
    wait_for_names(d, ["later"], "a manifest written into an existing folder")


def test_auto_rediscovery_edited_manifest(nanny, services_dir):
    path = write_service(services_dir, "svc", manifest("svc", description="one"))
    d = nanny.serve(services_dir)
    # In place (truncate and write), as `echo > file` does.
    with open(path, "w") as f:
        f.write(manifest("svc", description="two"))
    wait_until(lambda: d.get_json("/services/svc")["description"] == "two",
               message="an in-place edit")
    # Atomic replace, as editors and config tools do.
    replace_file(path, manifest("svc", description="three"))
    wait_until(lambda: d.get_json("/services/svc")["description"] == "three",
               message="an atomic replace")


def test_auto_rediscovery_broken_then_fixed(nanny, services_dir):
    path = write_service(services_dir, "svc", manifest("svc"))
    write_service(services_dir, "other", manifest("other"))
    d = nanny.serve(services_dir)
    replace_file(path, 'name: svc\ncommand: ["x"]\nports: ["99999"]\n')
    wait_until(lambda: [e["folder"] for e in d.services()["errors"]] == ["svc"],
               message="the broken manifest listed under errors")
    # A known service whose manifest broke stays, with its last good manifest and the
    # problem attached: a typo must not make a (running) service vanish.
    assert names_of(d) == ["other", "svc"]
    err = d.get_json("/services/svc")["manifest_error"]
    assert err["line"] == 3 and "99999" in err["message"], err
    replace_file(path, manifest("svc"))
    wait_until(lambda: d.services()["errors"] == []
               and d.get_json("/services/svc")["manifest_error"] is None,
               message="the fixed manifest clears the problem")
    assert names_of(d) == ["other", "svc"]


def test_new_broken_manifest_is_no_service(nanny, services_dir):
    """Only a service known from a good manifest is kept when its manifest breaks."""
    write_service(services_dir, "other", manifest("other"))
    d = nanny.serve(services_dir)
    write_service(services_dir, "svc", 'name: svc\ncommand: ["x"]\nports: ["99999"]\n')
    wait_until(lambda: [e["folder"] for e in d.services()["errors"]] == ["svc"],
               message="the broken manifest listed under errors")
    assert names_of(d) == ["other"]


def test_warnings_only_change_is_shown(nanny, services_dir):
    path = write_service(services_dir, "svc", manifest("svc"))
    d = nanny.serve(services_dir)
    assert d.get_json("/services/svc")["warnings"] == []  # fills the rendered cache
    replace_file(path, manifest("svc") + "future_key: 1\n")
    body = d.post("/rediscover").json()
    assert body["changed"] == []
    warnings = d.get_json("/services/svc")["warnings"]
    assert len(warnings) == 1 and warnings[0]["line"] == 4, warnings
    assert "future_key" in warnings[0]["message"]
    d.wait_for_log(r"service\.yaml:4: .*future_key")


def test_replaced_service_folder_is_still_watched(nanny, services_dir, workdir):
    """inotify follows the folder, not its name: rm -rf b && cp -r b2 b must be seen."""
    write_service(services_dir, "b", manifest("b", description="one"))
    d = nanny.serve(services_dir)
    staging = workdir / "staging"
    write_service(staging, "b", manifest("b", description="two"))
    shutil.rmtree(services_dir / "b")
    shutil.copytree(staging / "b", services_dir / "b")
    wait_until(lambda: d.get_json("/services/b")["description"] == "two",
               message="the copied folder's manifest")
    replace_file(str(services_dir / "b" / "service.yaml"), manifest("b", description="three"))
    wait_until(lambda: d.get_json("/services/b")["description"] == "three",
               message="an edit inside the replaced folder")


def test_replaced_services_folder_is_still_watched(nanny, workdir):
    root = workdir / "services"
    write_service(root, "a", manifest("a"))
    d = nanny.serve(root)
    os.rename(root, workdir / "services.old")
    write_service(root, "c", manifest("c"))
    wait_until(lambda: names_of(d) == ["c"], timeout=10,
               message="the new services folder's services")
    write_service(root, "e", manifest("e"))
    wait_until(lambda: names_of(d) == ["c", "e"], message="a service added to the new folder")


def test_auto_rediscovery_deleted_manifest_and_folder(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    write_service(services_dir, "b", manifest("b"))
    write_service(services_dir, "c", manifest("c"))
    d = nanny.serve(services_dir)
    assert names_of(d) == ["a", "b", "c"]
    os.remove(services_dir / "a" / "service.yaml")
    wait_for_names(d, ["b", "c"], "a deleted manifest")
    shutil.rmtree(services_dir / "b")
    wait_for_names(d, ["c"], "a deleted folder")
    os.rename(services_dir / "c", services_dir / "_c-disabled")
    wait_for_names(d, [], "a folder renamed to _disabled")


def test_auto_rediscovery_compose_file_changes_driver(nanny, services_dir):
    write_service(services_dir, "svc", 'name: svc\nports: ["8032:80"]\ncommand: ["x"]\n')
    d = nanny.serve(services_dir)
    assert d.get_json("/services/svc")["driver"] == "process"
    (services_dir / "svc" / "docker-compose.yml").write_text("services: {}\n")
    wait_until(lambda: d.get_json("/services/svc")["driver"] == "compose",
               message="a compose file added to the folder")


def test_auto_rediscovery_burst_of_changes(nanny, services_dir):
    d = nanny.serve(services_dir)
    for i in range(100):
        write_service(services_dir, f"s{i:03d}", manifest(f"s{i:03d}"))
    wait_until(lambda: len(names_of(d)) == 100, message="100 new folders")
    for i in range(0, 100, 2):
        shutil.rmtree(services_dir / f"s{i:03d}")
    wait_until(lambda: len(names_of(d)) == 50, message="50 folders removed")
    d.assert_healthy()


def test_files_a_service_writes_into_its_folder_cause_no_rescans(nanny, services_dir):
    write_service(services_dir, "busy", manifest("busy"))
    d = nanny.serve(services_dir, extra_args=["--log-level", "debug"])
    start = len(d.lines)
    for i in range(50):
        (services_dir / "busy" / f"output-{i}.log").write_text("x\n")
    # A rescan would log at debug level; now make a real change and wait for it.
    write_service(services_dir, "marker", manifest("marker"))
    wait_for_names(d, ["busy", "marker"], "the marker service")
    rescans = [line for line in d.lines[start:] if "services folder changed" in line]
    assert len(rescans) <= 2, rescans


def test_sighup_rescans(nanny, services_dir):
    """SIGHUP rescans. The change is made where the watcher does not look (a manifest
    symlinked into '_shared'), so only the signal can pick it up."""
    shared = services_dir / "_shared"
    shared.mkdir()
    (shared / "svc.yaml").write_text(manifest("svc", description="before"))
    (services_dir / "svc").mkdir()
    os.symlink("../_shared/svc.yaml", services_dir / "svc" / "service.yaml")
    d = nanny.serve(services_dir)
    assert d.get_json("/services/svc")["description"] == "before"
    replace_file(str(shared / "svc.yaml"), manifest("svc", description="after"))
    start = len(d.lines)
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"SIGHUP", start=start, timeout=10)
    wait_until(lambda: d.get_json("/services/svc")["description"] == "after",
               message="the change after SIGHUP")
    d.assert_healthy()


def test_many_sighups_do_not_hurt(nanny, services_dir):
    write_service(services_dir, "a", manifest("a"))
    d = nanny.serve(services_dir)
    for _ in range(50):
        d.signal(signal.SIGHUP)
    d.assert_healthy()
    assert names_of(d) == ["a"]
    assert d.terminate() == 0


def test_services_folder_removed_while_running(nanny, workdir):
    root = workdir / "vanishing"
    write_service(root, "a", manifest("a"))
    d = nanny.serve(root)
    shutil.rmtree(root)
    d.assert_healthy()
    r = d.post("/rediscover")
    assert r.status == 503, r
    assert r.json()["error"] == "services_unreadable"
    assert "cannot read the services folder" in r.json()["message"]
    d.assert_healthy()
    assert d.terminate() == 0


@pytest.mark.parametrize("count", [1, 3])
def test_rediscover_after_many_edits_settles(nanny, services_dir, count):
    path = write_service(services_dir, "svc", manifest("svc", description="v0"))
    d = nanny.serve(services_dir)
    for i in range(1, 20 * count):
        replace_file(path, manifest("svc", description=f"v{i}"))
    last = f"v{20 * count - 1}"
    wait_until(lambda: d.get_json("/services/svc")["description"] == last,
               message="the last of many edits")


def test_auto_rediscovery_manifest_written_while_a_rescan_runs(nanny, services_dir):
    """mkdir NEW, then write NEW/service.yaml a moment later: the mkdir starts a rescan
    after the quiet delay, and a manifest written before, while or after that rescan reads
    the folder must not be lost. 5,000 other services make the rescan last long enough
    for writes to land inside it; the delays run from before the quiet delay ends to past
    the rescan, whatever the machine's speed.

    A manifest written after the rescan read its folder is seen by the next rescan only,
    after the first one ends: on a loaded machine or with ASan that is seconds later. So
    the wait is generous (START_TIMEOUT): a lost manifest never shows at all."""
    for i in range(5000):
        write_service(services_dir, f"s{i:05d}", manifest(f"s{i:05d}"))
    d = nanny.serve(services_dir, start_timeout=60)
    assert len(d.services()["services"]) == 5000
    missed = []
    for k, delay in enumerate([0.05, 0.1, 0.15, 0.16, 0.18, 0.2, 0.22, 0.25, 0.3, 0.35, 0.4,
                               0.5]):
        folder = services_dir / f"000-new-{k}"
        folder.mkdir()
        time.sleep(delay)  # the user's pause between mkdir and writing the file
        write_service(services_dir, f"000-new-{k}", manifest(f"new-{k}"))
        try:
            wait_until(lambda: d.get("/services/new-" + str(k)).status == 200,
                       timeout=START_TIMEOUT, interval=0.05, message=f"new-{k}")
        except AssertionError:
            missed.append(f"{delay}s")
    assert not missed, (f"manifests written {', '.join(missed)} after their folder was made "
                        f"were never picked up; daemon log:\n{d.stderr[-3000:]}")


def test_start_of_a_service_whose_manifest_broke_is_422(nanny, services_dir):
    path = write_service(services_dir, "svc", manifest("svc"))
    d = nanny.serve(services_dir)
    replace_file(path, 'name: svc\ncommand: ["x"]\nports: ["99999"]\n')
    d.post("/rediscover")
    r = d.post("/services/svc/start")
    assert r.status == 422, r
    body = r.json()
    assert body["error"] == "invalid_manifest"
    assert "99999" in body["message"] and body["manifest_error"]["line"] == 3
