#!/usr/bin/env bash
# Installs the Proxmox VE test peer: fakepve (a stateful fake of the PVE API, AGPL, run only as a
# separate process) and proxmoxer (the independent client for cross-checks), pinned, in a venv.
# Idempotent: a venv that already holds both pinned versions is left alone.
set -euo pipefail
VENV="${HCP_FAKEPVE_VENV:-$HOME/.cache/hcp-fakepve-venv}"
PY="${PYTHON:-python3}"
want_fakepve=0.5.0
want_proxmoxer=2.3.0
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$want_fakepve" "$want_proxmoxer" <<'PYEOF'
import sys
from importlib.metadata import version
sys.exit(0 if (version("fakepve"), version("proxmoxer")) == (sys.argv[1], sys.argv[2]) else 1)
PYEOF
then
    echo "fakepve $want_fakepve and proxmoxer $want_proxmoxer ready in $VENV"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "fakepve[crypto]==$want_fakepve" "proxmoxer==$want_proxmoxer" requests
echo "fakepve $want_fakepve and proxmoxer $want_proxmoxer installed in $VENV"
