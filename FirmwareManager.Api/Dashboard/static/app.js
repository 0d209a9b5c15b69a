// The dashboard's shell: sign-in and sign-out, the hash router, and the messages every view shares.
import { ApiError, get, session } from './api.js';
import { renderOverview } from './overview.js';
import { renderDevices, renderDevice } from './devices.js';
import { renderFeed } from './feed.js';
import { renderRollouts, renderTransitions } from './health.js';

const $ = id => document.getElementById(id);

const routes = [
  { pattern: /^\/?$/, render: renderOverview, title: 'Overview', name: 'overview' },
  { pattern: /^\/devices$/, render: renderDevices, title: 'Devices', name: 'devices' },
  { pattern: /^\/devices\/(\d+)$/, render: renderDevice, title: 'Device', name: 'device' },
  { pattern: /^\/feed$/, render: renderFeed, title: 'Live feed', name: 'feed' },
  { pattern: /^\/rollouts$/, render: renderRollouts, title: 'Rollouts', name: 'rollouts' },
  { pattern: /^\/transitions$/, render: renderTransitions, title: 'Transitions', name: 'transitions' },
];

let current = null; // { controller, cleanup } of the view on screen

function showMessage(text) {
  const message = $('message');
  message.textContent = text;
  message.hidden = !text;
}

/** Read out by screen readers without moving focus: "3 new events", "Page 2". */
export function announce(text) {
  $('status').textContent = text;
}

/** A failed call, explained; a key that stopped working signs the operator out. */
export function reportError(error) {
  if (error?.name === 'AbortError') return;
  if (error instanceof ApiError && error.status === 401) {
    signOut(error.explain());
    return;
  }
  showMessage(error instanceof ApiError ? error.explain() : `Something went wrong: ${error?.message ?? error}`);
}

function leaveView() {
  if (!current) return;
  current.controller.abort();
  current.cleanup?.();
  current = null;
}

function showSignIn(message) {
  leaveView();
  $('nav').hidden = true;
  $('account').hidden = true;
  $('view').replaceChildren();
  $('sign-in').hidden = false;
  showMessage(message ?? '');
  document.title = 'Sign in: FirmwareManager dashboard';
  const input = $('api-key');
  input.value = '';
  input.focus();
}

function signOut(message) {
  session.forget();
  showSignIn(message);
}

async function signIn(key) {
  // /me answers any member key: who signed in, and proof that the key works before it is kept.
  const { data: me } = await get('/me', { key });
  session.key = key;
  showSignedIn(me);
}

function showSignedIn(me) {
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('account').hidden = false;
  $('whoami').textContent = `${me.email} (${me.role})`;
  showMessage('');
  route();
}

async function route() {
  if (!session.key) {
    showSignIn();
    return;
  }

  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = hash.split('?');
  const match = routes.map(r => ({ r, m: r.pattern.exec(path) })).find(x => x.m);
  leaveView();
  showMessage('');
  for (const link of document.querySelectorAll('#nav a')) {
    const target = link.getAttribute('href').slice(1);
    const active = target === '/' ? path === '/' : path.startsWith(target);
    if (active) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }

  const view = $('view');
  if (!match) {
    view.replaceChildren();
    showMessage(`There is no page ${path}.`);
    return;
  }

  const controller = new AbortController();
  current = { controller, cleanup: null };
  document.title = `${match.r.title}: FirmwareManager dashboard`;
  try {
    const cleanup = await match.r.render({
      view,
      params: match.m.slice(1),
      query: new URLSearchParams(query),
      signal: controller.signal,
      announce,
      reportError,
    });
    if (current?.controller === controller) current.cleanup = cleanup;
    else cleanup?.();
    // The view's data is on screen: the browser tests and bench/dashboard.sh time views by these marks.
    performance.mark(`fm:${match.r.name}-shown`);
    // Focus moves to the new page's heading, as a page load would put it, for keyboard and screen reader users.
    if (!controller.signal.aborted) view.querySelector('h1')?.focus();
  } catch (error) {
    reportError(error);
  }
}

function start() {
  $('sign-in-form').addEventListener('submit', async event => {
    event.preventDefault();
    const key = $('api-key').value.trim();
    if (!key) {
      showMessage('Type a member API key.');
      return;
    }
    try {
      await signIn(key);
    } catch (error) {
      session.forget();
      showMessage(error instanceof ApiError ? error.explain() : `The service could not be reached: ${error.message}`);
      $('api-key').focus();
    }
  });
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));
  window.addEventListener('hashchange', () => { if (session.key) route(); });

  if (!session.key) {
    showSignIn();
    return;
  }
  get('/me').then(({ data }) => showSignedIn(data), error => {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut(error.explain());
      return;
    }
    // The key may be fine and the service not (a rate limit, a restart): stay signed in and say so.
    showSignedIn({ email: 'signed in', role: 'member' });
    reportError(error);
  });
}

start();
