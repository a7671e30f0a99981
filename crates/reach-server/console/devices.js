// Devices: the searchable list, and one device's page with its recent
// actions, its tags (editable with the right to tag) and the form to run
// live response on it.
import { api, odata, literal, explain } from './api.js';
import { h, time, ago, badge, errorBanner } from './ui.js';
import { runForm } from './run.js';
import { responsePanel, isolationBadge } from './respond.js';

/** A warning when another device reports the same name: a stale record of a
 * re-imaged device, or one impersonating it. Such a name is refused by the
 * API (409); use the device id. */
function duplicateWarning(machine) {
  if (!machine.duplicateName) return null;
  return h('div', { class: 'hint warn-text', role: 'note' },
    '⚠ Another device reports this name: check which is real, use the id, and revoke the stale one.');
}

function osText(machine) {
  return [machine.osPlatform, machine.osVersion, machine.osArchitecture].filter(Boolean).join(' ');
}

function matches(machine, words) {
  const haystack = [machine.computerDnsName, machine.id, machine.osPlatform, machine.lastIpAddress,
    ...(machine.machineTags || []), ...(machine.ipAddresses || []).map((a) => a.ipAddress),
    // "isolated" finds the isolated devices (and those about to be).
    machine.isolationState === 'Isolated' || machine.isolationState === 'Pending' ? 'isolated' : null]
    .filter(Boolean).join(' ').toLowerCase();
  return words.every((word) => haystack.includes(word));
}

