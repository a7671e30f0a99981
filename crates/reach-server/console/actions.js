// The action center: every live response action, newest first, filtered by
// status, device and requestor; and one action's page, updating itself while
// it runs, with cancel, a script's output live while it runs, transcripts
// and downloads.
import { api, odata, literal, explain } from './api.js';
import { h, time, badge, errorBanner, infoBanner, confirm, params } from './ui.js';
import { followOutput } from './output.js';

const STATUSES = ['Pending', 'InProgress', 'Succeeded', 'Failed', 'TimeOut', 'Cancelled'];

/**
 * Calls `tick` again and again: every second at first, then less often the
 * longer it runs (API calls count against the user's rate limit), never
 * while the tab is hidden. Returns a function that stops it. `tick`
 * returns false to stop.
 */
function poll(tick, { fast = 1000, slow = 10000, after = 30000 } = {}) {
  const started = Date.now();
  let timer = null;
  let stopped = false;
  const next = () => {
    if (stopped) return;
    const age = Date.now() - started;
    const delay = age < after ? fast : age < after * 4 ? Math.min(slow, fast * 3) : slow;
    timer = setTimeout(run, delay);
  };
  const run = async () => {
    if (stopped) return;
    if (document.hidden) {
      next();
      return;
    }
    const goOn = await tick();
    if (goOn === false) stopped = true;
    else next();
  };
  next();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
const FINAL = new Set(['Succeeded', 'Failed', 'TimeOut', 'Cancelled']);

function filterOf(status, device, requestor) {
  const parts = [];
  if (status) parts.push(`status eq ${literal(status)}`);
  if (device.trim()) parts.push(`contains(computerDnsName, ${literal(device.trim())})`);
  if (requestor.trim()) parts.push(`contains(requestor, ${literal(requestor.trim())})`);
  return parts.join(' and ');
}

export async function list(main) {
  const status = h('select', { id: 'filter-status' }, h('option', { value: '' }, 'Any status'), STATUSES.map((s) => h('option', { value: s }, s)));
  const device = h('input', { type: 'search', id: 'filter-device', placeholder: 'Device name contains' });
  const requestor = h('input', { type: 'search', id: 'filter-requestor', placeholder: 'Requestor contains' });
  const body = h('tbody');
  const problem = h('div');
  main.append(
    h('h1', {}, 'Action center'),
    h('p', { class: 'sub' }, 'Every live response action, newest first. The list refreshes every few seconds.'),
    h('form', { class: 'row', role: 'search', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'filter-status', class: 'hint' }, 'Status'), status,
      h('label', { for: 'filter-device', class: 'hint' }, 'Device'), device,
      h('label', { for: 'filter-requestor', class: 'hint' }, 'Requestor'), requestor),
    h('p'), problem,
    h('table', {}, h('thead', {}, h('tr', {}, ['Created', 'Device', 'Status', 'Requestor', 'Commands', 'Comment'].map((c) => h('th', { scope: 'col' }, c)))), body));
  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    try {
      const query = odata({ $filter: filterOf(status.value, device.value, requestor.value), $top: 200 });
      const actions = (await api(`/api/machineactions${query}`)).value;
      if (mine !== generation) return;
      problem.replaceChildren();
      body.replaceChildren(...actions.map((a) => h('tr', {},
        h('td', {}, h('a', { href: `#/actions/${encodeURIComponent(a.id)}` }, time(a.creationDateTimeUtc))),
        h('td', {}, h('a', { href: `#/devices/${encodeURIComponent(a.machineId)}` }, a.computerDnsName || a.machineId)),
        h('td', {}, badge(a.status)),
        h('td', {}, a.requestor),
        h('td', {}, a.commands.map((c) => c.command.type).join(' → ')),
        h('td', {}, a.requestorComment || ''))));
      if (!actions.length) body.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No action matches.')));
    } catch (error) {
      problem.replaceChildren(errorBanner(explain(error)));
    }
  };
  const reload = () => { clearTimeout(debounce); debounce = setTimeout(load, 250); };
  let debounce = null;
  for (const input of [status, device, requestor]) input.addEventListener('input', reload);
  await load();
  const stop = poll(load, { fast: 5000, slow: 15000, after: 60000 });
  return () => { stop(); clearTimeout(debounce); };
}

/** Fetches a fresh download link for a command's result. */
async function link(actionId, index) {
  return (await api(`/api/machineactions/${encodeURIComponent(actionId)}/GetLiveResponseResultDownloadLink(index=${index})`)).value;
}

