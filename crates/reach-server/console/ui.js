// Small DOM helpers shared by the views. Text always goes in as text, never
// as HTML, so nothing from the server can become markup.

/** Builds an element: h('a', { href: '#/x', class: 'y' }, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      element.className = value;
    } else if (value === true) {
      element.setAttribute(key, '');
    } else {
      element.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A date and time in the reader's locale, with the UTC value as a tooltip. */
export function time(iso) {
  if (!iso) return h('span', { class: 'hint' }, '—');
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h('span', {}, iso);
  return h('time', { datetime: iso, title: `${iso} (UTC)` }, date.toLocaleString());
}

/** "3 min ago" for recent times. */
export function ago(iso) {
  const date = new Date(iso);
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (Number.isNaN(seconds)) return '';
  if (seconds < 60) return 'just now';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} days ago`;
}

const STATUS = {
  Succeeded: ['ok', '✓', 'Succeeded'],
  Completed: ['ok', '✓', 'Completed'],
  Failed: ['bad', '✕', 'Failed'],
  TimeOut: ['bad', '⌛', 'Timed out'],
  Cancelled: ['idle', '⊘', 'Cancelled'],
  Pending: ['wait', '◷', 'Pending'],
  Created: ['wait', '◷', 'Waiting'],
  InProgress: ['run', null, 'In progress'],
  Active: ['ok', '●', 'Online'],
  Inactive: ['idle', '○', 'Offline'],
};

/** A status as a badge: a symbol and a word, never colour alone. */
export function badge(status) {
  const [kind, symbol, word] = STATUS[status] || ['idle', '•', status];
  return h('span', { class: `badge ${kind}`, 'data-status': status },
    symbol ? h('span', { 'aria-hidden': 'true' }, symbol) : h('span', { class: 'spinner', 'aria-hidden': 'true' }),
    word);
}

/** A banner saying what went wrong (role="alert" so screen readers hear it). */
export function errorBanner(message) {
  return h('div', { class: 'banner error', role: 'alert' }, h('strong', {}, 'Error:'), message);
}

export function infoBanner(message) {
  return h('div', { class: 'banner info', role: 'status' }, message);
}

/** Asks a yes/no question in a modal dialog; resolves to { comment } on
 * confirm, null otherwise. `fields` are more inputs shown above the
 * comment; with `requireComment` the confirm button waits for one. */
export function confirm(title, message, confirmLabel, { danger = false, withComment = false, requireComment = false, fields = [] } = {}) {
  return new Promise((resolve) => {
    const comment = withComment || requireComment ? h('textarea', { id: 'confirm-comment', maxlength: 1000, required: requireComment }) : null;
    const dialog = h('dialog', { 'aria-labelledby': 'confirm-title' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', { id: 'confirm-message' }, message),
      ...fields,
      comment ? h('div', { class: 'field' }, h('label', { for: 'confirm-comment' }, 'Comment ', h('span', { class: 'hint' }, requireComment ? '(required: recorded with the action)' : '(recorded with the action)')), comment) : null,
      h('div', { class: 'row' },
        h('button', { type: 'button', class: danger ? 'danger' : 'primary', id: 'confirm-yes' }, confirmLabel),
        h('button', { type: 'button', id: 'confirm-no' }, 'Keep it')));
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer ? { comment: comment ? comment.value.trim() : '' } : null);
    };
    const yes = dialog.querySelector('#confirm-yes');
    if (requireComment) {
      const update = () => { yes.disabled = !comment.value.trim(); };
      comment.addEventListener('input', update);
      update();
    }
    yes.addEventListener('click', () => close(true));
    dialog.querySelector('#confirm-no').addEventListener('click', () => close(false));
    dialog.addEventListener('cancel', () => close(false));
    document.body.append(dialog);
    dialog.showModal();
    (comment || dialog.querySelector('#confirm-no')).focus();
  });
}

/** Bytes in words. */
export function size(bytes) {
  if (bytes === undefined || bytes === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** A command's parameters as "Key=value, ..." text. */
export function params(command) {
  return (command.params || []).map((p) => `${p.key}=${p.value}`).join(', ');
}
