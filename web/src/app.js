// The dashboard shell: hash routes, login, and a short poll (every 1.5 s) of the page shown.
import 'uplot/dist/uPlot.min.css';
import './app.css';
import { api, session, setUnauthenticatedHandler } from './api.js';
import { escapeHtml } from './util.js';
import { loginPage } from './pages/login.js';
import { overviewPage } from './pages/overview.js';
import { agentPage } from './pages/agent.js';
import { rolloutsPage } from './pages/rollouts.js';
import { maintenancePage } from './pages/maintenance.js';
import { configsPage } from './pages/configs.js';

const POLL_MS = 1500;
const main = document.getElementById('main');
const statusLine = document.getElementById('status');

const routes = [
  { pattern: /^\/login$/, page: loginPage, public: true },
  { pattern: /^\/$/, page: overviewPage, nav: 'overview' },
  { pattern: /^\/agents\/([^/]+)$/, page: agentPage, nav: 'overview' },
  { pattern: /^\/rollouts(?:\/(\d+))?$/, page: rolloutsPage, nav: 'rollouts' },
  { pattern: /^\/maintenance$/, page: maintenancePage, nav: 'maintenance' },
  { pattern: /^\/configs(?:\/([^/]+)(?:\/(\d+))?)?$/, page: configsPage, nav: 'configs' },
];

let current = null;   // { instance, timer }
let generation = 0;

export function showStatus(message, kind = 'info') {
  statusLine.textContent = message;
  statusLine.dataset.kind = kind;
}

function renderSession() {
  const who = session.who;
  const signedIn = Boolean(session.token && who);
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('session').hidden = !signedIn;
  if (signedIn) {
    document.getElementById('whoami').innerHTML =
      `Signed in as <strong>${escapeHtml(who.actor)}</strong> <span class="badge badge-role">${escapeHtml(who.role)}</span>`;
  }
}

function stopCurrent() {
  if (!current) return;
  clearInterval(current.timer);
  current.instance.unmount?.();
  current = null;
}

async function route() {
  const path = (location.hash.replace(/^#/, '') || '/').split('?')[0];
  const match = routes.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  if (!match) { location.hash = '#/'; return; }
  if (!match.r.public && !session.token) { location.hash = '#/login'; return; }
  stopCurrent();
  renderSession();
  const mine = ++generation;
  document.querySelectorAll('#nav a').forEach((a) => {
    if (a.dataset.page === match.r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  showStatus('');
  // A fresh element per page, so listeners a page puts on it go away with the page.
  const host = document.createElement('div');
  host.className = 'page';
  main.replaceChildren(host);
  const instance = match.r.page.mount(host, match.m.slice(1).map((p) => p && decodeURIComponent(p)));
  document.title = `${instance.title ?? 'pgfleet'} · pgfleet`;
  current = { instance, timer: null };
  if (!instance.refresh) return;
  let busy = false;
  const tick = async () => {
    if (busy || mine !== generation) return;
    busy = true;
    try {
      await instance.refresh();
      if (mine === generation) {
        main.dataset.updated = String(Date.now());
        if (statusLine.dataset.kind === 'stale') showStatus('');
      }
    } catch (error) {
      if (mine === generation && error.status !== 401) {
        showStatus(`Could not refresh: ${error.message}`, 'stale');
      }
    } finally {
      busy = false;
    }
  };
  await tick();
  if (mine === generation) current.timer = setInterval(tick, POLL_MS);
}

setUnauthenticatedHandler(() => {
  session.clear();
  renderSession();
  if (location.hash !== '#/login') location.hash = '#/login';
});

document.getElementById('logout').addEventListener('click', () => {
  session.clear();
  location.hash = '#/login';
});
window.addEventListener('hashchange', route);
route();

export { api };
