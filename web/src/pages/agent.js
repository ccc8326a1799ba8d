// One agent: identity, config versions, its pools (like SHOW POOLS) and live charts of
// clients, servers, transactions per second and average query / wait times.
import { api, session } from '../api.js';
import { LiveChart } from '../charts.js';
import { badge, formatAge, html, num, setHtml, version } from '../util.js';
import { agentDrift, restartPending } from './overview.js';

const WINDOW_MS = 5 * 60 * 1000;

function sum(list, field) { return (list ?? []).reduce((t, x) => t + num(x[field]), 0); }

// Per-sample points for the charts; rates come from consecutive samples' counters.
export function chartPoints(samples) {
  const points = { clients: [], servers: [], tps: [], times: [] };
  samples.forEach((s, i) => {
    const t = num(s.timestampUnixMs) / 1000;
    points.clients.push({ t, values: [sum(s.pools, 'clActive'), sum(s.pools, 'clWaiting')] });
    points.servers.push({ t, values: [sum(s.pools, 'svActive'), sum(s.pools, 'svIdle')] });
    if (i === 0) return;
    const prev = samples[i - 1];
    const dt = (num(s.timestampUnixMs) - num(prev.timestampUnixMs)) / 1000;
    const delta = (field) => Math.max(0, sum(s.databases, field) - sum(prev.databases, field));
    if (dt <= 0) return;
    const xacts = delta('xactCount'), queries = delta('queryCount');
    points.tps.push({ t, values: [Math.round((xacts / dt) * 10) / 10] });
    points.times.push({ t, values: [
      queries ? Math.round(delta('queryTimeUs') / queries) / 1000 : 0,
      xacts ? Math.round(delta('waitTimeUs') / xacts) / 1000 : 0,
    ] });
  });
  return points;
}

