// The console's shell: who is signed in, the sign-in page, and the router
// (#/devices, #/devices/{id}, #/actions, #/actions/{id}, #/batches,
// #/batches/{id}, #/library).
import { api, explain } from './api.js';
import { h, errorBanner, infoBanner } from './ui.js';
import * as devices from './devices.js';
import * as actions from './actions.js';
import * as batches from './batches.js';
import * as library from './library.js';

const main = document.getElementById('main');
const topbar = document.querySelector('.topbar');
let session = null;
let cleanup = null;

const routes = [
  [/^#\/devices$/, 'devices', (m) => devices.list(main, context())],
  [/^#\/devices\/([^/]+)$/, 'devices', (m) => devices.detail(main, context(), decodeURIComponent(m[1]))],
  [/^#\/actions$/, 'actions', (m) => actions.list(main, context())],
  [/^#\/actions\/([^/]+)$/, 'actions', (m) => actions.detail(main, context(), decodeURIComponent(m[1]))],
  [/^#\/batches$/, 'batches', (m) => batches.list(main, context())],
  [/^#\/batches\/([^/]+)$/, 'batches', (m) => batches.detail(main, context(), decodeURIComponent(m[1]))],
  [/^#\/library$/, 'library', (m) => library.page(main, context())],
];

function context() {
  return {
    session,
    // What the API lets this user do, as the server decided it from the
    // roles its handlers check (GET /console/session): never role names here.
    can: (capability) => Boolean(session.capabilities && session.capabilities[capability]),
    go: (hash) => { window.location.hash = hash; },
  };
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  if (!session) return;
  const hash = window.location.hash || '#/devices';
  const found = routes.map(([pattern, nav, view]) => [hash.match(pattern), nav, view]).find(([m]) => m);
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.toggleAttribute('aria-current', false);
    if (found && link.dataset.nav === found[1]) link.setAttribute('aria-current', 'page');
  }
  main.replaceChildren();
  if (!found) {
    main.append(errorBanner(`There is no page at ${hash}.`), h('a', { href: '#/devices' }, 'Go to the devices'));
    return;
  }
  try {
    cleanup = (await found[2](found[0])) || null;
  } catch (error) {
    main.append(errorBanner(explain(error)));
  }
  main.focus({ preventScroll: true });
}

function showSignIn(message) {
  session = null;
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  topbar.hidden = true;
  const error = h('div', { id: 'signin-error' });
  const name = h('input', { type: 'text', id: 'name', name: 'name', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', id: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'panel signin', novalidate: true },
    h('h1', {}, 'Sign in to Reach'),
    message ? infoBanner(message) : null,
    error,
    h('div', { class: 'field' }, h('label', { for: 'name' }, 'User name'), name),
    h('div', { class: 'field' }, h('label', { for: 'password' }, 'Password'), password),
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.replaceChildren();
    if (!name.value.trim() || !password.value) {
      error.append(errorBanner('Enter your user name and password.'));
      return;
    }
    submit.disabled = true;
    try {
      session = await api('/console/session', { method: 'POST', json: { name: name.value.trim(), password: password.value } });
      password.value = '';
      start();
    } catch (failure) {
      error.append(errorBanner(explain(failure)));
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(form);
  name.focus();
}

function start() {
  topbar.hidden = false;
  document.getElementById('who-name').textContent = session.name;
  if (!window.location.hash || window.location.hash === '#/signin') window.location.hash = '#/devices';
  route();
}

document.getElementById('sign-out').addEventListener('click', async () => {
  try {
    await api('/console/session', { method: 'DELETE' });
  } finally {
    showSignIn('You are signed out.');
  }
});

window.addEventListener('reach:signed-out', () => {
  if (session) showSignIn('Your session has ended (it expired or was signed out). Sign in again to go on.');
});
window.addEventListener('hashchange', route);

(async () => {
  try {
    session = await api('/console/session');
    start();
  } catch {
    showSignIn();
  }
})();
