# shellcheck shell=bash disable=SC2034 # the lists are used by the scripts that source this
# Debian package lists and an installer shared by start.sh, test.sh and
# bench/api.sh. Source it; it defines variables and functions only.
#
# deps_install PKG... installs the packages that are not installed yet, quietly,
# with apt-get (as root, or through sudo), running `apt-get update` at most once
# per script run and only when something must be installed. Without root and
# without sudo it prints the command to run and returns 1.

# Build and run the daemon (start.sh).
DEPS_BUILD=(build-essential pkg-config meson ninja-build
    libuv1-dev libmicrohttpd-dev libcurl4-gnutls-dev libjansson-dev libyaml-dev
    libgnutls28-dev nettle-dev libhttp-parser-dev)

# Everything ./test.sh needs: the build, the unit tests (cmocka), the
# integration tests (Debian's pytest), the formatting check. The compose
# driver's tests need a Docker engine and compose (docker.io, docker-compose:
# Debian 12 has compose v1 only; test.sh starts dockerd when none answers) and
# busybox-static (statically linked tools, for FROM scratch images). systemd
# brings systemd-analyze, which checks the shipped unit file. openssl makes the
# HTTPS tests' certificates; nginx-light is the reverse proxy of the production
# setup's test; mandoc lints and renders the manual page (doc/nanny.1). nodejs runs
# the MCP tests' clients (tests/mcp: the official SDKs need Node 18 or 20; the
# conformance suite's Node 22 comes from npm, see tests/mcp/install.sh), which npm
# installs: see deps_npm. prometheus brings promtool, which checks GET /metrics,
# and the server that the metrics test scrapes the daemon with;
# python3-prometheus-client's OpenMetrics parser checks the OpenMetrics page.
DEPS_TEST=("${DEPS_BUILD[@]}" libcmocka-dev python3 python3-pytest clang-format curl procps
    docker.io docker-compose busybox-static systemd openssl nginx-light mandoc tmux shellcheck
    nodejs
    prometheus python3-prometheus-client)
# The dashboard's tests (tests/integration/test_dashboard.py) drive the page in
# Debian's headless Chromium through playwright-core from npm, which downloads no
# browser of its own: chromium is /usr/bin/chromium; chromium-driver comes with it
# for tools that speak WebDriver instead of the DevTools protocol.
DEPS_TEST+=(chromium chromium-driver)

# bench/api.sh: the build plus the load generator and the reference server.
DEPS_BENCH=("${DEPS_BUILD[@]}" wrk curl python3 procps)

_deps_apt_updated=0

# Print the packages of "$@" that dpkg does not report as installed.
deps_missing() {
    local pkg status
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [[ "$status" != "install ok installed" ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# Install the packages of "$@" that are missing; see the file comment.
deps_install() {
    local -a missing sudo=()
    mapfile -t missing < <(deps_missing "$@")
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo -n)
            # -n: never prompt when nobody can answer (CI has no stdin).
            if [[ -t 0 ]]; then sudo=(sudo); fi
        else
            echo "deps: missing Debian packages: ${missing[*]}" >&2
            echo "deps: not root and no sudo; install them with:" >&2
            echo "    apt-get update && apt-get install --no-install-recommends ${missing[*]}" >&2
            return 1
        fi
    fi
    echo "deps: installing ${missing[*]}" >&2
    local -a apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
        -o DPkg::Lock::Timeout=300)
    local log rc=0
    # apt's and dpkg's chatter is shown only when something fails.
    log=$(mktemp "${TMPDIR:-/tmp}/nanny-deps.XXXXXX")
    if ((_deps_apt_updated == 0)); then
        "${apt[@]}" update -q >"$log" 2>&1 || rc=$?
        if ((rc != 0)); then
            cat "$log" >&2
            rm -f "$log"
            echo "deps: apt-get update failed" >&2
            return 1
        fi
        _deps_apt_updated=1
    fi
    "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        cat "$log" >&2
        rm -f "$log"
        echo "deps: apt-get install ${missing[*]} failed" >&2
        return 1
    fi
    rm -f "$log"
}

# Make sure an npm command exists: Debian's nodejs comes without one (Debian's npm
# package brings it), while NodeSource's nodejs ships its own npm and conflicts with
# Debian's, so the npm package is installed only where no npm command is found.
deps_npm() {
    if command -v npm >/dev/null 2>&1; then
        return 0
    fi
    deps_install npm
}

# Configure build dir $1 with meson options "${@:2}": set it up when it is not a
# meson build dir yet, else change its options in place (wiping it if that
# fails, e.g. after a meson upgrade); the next ninja run regenerates.
# `meson configure`, not `meson setup --reconfigure`: Debian 12's meson 1.0
# silently ignores b_* options and c_args given to --reconfigure.
deps_meson_setup() {
    local dir=$1
    shift
    if [[ -f "$dir/meson-private/coredata.dat" ]]; then
        if (($# == 0)); then return 0; fi
        meson configure "$dir" "$@" ||
            meson setup --wipe "$dir" "$@"
    else
        meson setup "$dir" "$@"
    fi
}
