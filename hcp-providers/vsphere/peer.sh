#!/usr/bin/env bash
# Installs the vSphere test peer: govmomi's vCenter simulator, built from Debian's govmomi sources
# with Debian's Go using our launcher vcsim/main.go, and pyvmomi (PyPI, pinned) in a venv as the
# independent client for cross-checks.
# Idempotent: the binary is rebuilt only when main.go changes; a venv holding the pinned pyvmomi
# is left alone.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="${HCP_VCSIM_DIR:-$HOME/.cache/hcp-vcsim}"
VENV="${HCP_PYVMOMI_VENV:-$HOME/.cache/hcp-pyvmomi-venv}"
PY="${PYTHON:-python3}"
want_pyvmomi=9.1.0.0

if [ ! -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || ! command -v go >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends golang-go golang-github-vmware-govmomi-dev >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends golang-go golang-github-vmware-govmomi-dev >/dev/null; }
fi

mkdir -p "$DIR"
sum="$(sha256sum "$HERE/vcsim/main.go" | cut -d' ' -f1)"
if [ -x "$DIR/vcsim" ] && [ "$(cat "$DIR/main.go.sha256" 2>/dev/null)" = "$sum" ]; then
    echo "vcsim ready in $DIR"
else
    build="$(mktemp -d)"
    cp "$HERE/vcsim/main.go" "$build/main.go"
    (cd "$build" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$DIR/gocache" \
        go build -o "$DIR/vcsim.new" main.go)
    mv "$DIR/vcsim.new" "$DIR/vcsim"
    echo "$sum" >"$DIR/main.go.sha256"
    rm -rf "$build"
    echo "vcsim built in $DIR"
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$want_pyvmomi" <<'PYEOF'
import sys
from importlib.metadata import version
sys.exit(0 if version("pyvmomi") == sys.argv[1] else 1)
PYEOF
then
    echo "pyvmomi $want_pyvmomi ready in $VENV"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pyvmomi==$want_pyvmomi"
echo "pyvmomi $want_pyvmomi installed in $VENV"
