#!/usr/bin/env bash
# Checks that the web UI's vendored npm libraries (hcp-server/ui/vendor/) are exactly the pinned
# npm packages: fetches each tarball with `npm pack` (through npm's cache), checks its integrity
# against the pinned sha512, and compares the kept files byte for byte. With --update, copies
# the package's files into place instead of comparing. Fails loudly on any difference.
# Usage: ./scripts/ui-vendor.sh [--update]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/hcp-server/ui/vendor"
update=0
[ "${1:-}" = "--update" ] && update=1
fail() { echo "ui-vendor: $*" >&2; exit 1; }
command -v npm >/dev/null || fail "npm is not installed"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# name version integrity folder
packages=(
  "@novnc/novnc 1.7.0 sha512-ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA== novnc"
)
for p in "${packages[@]}"; do
  read -r name version integrity folder <<<"$p"
  work="$tmp/$folder"
  mkdir -p "$work"
  json="$(cd "$work" && npm pack --json --silent "$name@$version")" \
      || fail "npm pack $name@$version failed"
  got="$(node -e 'console.log(JSON.parse(process.argv[1])[0].integrity)' "$json")"
  [ "$got" = "$integrity" ] || fail "$name@$version: integrity $got, pinned $integrity"
  tar -xzf "$work"/*.tgz -C "$work"
  want="$work/want"
  mkdir -p "$want/docs"
  cp -r "$work/package/core" "$work/package/vendor" "$work/package/AUTHORS" \
        "$work/package/LICENSE.txt" "$work/package/package.json" "$want/"
  cp "$work/package/docs/"LICENSE* "$want/docs/"
  if [ "$update" = 1 ]; then
    rm -rf "${vendor:?}/$folder"
    cp -r "$want" "$vendor/$folder"
    echo "ui-vendor: $name@$version copied to hcp-server/ui/vendor/$folder"
  else
    diff -r "$want" "$vendor/$folder" >&2 \
        || fail "hcp-server/ui/vendor/$folder differs from $name@$version (run scripts/ui-vendor.sh --update)"
  fi
done
echo "ui-vendor: vendored libraries match their pinned npm packages"
