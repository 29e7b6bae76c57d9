// The HTTP side of the UI: calls the APIs with the session cookie (same origin), sends the CSRF
// token on every change, and turns problem bodies into ApiError. No token is stored by the UI.

export const TENANT = '/api/hcp/tenant/v1';
export const OPS = '/api/hcp/ops/v1';
export const COMMON = '/api/hcp/common/v1';

let csrf = null;

/** A refused request: the problem body's status, code, detail and field. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || '';
    this.field = problem.field || null;
    this.problem = problem;
  }
}

/** Reads the browser session (subject and the CSRF token of a cookie session). */
export async function loadSession() {
  const resp = await fetch('/oidc/session', { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (!resp.ok) return null;
  const s = await resp.json();
  csrf = s.csrf_token || null;
  return s;
}

/** Calls the API; answers the parsed JSON (or null), throws ApiError on a refusal. */
export async function call(method, path, { body, headers = {} } = {}) {
  const h = { accept: 'application/json', ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) h['x-csrf-token'] = csrf;
  const resp = await fetch(path, {
    method,
    headers: h,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text }; }
  }
  if (!resp.ok) throw new ApiError(resp.status, data || {});
  return data;
}

export const get = (path) => call('GET', path);

/** Reads every page of a paged list route. */
export async function getAll(path, max = 10000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return items;
}

/** A fresh idempotency key. */
export function newKey() {
  return crypto.randomUUID();
}