export const agentPage = {
  mount(main, [agentId]) {
    main.innerHTML = `
      <nav aria-label="Breadcrumb" class="breadcrumb"><a href="#/">Fleet</a> › <span id="crumb"></span></nav>
      <h1 id="agent-title"></h1>
      <div id="agent-facts"></div>
      <section aria-labelledby="charts-title"><h2 id="charts-title">Live</h2><div class="charts" id="charts"></div></section>
      <section aria-labelledby="pools-title"><h2 id="pools-title">Pools</h2><div id="pools"></div></section>
      <section aria-labelledby="commands-title"><h2 id="commands-title">Commands</h2>
        <form id="command-form" class="inline-form">
          <label for="command-db">Database</label>
          <input id="command-db" name="database" placeholder="all databases" list="command-dbs">
          <datalist id="command-dbs"></datalist>
          <button type="button" data-command="pause" class="op">Pause on this agent</button>
          <button type="button" data-command="resume" class="op">Resume</button>
          <button type="button" data-command="reload" class="op secondary">Reload config</button>
        </form>
        <p id="command-result" role="status"></p>
      </section>`;
    main.querySelector('#crumb').textContent = agentId;
    main.querySelector('#agent-title').textContent = `Agent ${agentId}`;
    const chartsHost = main.querySelector('#charts');
    const charts = {
      clients: new LiveChart(chartsHost, { title: 'Clients: active and waiting', series: [{ label: 'active' }, { label: 'waiting' }] }),
      servers: new LiveChart(chartsHost, { title: 'Server connections: active and idle', series: [{ label: 'active' }, { label: 'idle' }] }),
      tps: new LiveChart(chartsHost, { title: 'Transactions per second', series: [{ label: 'tps' }] }),
      times: new LiveChart(chartsHost, { title: 'Average query and wait time (ms)', series: [{ label: 'query ms' }, { label: 'wait ms' }], valueFormat: (v) => v.toFixed(2) }),
    };
    Object.entries(charts).forEach(([name, chart]) => { chart.figure.dataset.chart = name; });
    const onResize = () => Object.values(charts).forEach((c) => c.resize());
    window.addEventListener('resize', onResize);

    const operate = session.canOperate;
    main.querySelectorAll('button.op').forEach((b) => {
      b.disabled = !operate;
      if (!operate) b.title = 'Needs the operator role';
    });
    main.querySelector('#command-form').addEventListener('click', async (event) => {
      const kind = event.target.dataset?.command;
      if (!kind || !operate) return;
      const database = main.querySelector('#command-db').value.trim();
      const command = kind === 'reload' ? { reload: {} } : { [kind]: { database } };
      const result = main.querySelector('#command-result');
      result.textContent = `Sending ${kind}…`;
      try {
        const response = await api.post('SendCommand', { agentId, command });
        result.textContent = (response.outcomes ?? []).map((o) => `${o.agentId}: ${o.ok ? 'ok' : `failed: ${o.error}`}`).join('; ') || 'sent';
      } catch (e) {
        result.textContent = `${kind} refused: ${e.message}`;
      }
    });

    let samples = [];
    return {
      title: `Agent ${agentId}`,
      unmount() {
        window.removeEventListener('resize', onResize);
        Object.values(charts).forEach((c) => c.destroy());
      },
      async refresh() {
        const since = samples.length ? num(samples[samples.length - 1].timestampUnixMs) : Date.now() - WINDOW_MS;
        const [agent, metrics] = await Promise.all([
          api.get('GetAgent', { agentId }),
          api.get('AgentMetrics', { agentId, sinceUnixMs: since }),
        ]);
        samples = samples.concat(metrics.samples ?? []).filter((s) => num(s.timestampUnixMs) >= Date.now() - WINDOW_MS);
        const points = chartPoints(samples);
        Object.entries(charts).forEach(([name, chart]) => chart.set(points[name]));

        const labels = Object.entries(agent.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(', ');
        setHtml(main.querySelector('#agent-facts'), html`<dl class="facts">
          <div><dt>Status</dt><dd>${agent.connected ? badge('up', 'ok') : badge('down', 'down')}</dd></div>
          <div><dt>Environment</dt><dd>${agent.environment}</dd></div>
          <div><dt>Config</dt><dd>applied ${version(agent.appliedVersion)}, desired ${version(agent.desiredVersion)} ${agentDrift(agent)} ${restartPending(agent)}</dd></div>
          <div><dt>Host</dt><dd>${agent.hostname || '—'}</dd></div>
          <div><dt>Agent version</dt><dd>${agent.agentVersion || '—'}</dd></div>
          <div><dt>Labels</dt><dd>${labels || '—'}</dd></div>
          <div><dt>Last seen</dt><dd>${formatAge(agent.lastSeenUnixMs)}</dd></div>
          <div><dt>Clients</dt><dd>${num(agent.lastMetrics?.clientCount)}</dd></div>
          ${agent.lastError ? html`<div><dt>Last error</dt><dd class="error-text">${agent.lastError}</dd></div>` : ''}
        </dl>`);

        const pools = agent.lastMetrics?.pools ?? [];
        const pauses = agent.lastMetrics?.pauses ?? [];
        setHtml(main.querySelector('#command-dbs'), html`${[...new Set(pools.map((p) => p.database))].map((d) => html`<option value="${d}"></option>`)}`);
        setHtml(main.querySelector('#pools'), html`
          ${pauses.map((p) => html`<p>${badge(p.drained ? 'paused (drained)' : 'pausing', p.drained ? 'paused' : 'pausing')}
             ${p.database || 'all databases'}${num(p.deadlineUnixMs) ? ` until ${new Date(num(p.deadlineUnixMs)).toLocaleTimeString()}` : ''}</p>`)}
          ${pools.length === 0 ? html`<p class="muted">No pool yet (pools appear with their first client).</p>` : html`
          <table id="pools-table"><caption class="sr-only">Pools, as SHOW POOLS</caption><thead><tr>
            <th scope="col">database</th><th scope="col">user</th><th scope="col">cl_active</th><th scope="col">cl_waiting</th>
            <th scope="col">sv_active</th><th scope="col">sv_idle</th><th scope="col">sv_used</th><th scope="col">sv_login</th>
            <th scope="col">maxwait (ms)</th><th scope="col">pool_mode</th></tr></thead>
          <tbody>${pools.map((p) => html`<tr>
            <th scope="row">${p.database}</th><td>${p.user}</td>
            <td class="num">${num(p.clActive)}</td><td class="num">${num(p.clWaiting)}</td>
            <td class="num">${num(p.svActive)}</td><td class="num">${num(p.svIdle)}</td>
            <td class="num">${num(p.svUsed)}</td><td class="num">${num(p.svLogin)}</td>
            <td class="num">${(num(p.maxwaitUs) / 1000).toFixed(1)}</td><td>${p.poolMode}</td></tr>`)}</tbody></table>`}`);
      },
    };
  },
};
