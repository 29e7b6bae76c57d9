// The create-VM form, built from the catalog and each zone's capabilities. Options a zone cannot
// do are disabled with the reason; the API's field errors are shown at their field; one
// idempotency key per form, so a double submit creates one VM.

import { COMMON, TENANT, call, get, newKey } from './api.js';
import { h, replace } from './dom.js';
import { zoneCapabilities } from './vms.js';

const enc = encodeURIComponent;

function field(id, label, control, hint) {
  const err = h('p', { class: 'error', id: `${id}-error`, hidden: true });
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  control.setAttribute('aria-describedby', [hintEl ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(' '));
  return h('div', { class: 'field', dataset: { field: id } }, h('label', { for: id }, label), control, hintEl, err);
}

/** Reads tag lines `key=value` into an object; throws naming the bad line. */
function parseTags(text) {
  const tags = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const i = line.indexOf('=');
    const [k, v] = i < 0 ? [line, ''] : [line.slice(0, i).trim(), line.slice(i + 1).trim()];
    tags[k] = v;
  }
  return tags;
}

export async function createPage(main, project) {
  const [catalog, caps] = await Promise.all([get(`${COMMON}/catalog`), zoneCapabilities()]);
  // Checks access first: another project answers 404 like an unknown one.
  await get(`${TENANT}/projects/${enc(project)}/vms?limit=1`);
  let key = newKey();

  const name = h('input', { id: 'name', name: 'name', autocomplete: 'off', required: true });
  const image = h('select', { id: 'image', name: 'image' },
    catalog.images.map((i) => h('option', { value: i.name }, `${i.name} — ${i.description || i.os}`)));
  const zone = h('select', { id: 'zone', name: 'zone' },
    catalog.zones.map((z) => h('option', { value: z.name }, `${z.name}${z.description ? ` — ${z.description}` : ''}`)));
  const flavor = h('select', { id: 'flavor', name: 'flavor' },
    catalog.flavors.map((f) => h('option', { value: f.name, dataset: { vcpus: f.vcpus, memory: f.memory_mib, disk: f.disk_gib } },
      `${f.name} — ${f.vcpus} vCPU, ${f.memory_mib} MiB, ${f.disk_gib} GiB`)),
    h('option', { value: '' }, 'Custom size…'));
  const vcpus = h('input', { id: 'vcpus', name: 'vcpus', type: 'number', min: 1, inputmode: 'numeric' });
  const memory = h('input', { id: 'memory_mib', name: 'memory_mib', type: 'number', min: 16, inputmode: 'numeric' });
  const disk = h('input', { id: 'disk_gib', name: 'disk_gib', type: 'number', min: 1, inputmode: 'numeric' });
  const custom = h('fieldset', { id: 'custom-size', hidden: true },
    h('legend', {}, 'Custom size'),
    h('div', { class: 'grid' },
      field('vcpus', 'vCPUs', vcpus), field('memory_mib', 'Memory (MiB)', memory), field('disk_gib', 'Disk (GiB)', disk)));
  const networks = h('fieldset', { id: 'networks' }, h('legend', {}, 'Networks'));
  const tags = h('textarea', { id: 'tags', name: 'tags', rows: 3, spellcheck: 'false' });
  const userData = h('textarea', { id: 'user_data', name: 'user_data', rows: 6, spellcheck: 'false' });
  const userDataHint = h('span');
  const formError = h('p', { class: 'error', id: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', id: 'create-submit' }, 'Create VM');

  function syncZone() {
    const c = caps[zone.value] || {};
    // user-data needs cloud-init in the zone.
    userData.disabled = !c.cloud_init;
    userDataHint.textContent = c.cloud_init
      ? 'Optional cloud-init user-data (for example #cloud-config).'
      : `Zone ${zone.value} has no cloud-init, so it cannot take user-data.`;
    // Flavors larger than the zone allows are disabled, naming the limit.
    for (const o of flavor.options) {
      if (!o.value) continue;
      const why = [];
      if (c.max_vcpus && Number(o.dataset.vcpus) > c.max_vcpus) why.push(`at most ${c.max_vcpus} vCPUs`);
      if (c.max_memory_mib && Number(o.dataset.memory) > c.max_memory_mib) why.push(`at most ${c.max_memory_mib} MiB`);
      if (c.max_disk_gib && Number(o.dataset.disk) > c.max_disk_gib) why.push(`at most ${c.max_disk_gib} GiB of disk`);
      o.disabled = why.length > 0;
      const base = o.textContent.replace(/ \(zone .*\)$/, '');
      o.textContent = why.length ? `${base} (zone ${zone.value} allows ${why.join(', ')})` : base;
    }
    if (flavor.selectedOptions[0] && flavor.selectedOptions[0].disabled) {
      const firstOk = [...flavor.options].find((o) => !o.disabled);
      if (firstOk) flavor.value = firstOk.value;
    }
    vcpus.max = c.max_vcpus || 4096;
    memory.max = c.max_memory_mib || 67108864;
    disk.max = c.max_disk_gib || 1048576;
    document.getElementById('custom-size-limits')?.remove();
    custom.append(h('p', { class: 'hint', id: 'custom-size-limits' },
      `Zone ${zone.value} allows up to ${vcpus.max} vCPUs, ${memory.max} MiB and ${disk.max} GiB.`));
    // Only the zone's networks, at most max_networks.
    const inZone = catalog.networks.filter((n) => !n.zones.length || n.zones.includes(zone.value));
    replace(networks, h('legend', {}, 'Networks'),
      inZone.length ? inZone.map((n) => h('label', { class: 'check' },
        h('input', { type: 'checkbox', name: 'network', value: n.name }), ' ',
        `${n.name}${n.vlan ? ` (VLAN ${n.vlan})` : ''}${n.description ? ` — ${n.description}` : ''}`))
        : h('p', { class: 'muted' }, `Zone ${zone.value} has no networks in the catalog.`),
      c.max_networks ? h('p', { class: 'hint' }, `At most ${c.max_networks} in this zone.`) : null,
      h('p', { class: 'error', id: 'networks-error', hidden: true }));
  }
  zone.addEventListener('change', syncZone);
  flavor.addEventListener('change', () => { custom.hidden = flavor.value !== ''; });

  function clearErrors() {
    formError.hidden = true;
    for (const el of main.querySelectorAll('.field .error, #networks-error')) { el.hidden = true; el.textContent = ''; }
    for (const el of main.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  function showError(e) {
    const f = (e.field || '').replace(/^spec\./, '').split(/[.[]/)[0];
    const target = f && document.getElementById(`${f}-error`);
    if (target) {
      target.textContent = e.message;
      target.hidden = false;
      const input = document.getElementById(f);
      if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
    } else {
      formError.textContent = e.message;
      formError.hidden = false;
      formError.focus?.();
    }
  }

  const form = h('form', { id: 'create-form', novalidate: true },
    field('name', 'Name', name, 'Letters, digits and hyphens.'),
    field('image', 'Image', image),
    field('zone', 'Zone', zone),
    field('flavor', 'Size', flavor),
    custom,
    networks,
    field('tags', 'Tags', tags, 'One per line: key=value.'),
    field('user_data', 'User-data', userData),
    formError,
    h('div', { class: 'row' }, submit, h('a', { href: `#/p/${enc(project)}` }, 'Cancel')));
  // The hint of user-data changes with the zone.
  form.querySelector('#user_data-hint')?.remove();
  userData.setAttribute('aria-describedby', 'user_data-hint user_data-error');
  userData.before(h('p', { class: 'hint', id: 'user_data-hint' }, userDataHint));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    const body = { name: name.value, image: image.value, zone: zone.value };
    if (flavor.value) body.flavor = flavor.value;
    else {
      for (const [k, el] of [['vcpus', vcpus], ['memory_mib', memory], ['disk_gib', disk]]) {
        if (el.value !== '') body[k] = Number(el.value);
      }
    }
    const nets = [...networks.querySelectorAll('input[name=network]:checked')].map((i) => ({ network: i.value }));
    if (nets.length) body.networks = nets;
    const t = parseTags(tags.value);
    if (Object.keys(t).length) body.tags = t;
    if (!userData.disabled && userData.value) body.user_data = userData.value;
    submit.setAttribute('aria-busy', 'true');
    try {
      // The same key for every submit of this form: a double click replays, not duplicates.
      const sent = key;
      let accepted = null;
      for (let attempt = 0; !accepted; attempt += 1) {
        try {
          accepted = await call('POST', `${TENANT}/projects/${enc(project)}/vms`, {
            body, headers: { 'Idempotency-Key': sent },
          });
        } catch (e) {
          // The first submit is still being accepted: ask again for its answer.
          if (e.code !== 'IDEMPOTENCY_KEY_IN_PROGRESS' || attempt >= 20) throw e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      location.hash = `#/jobs/${enc(accepted.job_id)}`;
    } catch (e) {
      // A refused request created nothing: a corrected one gets a new key.
      key = newKey();
      showError(e);
    } finally {
      submit.removeAttribute('aria-busy');
    }
  });

  replace(main, h('h1', {}, `New VM · ${project}`), form);
  syncZone();
}
