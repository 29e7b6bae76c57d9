#!/usr/bin/env bash
# Installs what the web UI's browser tests need: Debian's Chromium (apt; never a downloaded
# browser) and the pinned npm packages playwright-core and axe-core, into
# ${HCP_NPM_CACHE:-$HOME/.cache/hcp-npm}/ui. Idempotent and quiet on success; fails loudly.
# Usage: ./scripts/ui-browser-peer.sh
set -euo pipefail
playwright=1.65.1
axe=4.14.1
dir="${HCP_NPM_CACHE:-$HOME/.cache/hcp-npm}/ui"
fail() { echo "ui-browser-peer: $*" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
    command -v apt-get >/dev/null || fail "chromium is missing and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; } \
        || fail "apt-get install chromium failed"
fi
command -v chromium >/dev/null || fail "chromium is still missing after the install"
command -v node >/dev/null || fail "node is not installed (Node.js 20 or newer is needed)"
command -v npm >/dev/null || fail "npm is not installed"
version_of() {
    node -e 'try{console.log(require(process.argv[1]).version)}catch(e){}' \
        "$dir/node_modules/$1/package.json" 2>/dev/null || true
}
if [ "$(version_of playwright-core)" != "$playwright" ] || [ "$(version_of axe-core)" != "$axe" ]; then
    mkdir -p "$dir"
    # playwright-core alone: it never downloads a browser (that is the `playwright` package).
    npm install --prefix "$dir" --no-audit --no-fund --silent --no-package-lock \
        "playwright-core@$playwright" "axe-core@$axe" >/dev/null \
        || fail "npm install playwright-core@$playwright axe-core@$axe into $dir failed"
fi
[ "$(version_of playwright-core)" = "$playwright" ] || fail "playwright-core@$playwright is missing from $dir"
[ "$(version_of axe-core)" = "$axe" ] || fail "axe-core@$axe is missing from $dir"
