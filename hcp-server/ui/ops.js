// The operators' pages: providers and hosts, every VM with its placement, unmanaged VMs, and the
// live audit stream with drift.

import { OPS, get, getAll } from './api.js';
import { h, replace, when } from './dom.js';

const enc = encodeURIComponent;
const VIEWS = [['overview', 'Providers and hosts'], ['vms', 'All VMs'], ['unmanaged', 'Unmanaged VMs'], ['audit', 'Audit and drift']];

function table(caption, columns, rows, id) {
  return h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': caption }, h('table', { id },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map(([label]) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, rows.length ? rows.map((r) => h('tr', {}, columns.map(([, f]) => h('td', {}, f(r)))))
      : h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'None.')))));
}

function pct(used, total) {
  return total ? `${used} / ${total} (${Math.round((used * 100) / total)}%)` : `${used}`;
}

export async function opsPage(main, view) {
  const nav = h('nav', { 'aria-label': 'Operations' }, h('ul', {}, VIEWS.map(([v, label]) =>
    h('li', {}, h('a', { href: `#/ops/${v}`, 'aria-current': v === view ? 'page' : null }, label)))));
  const body = h('div');
  replace(main, h('h1', {}, 'Operations'), nav, body);
  if (view === 'overview') {
    const [providers, hosts] = await Promise.all([get(`${OPS}/providers`), get(`${OPS}/hosts`)]);
    replace(body,
      table('Providers', [
        ['Name', (p) => p.info.name], ['Kind', (p) => p.info.kind], ['Version', (p) => p.info.version],
        ['Health', (p) => (p.healthy ? 'healthy' : 'unhealthy')],
        ['Hosts available', (p) => `${p.hosts_available} / ${p.hosts_total}`],
      ], providers, 'ops-providers'),
      h('p'),
      table('Hosts', [
        ['Name', (x) => x.name], ['Provider', (x) => x.provider], ['Zone', (x) => x.zone],
        ['Health', (x) => (x.available ? 'available' : `unavailable: ${x.unavailable_reason || ''}`)],
        ['vCPUs used', (x) => pct(x.vcpus_used, x.vcpus_total)],
        ['Memory used (MiB)', (x) => pct(x.memory_mib_used, x.memory_mib_total)],
        ['VMs', (x) => x.vm_count], ['Last refresh', (x) => when(x.observed_at) || 'never'],
      ], hosts, 'ops-hosts'));
    return null;
  }
  if (view === 'vms') {
    const vms = await getAll(`${OPS}/vms`);
    replace(body, table('Every VM with its placement', [
      ['Name', (v) => v.spec.name], ['Project', (v) => h('a', { href: `#/p/${enc(v.project)}` }, v.project)],
      ['State', (v) => v.desired], ['Power', (v) => v.power], ['Zone', (v) => v.zone],
      ['Provider', (v) => v.binding.provider], ['Host', (v) => v.binding.host],
      ['Native id', (v) => v.binding.native_id || '—'], ['Present', (v) => (v.present ? 'yes' : 'no')],
    ], vms, 'ops-vms'));
    return null;
  }
  if (view === 'unmanaged') {
    const inv = await get(`${OPS}/inventory`);
    replace(body, table('VMs on the hosts that HCP does not manage', [
      ['Name', (v) => v.name], ['Provider', (v) => v.provider], ['Host', (v) => v.host],
      ['Native id', (v) => v.native_id], ['Power', (v) => v.power],
    ], inv.filter((v) => !v.vm_id), 'ops-unmanaged'));
    return null;
  }
  if (view === 'audit') {
    const drift = h('tbody', { id: 'drift-rows' });
    const audit = h('tbody', { id: 'audit-rows' });
    const status = h('p', { class: 'muted', role: 'status', id: 'audit-status' }, 'Connecting to the audit stream…');
    const head = (cols) => h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c))));
    replace(body, status,
      h('h2', {}, 'Drift'),
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Drift' }, h('table', { id: 'ops-drift' }, head(['Seq', 'When', 'VM', 'Project', 'Detail']), drift)),
      h('h2', {}, 'Audit stream (newest first)'),
      h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Audit stream' }, h('table', { id: 'ops-audit' }, head(['Seq', 'When', 'Event', 'Project', 'VM', 'Who']), audit)));
    const es = new EventSource(`${OPS}/events/stream`);
    es.addEventListener('open', () => { status.textContent = 'Live.'; });
    es.addEventListener('audit', (ev) => {
      const e = JSON.parse(ev.data);
      audit.prepend(h('tr', {}, h('td', {}, e.seq), h('td', {}, when(e.at)), h('td', {}, e.event),
        h('td', {}, e.project || '—'), h('td', {}, e.vm_id || '—'), h('td', {}, e.principal || '—')));
      while (audit.rows.length > 500) audit.deleteRow(-1);
      if (e.event === 'drift') {
        const detail = Object.entries(e).filter(([k]) => !['seq', 'at', 'event', 'project', 'vm_id', 'principal'].includes(k))
          .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('; ');
        drift.prepend(h('tr', {}, h('td', {}, e.seq), h('td', {}, when(e.at)), h('td', {}, e.vm_id || '—'),
          h('td', {}, e.project || '—'), h('td', {}, detail)));
      }
    });
    es.addEventListener('error', () => { status.textContent = 'The audit stream was interrupted; reconnecting…'; });
    return () => es.close();
  }
  replace(body, h('p', {}, 'There is no such operations page.'));
  return null;
}
