#!/usr/bin/env bash
# Makes sure the NATS tests' peer is installed: Debian's nats-server (with JetStream). The tests
# (hcp-nats/tests/jetstream.rs) start their own nats-server processes on free ports with
# temporary store directories, so nothing is started here.
# Idempotent; exits non-zero with a message when nats-server cannot be installed.
set -euo pipefail

if ! command -v nats-server >/dev/null 2>&1; then
  echo "installing nats-server (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nats-server
fi
command -v nats-server >/dev/null 2>&1 || { echo "nats-peer: nats-server is not on PATH" >&2; exit 1; }
echo "nats-server $(nats-server --version 2>/dev/null | awk '{print $2}') is installed (the tests start their own, with -js)"
