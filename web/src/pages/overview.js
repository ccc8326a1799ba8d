// Fleet overview: environments, agents up/down, applied vs desired versions, drift, active
// rollouts and maintenance windows at a glance.
import { api } from '../api.js';
import { badge, formatAge, html, num, setHtml, version } from '../util.js';

const OPEN_WINDOW = new Set(['scheduled', 'pausing', 'paused', 'resuming']);

function labelText(agent) {
  return Object.entries(agent.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`).join(',');
}

function poolTotals(agent) {
  const pools = agent.lastMetrics?.pools ?? [];
  return pools.reduce((t, p) => ({
    active: t.active + num(p.clActive), waiting: t.waiting + num(p.clWaiting),
    servers: t.servers + num(p.svActive) + num(p.svIdle) + num(p.svUsed),
  }), { active: 0, waiting: 0, servers: 0 });
}

export function agentDrift(agent) {
  if (!agent.connected) return badge('down', 'down');
  if (num(agent.desiredVersion) === 0) return badge('no desired version', 'neutral');
  if (num(agent.appliedVersion) === num(agent.desiredVersion)) return badge('in sync', 'ok');
  return badge('drift', 'warn');
}

// Restart-only keys the agent's running config leaves pending (empty: none).
export function restartPending(agent) {
  const keys = agent.restartPending ?? [];
  return keys.length ? badge(`restart pending: ${keys.join(', ')}`, 'warn') : '';
}

export const overviewPage = {
  mount(main) {
    main.innerHTML = `
      <h1>Fleet</h1>
      <div class="summary" id="summary" aria-label="Fleet summary"></div>
      <section aria-labelledby="envs-title"><h2 id="envs-title">Environments</h2><div id="envs"></div></section>
      <div class="two-col">
        <section aria-labelledby="active-rollouts-title"><h2 id="active-rollouts-title">Active rollouts</h2><div id="active-rollouts"></div></section>
        <section aria-labelledby="windows-title"><h2 id="windows-title">Maintenance windows</h2><div id="open-windows"></div></section>
      </div>
      <section aria-labelledby="agents-title"><h2 id="agents-title">Agents</h2>
        <form class="selector" id="selector-form" role="search">
          <label for="agent-selector">Label selector</label>
          <input id="agent-selector" name="selector" type="search" autocomplete="off" spellcheck="false"
            placeholder="zone=a, size in (large,xlarge), !canary" aria-describedby="selector-error">
          <span id="selector-error" class="error" role="alert"></span>
        </form>
        <div id="agents"></div></section>`;
    const selectorInput = main.querySelector('#agent-selector');
    const selectorError = main.querySelector('#selector-error');
    let page;
    // The controller parses the selector (the same code as `fleetctl agents list -l`): its
    // error, which names the column, is shown next to the box and the last good table stays.
    selectorInput.addEventListener('input', () => { page.refresh().catch(() => {}); });
    main.querySelector('#selector-form').addEventListener('submit', (event) => event.preventDefault());
    page = {
      title: 'Fleet',
      async refresh() {
        const selector = selectorInput.value.trim();
        const [envs, agents, rollouts, windows, selected] = await Promise.all([
          api.get('ListEnvironments'), api.get('ListAgents'), api.get('ListRollouts'), api.get('ListWindows'),
          selector === '' ? null : api.get('ListAgents', { selector }).catch((error) => ({ error })),
        ]);
        if (selector !== selectorInput.value.trim()) return;  // Typed on meanwhile: a newer refresh follows.
        const agentList = agents.agents ?? [];
        const up = agentList.filter((a) => a.connected).length;
        const drifting = agentList.filter((a) => a.connected && num(a.desiredVersion) && num(a.appliedVersion) !== num(a.desiredVersion)).length;
        const activeRollouts = (rollouts.rollouts ?? []).filter((r) => r.state === 'running' || r.state === 'paused');
        const openWindows = (windows.windows ?? []).filter((w) => OPEN_WINDOW.has(w.state));
        setHtml(main.querySelector('#summary'), html`
          <div class="stat"><span class="stat-value" data-testid="agents-up">${up}</span><span class="stat-label">agents up</span></div>
          <div class="stat"><span class="stat-value">${agentList.length - up}</span><span class="stat-label">agents down</span></div>
          <div class="stat"><span class="stat-value">${drifting}</span><span class="stat-label">drifting</span></div>
          <div class="stat"><span class="stat-value">${activeRollouts.length}</span><span class="stat-label">active rollouts</span></div>
          <div class="stat"><span class="stat-value">${openWindows.length}</span><span class="stat-label">open windows</span></div>`);

        const envWindows = (env) => openWindows.filter((w) => w.environment === env);
        setHtml(main.querySelector('#envs'), (envs.environments ?? []).length === 0
          ? html`<p class="muted">No environment yet: agents create theirs when they connect.</p>`
          : html`<table><caption class="sr-only">Environments</caption><thead><tr>
              <th scope="col">Environment</th><th scope="col">Agents up</th><th scope="col">Desired</th>
              <th scope="col">Converged</th><th scope="col">Upstream</th><th scope="col">Rollout</th><th scope="col">Maintenance</th></tr></thead>
            <tbody>${(envs.environments ?? []).map((e) => html`<tr>
              <th scope="row">${e.name}</th>
              <td>${num(e.agentsConnected)} / ${num(e.agentsTotal)}</td>
              <td>${version(e.desiredVersion)}</td>
              <td>${num(e.agentsConverged)} / ${num(e.agentsConnected)} ${num(e.agentsConverged) < num(e.agentsConnected) && num(e.desiredVersion) ? badge('drift', 'warn') : ''}</td>
              <td>${e.upstream || '—'}</td>
              <td>${num(e.activeRollout) ? html`<a href="#/rollouts/${num(e.activeRollout)}">#${num(e.activeRollout)}</a>` : '—'}</td>
              <td>${envWindows(e.name).map((w) => html`${badge(w.state)} ${w.database || 'all databases'} `)}${envWindows(e.name).length ? '' : '—'}</td>
            </tr>`)}</tbody></table>`);

        setHtml(main.querySelector('#active-rollouts'), activeRollouts.length === 0
          ? html`<p class="muted">None.</p>`
          : html`<ul class="plain">${activeRollouts.map((r) => html`<li>
              <a href="#/rollouts/${num(r.id)}">#${num(r.id)}</a> ${r.environment}: ${version(r.fromVersion)} → ${version(r.toVersion)}
              ${badge(r.state)} wave ${num(r.currentWave) + 1}/${(r.waves ?? []).length} (${r.phase})</li>`)}</ul>`);

        setHtml(main.querySelector('#open-windows'), openWindows.length === 0
          ? html`<p class="muted">None open.</p>`
          : html`<ul class="plain">${openWindows.map((w) => html`<li>
              <a href="#/maintenance">#${num(w.id)}</a> ${w.environment} / ${w.database || 'all databases'} ${badge(w.state)}
              until ${new Date(num(w.endsUnixMs)).toLocaleTimeString()}</li>`)}</ul>`);

        if (selected?.error) {
          selectorError.textContent = selected.error.message;
          selectorInput.setAttribute('aria-invalid', 'true');
          return;
        }
        selectorError.textContent = '';
        selectorInput.removeAttribute('aria-invalid');
        const shown = selected ? (selected.agents ?? []) : agentList;
        setHtml(main.querySelector('#agents'), agentList.length === 0
          ? html`<p class="muted">No agent has connected yet.</p>`
          : shown.length === 0
          ? html`<p class="muted" id="no-match">No agent matches ${selector}.</p>`
          : html`<table id="agents-table"><caption class="sr-only">Agents</caption><thead><tr>
              <th scope="col">Agent</th><th scope="col">Environment</th><th scope="col">Status</th>
              <th scope="col">Applied</th><th scope="col">Desired</th><th scope="col">Config</th>
              <th scope="col">Clients active</th><th scope="col">Waiting</th><th scope="col">Servers</th>
              <th scope="col">Labels</th><th scope="col">Last seen</th><th scope="col">Last error</th></tr></thead>
            <tbody>${shown.map((a) => {
              const t = poolTotals(a);
              return html`<tr data-agent="${a.agentId}">
                <th scope="row"><a href="#/agents/${encodeURIComponent(a.agentId)}">${a.agentId}</a></th>
                <td>${a.environment}</td>
                <td>${a.connected ? badge('up', 'ok') : badge('down', 'down')}</td>
                <td>${version(a.appliedVersion)}</td><td>${version(a.desiredVersion)}</td>
                <td>${agentDrift(a)} ${restartPending(a)}</td>
                <td class="num">${t.active}</td><td class="num">${t.waiting}</td><td class="num">${t.servers}</td>
                <td class="labels">${labelText(a)}</td>
                <td>${formatAge(a.lastSeenUnixMs)}</td>
                <td class="error-text">${a.lastError || ''}</td></tr>`;
            })}</tbody></table>`);
      },
    };
    return page;
  },
};
