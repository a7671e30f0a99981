// The form that starts live response on one device, or on several devices
// as one batch: commands in order (PutFile, RunScript, GetFile), checked
// before anything is sent.
import { api, explain } from './api.js';
import { h, errorBanner } from './ui.js';

const ORDER = { PutFile: 0, RunScript: 1, GetFile: 2 };
const HELP = {
  PutFile: 'Copies a library file into the agent\'s working folder on the device.',
  RunScript: 'Runs a library script on the device; its output and exit code are kept.',
  GetFile: 'Collects a file from the device; it downloads gzip-compressed.',
};

/** Why the commands cannot be sent, per command index (empty when fine). */
export function check(commands) {
  const problems = new Map();
  commands.forEach((command, i) => {
    if (command.type === 'PutFile' && !command.file) problems.set(i, 'Choose a library file to put on the device.');
    if (command.type === 'RunScript' && !command.file) problems.set(i, 'Choose a library script to run.');
    if (command.type === 'GetFile' && !command.path.trim()) problems.set(i, 'Give the full path of the file to collect.');
    const before = commands.slice(0, i).find((c) => ORDER[c.type] > ORDER[command.type]);
    if (before && !problems.has(i)) {
      problems.set(i, `${command.type} must come before ${before.type}: commands run as all PutFile, then RunScript, then GetFile.`);
    }
  });
  return problems;
}

function toRequest(commands, comment) {
  return {
    Commands: commands.map((c) => {
      if (c.type === 'PutFile') return { type: 'PutFile', params: [{ key: 'FileName', value: c.file }] };
      if (c.type === 'GetFile') return { type: 'GetFile', params: [{ key: 'Path', value: c.path.trim() }] };
      const params = [{ key: 'ScriptName', value: c.file }];
      if (c.args.trim()) params.push({ key: 'Args', value: c.args.trim() });
      return { type: 'RunScript', params };
    }),
    Comment: comment.trim() || undefined,
  };
}

/** `machine` is one device; with `batch` (`{machines, name}`), the devices
 * of a batch: `machines` as `POST /api/batches` takes them (`Ids`, `Tags`,
 * `Filter` or `All`), `name` what the button calls them. */
