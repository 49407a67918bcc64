"""The manual page doc/nanny.1 (mdoc, by hand) and what `meson install` puts in place: the
page passes `mandoc -Tlint`, names every command, option and NANNY_* variable that the
binary's own --help texts list (so it cannot go stale silently), and is installed, with
the bash completion, under PREFIX/share. mandoc is the Debian package mandoc (./test.sh
installs it); a missing mandoc fails the tests."""

import filecmp
import os
import re
import shutil
import subprocess

import pytest

from conftest import clean_env, nanny_binary

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN_PAGE = os.path.join(REPO, "doc", "nanny.1")
COMPLETION = os.path.join(REPO, "completions", "nanny.bash")
OPTION_RE = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def mandoc():
    path = shutil.which("mandoc")
    if not path:
        pytest.fail("mandoc is not installed: it is the Debian package mandoc (./test.sh "
                    "installs it)", pytrace=False)
    return path


def run_nanny(*args):
    r = subprocess.run([nanny_binary(), *args], capture_output=True, text=True, timeout=30,
                       env=clean_env())
    return r.returncode, r.stdout + r.stderr


def commands():
    """The commands `nanny --help` lists: `  NAME[, NAME]  text` lines and the names in
    its `(also: a, b, ...; ...)`."""
    rc, out = run_nanny("--help")
    assert rc == 0, out
    names = []
    for line in out.splitlines():
        m = re.match(r"^  ([a-z]+(?:, [a-z]+)*)\s", line)
        if m:
            names += m.group(1).split(", ")
    also = re.search(r"\(also: ([^;)]*)", out.replace("\n", " "))
    assert also, f"`nanny --help` no longer says `(also: ...)`:\n{out}"
    names += [n.strip() for n in also.group(1).split(",")]
    names = [re.sub(r"\s+", "", n) for n in names]
    for expected in ("serve", "ls", "start", "logs", "check", "keys"):
        assert expected in names, f"parsing `nanny --help` found only {names}"
    return names


def rendered():
    """The page as a terminal shows it, without the overstrike of bold and underline."""
    r = subprocess.run([mandoc(), "-Tascii", MAN_PAGE], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return re.sub(r".\x08", "", r.stdout)


def test_man_page_lints_clean():
    r = subprocess.run([mandoc(), "-Tlint", "-Wstyle", MAN_PAGE], capture_output=True,
                       text=True, timeout=30)
    # Whether the pages of SEE ALSO are installed depends on the machine, not on the page.
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "mandoc.db" not in line and "referenced manual not found" not in line]
    assert problems == [], "\n".join(problems)


def test_man_page_names_every_command_option_and_variable():
    text = rendered()
    synopsis = text.split("DESCRIPTION")[0]
    missing = []
    for cmd in commands():
        if not re.search(rf"^\s+nanny {cmd}\b", synopsis, re.M) and \
                not re.search(rf"^\s+nanny \S+ \| {cmd}\b", synopsis, re.M):
            missing.append(f"command {cmd} (in SYNOPSIS)")
        if cmd == "version":
            continue
        rc, help_text = run_nanny(cmd, "--help")
        assert rc == 0, f"nanny {cmd} --help: {help_text}"
        for opt in sorted(set(OPTION_RE.findall(help_text))):
            if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text):
                missing.append(f"nanny {cmd} {opt}")
        for var in sorted(set(re.findall(r"\bNANNY_[A-Z_]+\b", help_text))):
            if var not in text:
                missing.append(f"{var} (nanny {cmd} --help)")
        usage = []  # `usage: nanny CMD ...` and the lines of the same form below it
        for line in help_text.splitlines():
            if not re.match(r"^(usage:)?\s+nanny ", line) and not line.startswith("usage:"):
                break
            usage.append(line)
        for sub in re.findall(rf"nanny {cmd} ([a-z]+)\b", "\n".join(usage)):
            if not re.search(rf"^\s+nanny {cmd} {sub}\b", synopsis, re.M):
                missing.append(f"nanny {cmd} {sub} (in SYNOPSIS)")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "ENVIRONMENT", "FILES",
                    "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        if not re.search(rf"^{section}$", text, re.M):
            missing.append(f"section {section}")
    for var in ("NANNY_URL", "NANNY_KEY", "NANNY_CACERT", "NO_COLOR"):
        if not re.search(rf"^\s+{var}$", text.split("ENVIRONMENT")[1], re.M):
            missing.append(f"{var} (in ENVIRONMENT)")
    assert not missing, "doc/nanny.1 lacks: " + ", ".join(missing)


def test_man_page_exit_statuses_match_the_help():
    rc, help_text = run_nanny("start", "--help")
    codes = re.search(r"^exit codes: (.*)$", help_text, re.M)
    assert codes, help_text
    status = rendered().split("EXIT STATUS")[1].split("EXAMPLES")[0]
    for code, meaning in re.findall(r"(\d) ([a-zA-Z ]+?)(?:,|$)", codes.group(1)):
        word = meaning.split()[0].lower()
        assert re.search(rf"^\s+{code}\s+.*{word}", status, re.M | re.I), \
            f"EXIT STATUS has no {code} ({meaning}):\n{status}"


def test_meson_install_puts_the_page_and_the_completion_in_place(tmp_path):
    build = os.environ.get("NANNY_BUILD_DIR") or os.path.dirname(nanny_binary())
    assert os.path.isfile(os.path.join(build, "build.ninja")), f"{build} is no meson build dir"
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--destdir",
                        str(dest)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    found = {os.path.relpath(os.path.join(d, f), dest)
             for d, _, files in os.walk(dest) for f in files}
    page = [p for p in found if p.endswith("share/man/man1/nanny.1")]
    completion = [p for p in found if p.endswith("share/bash-completion/completions/nanny")]
    assert len(page) == 1 and len(completion) == 1, sorted(found)
    prefix = page[0][:-len("share/man/man1/nanny.1")]
    assert completion[0] == prefix + "share/bash-completion/completions/nanny", sorted(found)
    assert prefix + "bin/nanny" in found, sorted(found)
    assert filecmp.cmp(dest / page[0], MAN_PAGE, shallow=False)
    assert filecmp.cmp(dest / completion[0], COMPLETION, shallow=False)
    # man finds and formats the installed page.
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", str(dest / page[0])], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "MANPAGER": "cat", "PAGER": "cat",
                                            "MANWIDTH": "80"})
        assert r.returncode == 0 and "nanny" in r.stdout, r.stderr
