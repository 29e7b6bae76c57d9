// A real OIDC provider for hcp-server's auth tests: oauth2-mock-server (discovery, JWKS, the
// authorization-code flow with PKCE, RS256 tokens with `kid`) on 127.0.0.1 with a free port,
// plus a small control API under /__test/ so a Rust test can mint tokens with any claims, rotate
// keys, take the provider down and count JWKS fetches.
//
//   HCP_OIDC_MODULE=/path/to/node_modules/oauth2-mock-server/dist/index.mjs node mock-idp.mjs
//
// Prints one JSON line {"issuer": "http://localhost:PORT", "port": PORT} once it listens, and
// exits when its standard input closes (so it never outlives the test that started it).
import { createServer } from 'node:http';
import { createPublicKey } from 'node:crypto';
import { pathToFileURL } from 'node:url';

const modulePath = process.env.HCP_OIDC_MODULE;
if (!modulePath) {
  console.error('HCP_OIDC_MODULE is not set; run scripts/oidc-peer.sh');
  process.exit(2);
}
const { OAuth2Issuer, OAuth2Service } = await import(pathToFileURL(modulePath).href);

const issuer = new OAuth2Issuer();
const service = new OAuth2Service(issuer);
let current = (await issuer.keys.generate('RS256')).kid;
const retired = new Set();
let jwksFetches = 0;
let discoveryFetches = 0;
let down = false;
// Claims merged into every token the token endpoint issues (the browser flow's ID token).
let loginClaims = {};

service.on('beforeTokenSigning', (token) => {
  Object.assign(token.payload, loginClaims);
});

function publicJwks() {
  return { keys: issuer.keys.toJSON().filter((k) => !retired.has(k.kid)) };
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function send(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

async function control(req, res, path) {
  const b = req.method === 'POST' ? await body(req) : {};
  switch (path) {
    case '/__test/token': {
      // {claims: {...}, remove: ["exp"], header: {...}, expiresIn: 3600, kid: "..."}
      const token = await issuer.buildToken({
        kid: b.kid ?? current,
        expiresIn: b.expiresIn ?? 3600,
        scopesOrTransform: (header, payload) => {
          Object.assign(payload, b.claims ?? {});
          for (const k of b.remove ?? []) delete payload[k];
          Object.assign(header, b.header ?? {});
        },
      });
      return send(res, 200, { token });
    }
    case '/__test/rotate': {
      // {alg: "RS256", retire: true}: a new current key; the old one leaves the JWKS if retired.
      const old = current;
      current = (await issuer.keys.generate(b.alg ?? 'RS256')).kid;
      if (b.retire) retired.add(old);
      return send(res, 200, { kid: current, previous: old });
    }
    case '/__test/public-pem': {
      const jwk = issuer.keys.toJSON().find((k) => k.kid === current);
      const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
      return send(res, 200, { kid: current, pem });
    }
    case '/__test/stats':
      return send(res, 200, { jwks: jwksFetches, discovery: discoveryFetches });
    case '/__test/down':
      down = Boolean(b.down);
      return send(res, 200, { down });
    case '/__test/login-claims':
      loginClaims = b.claims ?? {};
      return send(res, 200, {});
    default:
      return send(res, 404, { error: 'no such control route' });
  }
}

const server = createServer((req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (path.startsWith('/__test/')) {
    control(req, res, path).catch((e) => send(res, 500, { error: String(e) }));
    return;
  }
  if (path === '/jwks') {
    jwksFetches += 1;
    if (down) return send(res, 503, { error: 'down' });
    return send(res, 200, publicJwks());
  }
  if (path === '/.well-known/openid-configuration') {
    discoveryFetches += 1;
    if (down) return send(res, 503, { error: 'down' });
  }
  service.requestHandler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  issuer.url = `http://localhost:${port}`;
  process.stdout.write(`${JSON.stringify({ issuer: issuer.url, port })}\n`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
