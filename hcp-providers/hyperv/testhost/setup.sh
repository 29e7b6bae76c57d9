#!/usr/bin/env bash
# Creates (or reuses) the test host's virtualenv and installs its pinned dependencies.
# Prints nothing on success.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${HCP_WINRM_VENV:-$HOME/.cache/hcp-winrm-venv}"
python="${HCP_WINRM_PYTHON_BOOTSTRAP:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >/dev/null
fi
stamp="$venv/.hcp-requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >/dev/null
    echo "$want" >"$stamp"
fi
