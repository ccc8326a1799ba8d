// Maintenance windows: pause now or schedule, live drain status per agent, resume, cancel.
import { api, session } from '../api.js';
import { badge, formatDuration, formatTime, html, num, setHtml } from '../util.js';

const OPEN = new Set(['scheduled', 'pausing', 'paused', 'resuming']);

function windowAgents(w) {
  const agents = w.agents ?? [];
  if (agents.length === 0) return html`<p class="muted">No agent status yet.</p>`;
  return html`<table class="window-agents" data-window="${num(w.id)}"><caption class="sr-only">Drain status of window ${num(w.id)}</caption>
    <thead><tr><th scope="col">Agent</th><th scope="col">State</th><th scope="col">Servers in use</th><th scope="col">Clients waiting</th>
    <th scope="col">Oldest transaction</th></tr></thead>
    <tbody>${agents.map((a) => html`<tr data-agent="${a.agentId}" data-state="${a.state}">
      <th scope="row">${a.agentId}</th><td>${badge(a.state === 'paused' ? 'paused (drained)' : a.state, a.state)}</td>
      <td class="num">${num(a.serversInUse)}</td><td class="num">${num(a.clientsWaiting)}</td>
      <td>${a.oldestClient ? `${a.oldestClient}, ${formatDuration(num(a.oldestXactAgeMs) / 1000)}: ${a.oldestQuery}` : '—'}</td></tr>`)}</tbody></table>`;
}

export const maintenancePage = {
  mount(main) {
    const operate = session.canOperate;
    main.innerHTML = `
      <h1>Maintenance windows</h1>
      <section aria-labelledby="mw-form-title" class="card">
        <h2 id="mw-form-title">Pause a database across an environment</h2>
        <form id="mw-form" class="grid-form">
          <label for="mw-env">Environment</label><select id="mw-env" name="environment" required></select>
          <label for="mw-db">Database</label><input id="mw-db" name="database" placeholder="all databases">
          <label for="mw-duration">Duration (minutes)</label><input id="mw-duration" name="duration" type="number" min="1" value="15">
          <label for="mw-drain">Drain timeout (seconds)</label><input id="mw-drain" name="drain" type="number" min="1" value="60">
          <label for="mw-reason">Reason</label><input id="mw-reason" name="reason" placeholder="VACUUM FULL">
          <label for="mw-start">Start at (for Schedule)</label><input id="mw-start" name="start" type="datetime-local">
          <div class="buttons">
            <button type="submit" class="op" data-kind="pause">Pause now</button>
            <button type="button" class="op secondary" id="mw-schedule">Schedule</button>
          </div>
        </form>
        <p id="mw-result" role="status"></p>
      </section>
      <section aria-labelledby="mw-open-title"><h2 id="mw-open-title">Open windows</h2><div id="mw-open"></div></section>
      <section aria-labelledby="mw-history-title"><h2 id="mw-history-title">History</h2><div id="mw-history"></div></section>`;
    main.querySelectorAll('#mw-form button.op').forEach((b) => {
      b.disabled = !operate;
      if (!operate) b.title = 'Needs the operator role';
    });
    const result = main.querySelector('#mw-result');
    const value = (id) => main.querySelector(id).value.trim();
    api.get('ListEnvironments').then((envs) => {
      setHtml(main.querySelector('#mw-env'), html`${(envs.environments ?? []).map((e) => html`<option>${e.name}</option>`)}`);
    }).catch(() => {});

    async function submit(kind) {
      if (!operate) return;
      const common = {
        environment: value('#mw-env'), database: value('#mw-db'), reason: value('#mw-reason'),
        durationSeconds: Math.round(num(value('#mw-duration')) * 60), drainTimeoutSeconds: num(value('#mw-drain')),
      };
      try {
        let w;
        if (kind === 'pause') {
          result.textContent = `Pausing ${common.database || 'all databases'} in ${common.environment}…`;
          w = await api.post('Pause', common);
        } else {
          const start = value('#mw-start');
          if (!start) { result.textContent = 'Choose when the window starts.'; return; }
          w = await api.post('Schedule', { ...common, startsUnixMs: new Date(start).getTime() });
        }
        result.textContent = `Window #${num(w.id)} is ${w.state}.`;
      } catch (e) {
        result.textContent = `Refused: ${e.message}`;
      }
    }
    main.querySelector('#mw-form').addEventListener('submit', (event) => { event.preventDefault(); submit('pause'); });
    main.querySelector('#mw-schedule').addEventListener('click', () => submit('schedule'));
    main.addEventListener('click', async (event) => {
      const button = event.target.closest('button[data-window-action]');
      if (!button || !operate) return;
      const action = button.dataset.windowAction;
      try {
        const w = action === 'resume'
          ? await api.post('Resume', { environment: button.dataset.environment, database: button.dataset.database })
          : await api.post('CancelWindow', { id: num(button.dataset.id) });
        result.textContent = `Window #${num(w.id)} is ${w.state}.`;
      } catch (e) {
        result.textContent = `Refused: ${e.message}`;
      }
    });

    return {
      title: 'Maintenance',
      async refresh() {
        const windows = (await api.get('ListWindows')).windows ?? [];
        const open = windows.filter((w) => OPEN.has(w.state));
        const disabled = operate ? '' : html` disabled title="Needs the operator role"`;
        setHtml(main.querySelector('#mw-open'), open.length === 0 ? html`<p class="muted">No open window.</p>` : html`${open.map((w) => html`
          <article class="card window" data-window="${num(w.id)}" data-state="${w.state}" aria-labelledby="w${num(w.id)}-title">
            <h3 id="w${num(w.id)}-title">#${num(w.id)} ${w.environment} / ${w.database || 'all databases'} ${badge(w.state)}</h3>
            <p>${formatTime(w.startsUnixMs)} → ${formatTime(w.endsUnixMs)}${w.reason ? ` · ${w.reason}` : ''} · by ${w.createdBy}
              ${(w.skipAgents ?? []).length ? ` · skipping ${(w.skipAgents ?? []).join(', ')}` : ''}</p>
            ${windowAgents(w)}
            <div class="actions">
              ${w.state === 'scheduled'
                ? html`<button type="button" class="danger" data-window-action="cancel" data-id="${num(w.id)}"${disabled}>Cancel window</button>`
                : html`<button type="button" data-window-action="resume" data-environment="${w.environment}" data-database="${w.database}"${disabled}>Resume now</button>`}
            </div>
          </article>`)}`);
        setHtml(main.querySelector('#mw-history'), windows.length === 0 ? html`<p class="muted">None.</p>` : html`
          <table><caption class="sr-only">All windows</caption><thead><tr><th scope="col">#</th><th scope="col">Environment</th><th scope="col">Database</th>
            <th scope="col">Starts</th><th scope="col">Ends</th><th scope="col">State</th><th scope="col">By</th><th scope="col">Reason / failure</th></tr></thead>
          <tbody>${windows.map((w) => html`<tr><th scope="row">#${num(w.id)}</th><td>${w.environment}</td><td>${w.database || 'all'}</td>
            <td>${formatTime(w.startsUnixMs)}</td><td>${formatTime(w.endsUnixMs)}</td><td>${badge(w.state)}</td><td>${w.createdBy}</td>
            <td${w.failure ? html` class="error-text"` : ''}>${w.failure || w.reason || ''}</td></tr>`)}</tbody></table>`);
      },
    };
  },
};
