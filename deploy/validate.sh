#!/usr/bin/env bash
# Validates every Kubernetes manifest under deploy/kubernetes (the shipped simulator set, the
# replicated set under deploy/kubernetes/replicated/ and every
# example under deploy/kubernetes/examples/<provider>/) offline with kubernetes-validate
# (strict: unknown fields are errors), and fails on any ERROR or WARN line (an unknown kind is
# only a WARN). Installs kubernetes-validate into a venv on first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${HCP_KV_VENV:-$HOME/.cache/hcp-kv-venv}"
version="${KUBERNETES_VERSION:-1.32.0}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate>=1.31'
fi
shopt -s nullglob
files=("$here"/kubernetes/*.yaml "$here"/kubernetes/replicated/*.yaml "$here"/kubernetes/examples/*/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
    echo "no manifests under $here/kubernetes" >&2
    exit 1
fi
out="$("$venv/bin/kubernetes-validate" --strict -k "$version" "${files[@]}" 2>&1)" || rc=$?
echo "$out"
if [ "${rc:-0}" -ne 0 ] || grep -Eq '^(ERROR|WARN)' <<<"$out"; then
    echo "kubernetes manifests: validation failed" >&2
    exit 1
fi
echo "kubernetes manifests: ${#files[@]} valid (kubernetes $version, strict)"
