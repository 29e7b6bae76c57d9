#!/usr/bin/env bash
# Sets up the test host's virtualenv and runs its Python-side tests: pywinrm and pypsrp against
# the test host.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
venv="${HCP_WINRM_VENV:-$HOME/.cache/hcp-winrm-venv}"
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
