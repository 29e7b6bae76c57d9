// A VM's console: VNC in the browser through HCP's console proxy with noVNC (vendored from npm
// @novnc/novnc); other console types say how to connect.

import RFB from './vendor/novnc/core/rfb.js';
import { TENANT, call, get } from './api.js';
import { h, replace, when } from './dom.js';

const enc = encodeURIComponent;

export async function consolePage(main, project, vmId) {
  const vm = await get(`${TENANT}/projects/${enc(project)}/vms/${enc(vmId)}`);
  const status = h('p', { id: 'console-status', role: 'status' }, 'Asking for a console…');
  const screen = h('div', { id: 'screen', role: 'region', 'aria-label': `Console of ${vm.name}` });
  replace(main, h('h1', {}, `Console · ${vm.name}`), status, screen,
    h('p', {}, h('a', { href: `#/p/${enc(project)}/vms/${enc(vmId)}` }, `Back to ${vm.name}`)));
  let console;
  try {
    console = await call('POST', `${TENANT}/projects/${enc(project)}/vms/${enc(vmId)}:console`);
  } catch (e) {
    status.textContent = `No console: ${e.message}`;
    status.className = 'error';
    return null;
  }
  const kind = String(console.type).toUpperCase();
  if (kind !== 'VNC' || !/^wss?:/.test(console.url)) {
    // Not a socket HCP relays: the browser cannot open it, a client of that type can.
    screen.remove();
    replace(status, `This is a ${kind} console, valid until ${when(console.expires_at)}. Connect with a ${kind} client to: `,
      h('code', { id: 'console-url' }, console.url));
    return null;
  }
  const rfb = new RFB(screen, console.url);
  rfb.scaleViewport = true;
  rfb.focusOnClick = true;
  rfb.addEventListener('connect', () => {
    status.textContent = `Connected to ${vm.name}. Click the screen to type into it.`;
    main.dataset.rfb = 'connected';
  });
  rfb.addEventListener('disconnect', (e) => {
    status.textContent = e.detail.clean ? 'The console closed.' : 'The console connection was lost.';
    main.dataset.rfb = 'disconnected';
  });
  rfb.addEventListener('securityfailure', (e) => {
    status.textContent = `The console refused the connection: ${e.detail.reason || e.detail.status}`;
  });
  return () => rfb.disconnect();
}
