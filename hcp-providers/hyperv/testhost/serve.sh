#!/usr/bin/env bash
# Starts HCP's WinRM test host: two Hyper-V hosts on https://127.0.0.1:15986/wsman and :15987,
# user hcp, password hcp-test-password (NTLM or Basic), as examples/config/hyperv.yaml expects.
# Extra arguments go to the test host (see --help). Stop it with Ctrl-C.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
venv="${HCP_WINRM_VENV:-$HOME/.cache/hcp-winrm-venv}"
cd "$here"
exec "$venv/bin/python" -m hcp_winrm_testhost --tls --hosts 2 --port 15986 --ntlm-binding any "$@"
