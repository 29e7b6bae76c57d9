#!/usr/bin/env bash
# Creates (or reuses) the test host's virtualenv and installs its pinned dependencies.
# Prints nothing on success.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# gssapi and krb5 build from source against MIT Kerberos (krb5-config); Debian's headers first.
need=()
for p in libkrb5-dev pkg-config gcc; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v krb5-config >/dev/null || { echo "setup.sh: krb5-config is missing after installing libkrb5-dev" >&2; exit 1; }
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
