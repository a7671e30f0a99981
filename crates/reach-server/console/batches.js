// Batches: the list, newest first, and one batch's page with its live
// counts, a progress bar, pause, resume and cancel, a script's output live
// from every device or one, and its machines' actions filterable by
// status, each linking to the action.
import { api, odata, literal, explain } from './api.js';
import { h, time, badge, errorBanner, infoBanner, confirm } from './ui.js';
import { followOutput } from './output.js';

/**
 * A batch's script output as it comes: every device's lines, each with the
 * device's name, or one device's. Returns { stop, devices(actions) }, the
 * latter refreshing the list of devices to choose from.
 */
function liveOutput(section, batch, ctx) {
  const script = batch.commands.findIndex((c) => /^runscript$/i.test(c.type));
  if (script < 0 || !ctx.can('downloadResults')) return { stop() {}, devices() {} };
  const which = h('select', { id: 'batch-live-device', 'aria-label': 'Follow the output of' },
    h('option', { value: '' }, 'Every device'));
  const view = h('pre', { class: 'output', id: 'batch-live' });
  const note = h('p', { class: 'hint', id: 'batch-live-state' }, 'Waiting for output…');
  section.hidden = false;
  section.replaceChildren(h('div', { class: 'row' }, h('h2', { class: 'grow' }, `Live output of command ${script}`), which), note, view);
  const partial = new Map(); // per device and stream: the start of a line still being written
  let stop = () => {};
  const line = (name, stream, text) => {
    const key = `${name}\u0000${stream}`;
    const whole = (partial.get(key) || '') + text;
    const cut = whole.lastIndexOf('\n');
    partial.set(key, whole.slice(cut + 1));
    if (cut >= 0) {
      for (const l of whole.slice(0, cut).split('\n')) view.append(`${name}${stream === 'stderr' ? ' (stderr)' : ''}: ${l}\n`);
    }
  };
  const start = () => {
    stop();
    view.textContent = '';
    partial.clear();
    const actionId = which.value;
    const path = actionId
      ? `/api/machineactions/${encodeURIComponent(actionId)}/commands/${script}/output`
      : `/api/batches/${encodeURIComponent(batch.id)}/output?index=${script}`;
    stop = followOutput(path, {
      untilEnd: Boolean(actionId),
      onEvent: (name, data) => {
        const device = data.computerDnsName;
        if ((name === 'stdout' || name === 'stderr') && device) line(device, name, data.text);
        else if (name === 'stdout' || name === 'stderr') view.append(data.text);
        if (name === 'end' && device) {
          for (const stream of ['stdout', 'stderr']) {
            const rest = partial.get(`${device}\u0000${stream}`);
            if (rest) line(device, stream, '\n');
          }
          note.textContent = `${device}: ${data.commandStatus}`;
        }
        if (name === 'end' && !device) note.textContent = `Ended: ${data.commandStatus}`;
        if (name === 'done') note.textContent = 'Every device ended.';
      },
      onError: (message) => section.append(errorBanner(message)),
    });
  };
  which.addEventListener('change', start);
  start();
  return {
    stop: () => stop(),
    devices: (actions) => {
      const chosen = which.value;
      which.replaceChildren(h('option', { value: '' }, 'Every device'),
        actions.map((a) => h('option', { value: a.id }, a.computerDnsName || a.machineId)));
      which.value = chosen;
    },
  };
}

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
  const live = h('section', { class: 'panel', id: 'batch-live-output' });
  live.hidden = true;
  main.append(
    h('p', {}, h('a', { href: '#/batches' }, '← Batches')),
    heading, problem,
    h('div', { class: 'panel' }, progress, counts),
    live,
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
    if (!following) following = liveOutput(live, batch, ctx);
    if (!filter.value) following.devices(actions);
    return open;
  };
  let following = null;

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
    if (following) following.stop();
  };
}
