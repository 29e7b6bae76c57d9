// The web UI in a real browser (Debian's Chromium through playwright-core) against a real
// `hcp serve`: the live VM table, the create form, job logs, actions, the operator pages, an
// accessibility scan of every page, and, with OIDC on, the real sign-in redirect flow and
// project isolation. Run by scripts/ui-browser-test.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DEMO_HOSTS, T, api, axe, launch, screenshots, startHcp, startIdp, watchErrors } from './harness.mjs';

let browser;
let dev; // `hcp serve` with no configuration: the simulator demo, auth off.

before(async () => {
  browser = await launch();
  dev = await startHcp();
});

after(async () => {
  await browser?.close();
  dev?.stop();
});

async function openPage(server, hash = '') {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${server.url}/${hash ? `ui/${hash}` : ''}`);
  return { page, errors, context };
}

const row = (page, name) => page.locator(`#vm-rows tr[data-vm-name="${name}"]`);

async function scan(page, name) {
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await axe(page, `${name} (${scheme})`);
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

test('the root leads to the UI and the table lists the simulator VMs with the dev banner', async () => {
  // The demo starts empty: two VMs made through the API, one tagged, one in the other zone.
  for (const body of [
    { name: 'seed-web-1', image: 'ubuntu-24.04', flavor: 'small', zone: 'zone-a', tags: { tier: 'web' } },
    { name: 'seed-db-1', image: 'windows-2022', flavor: 'medium', zone: 'zone-b' },
  ]) {
    const r = await api(dev, 'POST', `${T}/projects/demo/vms`, { body });
    assert.equal(r.status, 202, JSON.stringify(r.body));
  }
  for (let i = 0; i < 200; i += 1) {
    const l = await api(dev, 'GET', `${T}/projects/demo/vms`);
    if (l.body.items.filter((v) => v.state === 'ACTIVE').length === 2) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const listed = await api(dev, 'GET', `${T}/projects/demo/vms?limit=1000`);
  assert.equal(listed.status, 200);
  const { page, errors, context } = await openPage(dev);
  await page.waitForURL(/\/ui\/#\/p\/demo$/);
  await page.locator('main[data-loaded="true"]').waitFor();
  await assert.doesNotReject(page.locator('#dev-banner').waitFor({ state: 'visible' }));
  assert.match(await page.locator('#who').innerText(), /anonymous/);
  const names = await page.locator('#vm-rows tr[data-vm-name]').evaluateAll((rows) => rows.map((r) => r.dataset.vmName));
  assert.deepEqual(names.sort(), listed.body.items.map((v) => v.name).sort());
  assert.equal(names.length, 2);
  for (const v of listed.body.items) {
    assert.equal(await row(page, v.name).locator('td[data-col="state"]').innerText(), v.state);
    assert.equal(await row(page, v.name).locator('td[data-col="power"]').innerText(), v.power);
  }
  assert.match(await row(page, 'seed-web-1').innerText(), /tier=web/);
  // The policy forbids inline script and foreign origins.
  const resp = await page.request.get(`${dev.url}/ui/`);
  const csp = resp.headers()['content-security-policy'];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
  await scan(page, 'VM table');
  await screenshots(page, 'vms');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the form creates a VM whose log streams to the end and whose row turns running live', async () => {
  // A second page keeps the table open: the row must appear and turn running without reload.
  const table = await openPage(dev, '#/p/demo');
  await table.page.locator('main[data-loaded="true"]').waitFor();
  const { page, errors, context } = await openPage(dev, '#/p/demo/new');
  await page.locator('#create-form').waitFor();
  await scan(page, 'create form');
  await screenshots(page, 'create');
  await page.fill('#name', 'ui-made-1');
  await page.selectOption('#zone', 'zone-a');
  await page.selectOption('#flavor', 'small');
  await page.fill('#tags', 'team=web\nenv=test');
  await page.fill('#user_data', '#cloud-config\n');
  await page.click('#create-submit');
  await page.waitForURL(/#\/jobs\//);
  await page.locator('main[data-job-ended]').waitFor({ timeout: 60000 });
  assert.equal(await page.locator('main').getAttribute('data-job-ended'), 'SUCCEEDED');
  assert.equal(await page.locator('#job-state').innerText(), 'SUCCEEDED');
  assert.ok(await page.locator('#job-log li').count() > 0, 'log lines were streamed');
  assert.equal(await page.locator('#job-progress-text').innerText(), '100%');
  await scan(page, 'job view');
  await screenshots(page, 'job');
  // The page that stayed open shows the new VM running, without a reload.
  const r = row(table.page, 'ui-made-1');
  await r.locator('td[data-col="power"]', { hasText: 'RUNNING' }).waitFor();
  await r.locator('td[data-col="state"]', { hasText: 'ACTIVE' }).waitFor();
  assert.equal(await table.page.evaluate(() => performance.getEntriesByType('navigation').length), 1);
  assert.deepEqual(errors, []);
  assert.deepEqual(table.errors, []);
  await context.close();
  await table.context.close();
});

test('a VM created through the API by another client appears within two seconds', async () => {
  const { page, errors, context } = await openPage(dev, '#/p/demo');
  await page.locator('main[data-loaded="true"]').waitFor();
  const created = await api(dev, 'POST', `${T}/projects/demo/vms`, {
    body: { name: 'api-made-1', image: 'ubuntu-24.04', flavor: 'small', zone: 'zone-a' },
  });
  assert.equal(created.status, 202);
  await row(page, 'api-made-1').waitFor({ timeout: 2000 });
  // Filter by name and by tag.
  await page.fill('#vm-filter', 'api-made');
  assert.equal(await page.locator('#vm-rows tr[data-vm-name]').count(), 1);
  await page.fill('#vm-filter', 'team=web');
  await row(page, 'ui-made-1').waitFor();
  assert.equal(await row(page, 'api-made-1').count(), 0);
  await page.fill('#vm-filter', '');
  // Sort by name, both ways.
  await page.getByRole('button', { name: 'Name' }).click();
  const down = await page.locator('#vm-rows tr[data-vm-name]').evaluateAll((rs) => rs.map((r) => r.dataset.vmName));
  assert.deepEqual(down, [...down].sort().reverse());
  assert.deepEqual(errors, []);
  await context.close();
});

test('stop and delete work from the table; delete names the VM', async () => {
  const { page, errors, context } = await openPage(dev, '#/p/demo');
  await page.locator('main[data-loaded="true"]').waitFor();
  const r = row(page, 'api-made-1');
  await r.locator('td[data-col="power"]', { hasText: 'RUNNING' }).waitFor({ timeout: 30000 });
  assert.ok(await r.locator('button[data-action="start"]').isDisabled(), 'start is disabled while running');
  assert.match(await r.locator('button[data-action="start"]').getAttribute('title'), /already running/);
  await r.locator('button[data-action="stop"]').click();
  await r.locator('td[data-col="power"]', { hasText: 'STOPPED' }).waitFor({ timeout: 30000 });
  await r.locator('button[data-action="start"]:not([disabled])').waitFor();
  await r.locator('button[data-action="delete"]').click();
  const dialog = page.locator('#confirm');
  await dialog.waitFor({ state: 'visible' });
  assert.match(await dialog.innerText(), /api-made-1/);
  await scan(page, 'delete confirmation');
  await page.locator('#confirm-ok').click();
  await r.waitFor({ state: 'detached', timeout: 30000 });
  assert.deepEqual(errors, []);
  await context.close();
});

test('a zone without cloud-init disables user-data with the reason', async () => {
  const { page, context } = await openPage(dev, '#/p/demo/new');
  await page.locator('#create-form').waitFor();
  assert.ok(await page.locator('#user_data').isEnabled());
  await page.selectOption('#zone', 'zone-b');
  assert.ok(await page.locator('#user_data').isDisabled());
  assert.match(await page.locator('#user_data-hint').innerText(), /zone-b has no cloud-init/);
  await context.close();
});

test('an invalid name shows the API message at the field', async () => {
  const bad = { name: 'Not a valid name!', image: 'ubuntu-24.04', flavor: 'small', zone: 'zone-a' };
  const refused = await api(dev, 'POST', `${T}/projects/demo/vms`, { body: bad });
  assert.equal(refused.status, 400);
  assert.equal(refused.body.field, 'name');
  const { page, context } = await openPage(dev, '#/p/demo/new');
  await page.locator('#create-form').waitFor();
  await page.fill('#name', bad.name);
  await page.click('#create-submit');
  const err = page.locator('#name-error');
  await err.waitFor({ state: 'visible' });
  assert.equal(await err.innerText(), refused.body.detail);
  assert.equal(await page.locator('#name').getAttribute('aria-invalid'), 'true');
  await scan(page, 'create form with a field error');
  await context.close();
});

test('a double-submitted form creates one VM', async () => {
  const { page, context } = await openPage(dev, '#/p/demo/new');
  await page.locator('#create-form').waitFor();
  await page.fill('#name', 'ui-double-1');
  await page.selectOption('#zone', 'zone-a');
  const posts = [];
  page.on('response', (r) => {
    if (r.request().method() === 'POST' && r.url().endsWith('/projects/demo/vms')) posts.push(r);
  });
  // Two submits of the same form, as fast as a double click can.
  await page.locator('#create-form').evaluate((f) => { f.requestSubmit(); f.requestSubmit(); });
  await page.waitForURL(/#\/jobs\//);
  await page.locator('main[data-job-ended]').waitFor({ timeout: 60000 });
  // Both submits went out with one key: one request created the VM; the other was answered
  // with a replay, or (still in flight) 409 IDEMPOTENCY_KEY_IN_PROGRESS and then a replay.
  // A retry after 409 may still be on its way.
  for (let i = 0; i < 100 && !posts.some((r) => r.headers()['idempotency-replayed'] === 'true'); i += 1) {
    await page.waitForTimeout(100);
  }
  assert.ok(posts.length >= 2, `${posts.length} requests`);
  const keys = new Set(await Promise.all(posts.map((r) => r.request().headerValue('idempotency-key'))));
  assert.equal(keys.size, 1, `keys ${[...keys]}`);
  const outcome = await Promise.all(posts.map(async (r) => (r.status() === 202
    ? (r.headers()['idempotency-replayed'] === 'true' ? 'replayed' : 'created')
    : `${r.status()} ${(await r.json()).code}`)));
  assert.equal(outcome.filter((o) => o === 'created').length, 1, outcome.join(', '));
  assert.ok(outcome.includes('replayed'), outcome.join(', '));
  assert.ok(outcome.every((o) => ['created', 'replayed', '409 IDEMPOTENCY_KEY_IN_PROGRESS'].includes(o)), outcome.join(', '));
  const all = await api(dev, 'GET', `${T}/projects/demo/vms?limit=1000`);
  assert.equal(all.body.items.filter((v) => v.name === 'ui-double-1').length, 1);
  await context.close();
});

test('every other page passes the accessibility scan', async () => {
  const vms = await api(dev, 'GET', `${T}/projects/demo/vms?limit=1000`);
  const vm = vms.body.items.find((v) => v.name === 'ui-made-1');
  const { page, errors, context } = await openPage(dev, '#/projects');
  await page.locator('#projects').waitFor();
  await scan(page, 'projects');
  for (const [hash, ready, shot] of [
    ['#/p/demo/jobs', 'main table', 'jobs'],
    [`#/p/demo/vms/${vm.id}`, 'dl.facts', 'vm'],
    [`#/p/demo/vms/${vm.id}/console`, '#console-status', 'console'],
    ['#/ops', '#ops-hosts', 'ops-hosts'],
    ['#/ops/vms', '#ops-vms', 'ops-vms'],
    ['#/ops/unmanaged', '#ops-unmanaged', 'ops-unmanaged'],
    ['#/ops/audit', '#audit-rows tr', 'ops-audit'],
  ]) {
    await page.goto(`${dev.url}/ui/${hash}`);
    await page.locator(ready).first().waitFor();
    await scan(page, hash);
    await screenshots(page, shot);
  }
  // The operator pages show placement; the audit stream is live.
  await page.goto(`${dev.url}/ui/#/ops/vms`);
  assert.match(await page.locator('#ops-vms').innerText(), /sim-a\d/);
  assert.deepEqual(errors, []);
  await context.close();
});

test('with OIDC: sign in through the redirect flow, see only your projects, not another project by URL', async () => {
  const idp = await startIdp();
  const hosts = DEMO_HOSTS.replace('projects:\n', 'projects:\n  - name: other\n    description: Another tenant\n');
  const server = await startHcp({
    hosts,
    env: { OIDC_ISSUER_URL: idp.issuer, OIDC_CLIENT_ID: 'hcp-test' },
  });
  try {
    await idp.setLoginClaims({ sub: 'alice', roles: ['hcp-tenant'], projects: ['demo'] });
    const olga = await idp.token('olga', ['hcp-tenant'], ['other']);
    const theirs = await api(server, 'POST', `${T}/projects/other/vms`, {
      token: olga, body: { name: 'olgas-vm', image: 'ubuntu-24.04', flavor: 'small' },
    });
    assert.equal(theirs.status, 202);

    const { page, errors, context } = await openPage(server);
    await page.waitForURL(/\/ui\//);
    const signIn = page.getByRole('link', { name: 'Sign in' }).first();
    await signIn.waitFor();
    await scan(page, 'signed out');
    await screenshots(page, 'signed-out');
    await signIn.click();
    // /oidc/login → the provider → /oidc/callback → back to the UI with the session cookie.
    await page.waitForURL(/\/ui\/#\/p\/demo$/);
    await page.locator('main[data-loaded="true"]').waitFor();
    assert.match(await page.locator('#who').innerText(), /alice/);
    assert.match(await page.locator('#who-roles').innerText(), /hcp-tenant/);
    assert.equal(await page.locator('#who-projects').innerText(), 'Projects: demo');
    assert.equal(await page.locator('#dev-banner').isVisible(), false);
    const cookies = await context.cookies();
    assert.ok(cookies.some((c) => c.name === '__Host-hcp_session' && c.httpOnly));
    assert.deepEqual(await page.evaluate(() => Object.keys(localStorage).filter((k) => /token|session/i.test(k))), []);
    await page.goto(`${server.url}/ui/#/projects`);
    await page.locator('#projects').waitFor();
    assert.deepEqual(await page.locator('#projects li').allInnerTexts(), ['demo']);
    // A change through the UI sends the CSRF header with the cookie.
    await page.goto(`${server.url}/ui/#/p/demo/new`);
    await page.locator('#create-form').waitFor();
    await page.fill('#name', 'alices-vm');
    await page.click('#create-submit');
    await page.waitForURL(/#\/jobs\//);
    await page.locator('main[data-job-ended="SUCCEEDED"]').waitFor({ timeout: 60000 });
    // Another project's VM is not reachable by URL.
    for (const hash of ['#/p/other', `#/p/other/vms/${theirs.body.vm_id}`, `#/p/demo/vms/${theirs.body.vm_id}`,
      `#/p/other/vms/${theirs.body.vm_id}/console`, `#/jobs/${theirs.body.job_id}`]) {
      await page.goto(`${server.url}/ui/${hash}`);
      await page.getByRole('heading', { name: 'Not found' }).waitFor();
      assert.doesNotMatch(await page.locator('main').innerText(), /olgas-vm/, hash);
    }
    // The table lists alice's VM only.
    await page.goto(`${server.url}/ui/#/p/demo`);
    await page.locator('main[data-loaded="true"]').waitFor();
    await row(page, 'alices-vm').waitFor();
    assert.equal(await row(page, 'olgas-vm').count(), 0);
    // Sign out ends the session.
    await page.getByRole('link', { name: 'Sign out' }).click();
    await page.getByRole('link', { name: 'Sign in' }).first().waitFor();
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    server.stop();
    idp.stop();
  }
});
