// The in-browser console against a real libvirt/QEMU guest: noVNC (vendored) in Debian's
// Chromium completes the RFB handshake through HCP's console proxy. Needs `hcp` built with
// `--features libvirt` (HCP_BIN) and the peer prepared by hcp-providers/libvirt/setup.sh; run by
// scripts/ui-browser-test.sh --console.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { T, api, axe, launch, repo, screenshots, startHcp, watchErrors } from './harness.mjs';

let browser;
let server;
const made = [];

before(async () => {
  browser = await launch();
  const hosts = readFileSync(join(repo, 'examples', 'config', 'libvirt.yaml'), 'utf8')
    .replace('graceful_stop_timeout: 10s', 'graceful_stop_timeout: 1s');
  server = await startHcp({ hosts });
});

after(async () => {
  // Never leave a domain behind, even when the test failed.
  for (const id of made) {
    const r = await api(server, 'DELETE', `${T}/projects/demo/vms/${id}?force=true`);
    if (r.status === 202) await waitJob(r.body.job_id);
  }
  await browser?.close();
  server?.stop();
});

async function waitJob(jobId) {
  for (let i = 0; i < 1200; i += 1) {
    const j = await api(server, 'GET', `${T}/jobs/${jobId}`);
    if (['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(j.body.state)) return j.body;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${jobId} did not end`);
}

test('the console page completes an RFB handshake with a real libvirt guest through the proxy', async () => {
  const created = await api(server, 'POST', `${T}/projects/demo/vms`, {
    body: { name: `ui-console-${process.pid}`, image: 'base-tiny', flavor: 'tiny' },
  });
  assert.equal(created.status, 202, JSON.stringify(created.body));
  made.push(created.body.vm_id);
  const job = await waitJob(created.body.job_id);
  assert.equal(job.state, 'SUCCEEDED', JSON.stringify(job));

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = watchErrors(page);
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`${server.url}/ui/#/p/demo/vms/${created.body.vm_id}/console`);
  await page.locator('main[data-rfb="connected"]').waitFor({ timeout: 60000 });
  assert.match(await page.locator('#console-status').innerText(), /Connected/);
  // noVNC drew the guest's screen into its canvas, through HCP's own proxy.
  assert.equal(await page.locator('#screen canvas').count(), 1);
  // The server's framebuffer size came in ServerInit and sized the canvas.
  const [w, hgt] = await page.locator('#screen canvas').evaluate((c) => [c.width, c.height]);
  assert.ok(w > 0 && hgt > 0, `canvas ${w}x${hgt}`);
  assert.equal(sockets.length, 1);
  assert.match(sockets[0], /\/api\/hcp\/tenant\/v1\/console\/ws\?token=/);
  await axe(page, 'console (connected)');
  await screenshots(page, 'console-libvirt');
  assert.deepEqual(errors, []);
  await context.close();
});