function transcriptView(transcript) {
  return h('div', { class: 'transcript' },
    h('div', {}, 'Exit code ', h('strong', { class: 'mono' }, String(transcript.exit_code))),
    h('div', { class: 'hint' }, 'Output (stdout)'),
    h('pre', { class: 'output', 'data-stream': 'stdout' }, transcript.script_output || '(nothing)'),
    h('div', { class: 'hint' }, 'Errors (stderr)'),
    h('pre', { class: 'output', 'data-stream': 'stderr' }, transcript.script_errors || '(nothing)'));
}

/** What each action type is called in a heading. */
const TITLES = {
  LiveResponse: 'Live response',
  Isolate: 'Isolation',
  Unisolate: 'Release',
  Offboard: 'Offboarding',
  StopAndQuarantineFile: 'Stop and quarantine',
  CollectInvestigationPackage: 'Investigation package',
};

/** Commands whose result can be read or downloaded. */
const WITH_RESULT = ['RunScript', 'GetFile', 'StopAndQuarantineFile', 'CollectInvestigationPackage'];

function resultCell(action, command, ctx) {
  if (command.commandStatus !== 'Completed' || !WITH_RESULT.includes(command.command.type)) return null;
  if (!ctx.can('downloadResults')) return h('span', { class: 'hint' }, 'Your account may not download results');
  const slot = h('div');
  const files = ['GetFile', 'CollectInvestigationPackage'];
  if (!files.includes(command.command.type)) {
    const report = command.command.type === 'StopAndQuarantineFile';
    const show = h('button', { type: 'button', class: 'link', 'data-transcript': command.index }, report ? 'Show report' : 'Show transcript');
    show.addEventListener('click', async () => {
      show.disabled = true;
      try {
        const url = await link(action.id, command.index);
        let transcript;
        try {
          const response = await fetch(url, { credentials: 'omit' });
          if (!response.ok) throw new Error(`the download answered ${response.status}`);
          transcript = await response.json();
        } catch {
          slot.replaceChildren(infoBanner('The transcript is stored where this page cannot read it directly. '), h('a', { href: url, target: '_blank', rel: 'noopener' }, 'Open the transcript'));
          return;
        }
        slot.replaceChildren(report
          ? h('pre', { class: 'output', id: `report-${command.index}` }, JSON.stringify(transcript, null, 2))
          : transcriptView(transcript));
      } catch (error) {
        slot.replaceChildren(errorBanner(explain(error)));
        show.disabled = false;
      }
    });
    slot.append(show);
  } else {
    const label = command.command.type === 'GetFile' ? 'Download the file (.gz)' : 'Download the package (.zip)';
    const download = h('button', { type: 'button', class: 'link', 'data-download': command.index }, label);
    download.addEventListener('click', async () => {
      try {
        const url = await link(action.id, command.index);
        const anchor = h('a', { href: url, download: '' });
        document.body.append(anchor);
        anchor.click();
        anchor.remove();
      } catch (error) {
        slot.append(errorBanner(explain(error)));
      }
    });
    slot.append(download);
  }
  return slot;
}

/**
 * The live output of an action's scripts, one after another, while it runs:
 * stdout and stderr as they come, with a cancel button beside them.
 * Returns a function that stops following.
 */
function liveOutput(section, action, ctx, cancelButton) {
  const scripts = action.commands.filter((c) => c.command.type === 'RunScript').map((c) => c.index);
  if (!scripts.length || !ctx.can('downloadResults')) return () => {};
  section.hidden = false;
  const title = h('h2', { class: 'grow' }, 'Live output');
  const out = h('pre', { class: 'output', id: 'live-stdout', 'data-stream': 'live-stdout' });
  const err = h('pre', { class: 'output', id: 'live-stderr', 'data-stream': 'live-stderr' });
  const state = h('p', { class: 'hint', id: 'live-state' }, 'Waiting for the script to start…');
  section.replaceChildren(h('div', { class: 'row' }, title, cancelButton), state,
    h('div', { class: 'hint' }, 'Output (stdout)'), out, h('div', { class: 'hint' }, 'Errors (stderr)'), err);
  let stop = () => {};
  const follow = (at) => {
    if (at >= scripts.length) return;
    const index = scripts[at];
    title.textContent = `Live output of command ${index}`;
    out.textContent = '';
    err.textContent = '';
    stop = followOutput(`/api/machineactions/${encodeURIComponent(action.id)}/commands/${index}/output`, {
      onEvent: (name, data) => {
        if (name === 'stdout') out.append(data.text);
        else if (name === 'stderr') err.append(data.text);
        if (name === 'stdout' || name === 'stderr') state.textContent = 'Running: the output appears as the script writes it.';
        if (name === 'end') {
          const code = data.exitCode === null ? '' : `, exit code ${data.exitCode}`;
          state.textContent = `Command ${index} ended: ${data.commandStatus}${code}.`;
          cancelButton.hidden = at + 1 >= scripts.length;
          follow(at + 1);
        }
      },
      onError: (message) => section.append(errorBanner(message)),
    });
  };
  follow(0);
  return () => stop();
}