export async function list(main, ctx) {
  const search = h('input', { type: 'search', id: 'device-search', placeholder: 'Name, IP address, OS or tag', 'aria-label': 'Search devices', class: 'grow' });
  const body = h('tbody');
  const count = h('span', { class: 'hint', role: 'status' });
  const selected = new Set();
  const all = h('input', { type: 'checkbox', id: 'select-shown', 'aria-label': 'Select every device shown' });
  const runMany = h('button', { type: 'button', class: 'primary', id: 'run-selected' }, 'Run on selected');
  // Which devices a batch runs on: those ticked here, or chosen by the
  // server at creation (a tag, an OData filter, every device), which
  // reaches devices past the 10,000 this page lists.
  const targetKind = h('select', { id: 'run-target', 'aria-label': 'Run on' },
    h('option', { value: 'selected' }, 'Selected devices'),
    h('option', { value: 'tag' }, 'Devices with the tag'),
    h('option', { value: 'filter' }, 'Devices matching the filter'),
    h('option', { value: 'all' }, 'Every device'));
  const targetValue = h('input', { type: 'text', id: 'run-target-value', maxlength: 1000, 'aria-label': 'Tag or filter', hidden: true });
  const formSlot = h('div');
  main.append(
    h('div', { class: 'row spread' }, h('div', {}, h('h1', {}, 'Devices'), h('p', { class: 'sub' }, 'Every enrolled device, online or not. Select several, or choose them by tag or filter, to run live response on all of them as one batch.')),
      h('div', { class: 'row' }, targetKind, targetValue, runMany)),
    formSlot,
    h('div', { class: 'row', style: null }, search, count),
    h('p'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all), ['Device', 'Health', 'Last seen', 'OS', 'Agent', 'IP address', 'Tags'].map((c) => h('th', { scope: 'col' }, c)))), body));
  const machines = (await api(`/api/machines${odata({ $top: 10000 })}`)).value;
  let shown = machines;
  /** The batch's `Machines` and how the form names them, or null while incomplete. */
  const target = () => {
    const value = targetValue.value.trim();
    switch (targetKind.value) {
      case 'tag': return value ? { machines: { Tags: [value] }, name: `devices tagged ${value}` } : null;
      case 'filter': return value ? { machines: { Filter: value }, name: 'devices matching the filter' } : null;
      case 'all': return { machines: { All: true }, name: 'every device' };
      default: return selected.size ? { machines: { Ids: [...selected] }, name: `${selected.size} devices` } : null;
    }
  };
  const refresh = () => {
    const kind = targetKind.value;
    targetValue.hidden = kind !== 'tag' && kind !== 'filter';
    targetValue.placeholder = kind === 'tag' ? 'incident-42' : "osPlatform eq 'Linux'";
    runMany.textContent = kind === 'selected'
      ? (selected.size ? `Run on ${selected.size} selected` : 'Run on selected')
      : `Run on ${target()?.name || (kind === 'tag' ? 'a tag' : 'a filter')}`;
    runMany.disabled = !target() || !ctx.can('collectFiles');
    all.checked = shown.length > 0 && shown.every((m) => selected.has(m.id));
  };
  targetKind.addEventListener('change', refresh);
  targetValue.addEventListener('input', refresh);
  all.addEventListener('change', () => {
    for (const m of shown) {
      if (all.checked) selected.add(m.id); else selected.delete(m.id);
    }
    draw();
  });
  runMany.addEventListener('click', async () => {
    try {
      formSlot.replaceChildren(await runForm(null, ctx, () => formSlot.replaceChildren(), target()));
    } catch (error) {
      formSlot.replaceChildren(errorBanner(explain(error)));
    }
  });
  const draw = () => {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    shown = machines.filter((m) => matches(m, words));
    count.textContent = `${shown.length} of ${machines.length} devices`;
    body.replaceChildren(...shown.map((m) => h('tr', {},
      h('td', {}, (() => {
        const box = h('input', { type: 'checkbox', 'data-select': m.id, 'aria-label': `Select ${m.computerDnsName}`, checked: selected.has(m.id) });
        box.addEventListener('change', () => {
          if (box.checked) selected.add(m.id); else selected.delete(m.id);
          refresh();
        });
        return box;
      })()),
      h('td', {}, h('a', { href: `#/devices/${encodeURIComponent(m.id)}` }, m.computerDnsName), duplicateWarning(m)),
      // Isolation shows only where it is not the usual open network.
      h('td', {}, badge(m.healthStatus), m.isolationState && m.isolationState !== 'NotIsolated' ? [' ', isolationBadge(m.isolationState)] : null),
      h('td', {}, time(m.lastSeen), h('div', { class: 'hint' }, ago(m.lastSeen))),
      h('td', {}, osText(m)),
      h('td', { class: 'mono' }, m.version),
      h('td', { class: 'mono' }, m.lastIpAddress || ''),
      h('td', {}, (m.machineTags || []).map((t) => h('span', { class: 'tag' }, t))))));
    if (!shown.length) {
      body.append(h('tr', {}, h('td', { colspan: 8, class: 'empty' },
        machines.length ? 'No device matches the search.' : 'No device is enrolled yet. Enroll one with reach-agent enroll.')));
    }
    refresh();
  };
  search.addEventListener('input', draw);
  draw();
  search.focus();
}

/** A device's tags; with the right to tag, each with a remove button and a
 * field to add one. Device groups are tag rules, so a change can move the
 * device into or out of a group; the API records each change. */
function tagEditor(machine, ctx) {
  const slot = h('div', { id: 'device-tags' });
  const problem = h('div');
  const change = async (tag, action) => {
    problem.replaceChildren();
    try {
      const updated = await api(`/api/machines/${encodeURIComponent(machine.id)}/tags`, { method: 'POST', json: { Value: tag, Action: action } });
      machine.machineTags = updated.machineTags;
      draw();
    } catch (error) {
      problem.replaceChildren(errorBanner(explain(error)));
    }
  };
  const draw = () => {
    const tags = machine.machineTags || [];
    const shown = tags.map((t) => {
      if (!ctx.can('tagMachines')) return h('span', { class: 'tag' }, t);
      const remove = h('button', { type: 'button', class: 'link', 'aria-label': `Remove tag ${t}`, 'data-remove-tag': t }, '×');
      remove.addEventListener('click', () => change(t, 'Remove'));
      return h('span', { class: 'tag' }, t, ' ', remove);
    });
    if (!ctx.can('tagMachines')) {
      slot.replaceChildren(...shown, tags.length ? '' : '—');
      return;
    }
    const input = h('input', { type: 'text', id: 'new-tag', maxlength: 200, placeholder: 'Add a tag', 'aria-label': 'New tag' });
    const add = h('button', { type: 'submit', id: 'add-tag' }, 'Add');
    const form = h('form', { class: 'row', novalidate: true }, input, add);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const tag = input.value.trim();
      if (tag) change(tag, 'Add');
    });
    slot.replaceChildren(h('div', {}, ...shown), form, problem);
  };
  draw();
  return slot;
}

