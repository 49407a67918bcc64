#!/usr/bin/env bash
# Installs what is missing, builds, and runs the daemon in the foreground on
# the repo's services/ folder at http://127.0.0.1:8080 (Ctrl-C stops it).
# Extra arguments go to `nanny serve`, e.g. ./start.sh --config nanny.yaml
# No Docker engine is needed: compose services then show a last_error.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"

# python3 runs the example service services/hello.
deps_install "${DEPS_BUILD[@]}" python3

# Set up `build` only when missing: ./test.sh configures the same dir (with
# -Dwerror=true) and its settings are kept.
# The build's output is shown only when it fails.
log=$(mktemp "${TMPDIR:-/tmp}/nanny-start.XXXXXX")
trap 'rm -f "$log"' EXIT
if [[ ! -f build/build.ninja ]] && ! deps_meson_setup build >"$log" 2>&1; then
    cat "$log" >&2
    echo "start.sh: meson setup build failed" >&2
    exit 1
fi
if ! ninja -C build nanny >"$log" 2>&1; then
    cat "$log" >&2
    echo "start.sh: the build failed" >&2
    exit 1
fi
rm -f "$log"
trap - EXIT

exec "$REPO/build/nanny" serve --listen 127.0.0.1:8080 --services "$REPO/services" "$@"
