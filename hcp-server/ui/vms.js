// The project's VMs: a table kept live by the project event stream (no list polling), with
// filter, sort and per-VM actions; one VM's page; the project's recent jobs.

import { COMMON, TENANT, call, get, getAll, newKey } from './api.js';
import { confirmDialog, h, replace, toast, when } from './dom.js';

const enc = encodeURIComponent;

let zoneCaps = null;

/** The capabilities of every zone, by zone name (read once per page load). */
export async function zoneCapabilities() {
  if (!zoneCaps) {
    const list = await get(`${COMMON}/zones/capabilities`);
    zoneCaps = Object.fromEntries(list.map((z) => [z.zone, z.capabilities]));
  }
  return zoneCaps;
}

/** The console types a zone offers. */
export function consoleKinds(caps) {
  if (!caps) return [];
  return [['console_vnc', 'VNC'], ['console_spice', 'SPICE'], ['console_rdp', 'RDP'],
    ['console_webmks', 'WebMKS'], ['console_web', 'web']].filter(([k]) => caps[k]).map(([, n]) => n);
}

/**
 * What can be done to a VM now: {start, stop, reboot, delete, console}, each `true` or the reason
 * it cannot.
 */
export function actionsFor(vm, caps) {
  const busy = vm.state === 'PENDING' ? `${vm.name} is still being created or changed` : null;
  const gone = vm.state === 'DELETED' ? `${vm.name} is deleted` : null;
  const notActive = gone || busy || (vm.state !== 'ACTIVE' ? `${vm.name} is in state ${vm.state}` : null);
  const running = vm.power === 'RUNNING';
  return {
    start: notActive || (running ? `${vm.name} is already running` : true),
    stop: notActive || (running ? true : `${vm.name} is not running`),
    reboot: notActive || (running ? true : `${vm.name} is not running`),
    delete: gone || busy || true,
    console: notActive || (!running ? `${vm.name} is not running`
      : consoleKinds(caps).length ? true : `zone ${vm.zone} offers no console`),
  };
}

/** Runs a VM action through the API; answers the accepted job. */
export async function act(project, vm, action) {
  const base = `${TENANT}/projects/${enc(project)}/vms/${enc(vm.id)}`;
  const key = { 'Idempotency-Key': newKey() };
  if (action === 'delete') return call('DELETE', `${base}?force=true`, { headers: key });
  return call('POST', `${base}:${action}`, { headers: key });
}

/** Asks (for delete), runs the action and reports the job. */
export async function runAction(project, vm, action) {
  if (action === 'console') {
    location.hash = `#/p/${enc(project)}/vms/${enc(vm.id)}/console`;
    return;
  }
  if (action === 'delete') {
    const ok = await confirmDialog(
      `Delete ${vm.name}?`,
      `The VM ${vm.name} (${vm.id}) and its disks will be deleted. A running VM is powered off first. This cannot be undone.`,
      `Delete ${vm.name}`,
    );
    if (!ok) return;
  }
  try {
    const accepted = await act(project, vm, action);
    toast(`${action} ${vm.name}: accepted.`, { link: h('a', { href: `#/jobs/${enc(accepted.job_id)}` }, 'Follow the job') });
  } catch (e) {
    toast(`${action} ${vm.name} was refused: ${e.message}`, { bad: true });
  }
}

/** The action buttons of one VM: disabled ones say why in their title and accessible name. */
export function actionButtons(project, vm, caps) {
  const can = actionsFor(vm, caps);
  const labels = { start: 'Start', stop: 'Stop', reboot: 'Reboot', console: 'Console', delete: 'Delete' };
  return Object.entries(labels).map(([action, label]) => {
    const ok = can[action] === true;
    return h('button', {
      type: 'button',
      class: action === 'delete' ? 'danger' : 'secondary',
      disabled: !ok,
      title: ok ? `${label} ${vm.name}` : can[action],
      'aria-label': ok ? `${label} ${vm.name}` : `${label} ${vm.name} (unavailable: ${can[action]})`,
      dataset: { action },
      onclick: () => runAction(project, vm, action),
    }, label);
  });
}

function tagsText(tags) {
  return Object.entries(tags || {}).map(([k, v]) => (v ? `${k}=${v}` : k));
}