export async function detail(main, ctx, id) {
  const machine = await api(`/api/machines/${encodeURIComponent(id)}`);
  const recent = h('tbody');
  const formSlot = h('div');
  const runButton = h('button', { type: 'button', class: 'primary', id: 'run-live-response' }, 'Run live response');
  if (!ctx.can('collectFiles')) {
    runButton.disabled = true;
    runButton.title = 'Your account may not run live response';
  }
  runButton.addEventListener('click', async () => {
    runButton.hidden = true;
    try {
      formSlot.replaceChildren(await runForm(machine, ctx, () => {
        formSlot.replaceChildren();
        runButton.hidden = false;
        runButton.focus();
      }));
    } catch (error) {
      formSlot.replaceChildren(errorBanner(explain(error)));
    }
  });
  main.append(
    h('p', {}, h('a', { href: '#/devices' }, '← Devices')),
    h('div', { class: 'row spread' },
      h('div', {}, h('h1', {}, machine.computerDnsName), h('p', { class: 'sub mono' }, machine.id), duplicateWarning(machine)),
      h('div', { class: 'row' }, badge(machine.healthStatus), runButton)),
    formSlot,
    responsePanel(machine, ctx),
    h('div', { class: 'panel' }, h('dl', { class: 'facts' },
      h('dt', {}, 'Operating system'), h('dd', {}, osText(machine)),
      h('dt', {}, 'Agent version'), h('dd', { class: 'mono' }, machine.version),
      h('dt', {}, 'Last seen'), h('dd', {}, time(machine.lastSeen), ' ', h('span', { class: 'hint' }, ago(machine.lastSeen))),
      h('dt', {}, 'First seen'), h('dd', {}, time(machine.firstSeen)),
      h('dt', {}, 'Connected from'), h('dd', { class: 'mono' }, machine.lastIpAddress || '—'),
      h('dt', {}, 'Addresses'), h('dd', { class: 'mono' }, (machine.ipAddresses || []).map((a) => `${a.ipAddress}${a.macAddress ? ` (${a.macAddress})` : ''}`).join(', ') || '—'),
      h('dt', {}, 'Tags'), h('dd', {}, tagEditor(machine, ctx)))),
    h('h2', {}, 'Recent actions'),
    h('table', {}, h('thead', {}, h('tr', {}, ['Created', 'Status', 'Requestor', 'Commands', 'Comment'].map((c) => h('th', { scope: 'col' }, c)))), recent));
  const actions = (await api(`/api/machineactions${odata({ $filter: `machineId eq ${literal(machine.id)}`, $top: 20 })}`)).value;
  recent.replaceChildren(...actions.map((a) => h('tr', {},
    h('td', {}, h('a', { href: `#/actions/${encodeURIComponent(a.id)}` }, time(a.creationDateTimeUtc))),
    h('td', {}, badge(a.status)),
    h('td', {}, a.requestor),
    h('td', {}, a.commands.map((c) => c.command.type).join(' → ')),
    h('td', {}, a.requestorComment || ''))));
  if (!actions.length) recent.append(h('tr', {}, h('td', { colspan: 5, class: 'empty' }, 'No action on this device yet.')));
}
