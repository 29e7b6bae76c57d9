#!/usr/bin/env bash
# Installs the OIDC test peer: npm oauth2-mock-server@8.2.3 (a real OIDC provider: discovery,
# JWKS, authorization-code flow with PKCE), into ${HCP_NPM_CACHE:-$HOME/.cache/hcp-npm}.
# Idempotent and quiet on success; hcp-server's auth tests (hcp-server/tests/auth*.rs) start it
# through hcp-server/tests/oidc/mock-idp.mjs and fail, naming this script, when it is missing.
# Usage: ./scripts/oidc-peer.sh
set -euo pipefail
version=8.2.3
dir="${HCP_NPM_CACHE:-$HOME/.cache/hcp-npm}"
fail() { echo "oidc-peer: $*" >&2; exit 1; }
command -v node >/dev/null || fail "node is not installed (Node.js 20.19 or newer is needed)"
command -v npm >/dev/null || fail "npm is not installed"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
    || fail "Node.js $(node --version) is too old: oauth2-mock-server@$version needs 20.19 or newer"
installed="$(node -e 'try{console.log(require(process.argv[1]).version)}catch(e){}' \
    "$dir/node_modules/oauth2-mock-server/package.json" 2>/dev/null || true)"
if [ "$installed" != "$version" ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent --no-package-lock \
        "oauth2-mock-server@$version" >/dev/null \
        || fail "npm install oauth2-mock-server@$version into $dir failed"
fi
[ -f "$dir/node_modules/oauth2-mock-server/dist/index.mjs" ] \
    || fail "$dir/node_modules/oauth2-mock-server/dist/index.mjs is missing after the install"
