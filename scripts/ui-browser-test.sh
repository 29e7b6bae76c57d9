#!/usr/bin/env bash
# The web UI's browser suite: checks the vendored npm libraries against their pinned versions,
# installs the peers (Debian chromium, playwright-core, axe-core, the OIDC provider), builds the
# `hcp` binary (unless HCP_BIN names one) and runs hcp-server/tests/browser/ui.test.mjs against
# real `hcp serve` children. Screenshots go to ${HCP_UI_TEST_OUT:-target/ui-test}.
# Usage: ./scripts/ui-browser-test.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/ui-vendor.sh
./scripts/ui-browser-peer.sh
./scripts/oidc-peer.sh
if [ -z "${HCP_BIN:-}" ]; then
    cargo build --quiet -p hcp-cli --bin hcp
    HCP_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/hcp"
fi
export HCP_BIN
export HCP_UI_TEST_OUT="${HCP_UI_TEST_OUT:-${CARGO_TARGET_DIR:-$root/target}/ui-test}"
node --test --test-reporter=spec hcp-server/tests/browser/ui.test.mjs
echo "ui-browser-test: screenshots in $HCP_UI_TEST_OUT"