export async function detail(main, ctx, id) {
  const header = h('div');
  const facts = h('div', { class: 'panel' });
  const live = h('section', { class: 'panel', id: 'live-output' });
  const commands = h('div');
  const problem = h('div');
  main.append(h('p', {}, h('a', { href: '#/actions' }, '← Action center')), problem, header, facts, live, h('h2', {}, 'Commands'), commands);
  live.hidden = true;
  const opened = new Map(); // transcripts and downloads the reader opened stay open across refreshes
  let last = '';
  let stop = () => {};
  let stopLive = () => {};

  const cancelButton = (action, buttonId) => {
    const cancel = h('button', { type: 'button', class: 'danger', id: buttonId }, 'Cancel action');
    cancel.hidden = FINAL.has(action.status);
    cancel.addEventListener('click', async () => {
      const answer = await confirm('Cancel this action?', `Commands not yet run on ${action.computerDnsName} will not run, and a running command is stopped.`, 'Cancel action', { danger: true, withComment: true });
      if (!answer) return;
      try {
        await api(`/api/machineactions/${encodeURIComponent(action.id)}/cancel`, { method: 'POST', json: { Comment: answer.comment || 'Cancelled from the console' } });
        await refresh();
        stop();
      } catch (error) {
        problem.replaceChildren(errorBanner(explain(error)));
      }
    });
    if (!ctx.can('cancelActions')) {
      cancel.disabled = true;
      cancel.title = 'Your account may not cancel actions';
    }
    return cancel;
  };

  const draw = (action) => {
    const cancel = cancelButton(action, 'cancel-action');
    header.replaceChildren(h('div', { class: 'row spread' },
      h('div', {}, h('h1', {}, `${TITLES[action.type] || action.type} on `, action.computerDnsName || action.machineId), h('p', { class: 'sub mono' }, action.id)),
      h('div', { class: 'row' }, h('span', { id: 'action-status' }, badge(action.status)), cancel)));
    facts.replaceChildren(h('dl', { class: 'facts' },
      h('dt', {}, 'Device'), h('dd', {}, h('a', { href: `#/devices/${encodeURIComponent(action.machineId)}` }, action.computerDnsName || action.machineId)),
      h('dt', {}, 'Requested by'), h('dd', {}, action.requestor),
      h('dt', {}, 'Comment'), h('dd', {}, action.requestorComment || '—'),
      h('dt', {}, 'Created'), h('dd', {}, time(action.creationDateTimeUtc)),
      h('dt', {}, 'Last update'), h('dd', {}, time(action.lastUpdateDateTimeUtc)),
      action.cancellationRequestor ? [h('dt', {}, 'Cancelled by'), h('dd', {}, action.cancellationRequestor, ' — ', action.cancellationComment || '', ' ', time(action.cancellationDateTimeUtc))] : null));
    const body = h('tbody');
    for (const command of action.commands) {
      if (!opened.has(command.index)) opened.set(command.index, resultCell(action, command, ctx));
      body.append(h('tr', { 'data-command': command.index },
        h('td', {}, String(command.index)),
        h('td', {}, command.command.type),
        h('td', { class: 'mono' }, params(command.command)),
        h('td', {}, badge(command.commandStatus)),
        h('td', {}, time(command.startTime)),
        h('td', {}, time(command.endTime)),
        h('td', {}, command.errors.length ? h('div', { class: 'field-error' }, command.errors.join(' ')) : null, opened.get(command.index))));
    }
    commands.replaceChildren(h('table', {}, h('thead', {}, h('tr', {}, ['#', 'Command', 'Parameters', 'Status', 'Started', 'Ended', 'Errors and results'].map((c) => h('th', { scope: 'col' }, c)))), body));
  };

  const refresh = async () => {
    try {
      const action = await api(`/api/machineactions/${encodeURIComponent(id)}`);
      problem.replaceChildren();
      const fingerprint = JSON.stringify(action);
      if (fingerprint !== last) {
        last = fingerprint;
        for (const command of action.commands) {
          // A command whose result just appeared gets its buttons.
          if (opened.get(command.index) === null && command.commandStatus === 'Completed') opened.delete(command.index);
        }
        draw(action);
      }
      return !FINAL.has(action.status);
    } catch (error) {
      problem.replaceChildren(errorBanner(explain(error)));
      return true;
    }
  };
  const action = await api(`/api/machineactions/${encodeURIComponent(id)}`);
  last = JSON.stringify(action);
  draw(action);
  if (!FINAL.has(action.status)) {
    stop = poll(refresh);
    stopLive = liveOutput(live, action, ctx, cancelButton(action, 'live-cancel'));
  }
  return () => {
    stop();
    stopLive();
  };
}