export async function runForm(machine, ctx, onClose, batch) {
  const many = Boolean(batch);
  const name = many ? batch.name : machine.computerDnsName;
  // Basic live response collects files only: no library, no other types.
  const advanced = ctx.can('putFilesAndRunScripts');
  const types = advanced ? Object.keys(ORDER) : ['GetFile'];
  const listable = advanced && ctx.can('manageLibrary');
  const files = listable ? (await api('/api/libraryfiles')).value : [];
  const commands = [{ type: advanced ? 'RunScript' : 'GetFile', file: '', args: '', path: '' }];
  const list = h('div', { id: 'commands' });
  const comment = h('textarea', { id: 'run-comment', maxlength: 1000, placeholder: 'Why, for the record (case number, ticket)' });
  const status = h('div', { id: 'run-status' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'run-submit' }, 'Run on ', name);
  let problems = new Map();

  const none = listable ? '— the library is empty —' : '— listing the library needs Library.Manage —';
  const options = (selected) => [h('option', { value: '' }, files.length ? '— choose —' : none),
    ...files.map((f) => h('option', { value: f.fileName, selected: f.fileName === selected }, f.fileName))];

  const draw = () => {
    list.replaceChildren(...commands.map((command, i) => {
      const id = `cmd-${i}`;
      const type = h('select', { id: `${id}-type`, 'aria-label': `Command ${i + 1} type` },
        types.map((t) => h('option', { value: t, selected: t === command.type }, t)));
      type.addEventListener('change', () => { command.type = type.value; draw(); });
      let fields;
      if (command.type === 'GetFile') {
        const path = h('input', { type: 'text', id: `${id}-path`, value: command.path, class: 'grow', placeholder: '/var/log/auth.log or C:\\Windows\\System32\\drivers\\etc\\hosts' });
        path.addEventListener('input', () => { command.path = path.value; });
        fields = h('div', { class: 'field grow' }, h('label', { for: `${id}-path` }, 'Path on the device'), path);
      } else {
        const file = h('select', { id: `${id}-file` }, options(command.file));
        file.addEventListener('change', () => { command.file = file.value; draw(); });
        const picked = files.find((f) => f.fileName === command.file);
        fields = [h('div', { class: 'field' }, h('label', { for: `${id}-file` }, command.type === 'RunScript' ? 'Script' : 'Library file'), file)];
        if (command.type === 'RunScript') {
          const args = h('input', { type: 'text', id: `${id}-args`, value: command.args, class: 'grow', placeholder: 'Arguments (optional)' });
          args.addEventListener('input', () => { command.args = args.value; });
          const described = picked && picked.parametersDescription;
          fields.push(h('div', { class: 'field grow' },
            h('label', { for: `${id}-args` }, 'Arguments ', described ? h('span', { class: 'hint' }, `— ${picked.parametersDescription}`) : null),
            args));
        }
      }
      const up = h('button', { type: 'button', 'aria-label': `Move command ${i + 1} up`, disabled: i === 0 }, '↑');
      up.addEventListener('click', () => { [commands[i - 1], commands[i]] = [commands[i], commands[i - 1]]; draw(); });
      const remove = h('button', { type: 'button', class: 'danger', 'aria-label': `Remove command ${i + 1}`, disabled: commands.length === 1 }, 'Remove');
      remove.addEventListener('click', () => { commands.splice(i, 1); draw(); });
      return h('div', { class: 'command', 'data-index': i },
        h('div', { class: 'command-head' }, h('span', { class: 'num' }, `${i + 1}.`), type, h('span', { class: 'hint grow' }, HELP[command.type]), up, remove),
        h('div', { class: 'row' }, fields),
        problems.has(i) ? h('div', { class: 'field-error', role: 'alert' }, problems.get(i)) : null);
    }));
  };

  const add = h('button', { type: 'button', id: 'add-command' }, '+ Add a command');
  add.addEventListener('click', () => {
    commands.push({ type: 'GetFile', file: '', args: '', path: '' });
    draw();
    list.querySelector(`[data-index="${commands.length - 1}"] select`).focus();
  });
  const cancel = h('button', { type: 'button' }, 'Close');
  const form = h('form', { class: 'panel', id: 'run-form', novalidate: true },
    h('h2', {}, 'Run live response on ', name),
    h('p', { class: 'hint' }, 'Commands run one after another, all PutFile first, then RunScript, then GetFile; the first command that fails stops the rest. ',
      advanced ? null : 'Your account collects files only (basic live response). ',
      many ? 'Each device runs them as soon as it is online and free; an offline device waits until its agent connects.'
        : machine.healthStatus === 'Active' ? 'The device is online: it starts at once.' : 'The device is offline: the action waits until its agent connects.'),
    status, list, h('div', { class: 'row' }, add),
    h('div', { class: 'field' }, h('label', { for: 'run-comment' }, 'Comment'), comment),
    h('div', { class: 'row' }, submit, cancel));
  cancel.addEventListener('click', () => onClose());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.replaceChildren();
    problems = check(commands);
    draw();
    if (problems.size) {
      status.append(errorBanner('Fix the commands marked below before running them.'));
      return;
    }
    submit.disabled = true;
    try {
      if (many) {
        const created = await api('/api/batches', { method: 'POST', json: { ...toRequest(commands, comment.value), Machines: batch.machines } });
        ctx.go(`#/batches/${encodeURIComponent(created.id)}`);
      } else {
        const action = await api(`/api/machines/${encodeURIComponent(machine.id)}/runliveresponse`, { method: 'POST', json: toRequest(commands, comment.value) });
        ctx.go(`#/actions/${encodeURIComponent(action.id)}`);
      }
    } catch (error) {
      status.append(errorBanner(explain(error)));
      submit.disabled = false;
    }
  });
  draw();
  return form;
}
