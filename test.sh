#!/usr/bin/env bash
# Builds Service Nanny twice (a normal build with warnings as errors, and an
# ASan+UBSan build) and runs every suite: the formatting check, the C unit
# tests of each build and the integration tests (pytest) against each build's
# daemon. Prints each suite's result as it goes and, as its very last line,
# `N passed, M failed` summed over all suites. Exits 1 when anything failed.
#
# Usage: ./test.sh            (as root on Debian 12, or with sudo; see README)
# It installs the missing Debian packages first (scripts/deps.sh) and the MCP
# tests' npm clients (tests/mcp/install.sh), and leaves nothing behind but the
# build dirs `build` and `build-asan` (with the tests' artefacts, such as the
# dashboard's screenshots, in BUILD/test-artefacts) and tests/mcp/node_modules.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
# shellcheck source=scripts/dockerd.sh
. "$REPO/scripts/dockerd.sh"

UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}         # seconds per unit test binary
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-1500}    # seconds per integration run
NPM_TIMEOUT=${NPM_TIMEOUT:-900}           # seconds for installing the MCP clients
BUILD_DIRS=(build build-asan)

passed=0
failed=0
skipped=0

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nanny-test.XXXXXX")
child=""
# shellcheck disable=SC2317 # called by the traps
cleanup() {
    if [[ -n $dockerd_pid && -n ${docker_users:-} ]]; then
        # Another ./test.sh may use the engine started here: stop it once none does,
        # and let no new one find it meanwhile.
        flock -w 3600 -x "$docker_start" || true
        if ! flock -n -x "$docker_users"; then
            echo "waiting for the other test runs that use this dockerd to end"
            flock -w 3600 -x "$docker_users" || true
        fi
    fi
    dockerd_stop
    rm -rf "$TMP"
}
# shellcheck disable=SC2317
on_signal() {
    if [[ -n $child ]]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Run "$@" with a time limit of $1 seconds. timeout(1) puts the command in its
# own process group, which Ctrl-C does not reach: so it runs in the background
# and is waited for, and the traps above stop it.
run_bounded() {
    local secs=$1 rc=0
    shift
    timeout -k 10 "$secs" "$@" &
    child=$!
    wait "$child" || rc=$?
    child=""
    return "$rc"
}

# Tests must not pick up a developer's own daemon settings.
unset NANNY_LISTEN NANNY_SERVICES NANNY_STATE_DIR NANNY_CONFIG NANNY_DOCKER_HOST \
    NANNY_COMPOSE_COMMAND NANNY_MAX_CONNECTIONS_PER_CLIENT NANNY_NO_RESUME \
    NANNY_TRUSTED_PROXIES NANNY_KEYS NANNY_TLS_CERT NANNY_TLS_KEY NANNY_KEY NANNY_URL
# No core files from sanitizer aborts, no pytest cache or bytecode in the tree.
ulimit -c 0
export PYTHONDONTWRITEBYTECODE=1

# Add one suite's counts to the totals and print its result line.
# report NAME PASSED FAILED [SKIPPED]
report() {
    local name=$1 p=$2 f=$3 s=${4:-0} verdict=PASS extra=""
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    if ((f > 0)); then verdict=FAIL; fi
    if ((s > 0)); then extra=" ($s skipped)"; fi
    printf '%s %s: %d passed, %d failed%s\n' "$verdict" "$name" "$p" "$f" "$extra"
}

section() {
    printf '\n=== %s ===\n' "$*"
}

# Print at most $2 lines of file $1, indented, noting what was cut.
show() {
    local file=$1 max=${2:-80} n
    n=$(wc -l <"$file")
    sed -n "1,${max}p" "$file" | sed 's/^/    /'
    if ((n > max)); then
        printf '    ... (%d more lines)\n' $((n - max))
    fi
}

# --- packages ----------------------------------------------------------------
section "dependencies"
if ! deps_install "${DEPS_TEST[@]}"; then
    echo "could not install the packages the tests need"
    report "dependencies" 0 1
    echo "$passed passed, $failed failed"
    exit 1
fi
echo "all Debian packages present"

# --- MCP test clients --------------------------------------------------------
# The MCP tests drive /mcp with the official TypeScript clients and conformance
# suite from npm, and the dashboard's tests drive Chromium with playwright-core,
# at the versions of tests/mcp/package-lock.json. install.sh runs
# `npm ci` only when tests/mcp/node_modules is missing or was installed from
# another lock. If it fails, that is one failure here, and the MCP tests fail
# saying the clients are not installed; the other suites still run.
section "MCP test clients (tests/mcp/install.sh)"
if run_bounded "$NPM_TIMEOUT" tests/mcp/install.sh </dev/null >"$TMP/mcp-install.log" 2>&1; then
    show "$TMP/mcp-install.log" 20
else
    # npm's own error comes last: the end of the log.
    tail -n 40 "$TMP/mcp-install.log" | sed 's/^/    /'
    report "MCP test clients: npm ci" 0 1
fi

# --- Docker engine -----------------------------------------------------------
# The compose driver's integration tests need a Docker engine. An engine that
# already answers (a developer's own, or one started by hand) is used and left
# alone. Otherwise dockerd is started here with its defaults (the socket
# /var/run/docker.sock is where the daemon under test looks by default), and
# cleanup() stops it at exit, its containerd too. If it cannot start, that is
# one failure and the log says why; the other suites still run (the compose
# tests then fail with "no Docker engine").
#
# Several ./test.sh may run at once and share one engine. Looking for an engine and
# starting one happens under one lock (so two runs never both start dockerd); each
# run holds a shared lock on a second file while it may use the engine; the run that
# started dockerd stops it holding the first lock and the second exclusively, which
# waits for every other run to end.
section "docker engine"
lock_dir=/run/lock # where lock files belong (a tmpfs); /tmp where it cannot be written
[[ -d $lock_dir && -w $lock_dir ]] || lock_dir=${TMPDIR:-/tmp}
exec {docker_start}>>"$lock_dir/nanny-test-docker.lock"
exec {docker_users}>>"$lock_dir/nanny-test-docker.users"
flock -x "$docker_start"
# The daemon under test reads DOCKER_HOST only when it is a unix socket; any
# other value would point the tests' docker commands at another engine.
if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix://* ]]; then
    echo "ignoring DOCKER_HOST=$DOCKER_HOST: the tests need an engine on a unix socket"
    unset DOCKER_HOST
fi
engine_started() {
    echo "started dockerd (pid $dockerd_pid, server" \
        "$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'));" \
        "it is stopped at exit"
}
if docker_answers; then
    echo "using the Docker engine that already runs (server" \
        "$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')," \
        "${DOCKER_HOST:-unix:///var/run/docker.sock}); left running at exit"
else
    echo "no Docker engine answers: starting dockerd (log: $TMP/dockerd.log)"
    if dockerd_start "$TMP/dockerd.log"; then
        engine_started
    else
        # A kernel or sandbox without iptables or overlayfs: the tests need neither
        # (their containers use the host network; the images are a few MB).
        echo "retrying with a minimal engine: no bridge network, no iptables, vfs storage"
        if dockerd_start "$TMP/dockerd.log" --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs; then
            engine_started
        else
            report "docker engine" 0 1
        fi
    fi
fi
flock -s "$docker_users" # nobody stops the engine while this run may use it
flock -u "$docker_start"

PYTEST=(pytest-3)
if ! command -v pytest-3 >/dev/null 2>&1; then
    PYTEST=(/usr/bin/python3 -m pytest)
fi

# --- LeakSanitizer probe -----------------------------------------------------
# LeakSanitizer stops the process's threads with ptrace (its StopTheWorld) to
# scan their stacks and registers. Where ptrace is refused (a seccomp profile
# without ptrace, Yama ptrace_scope=3, or running under strace/gdb) it dies
# with "LeakSanitizer has encountered a fatal error" at every exit, which would
# fail every test of the ASan build for no fault of the code. So probe it once
# with a program that leaks on purpose: if LSan reports the leak, leaks are
# checked (the normal case: it works as root on these machines); if it cannot
# run at all, leak checking is turned off with a warning and the rest of ASan
# and UBSan still run.
ASAN_OPTIONS_BASE="abort_on_error=1"
lsan_probe() {
    local src=$TMP/lsan-probe.c exe=$TMP/lsan-probe out=$TMP/lsan-probe.out
    printf '%s\n' '#include <stdlib.h>' \
        'void *volatile keep;' \
        'int main(void) { keep = malloc(33); keep = 0; return 0; }' >"$src"
    if ! "${CC:-cc}" -fsanitize=address -g "$src" -o "$exe" >"$out" 2>&1; then
        echo "LeakSanitizer probe: could not compile the probe:"
        show "$out" 20
        return 1
    fi
    ASAN_OPTIONS="detect_leaks=1:exitcode=23" "$exe" >"$out" 2>&1 && return 1
    grep -q "ERROR: LeakSanitizer: detected memory leaks" "$out"
}
section "sanitizer setup"
if lsan_probe; then
    ASAN_OPTIONS_BASE="detect_leaks=1:$ASAN_OPTIONS_BASE"
    echo "LeakSanitizer works here: leaks fail the ASan build's tests"
else
    ASAN_OPTIONS_BASE="detect_leaks=0:$ASAN_OPTIONS_BASE"
    echo "WARNING: LeakSanitizer cannot run in this environment (ptrace refused?);"
    echo "WARNING: the ASan build runs with detect_leaks=0. Probe output:"
    show "$TMP/lsan-probe.out" 20
fi
SAN_ENV=(
    "ASAN_OPTIONS=$ASAN_OPTIONS_BASE"
    "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
)
# Leaks inside system libraries that the code cannot fix go in this file, one
# `leak:FUNCTION_OR_LIBRARY` a line, each with a comment saying why.
if [[ -f tests/lsan.supp ]]; then
    SAN_ENV+=("LSAN_OPTIONS=suppressions=$REPO/tests/lsan.supp:print_suppressions=0")
fi

# --- formatting --------------------------------------------------------------
section "format (clang-format $(clang-format --version | grep -o '[0-9][0-9.]*' | head -1))"
shopt -s nullglob
format_files=(src/*.[ch] src/*/*.[ch] tests/unit/*/*.[ch] tests/fuzz/*.c tests/fixtures/*.c)
shopt -u nullglob
if ((${#format_files[@]} == 0)); then
    echo "no C sources to check"
elif clang-format --dry-run --Werror "${format_files[@]}" >"$TMP/format.out" 2>&1; then
    report "format: ${#format_files[@]} files" 1 0
else
    echo "these files are not clang-formatted (fix: clang-format -i FILE):"
    grep -o '^[^:]*\.[ch]:' "$TMP/format.out" | sort -u | sed 's/:$//; s/^/    /' || true
    show "$TMP/format.out" 40
    report "format: ${#format_files[@]} files" 0 1
fi

# --- layers ------------------------------------------------------------------
# lib <- core <- drivers, http <- cli <- main.c, daemon.c: no #include points up a
# layer, and the two surfaces never include each other (ARCHITECTURE.md).
section "layers (scripts/layers.sh)"
if scripts/layers.sh >"$TMP/layers.out" 2>&1; then
    report "layers: no include against the layering" 1 0
else
    show "$TMP/layers.out" 40
    report "layers: no include against the layering" 0 1
fi

# --- one build ---------------------------------------------------------------
# Configure and build dir $1; on failure print the error and count it.
build() {
    local dir=$1 log=$TMP/build-$1.log
    local -a opts=(-Dwerror=true -Db_colorout=never -Dcrash_points=true)
    case $dir in
    build-asan)
        opts+=("-Db_sanitize=address,undefined" -Db_lundef=false
            "-Dc_args=-fno-sanitize-recover=undefined -fno-omit-frame-pointer")
        ;;
    *) opts+=(-Db_sanitize=none) ;;
    esac
    section "$dir: build (${opts[*]})"
    if ! deps_meson_setup "$dir" "${opts[@]}" >"$log" 2>&1; then
        echo "meson setup $dir failed:"
        show "$log" 60
        report "$dir: build" 0 1
        return 1
    fi
    if ! ninja -C "$dir" >>"$log" 2>&1; then
        echo "ninja -C $dir failed:"
        # From ninja's first FAILED: to the end; the whole log if none.
        if grep -q '^FAILED:' "$log"; then
            sed -n '/^FAILED:/,$p' "$log" >"$log.err"
        else
            cp "$log" "$log.err"
        fi
        show "$log.err" 150
        report "$dir: build" 0 1
        return 1
    fi
    # Drop outputs that the build no longer produces (a removed or renamed
    # unit test), so that a reused build dir never runs a stale binary.
    ninja -C "$dir" -t cleandead >/dev/null 2>&1 || true
    echo "built $dir"
    return 0
}

# --- unit tests --------------------------------------------------------------
# Run every $1/test-* binary with TAP output and count its test cases. cmocka
# prints `ok N - name`, `not ok N - name`, and `not ok N # SKIP name` for a
# skipped test; its `# ok - group` summaries start with '#' and do not count.
unit_tests() {
    local dir=$1 bin name out err rc p f s
    local -a env=(CMOCKA_MESSAGE_OUTPUT=TAP "NANNY_BUILD_DIR=$REPO/$dir")
    if [[ $dir == build-asan ]]; then env+=("${SAN_ENV[@]}"); fi
    section "$dir: unit tests"
    local found=0
    for bin in "$dir"/test-*; do
        [[ -f $bin && -x $bin ]] || continue
        found=1
        name=${bin##*/}
        out=$TMP/$dir-$name.out
        err=$TMP/$dir-$name.err
        rc=0
        # Run from the source root, as `meson test` does (workdir). The
        # group's 2>/dev/null keeps bash's own "Aborted" notice out of the log.
        { run_bounded "$UNIT_TIMEOUT" env "${env[@]}" "$REPO/$bin" </dev/null >"$out" 2>"$err"; } \
            2>/dev/null || rc=$?
        s=$(grep -Eci '^(not )?ok [0-9]+.*# *skip' "$out" || true)
        p=$(grep -Ei '^ok [0-9]+' "$out" | grep -Evic '# *skip' || true)
        f=$(grep -Ei '^not ok [0-9]+' "$out" | grep -Evic '# *skip' || true)
        if ((rc != 0 && f == 0)); then
            # Crashed, leaked, timed out or failed outside a test case.
            f=1
            if ((rc == 124 || rc == 137)); then
                echo "$name: timed out after ${UNIT_TIMEOUT}s"
            elif ((rc > 128)); then
                echo "$name: killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))" \
                    "(a sanitizer report or a crash)"
            else
                echo "$name: exited with status $rc without a failing test case"
            fi
        fi
        if ((f > 0)); then
            grep -Ei -A12 '^not ok [0-9]+' "$out" | grep -v '^--$' >"$out.fail" || true
            if [[ -s $out.fail ]]; then show "$out.fail" 60; fi
            if [[ -s $err ]]; then
                echo "  stderr of $name:"
                show "$err" 60
            fi
        fi
        report "$dir/$name" "$p" "$f" "$s"
    done
    if ((found == 0)); then
        echo "no unit test binaries in $dir (is libcmocka-dev installed?)"
        report "$dir: unit tests" 0 1
    fi
}

