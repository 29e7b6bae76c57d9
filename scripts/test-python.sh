#!/usr/bin/env bash
# Tests the `hcp` Python package on a fresh machine: creates (or reuses) a virtualenv, installs
# the pinned test dependencies, builds and installs the package with `pip install ./hcp-py`,
# builds the HCP service the remote-client tests start, and runs the pytest suite in
# hcp-py/tests/ (sync and async APIs, errors, idempotency, timeouts, Ctrl-C, the remote client
# against a real service, the quickstart notebook via nbclient, mypy --strict on the stubs).
#
# Usage: ./scripts/test-python.sh [pytest args...]
# Env:   HCP_VENV          the virtualenv (default $HOME/.cache/hcp-venv)
#        CARGO_TARGET_DIR  cargo's target dir (default $HOME/.cache/hcp-target)
#        HCP_SERVE         a command serving HCP's API given --listen ADDR (default: found below)
#        PYTHON            the interpreter for a new virtualenv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hcp-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
VENV="${HCP_VENV:-$HOME/.cache/hcp-venv}"
PYTHON="${PYTHON:-python3}"
step() { printf '\n==> %s\n' "$*"; }

# Pinned test dependencies (the same pins as hcp-py/pyproject.toml's `test` extra).
TEST_DEPS=(
  "maturin==1.16.0"
  "pytest==9.2.0"
  "pytest-timeout==2.4.0"
  "nbclient==0.11.0"
  "nbformat==5.11.1"
  "ipykernel==7.4.0"
  "pandas==3.1.1"
  "mypy==2.4.1"
)

step "Python virtualenv at $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian's python3 ships venv separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      rm -rf "$VENV"
      apt-get update -qq && apt-get install -y -qq python3-venv
      "$PYTHON" -m venv "$VENV"
    else
      echo "cannot create a virtualenv with $PYTHON; on Debian: apt-get install -y python3-venv" >&2
      exit 1
    fi
  fi
fi
VPY="$VENV/bin/python"
"$VPY" --version
"$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VPY" -m pip install --quiet --disable-pip-version-check "${TEST_DEPS[@]}"

step "pip install ./hcp-py (maturin builds the native module)"
# A previous `maturin develop` leaves an editable install and a native module in the source
# tree; both would shadow the wheel under test.
rm -f hcp-py/python/hcp/_hcp*.so
"$VPY" -m pip uninstall --quiet --yes hcp >/dev/null 2>&1 || true
"$VPY" -m pip install --disable-pip-version-check --no-deps ./hcp-py
"$VPY" -c "import hcp, sys; print('hcp', hcp.__version__, 'from', hcp.__file__)"

step "The HCP service for the remote-client tests"
if [ -z "${HCP_SERVE:-}" ]; then
  cargo build --quiet -p hcp-cli --bin hcp
  HCP_SERVE="$CARGO_TARGET_DIR/debug/hcp serve"
fi
export HCP_SERVE
echo "HCP_SERVE=$HCP_SERVE"

step "pytest hcp-py/tests (the notebook and mypy --strict run as tests too)"
# Run from the tests directory, so `import hcp` finds the installed wheel, not the source tree.
cd "$ROOT/hcp-py/tests"
"$VPY" -m pytest -p no:cacheprovider "$@"
