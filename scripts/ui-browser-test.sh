#!/usr/bin/env bash
# The web UI's browser suite: checks the vendored npm libraries against their pinned versions,
# installs the peers (Debian chromium, playwright-core, axe-core, the OIDC provider), builds the
# `hcp` binary (unless HCP_BIN names one) and runs hcp-server/tests/browser/ui.test.mjs against
# real `hcp serve` children. Screenshots go to ${HCP_UI_TEST_OUT:-target/ui-test}.
# With --console, runs hcp-server/tests/browser/console.test.mjs instead: noVNC against a real
# libvirt guest, with `hcp` built with `--features libvirt` (the peer: hcp-providers/libvirt/setup.sh).
# Usage: ./scripts/ui-browser-test.sh [--console]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/ui-vendor.sh
./scripts/ui-browser-peer.sh
./scripts/oidc-peer.sh
suite=ui
features=()
if [ "${1:-}" = "--console" ]; then
    suite=console
    features=(--features libvirt)
fi
if [ -z "${HCP_BIN:-}" ]; then
    cargo build --quiet -p hcp-cli "${features[@]}" --bin hcp
    HCP_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/hcp"
fi
export HCP_BIN
export HCP_UI_TEST_OUT="${HCP_UI_TEST_OUT:-${CARGO_TARGET_DIR:-$root/target}/ui-test}"
node --test --test-reporter=spec "hcp-server/tests/browser/$suite.test.mjs"
echo "ui-browser-test: screenshots in $HCP_UI_TEST_OUT"
