// Rollouts: start one (a config change, or a restart of the agents onto the binary now on
// their disk), follow its waves and per-agent progress live, pause / resume / abort, the version
// diff it applies, and the history.
import { api, session } from '../api.js';
import { badge, formatTime, html, num, renderDiff, setHtml, version } from '../util.js';

const configCache = new Map();
async function configText(v) {
  if (!num(v)) return '';
  if (!configCache.has(num(v))) {
    configCache.set(num(v), api.get('GetConfig', { version: num(v) }).then((c) => c.iniText ?? ''));
  }
  return configCache.get(num(v));
}

// What a rollout moves: "v3 → v4" for a config change; for a restart, the config the agents
// keep running and which of them restart.
function isRestart(rollout) {
  return rollout.kind === 'restart';
}
function whatMoves(rollout) {
  if (!isRestart(rollout)) return html`${version(rollout.fromVersion)} → ${version(rollout.toVersion)}`;
  const which = rollout.binaryVersion ? ` (binary ${rollout.binaryVersion} only)` : rollout.onlyOutdated ? ' (outdated binaries only)' : '';
  return html`restart on ${version(rollout.toVersion)}${which}`;
}
function kindBadge(rollout) {
  return badge(isRestart(rollout) ? 'restart' : 'config', isRestart(rollout) ? 'warn' : 'info');
}

function waveProgress(rollout) {
  const waves = rollout.waves ?? [];
  const agents = rollout.agents ?? [];
  return html`<ol class="waves">${waves.map((w, i) => {
    const inWave = agents.filter((a) => num(a.wave) === i);
    const applied = inWave.filter((a) => a.state === 'applied').length;
    const current = i === num(rollout.currentWave) && (rollout.state === 'running' || rollout.state === 'paused');
    return html`<li class="wave${current ? ' current' : ''}">
      <div class="wave-head"><strong>Wave ${i + 1}</strong> <span class="muted">(${w})</span>
        ${current ? badge(rollout.phase || 'current', 'info') : ''}
        <span>${applied} / ${inWave.length} applied</span></div>
      <progress max="${Math.max(1, inWave.length)}" value="${applied}" aria-label="Wave ${i + 1}: ${applied} of ${inWave.length} agents applied"></progress>
      <ul class="chips">${inWave.map((a) => html`<li>${a.agentId} ${badge(a.state)}${a.error ? html` <span class="error-text">${a.error}</span>` : ''}</li>`)}</ul>
    </li>`;
  })}</ol>`;
}

