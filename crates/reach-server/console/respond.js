// A device's response actions: isolate and release, collect the
// investigation package, stop and quarantine a file, offboard. Each asks first, in words that name the consequence, and
// takes the comment the API requires; once created, the action's page
// shows how it went. Buttons follow the session's capabilities.
import { api, explain } from './api.js';
import { h, confirm, errorBanner } from './ui.js';

const ISOLATION = {
  Isolated: ['bad', '⛔', 'Isolated'],
  NotIsolated: ['ok', '●', 'Not isolated'],
  Pending: ['wait', '◷', 'Isolation pending'],
};

/** A device's isolation state as a badge: a symbol and a word. */
export function isolationBadge(state, id) {
  const [kind, symbol, word] = ISOLATION[state] || ['idle', '•', state || 'Unknown'];
  return h('span', { class: `badge ${kind}`, id, 'data-isolation': state || '' },
    h('span', { 'aria-hidden': 'true' }, symbol), word);
}

async function submit(machine, route, body, problem) {
  try {
    const action = await api(`/api/machines/${encodeURIComponent(machine.id)}/${route}`, { method: 'POST', json: body });
    window.location.hash = `#/actions/${encodeURIComponent(action.id)}`;
  } catch (error) {
    problem.replaceChildren(errorBanner(explain(error)));
  }
}

function button(id, label, allowed, why, onClick, danger = false) {
  const element = h('button', { type: 'button', id, class: danger ? 'danger' : '' }, label);
  if (!allowed) {
    element.disabled = true;
    element.title = why;
  }
  element.addEventListener('click', onClick);
  return element;
}

/** The response panel of `machine`'s page. */
export function responsePanel(machine, ctx) {
  const problem = h('div');
  const name = machine.computerDnsName;
  const isolated = machine.isolationState === 'Isolated';
  const isolate = async () => {
    const type = h('select', { id: 'isolation-type' },
      h('option', { value: 'Full' }, 'Full: only Reach stays reachable'),
      h('option', { value: 'Selective' }, 'Selective: also what the server configuration allows'));
    const answer = await confirm(`Isolate ${name}?`,
      'The device loses every network connection except to its Reach servers (and DNS and DHCP) until it is released; live response keeps working. If the agent cannot reach its server once isolated, it undoes the isolation and the action fails.',
      'Isolate', { danger: true, requireComment: true,
        fields: [h('div', { class: 'field' }, h('label', { for: 'isolation-type' }, 'Isolation'), type)] });
    if (answer) await submit(machine, 'isolate', { Comment: answer.comment, IsolationType: type.value }, problem);
  };
  const release = async () => {
    const answer = await confirm(`Release ${name}?`, 'The device gets its network back.', 'Release', { requireComment: true });
    if (answer) await submit(machine, 'unisolate', { Comment: answer.comment }, problem);
  };
  const quarantine = async () => {
    const sha1 = h('input', { type: 'text', id: 'quarantine-sha1', maxlength: 40, pattern: '[0-9a-fA-F]{40}', class: 'mono', autocomplete: 'off' });
    const answer = await confirm(`Stop and quarantine a file on ${name}?`,
      'Every process running the executable with this SHA-1 is killed, and the executable is moved to the agent\'s quarantine (it can be restored on the device). Files of installed packages are refused; copies that are not running are not searched.',
      'Stop and quarantine', { danger: true, requireComment: true,
        fields: [h('div', { class: 'field' }, h('label', { for: 'quarantine-sha1' }, 'SHA-1 of the executable'), sha1)] });
    if (answer) await submit(machine, 'StopAndQuarantineFile', { Comment: answer.comment, Sha1: sha1.value.trim() }, problem);
  };
  const collect = async () => {
    const answer = await confirm(`Collect the investigation package of ${name}?`,
      'The agent reads the device\'s processes, network connections, users, scheduled tasks, services, shell histories and more (it changes nothing) and sends them as one zip, kept with the action.',
      'Collect', { requireComment: true });
    if (answer) await submit(machine, 'collectInvestigationPackage', { Comment: answer.comment }, problem);
  };
  const offboard = async () => {
    const answer = await confirm(`Offboard ${name}?`,
      'The machine is revoked: its agent releases isolation, deletes its credential and stops. This cannot be undone; the device must be enrolled again to come back.',
      'Offboard', { danger: true, requireComment: true });
    if (answer) await submit(machine, 'offboard', { Comment: answer.comment }, problem);
  };
  const noRole = (role) => `Your account lacks ${role}`;
  return h('div', { class: 'panel', id: 'response' },
    h('div', { class: 'row spread' },
      h('div', { class: 'row' }, h('strong', {}, 'Network'), isolationBadge(machine.isolationState, 'isolation-state')),
      h('div', { class: 'row' },
        isolated
          ? button('release', 'Release', ctx.can('isolate'), noRole('Machine.Isolate'), release)
          : button('isolate', 'Isolate…', ctx.can('isolate'), noRole('Machine.Isolate'), isolate, true),
        button('collect', 'Collect package…', ctx.can('collectForensics'), noRole('Machine.CollectForensics'), collect),
        button('quarantine', 'Stop and quarantine…', ctx.can('stopAndQuarantine'), noRole('Machine.StopAndQuarantine'), quarantine, true),
        button('offboard', 'Offboard…', ctx.can('offboard'), noRole('Machine.Offboard'), offboard, true))),
    problem);
}
