#!/usr/bin/env bash
# Runs every ```sh block of README.md in order, in a throwaway state directory, with the `hcp`
# binary built from this checkout. Blocks meant only to be read use ```text instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hcp-target}"
cargo build --quiet -p hcp-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_STATE_HOME="$work/state" HCP_SIM_STATE="$work/state/sim.json"
mkdir -p "$work/bin"
ln -s "$CARGO_TARGET_DIR/debug/hcp" "$work/bin/hcp"
export PATH="$work/install/bin:$work/bin:$PATH"
awk '/^```sh$/{on=1; n++; print "echo \"--- README block " n "\""; next} /^```/{on=0} on' README.md > "$work/blocks.sh"
blocks=$(grep -c '^echo "--- README block' "$work/blocks.sh" || true)
[ "$blocks" -gt 0 ] || { echo "README has no sh blocks to run" >&2; exit 1; }
# cargo run lines in the README become the built binary, so the tour runs fast and offline.
sed -i -E 's#cargo run (--release )?-p hcp-cli --#hcp#g' "$work/blocks.sh"
# The install step installs into the throwaway directory, as a debug build that reuses this
# checkout's build instead of compiling a release build from scratch.
sed -i -E "s#cargo install --path hcp-cli --locked#cargo install --quiet --path hcp-cli --locked --debug --root '$work/install'#g" "$work/blocks.sh"
grep -q "cargo install --quiet --path hcp-cli" "$work/blocks.sh" \
    || { echo "README lost its install step" >&2; exit 1; }
bash -euo pipefail "$work/blocks.sh"
[ -x "$work/install/bin/hcp" ] || { echo "the README's install step installed no hcp" >&2; exit 1; }
echo "README: $blocks sh blocks ran"