# --- integration tests -------------------------------------------------------
# Run pytest over tests/integration against $1/nanny; counts come from the
# JUnit XML: passed = tests - failures - errors - skipped. The tests' artefacts
# (the dashboard's screenshots) go to $1/test-artefacts, emptied first and kept.
integration_tests() {
    local dir=$1 xml=$TMP/$1-junit.xml rc=0 counts p f s t
    local artefacts=$REPO/$dir/test-artefacts
    local -a env=("NANNY_BIN=$REPO/$dir/nanny" "NANNY_BUILD_DIR=$REPO/$dir"
        "NANNY_ARTEFACTS=$artefacts")
    if [[ $dir == build-asan ]]; then env+=("${SAN_ENV[@]}"); fi
    section "$dir: integration tests"
    rm -rf "$artefacts"
    mkdir -p "$artefacts"
    echo "test artefacts (screenshots of the dashboard): $artefacts"
    shopt -s nullglob globstar
    local -a test_files=(tests/integration/**/test_*.py tests/integration/**/*_test.py)
    shopt -u nullglob globstar
    if ((${#test_files[@]} == 0)); then
        echo "no integration tests under tests/integration yet"
        return 0
    fi
    run_bounded "$PYTEST_TIMEOUT" env "${env[@]}" "${PYTEST[@]}" -q -rfEs \
        -p no:cacheprovider --junitxml="$xml" tests/integration </dev/null || rc=$?
    if [[ ! -s $xml ]]; then
        echo
        if ((rc == 124 || rc == 137)); then
            echo "pytest timed out after ${PYTEST_TIMEOUT}s"
        else
            echo "pytest exited with status $rc and wrote no JUnit XML"
        fi
        report "$dir: integration" 0 1
        return 0
    fi
    counts=$(/usr/bin/python3 - "$xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
t = f = s = 0
for suite in suites:
    t += int(suite.get("tests", 0))
    f += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    s += int(suite.get("skipped", 0))
print(t, f, s)
PY
    ) || counts=""
    if [[ -z $counts ]]; then
        echo "could not read pytest's JUnit XML"
        report "$dir: integration" 0 1
        return 0
    fi
    read -r t f s <<<"$counts"
    p=$((t - f - s))
    if ((rc == 5)); then
        echo "pytest collected no tests from ${#test_files[@]} test files"
        f=$((f + 1))
    elif ((rc != 0 && f == 0)); then
        if ((rc == 124 || rc == 137)); then
            echo "pytest timed out after ${PYTEST_TIMEOUT}s"
        else
            echo "pytest exited with status $rc without a failing test"
        fi
        f=1
    fi
    report "$dir: integration" "$p" "$f" "$s"
}

for dir in "${BUILD_DIRS[@]}"; do
    if build "$dir"; then
        unit_tests "$dir"
        integration_tests "$dir"
    fi
done

echo
if ((skipped > 0)); then
    echo "skipped: $skipped (not counted as passed)"
fi
echo "$passed passed, $failed failed"
if ((failed > 0)); then
    exit 1
fi
exit 0