const COLUMNS = [
  ['name', 'Name', (v) => v.name],
  ['state', 'State', (v) => v.state],
  ['power', 'Power', (v) => v.power],
  ['image', 'Image', (v) => v.spec.image],
  ['flavor', 'Flavor', (v) => v.spec.flavor || `${v.resources.vcpus} vCPU / ${v.resources.memory_mib} MiB`],
  ['zone', 'Zone', (v) => v.zone],
  ['tags', 'Tags', (v) => tagsText(v.spec.tags).join(' ')],
  ['created', 'Created', (v) => v.created_at],
];
const OPTIONAL = new Set(['image', 'flavor', 'zone', 'tags', 'created']);

/** The project's VM table, live from `GET .../projects/{projectId}/events`. */
export async function projectPage(main, project) {
  const vms = new Map();
  const caps = await zoneCapabilities();
  // Checks access first: another project answers 404 like an unknown one.
  await get(`${TENANT}/projects/${enc(project)}/vms?limit=1`);
  const sort = { key: 'name', dir: 1 };
  const filter = h('input', { id: 'vm-filter', type: 'search', placeholder: 'name or tag=value', autocomplete: 'off' });
  const status = h('p', { class: 'muted', id: 'live-status', role: 'status' }, 'Connecting to live updates…');
  const tbody = h('tbody', { id: 'vm-rows' });
  const head = h('tr');
  const table = h('table', { id: 'vm-table' },
    h('caption', {}, `VMs of project ${project}`), h('thead', {}, head), tbody);

  function renderHead() {
    replace(head, COLUMNS.map(([key, label]) => h('th', {
      scope: 'col',
      class: OPTIONAL.has(key) ? 'optional' : null,
      'aria-sort': sort.key === key ? (sort.dir > 0 ? 'ascending' : 'descending') : null,
    }, h('button', {
      type: 'button',
      onclick: () => { sort.dir = sort.key === key ? -sort.dir : 1; sort.key = key; render(); },
    }, label, sort.key === key ? (sort.dir > 0 ? ' ▲' : ' ▼') : ''))), h('th', { scope: 'col' }, 'Actions'));
  }

  function matches(vm, q) {
    if (!q) return true;
    const tags = tagsText(vm.spec.tags);
    return q.split(/\s+/).every((word) => vm.name.toLowerCase().includes(word)
      || tags.some((t) => t.toLowerCase() === word || t.toLowerCase().startsWith(word)));
  }

  function render() {
    renderHead();
    const q = filter.value.trim().toLowerCase();
    const col = COLUMNS.find(([k]) => k === sort.key);
    const rows = [...vms.values()].filter((v) => matches(v, q))
      .sort((a, b) => String(col[2](a)).localeCompare(String(col[2](b)), undefined, { numeric: true }) * sort.dir);
    replace(tbody, rows.length ? rows.map((vm) => h('tr', { dataset: { vmId: vm.id, vmName: vm.name } },
      h('td', {}, h('a', { href: `#/p/${enc(project)}/vms/${enc(vm.id)}` }, vm.name)),
      h('td', { class: `state state-${vm.state}`, dataset: { col: 'state' } }, vm.state),
      h('td', { class: `power-${vm.power}`, dataset: { col: 'power' } }, vm.power),
      h('td', { class: 'optional' }, vm.spec.image),
      h('td', { class: 'optional' }, COLUMNS[4][2](vm)),
      h('td', { class: 'optional' }, vm.zone),
      h('td', { class: 'optional' }, tagsText(vm.spec.tags).map((t) => h('span', { class: 'tag' }, t))),
      h('td', { class: 'optional' }, h('time', { datetime: vm.created_at }, when(vm.created_at))),
      h('td', { class: 'actions' }, actionButtons(project, vm, caps[vm.zone])),
    )) : h('tr', {}, h('td', { colspan: COLUMNS.length + 1, class: 'muted' },
      vms.size ? 'No VM matches the filter.' : 'This project has no VMs yet.')));
  }

  function upsert(vm) {
    if (!vm || vm.state === 'DELETED') return;
    const old = vms.get(vm.id);
    if (old && old.updated_at > vm.updated_at) return;
    vms.set(vm.id, vm);
  }

  filter.addEventListener('input', render);
  replace(main,
    h('div', { class: 'row' }, h('h1', {}, `VMs · ${project}`)),
    h('div', { class: 'toolbar' },
      h('div', {}, h('label', { for: 'vm-filter' }, 'Filter'), filter),
      h('a', { class: 'button', href: `#/p/${enc(project)}/new` }, 'New VM')),
    status,
    h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': `VMs of project ${project}` }, table));
  render();

  // Subscribe first, list after `ready`: no change falls between the list and the stream.
  let listing = null;
  let pending = [];
  const es = new EventSource(`${TENANT}/projects/${enc(project)}/events`);
  es.addEventListener('ready', async () => {
    status.textContent = 'Live: changes appear as they happen.';
    listing = getAll(`${TENANT}/projects/${enc(project)}/vms`);
    try {
      const items = await listing;
      vms.clear();
      items.forEach(upsert);
      for (const c of pending) apply(c);
      pending = [];
      render();
      main.dataset.loaded = 'true';
    } catch (e) {
      status.textContent = `The VM list could not be read: ${e.message}`;
    } finally {
      listing = null;
    }
  });
  function apply(change) {
    if (change.vm && change.vm.state !== 'DELETED') upsert(change.vm);
    else vms.delete(change.vm_id);
  }
  es.addEventListener('change', (ev) => {
    const change = JSON.parse(ev.data);
    if (listing) { pending.push(change); return; }
    apply(change);
    render();
  });
  es.addEventListener('open', () => {
    // A reconnect resumes with Last-Event-ID: the missed changes are replayed.
    if (main.dataset.loaded) status.textContent = 'Live: changes appear as they happen.';
  });
  es.addEventListener('error', () => {
    status.textContent = es.readyState === EventSource.CLOSED
      ? 'Live updates stopped: reload the page.'
      : 'Live updates interrupted; reconnecting…';
  });
  return () => es.close();
}

/** One VM: its facts, actions and jobs. */
export async function vmPage(main, project, vmId) {
  const caps = await zoneCapabilities();
  const vm = await get(`${TENANT}/projects/${enc(project)}/vms/${enc(vmId)}`);
  const jobs = await get(`${TENANT}/projects/${enc(project)}/jobs?vm_id=${enc(vmId)}&limit=20`);
  replace(main,
    h('h1', {}, vm.name),
    h('div', { class: 'row' }, actionButtons(project, vm, caps[vm.zone])),
    h('dl', { class: 'facts' },
      [['Id', vm.id], ['State', vm.state], ['Power', vm.power], ['Image', vm.spec.image],
        ['Size', `${vm.resources.vcpus} vCPU, ${vm.resources.memory_mib} MiB, ${vm.resources.disk_gib} GiB`],
        ['Zone', vm.zone], ['Tags', tagsText(vm.spec.tags).join(', ') || '—'],
        ['Networks', vm.spec.networks.map((n) => n.network).join(', ') || '—'],
        ['User-data', vm.has_user_data ? 'given' : 'none'], ['Created', when(vm.created_at)],
        ['Last error', vm.last_error ? vm.last_error.message : '—']]
        .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('h2', {}, 'Jobs'),
    jobsTable(jobs.items));
}

/** A table of jobs. */
export function jobsTable(jobs) {
  if (!jobs.length) return h('p', { class: 'muted' }, 'No jobs.');
  return h('div', { class: 'table-wrap', tabindex: 0, role: 'region', 'aria-label': 'Jobs' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Job', 'Operation', 'State', 'Progress', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, jobs.map((j) => h('tr', {},
      h('td', {}, h('a', { href: `#/jobs/${enc(j.id)}` }, j.id)),
      h('td', {}, j.operation),
      h('td', { class: `job-${j.state}` }, j.state),
      h('td', {}, `${j.progress}%`),
      h('td', {}, when(j.created_at)))))));
}

/** The project's recent jobs. */
export async function jobsPage(main, project) {
  const jobs = await get(`${TENANT}/projects/${enc(project)}/jobs?limit=50`);
  replace(main, h('h1', {}, `Jobs · ${project}`), jobsTable(jobs.items));
}
