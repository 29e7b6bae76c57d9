// What the browser tests share: a real `hcp serve` child, the OIDC test peer (mock-idp.mjs over
// oauth2-mock-server), Debian's Chromium through playwright-core, axe-core scans and screenshots.
//
// Inputs (environment): HCP_BIN (the `hcp` binary), HCP_NPM_CACHE (where scripts/oidc-peer.sh and
// scripts/ui-browser-peer.sh installed the npm packages; ~/.cache/hcp-npm by default),
// HCP_UI_TEST_OUT (screenshots; target/ui-test by default), CHROMIUM (/usr/bin/chromium).

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';

export const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, '..', '..', '..');
const npm = process.env.HCP_NPM_CACHE || join(homedir(), '.cache', 'hcp-npm');
const uiModules = join(npm, 'ui', 'node_modules');
const need = (p, how) => assert.ok(existsSync(p), `${p} is missing: run ${how}`);
need(join(uiModules, 'playwright-core'), 'scripts/ui-browser-peer.sh');
need(join(uiModules, 'axe-core', 'axe.min.js'), 'scripts/ui-browser-peer.sh');
const require = createRequire(join(uiModules, 'noop.js'));
const { chromium } = require('playwright-core');
export const AXE = join(uiModules, 'axe-core', 'axe.min.js');
const AXE_SOURCE = readFileSync(AXE, 'utf8');
export const OUT = process.env.HCP_UI_TEST_OUT || join(repo, 'target', 'ui-test');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
need(CHROMIUM, 'scripts/ui-browser-peer.sh (Debian chromium)');
const BIN = process.env.HCP_BIN;
assert.ok(BIN && existsSync(BIN), 'HCP_BIN must name the built `hcp` binary (cargo build -p hcp-cli --bin hcp)');

export const T = '/api/hcp/tenant/v1';
export const DEMO_HOSTS = readFileSync(join(repo, 'hcp-providers', 'sim', 'src', 'demo.yaml'), 'utf8');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

const children = [];
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

/** Starts `hcp serve` on a free loopback port; `hosts` is a hosts file's text (none: the demo). */
export async function startHcp({ env = {}, hosts = null } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'hcp-ui-'));
  const args = ['serve', '--listen', `127.0.0.1:${port}`];
  if (hosts) {
    writeFileSync(join(dir, 'hosts.yaml'), hosts);
    args.push('--config', join(dir, 'hosts.yaml'));
  }
  const logs = [];
  const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  child.stderr.on('data', (d) => logs.push(d.toString()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 400; i += 1) {
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) return { url, child, logs, stop: () => child.kill('SIGTERM') };
    } catch { /* not listening yet */ }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`hcp serve did not become ready:\n${logs.join('')}`);
}

/** Starts the OIDC test peer (hcp-server/tests/oidc/mock-idp.mjs). */
export async function startIdp() {
  const module = join(npm, 'node_modules', 'oauth2-mock-server', 'dist', 'index.mjs');
  need(module, 'scripts/oidc-peer.sh');
  const child = spawn(process.execPath, [join(here, '..', 'oidc', 'mock-idp.mjs')], {
    env: { ...process.env, HCP_OIDC_MODULE: module },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(child);
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', () => reject(new Error('the OIDC peer exited')));
  });
  const info = JSON.parse(line);
  const base = `http://127.0.0.1:${info.port}`;
  const control = async (path, body) => {
    const r = await fetch(`${base}/__test/${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    assert.ok(r.ok, `OIDC control ${path}: ${r.status}`);
    return r.json();
  };
  return {
    issuer: info.issuer,
    stop: () => child.kill('SIGTERM'),
    setLoginClaims: (claims) => control('login-claims', { claims }),
    token: async (sub, roles, projects) =>
      (await control('token', { claims: { sub, aud: 'hcp-test', roles, projects } })).token,
  };
}

/** Launches Debian's Chromium (never a downloaded browser). */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
}

/** Calls the API from outside the browser (another client). */
export async function api(server, method, path, { body, token, headers = {} } = {}) {
  const h = { accept: 'application/json', ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  if (token) h.authorization = `Bearer ${token}`;
  const r = await fetch(`${server.url}${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** Collects every page error and console error of `page`, for an assertion at the end. */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // 404s and refused requests the tests provoke on purpose show as console errors too.
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  return errors;
}

/** Runs axe-core on the page; fails on serious or critical violations. */
export async function axe(page, name) {
  // Through the debugger, not a <script>: the UI's policy (rightly) refuses inline scripts.
  await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`),
    [],
    `axe found serious or critical violations on ${name}`,
  );
  return result.violations.length;
}

/** Saves wide and narrow, light and dark screenshots of the page under OUT. */
export async function screenshots(page, name) {
  mkdirSync(OUT, { recursive: true });
  const size = page.viewportSize();
  for (const [w, hgt, label] of [[1280, 800, 'wide'], [390, 844, 'narrow']]) {
    await page.setViewportSize({ width: w, height: hgt });
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.screenshot({ path: join(OUT, `${name}-${label}-${scheme}.png`), fullPage: true });
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize(size);
}