export const rolloutsPage = {
  mount(main, [idParam]) {
    const operate = session.canOperate;
    main.innerHTML = `
      <h1>Rollouts</h1>
      <section aria-labelledby="start-title" class="card">
        <h2 id="start-title">Start a rollout</h2>
        <form id="start-form" class="grid-form">
          <label for="ro-env">Environment</label><select id="ro-env" name="environment" required></select>
          <label for="ro-kind">Kind</label><select id="ro-kind" name="kind" aria-describedby="ro-kind-help">
            <option value="config">Config change</option><option value="restart">Restart agents</option></select>
          <span id="ro-kind-help" class="help">A restart hands every wave's agents over to a new process of the binary on their disk, without dropping a client.</span>
          <label for="ro-version">Version</label><select id="ro-version" name="version" required></select>
          <label for="ro-outdated">Only outdated</label><input id="ro-outdated" name="onlyOutdated" type="checkbox" aria-describedby="ro-outdated-help" disabled>
          <span id="ro-outdated-help" class="help">Restart only agents whose binary on disk differs from the one they run.</span>
          <label for="ro-waves">Waves</label><input id="ro-waves" name="waves" value="1,25%,100%" aria-describedby="ro-waves-help">
          <span id="ro-waves-help" class="help">Comma-separated: a count or a cumulative share.</span>
          <label for="ro-bake">Bake (seconds)</label><input id="ro-bake" name="bake" type="number" min="0" value="60">
          <button type="submit" class="op">Start rollout</button>
        </form>
        <p id="start-result" role="status"></p>
      </section>
      <section aria-labelledby="current-title"><h2 id="current-title">Rollout</h2><div id="current"></div>
        <div class="actions" id="rollout-actions">
          <button type="button" class="op" data-action="PauseRollout">Pause rollout</button>
          <button type="button" class="op" data-action="ResumeRollout">Resume rollout</button>
          <button type="button" class="op danger" data-action="AbortRollout">Abort rollout</button>
        </div>
        <p id="action-result" role="status"></p>
        <h3>Version diff</h3><div id="diff"></div>
      </section>
      <section aria-labelledby="history-title"><h2 id="history-title">History</h2><div id="history"></div></section>`;
    main.querySelectorAll('button.op').forEach((b) => {
      b.disabled = !operate;
      if (!operate) b.title = 'Needs the operator role';
    });
    let selected = idParam ? num(idParam) : 0;
    let shown = null;
    let diffKey = '';
    const envSelect = main.querySelector('#ro-env');
    const versionSelect = main.querySelector('#ro-version');
    const kindSelect = main.querySelector('#ro-kind');
    const outdatedBox = main.querySelector('#ro-outdated');
    // A restart keeps each agent's config: the version list is for config changes only.
    kindSelect.addEventListener('change', () => {
      const restart = kindSelect.value === 'restart';
      versionSelect.disabled = restart;
      versionSelect.required = !restart;
      outdatedBox.disabled = !restart;
      if (!restart) outdatedBox.checked = false;
    });

    async function loadVersions() {
      const env = envSelect.value;
      if (!env) return;
      const list = await api.get('ListConfigs', { environment: env });
      setHtml(versionSelect, html`${(list.versions ?? []).map((v) => html`<option value="${num(v.version)}">${version(v.version)} — ${v.message || 'no message'}</option>`)}`);
    }
    envSelect.addEventListener('change', () => loadVersions().catch(() => {}));
    (async () => {
      const envs = await api.get('ListEnvironments');
      setHtml(envSelect, html`${(envs.environments ?? []).map((e) => html`<option>${e.name}</option>`)}`);
      await loadVersions();
    })().catch(() => {});

    main.querySelector('#start-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!operate) return;
      const result = main.querySelector('#start-result');
      const restart = kindSelect.value === 'restart';
      const request = {
        environment: envSelect.value,
        waves: main.querySelector('#ro-waves').value.split(',').map((w) => w.trim()).filter(Boolean),
        bakeSeconds: num(main.querySelector('#ro-bake').value),
        ...(restart ? { restart: true, onlyOutdated: outdatedBox.checked } : { version: num(versionSelect.value) }),
      };
      try {
        const rollout = await api.post('StartRollout', request);
        result.textContent = `${restart ? 'Restart rollout' : 'Rollout'} #${num(rollout.id)} started.`;
        location.hash = `#/rollouts/${num(rollout.id)}`;
      } catch (e) {
        result.textContent = `Not started: ${e.message}`;
      }
    });
    main.querySelector('#rollout-actions').addEventListener('click', async (event) => {
      const action = event.target.dataset?.action;
      if (!action || !operate || !shown) return;
      const result = main.querySelector('#action-result');
      try {
        const rollout = await api.post(action, { id: num(shown.id) });
        result.textContent = `Rollout #${num(rollout.id)} is ${rollout.state}.`;
      } catch (e) {
        result.textContent = `Refused: ${e.message}`;
      }
    });

    return {
      title: 'Rollouts',
      async refresh() {
        const list = (await api.get('ListRollouts')).rollouts ?? [];
        if (!selected && list.length) selected = num(list[0].id);
        shown = list.find((r) => num(r.id) === selected) ?? null;
        setHtml(main.querySelector('#current'), !shown ? html`<p class="muted">No rollout yet.</p>` : html`
          <div id="rollout-detail" data-state="${shown.state}" data-kind="${isRestart(shown) ? 'restart' : 'config'}">
          <p class="rollout-head"><strong>#${num(shown.id)}</strong> ${kindBadge(shown)} ${shown.environment}${shown.selector ? html` <code>-l ${shown.selector}</code>` : ''}:
            ${whatMoves(shown)} ${badge(shown.state)}
            ${shown.phase ? html`<span class="muted">phase ${shown.phase}</span>` : ''}
            <span class="muted">by ${shown.createdBy}, ${formatTime(shown.createdUnixMs)}, bake ${num(shown.bakeSeconds)}s</span></p>
          ${shown.reason ? html`<p class="${shown.state === 'failed' ? 'error-text' : 'muted'}">${shown.failedAgent ? `${shown.failedAgent}: ` : ''}${shown.reason}</p>` : ''}
          ${waveProgress(shown)}</div>`);
        const active = shown && (shown.state === 'running' || shown.state === 'paused');
        main.querySelector('#rollout-actions').hidden = !active;
        if (shown) {
          main.querySelector('[data-action="PauseRollout"]').disabled = !operate || shown.state !== 'running';
          main.querySelector('[data-action="ResumeRollout"]').disabled = !operate || shown.state !== 'paused';
          main.querySelector('[data-action="AbortRollout"]').disabled = !operate;
          const key = isRestart(shown) ? `restart-${num(shown.id)}` : `${num(shown.fromVersion)}-${num(shown.toVersion)}`;
          if (key !== diffKey) {
            diffKey = key;
            if (isRestart(shown)) {
              setHtml(main.querySelector('#diff'), html`<p class="muted">A restart changes no config: the agents keep ${version(shown.toVersion)}.</p>`);
            } else {
              const [from, to] = await Promise.all([configText(shown.fromVersion), configText(shown.toVersion)]);
              setHtml(main.querySelector('#diff'), html`<p class="muted">${version(shown.fromVersion)} → ${version(shown.toVersion)}</p>${renderDiff(from, to)}`);
            }
          }
        }
        setHtml(main.querySelector('#history'), list.length === 0 ? html`<p class="muted">None.</p>` : html`
          <table><caption class="sr-only">Rollout history</caption><thead><tr><th scope="col">#</th><th scope="col">Kind</th><th scope="col">Environment</th>
            <th scope="col">Versions</th><th scope="col">Waves</th><th scope="col">State</th><th scope="col">Started</th>
            <th scope="col">Finished</th><th scope="col">By</th><th scope="col">Reason</th></tr></thead>
          <tbody>${list.map((r) => html`<tr${num(r.id) === selected ? html` aria-current="true" class="selected"` : ''}>
            <th scope="row"><a href="#/rollouts/${num(r.id)}">#${num(r.id)}</a></th><td>${kindBadge(r)}</td><td>${r.environment}</td>
            <td>${whatMoves(r)}</td><td>${(r.waves ?? []).join(', ')}</td>
            <td>${badge(r.state)}</td><td>${formatTime(r.createdUnixMs)}</td><td>${formatTime(r.finishedUnixMs)}</td>
            <td>${r.createdBy}</td><td>${r.reason || ''}</td></tr>`)}</tbody></table>`);
      },
    };
  },
};
