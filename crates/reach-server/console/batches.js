// Batches: the list, newest first, and one batch's page with its live
// counts, a progress bar, pause, resume and cancel, and its machines'
// actions filterable by status, each linking to the action.
import { api, odata, literal, explain } from './api.js';
import { h, time, badge, errorBanner, infoBanner, confirm } from './ui.js';

const STATUSES = ['Pending', 'InProgress', 'Succeeded', 'Failed', 'TimeOut', 'Cancelled'];

function finished(batch) {
  const c = batch.counts;
  return batch.machineCount - c.Pending - c.InProgress;
}

export async function list(main) {
  const body = h('tbody');
  main.append(
    h('div', {}, h('h1', {}, 'Batches'), h('p', { class: 'sub' }, 'Live response on many devices at once, newest first. Select devices on the Devices page to start one.')),
    h('table', {}, h('thead', {}, h('tr', {}, ['Created', 'Status', 'Devices', 'Succeeded', 'Failed', 'Requestor', 'Comment'].map((c) => h('th', { scope: 'col' }, c)))), body));
  const batches = (await api(`/api/batches${odata({ $top: 200 })}`)).value;
  body.replaceChildren(...batches.map((b) => h('tr', {},
    h('td', {}, h('a', { href: `#/batches/${encodeURIComponent(b.id)}` }, time(b.creationDateTimeUtc))),
    h('td', {}, badge(b.status)),
    h('td', {}, String(b.machineCount)),
    h('td', {}, String(b.counts.Succeeded)),
    h('td', {}, String(b.counts.Failed + b.counts.TimeOut)),
    h('td', {}, b.requestor),
    h('td', {}, b.requestorComment || ''))));
  if (!batches.length) body.append(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No batch yet.')));
}

export async function detail(main, ctx, id) {
  const heading = h('div', { class: 'row spread' });
  const problem = h('div');
  const progress = h('progress', { id: 'batch-progress', max: 1, value: 0 });
  const counts = h('dl', { class: 'facts', id: 'batch-counts' });
  const filter = h('select', { id: 'batch-filter', 'aria-label': 'Show devices whose action is' },
    h('option', { value: '' }, 'Every status'), STATUSES.map((s) => h('option', { value: s }, s)));
  const body = h('tbody');
  main.append(
    h('p', {}, h('a', { href: '#/batches' }, '← Batches')),
    heading, problem,
    h('div', { class: 'panel' }, progress, counts),
    h('div', { class: 'row' }, h('h2', { class: 'grow' }, 'Devices'), filter),
    h('table', {}, h('thead', {}, h('tr', {}, ['Device', 'Status', 'Commands', 'Last update'].map((c) => h('th', { scope: 'col' }, c)))), body));

  const control = (verb, label, kind) => {
    const button = h('button', { type: 'button', class: kind, id: `batch-${verb}` }, label);
    button.addEventListener('click', async () => {
      let comment = 'From the console';
      if (verb === 'cancel') {
        const answer = await confirm('Cancel this batch?', 'Every action of it not finished ends, and scripts running now are killed on their devices.', 'Cancel batch', { danger: true, withComment: true });
        if (!answer) return;
        comment = answer.comment || 'Cancelled from the console';
      }
      problem.replaceChildren();
      button.disabled = true;
      try {
        await api(`/api/batches/${encodeURIComponent(id)}/${verb}`, { method: 'POST', json: { Comment: comment } });
        await refresh();
      } catch (error) {
        problem.replaceChildren(errorBanner(explain(error)));
      } finally {
        button.disabled = false;
      }
    });
    return button;
  };

  const refresh = async () => {
    const batch = await api(`/api/batches/${encodeURIComponent(id)}`);
    const open = batch.status === 'Running' || batch.status === 'Paused';
    const buttons = [];
    if (open && ctx.can('collectFiles')) {
      buttons.push(batch.status === 'Running' ? control('pause', 'Pause', '') : control('resume', 'Resume', 'primary'));
    }
    if (open && ctx.can('cancelActions')) buttons.push(control('cancel', 'Cancel batch', 'danger'));
    heading.replaceChildren(
      h('div', {}, h('h1', {}, batch.requestorComment || 'Batch'), h('p', { class: 'sub mono' }, batch.id),
        batch.pausedReason ? infoBanner(batch.pausedReason) : null),
      h('div', { class: 'row' }, badge(batch.status), ...buttons));
    progress.max = batch.machineCount;
    progress.value = finished(batch);
    progress.textContent = `${finished(batch)} of ${batch.machineCount}`;
    counts.replaceChildren(
      h('dt', {}, 'Devices'), h('dd', { 'data-count': 'total' }, String(batch.machineCount)),
      ...STATUSES.map((s) => [h('dt', {}, s), h('dd', { 'data-count': s }, String(batch.counts[s]))]).flat(),
      h('dt', {}, 'Created'), h('dd', {}, time(batch.creationDateTimeUtc), ' by ', batch.requestor),
      h('dt', {}, 'Expires'), h('dd', {}, time(batch.expirationDateTimeUtc)),
      batch.rollout ? [h('dt', {}, 'Waves'), h('dd', {}, `${batch.rollout.waveSize} devices at a time, pausing past ${batch.rollout.maxFailedPercent} % failed`)] : []);
    const query = { $top: 500 };
    if (filter.value) query.$filter = `status eq ${literal(filter.value)}`;
    const actions = (await api(`/api/batches/${encodeURIComponent(id)}/machineactions${odata(query)}`)).value;
    body.replaceChildren(...actions.map((a) => h('tr', {},
      h('td', {}, h('a', { href: `#/actions/${encodeURIComponent(a.id)}` }, a.computerDnsName || a.machineId)),
      h('td', {}, badge(a.status)),
      h('td', {}, a.commands.map((c) => `${c.command.type}: ${c.commandStatus}`).join(' → ')),
      h('td', {}, time(a.lastUpdateDateTimeUtc)))));
    if (!actions.length) body.append(h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'No device in this state.')));
    return open;
  };

  filter.addEventListener('change', () => refresh().catch((error) => problem.replaceChildren(errorBanner(explain(error)))));
  let timer = null;
  let left = false;
  const tick = async () => {
    try {
      const open = await refresh();
      timer = open && !left ? setTimeout(tick, 2000) : null;
    } catch (error) {
      problem.replaceChildren(errorBanner(explain(error)));
    }
  };
  await tick();
  return () => {
    left = true;
    if (timer) clearTimeout(timer);
  };
}
