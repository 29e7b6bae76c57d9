// The HCP web UI: a hash router over the pages. Each page builds its own DOM and returns a
// cleanup function that closes its streams when the page changes.

import { ApiError, get, loadSession } from './api.js';
import { h, replace } from './dom.js';
import { projectPage, vmPage, jobsPage } from './vms.js';
import { createPage } from './create.js';
import { jobPage } from './job.js';
import { consolePage } from './console.js';
import { opsPage } from './ops.js';

const state = { me: null, session: null, cleanup: null };

/** The signed-in caller (`GET /api/hcp/tenant/v1/me`), or null when signed out. */
export function me() {
  return state.me;
}

function signInLink() {
  return h('a', { class: 'button', href: '/oidc/login?return_to=/ui/' }, 'Sign in');
}

function renderWho() {
  const who = document.getElementById('who');
  const m = state.me;
  if (!m) {
    replace(who, signInLink());
    return;
  }
  const roles = m.roles.length ? m.roles.join(', ') : (m.development ? 'every role' : 'no roles');
  replace(
    who,
    h('span', { id: 'who-subject' }, 'Signed in as ', h('strong', {}, m.subject)),
    h('span', { class: 'muted', id: 'who-roles' }, `Roles: ${roles}`),
    h('span', { class: 'muted', id: 'who-projects' },
      `Projects: ${m.projects.length ? m.projects.join(', ') : 'none'}${m.any_project ? ' (any project id)' : ''}`),
    m.development ? null : h('a', { href: '/oidc/logout?return_to=/ui/' }, 'Sign out'),
  );
  document.getElementById('dev-banner').hidden = !m.development;
}

function renderNav(route) {
  const nav = document.getElementById('nav');
  const m = state.me;
  if (!m) {
    replace(nav);
    return;
  }
  const items = [];
  const project = route.project || localStorage.getItem('hcp.project') || m.projects[0];
  if (project) {
    items.push(['VMs', `#/p/${encodeURIComponent(project)}`, route.page === 'project']);
    items.push(['New VM', `#/p/${encodeURIComponent(project)}/new`, route.page === 'create']);
    items.push(['Jobs', `#/p/${encodeURIComponent(project)}/jobs`, route.page === 'jobs']);
  }
  items.push(['Projects', '#/projects', route.page === 'projects']);
  if (m.operator) items.push(['Operations', '#/ops', route.page === 'ops']);
  replace(
    nav,
    h('ul', {}, items.map(([text, href, current]) =>
      h('li', {}, h('a', { href, 'aria-current': current ? 'page' : null }, text)))),
  );
}

/** Parses the location hash into a route. */
function parse(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: 'home' };
  if (parts[0] === 'projects') return { page: 'projects' };
  if (parts[0] === 'jobs' && parts[1]) return { page: 'job', job: parts[1] };
  if (parts[0] === 'ops') return { page: 'ops', view: parts[1] || 'overview' };
  if (parts[0] === 'p' && parts[1]) {
    const project = parts[1];
    if (parts.length === 2) return { page: 'project', project };
    if (parts[2] === 'new') return { page: 'create', project };
    if (parts[2] === 'jobs') return { page: 'jobs', project };
    if (parts[2] === 'vms' && parts[3]) {
      if (parts[4] === 'console') return { page: 'console', project, vm: parts[3] };
      return { page: 'vm', project, vm: parts[3] };
    }
  }
  return { page: 'missing' };
}

function projectsPage(main) {
  const m = state.me;
  replace(
    main,
    h('h1', {}, 'Projects'),
    m.projects.length
      ? h('ul', { id: 'projects' }, m.projects.map((p) =>
        h('li', {}, h('a', { href: `#/p/${encodeURIComponent(p)}` }, p))))
      : h('p', {}, 'You are a member of no project.'),
    m.any_project ? openAnyProject() : null,
  );
}

function openAnyProject() {
  const input = h('input', { id: 'open-project', name: 'project', required: true, autocomplete: 'off' });
  return h('form', {
    class: 'toolbar',
    onsubmit: (e) => {
      e.preventDefault();
      if (input.value.trim()) location.hash = `#/p/${encodeURIComponent(input.value.trim())}`;
    },
  }, h('div', {}, h('label', { for: 'open-project' }, 'Open a project by id'), input), h('button', {}, 'Open'));
}

function signedOutPage(main, problem) {
  replace(
    main,
    h('h1', {}, 'Sign in to HCP'),
    h('p', {}, problem && problem.status === 403
      ? `Your account may not use the tenant API: ${problem.message}`
      : 'Sign in with your organisation account to see your projects and VMs.'),
    signInLink(),
  );
}

async function route() {
  if (state.cleanup) {
    try { state.cleanup(); } catch { /* a page's cleanup never blocks the next page */ }
    state.cleanup = null;
  }
  const main = document.getElementById('main');
  const r = parse(location.hash);
  renderNav(r);
  if (!state.me) {
    signedOutPage(main, state.problem);
    return;
  }
  if (r.project) localStorage.setItem('hcp.project', r.project);
  const pages = {
    home: () => {
      const p = localStorage.getItem('hcp.project');
      const first = p && (state.me.any_project || state.me.projects.includes(p)) ? p : state.me.projects[0];
      if (first) location.replace(`#/p/${encodeURIComponent(first)}`);
      else projectsPage(main);
    },
    projects: () => projectsPage(main),
    project: () => projectPage(main, r.project),
    create: () => createPage(main, r.project),
    jobs: () => jobsPage(main, r.project),
    vm: () => vmPage(main, r.project, r.vm),
    job: () => jobPage(main, r.job),
    console: () => consolePage(main, r.project, r.vm),
    ops: () => (state.me.operator ? opsPage(main, r.view) : missing(main, 'The operations pages need the operator role.')),
    missing: () => missing(main, 'There is no such page.'),
  };
  const title = { project: 'VMs', create: 'New VM', jobs: 'Jobs', vm: 'VM', job: 'Job', console: 'Console', ops: 'Operations', projects: 'Projects' };
  document.title = `${title[r.page] ? `${title[r.page]} · ` : ''}HCP`;
  try {
    state.cleanup = (await pages[r.page]()) || null;
  } catch (e) {
    showError(main, e);
  }
  if (document.activeElement === document.body) main.focus({ preventScroll: true });
}

function missing(main, text) {
  replace(main, h('h1', {}, 'Not found'), h('p', {}, text));
}

/** Replaces the page with an error message (a 404 names no other project's object). */
export function showError(main, e) {
  const status = e instanceof ApiError ? e.status : 0;
  replace(
    main,
    h('h1', {}, status === 404 ? 'Not found' : 'Something went wrong'),
    h('p', { class: 'error', role: 'alert' }, e.message || String(e)),
  );
}

async function start() {
  try {
    state.session = await loadSession();
    state.me = await get('/api/hcp/tenant/v1/me');
  } catch (e) {
    state.me = null;
    state.problem = e;
  }
  renderWho();
  window.addEventListener('hashchange', route);
  await route();
}

start();
