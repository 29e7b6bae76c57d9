// One job: state, progress, why it waits, and its log streaming live until the job ends.

import { TENANT, call, get } from './api.js';
import { h, replace, toast, when } from './dom.js';

const enc = encodeURIComponent;

function pendingText(r) {
  if (!r) return '';
  const parts = [r.detail || r.reason];
  if (r.blocking_job) parts.push(`waiting for job ${r.blocking_job}`);
  if (r.retry_at) parts.push(`next attempt at ${when(r.retry_at)}`);
  if (r.error) parts.push(r.error);
  return parts.filter(Boolean).join('; ');
}

export async function jobPage(main, jobId) {
  let job = await get(`${TENANT}/jobs/${enc(jobId)}`);
  const stateEl = h('span', { id: 'job-state', class: `state job-${job.state}` }, job.state);
  const progress = h('progress', { id: 'job-progress', max: 100, value: job.progress, 'aria-label': 'Progress' });
  const progressText = h('span', { id: 'job-progress-text' }, `${job.progress}%`);
  const why = h('p', { id: 'job-pending', class: 'hint', hidden: !job.pending_reason }, pendingText(job.pending_reason));
  const error = h('p', { id: 'job-error', class: 'error', hidden: !job.error }, job.error ? job.error.message : '');
  const log = h('ol', { id: 'job-log', class: 'log', tabindex: 0, 'aria-label': 'Job log', 'aria-live': 'polite' });
  const ended = h('p', { id: 'job-ended', class: 'muted', role: 'status' }, 'Following the log…');
  const cancel = h('button', {
    type: 'button', class: 'danger', id: 'job-cancel',
    onclick: async () => {
      try {
        await call('POST', `${TENANT}/projects/${enc(job.project)}/jobs/${enc(job.id)}:cancel`);
        toast(`Cancel of job ${job.id} requested.`);
      } catch (e) {
        toast(`Cancel refused: ${e.message}`, { bad: true });
      }
    },
  }, 'Cancel job');

  function update(s) {
    stateEl.textContent = s.state;
    stateEl.className = `state job-${s.state}`;
    progress.value = s.progress;
    progressText.textContent = `${s.progress}%`;
    why.textContent = pendingText(s.pending_reason);
    why.hidden = !s.pending_reason;
    const open = s.state === 'PENDING' || s.state === 'RUNNING';
    cancel.disabled = !open;
    cancel.title = open ? 'Cancel this job' : `The job is ${s.state}: it can no longer be cancelled`;
  }

  replace(main,
    h('h1', {}, `Job ${job.operation}`),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Id'), h('dd', {}, job.id),
      h('dt', {}, 'VM'), h('dd', {}, h('a', { href: `#/p/${enc(job.project)}/vms/${enc(job.vm_id)}` }, job.vm_id)),
      h('dt', {}, 'State'), h('dd', {}, stateEl),
      h('dt', {}, 'Progress'), h('dd', {}, progress, ' ', progressText),
      h('dt', {}, 'Created'), h('dd', {}, when(job.created_at))),
    why, error,
    h('div', { class: 'row' }, cancel, h('a', { href: `#/p/${enc(job.project)}` }, 'Back to the VMs')),
    h('h2', {}, 'Log'), log, ended);
  update(job);

  const es = new EventSource(`${TENANT}/jobs/${enc(jobId)}/logs`);
  es.addEventListener('log', (ev) => {
    const l = JSON.parse(ev.data);
    log.append(h('li', { class: `lvl-${String(l.level).toLowerCase()}` }, `${new Date(l.at).toLocaleTimeString()} ${l.message}`));
    log.scrollTop = log.scrollHeight;
  });
  es.addEventListener('status', (ev) => update(JSON.parse(ev.data)));
  es.addEventListener('end', (ev) => {
    job = JSON.parse(ev.data);
    update(job);
    error.hidden = !job.error;
    error.textContent = job.error ? job.error.message : '';
    ended.textContent = `The job ended ${job.state}.`;
    main.dataset.jobEnded = job.state;
    es.close();
  });
  es.addEventListener('error', () => {
    if (es.readyState === EventSource.CLOSED && !main.dataset.jobEnded) ended.textContent = 'The log stream stopped: reload to resume.';
  });
  return () => es.close();
}
