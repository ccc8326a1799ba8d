// Config versions of an environment: the history, a diff between any two versions, and one
// version in full: its base ini, its overlays in precedence order, its files and credentials
// as fingerprints (changed or unchanged against the version it was made from), and the ini it
// renders to for a chosen agent (RenderConfig, the same code the controller sends agents).
// Secret material never reaches the browser: the API returns files as fingerprints only.
import { api } from '../api.js';
import { badge, formatTime, html, num, renderDiff, setHtml, version } from '../util.js';

const labelText = (labels) => Object.entries(labels ?? {})
  .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${k}=${v}`).join(',');

// How the controller names an overlay in renders and errors (ConfigOverlay::Describe).
function describeOverlay(overlay, position) {
  if (overlay.name) return `overlay "${overlay.name}"`;
  return 'agentId' in overlay
    ? `overlay #${position} (agent ${overlay.agentId})`
    : `overlay #${position} (selector "${overlay.selector ?? ''}")`;
}

// The version's overlays in the order the controller applies them (lowest precedence first):
// label-selector overlays in listed order, then agent-id overlays in listed order.
export function overlaysByPrecedence(overlays) {
  const listed = (overlays ?? []).map((overlay, i) => ({ overlay, position: i + 1, byAgent: 'agentId' in overlay }));
  return [...listed.filter((o) => !o.byAgent), ...listed.filter((o) => o.byAgent)]
    .map((o) => ({ ...o, describe: describeOverlay(o.overlay, o.position) }));
}

// Each file and credential overlap of `current` against `previous` (the version it was made
// from): new, changed, unchanged, or removed (in `previous` only). Fingerprints only.
export function compareSecrets(current, previous) {
  const prevFiles = new Map((previous?.files ?? []).map((f) => [f.key, f]));
  const files = (current.files ?? []).map((f) => {
    const before = prevFiles.get(f.key);
    const state = !previous || !before ? 'new' : before.fingerprint === f.fingerprint ? 'unchanged' : 'changed';
    return { ...f, state, previousFingerprint: before?.fingerprint ?? '' };
  });
  const keys = new Set(files.map((f) => f.key));
  for (const f of previous?.files ?? []) {
    if (!keys.has(f.key)) files.push({ ...f, state: 'removed', previousFingerprint: f.fingerprint, fingerprint: '' });
  }
  const prevOverlaps = new Map((previous?.credentialOverlaps ?? []).map((o) => [o.user, o]));
  const overlaps = (current.credentialOverlaps ?? []).map((o) => {
    const before = prevOverlaps.get(o.user);
    const state = !previous || !before ? 'new' : num(before.expiresUnixMs) === num(o.expiresUnixMs) ? 'unchanged' : 'changed';
    return { ...o, state };
  });
  const users = new Set(overlaps.map((o) => o.user));
  for (const o of previous?.credentialOverlaps ?? []) {
    if (!users.has(o.user)) overlaps.push({ ...o, state: 'removed' });
  }
  return { files, overlaps };
}

const STATE_KIND = { new: 'info', changed: 'warn', unchanged: 'neutral', removed: 'down' };

function overlayList(ordered, applied) {
  if (ordered.length === 0) return html`<p class="muted" id="cfg-overlays-none">No overlays: every agent runs the base.</p>`;
  return html`<ol class="overlays" id="cfg-overlays">${ordered.map((o, rank) => html`
    <li class="overlay card" data-overlay="${o.describe}" data-position="${o.position}">
      <div class="overlay-head"><strong>${rank + 1}.</strong> <span class="overlay-name">${o.describe}</span>
        ${o.byAgent ? badge('agent id', 'info') : badge('label selector', 'neutral')}
        <span class="overlay-target">${o.byAgent ? html`agent <code>${o.overlay.agentId}</code>`
          : o.overlay.selector ? html`selector <code>${o.overlay.selector}</code>` : 'every agent (empty selector)'}</span>
        ${applied === null ? '' : applied.has(o.describe) ? badge('applies to the chosen agent', 'ok') : html`<span class="muted">not for the chosen agent</span>`}
      </div>
      ${(o.overlay.set ?? []).length ? html`<table class="overlay-keys"><caption class="sr-only">Keys ${o.describe} sets</caption>
        <thead><tr><th scope="col">Sets</th><th scope="col">Key</th><th scope="col">Value</th></tr></thead>
        <tbody>${o.overlay.set.map((s) => html`<tr class="overlay-set"><td>[${s.section}]</td><th scope="row">${s.key}</th><td><code>${s.value}</code></td></tr>`)}</tbody></table>` : ''}
      ${(o.overlay.remove ?? []).length ? html`<p class="overlay-remove">Removes: ${(o.overlay.remove).map((r, i) => html`${i ? ', ' : ''}<code>[${r.section}] ${r.key}</code>`)}</p>` : ''}
    </li>`)}</ol>`;
}

function secretsTable(shown, previousVersion, { files, overlaps }) {
  const against = previousVersion ? `vs ${version(previousVersion)}` : 'vs nothing (first version)';
  const fileRows = files.map((f) => html`<tr data-file="${f.key}" data-state="${f.state}">
    <th scope="row">${f.key}</th>
    <td><code class="fingerprint">${f.fingerprint || '—'}</code></td>
    <td class="num">${f.state === 'removed' ? '—' : num(f.size)}</td>
    <td>${f.certSubject ? html`${f.certSubject}<br><span class="muted">expires ${formatTime(f.certNotAfterUnixMs)}</span>` : ''}</td>
    <td>${badge(f.state, STATE_KIND[f.state])}${f.state === 'changed' || f.state === 'removed' ? html` <span class="muted">was <code>${f.previousFingerprint}</code></span>` : ''}</td></tr>`);
  return html`
    ${shown.secretsError ? html`<p class="error-text" id="cfg-secrets-error">${shown.secretsError}</p>` : ''}
    ${files.length === 0 ? html`<p class="muted" id="cfg-files-none">No files or credentials in ${version(shown.version)}.</p>` : html`
    <table id="cfg-files"><caption class="sr-only">Files and credentials of ${version(shown.version)}, as fingerprints</caption>
      <thead><tr><th scope="col">File</th><th scope="col">Fingerprint (sha256)</th><th scope="col">Bytes</th>
        <th scope="col">Certificate</th><th scope="col">${against}</th></tr></thead>
      <tbody>${fileRows}</tbody></table>`}
    ${overlaps.length ? html`<h4>Password rotations open</h4><ul class="plain" id="cfg-overlaps">${overlaps.map((o) => html`
      <li data-user="${o.user}">${o.user}: old secret accepted until ${formatTime(o.expiresUnixMs)} ${badge(o.state, STATE_KIND[o.state])}</li>`)}</ul>` : ''}
    <p class="help-line muted">Contents never leave the controller except to agents: this page shows the first 12 hex digits of each file's sha256.</p>`;
}

export const configsPage = {
  mount(main, [envParam, versionParam]) {
    main.innerHTML = `
      <h1>Config history</h1>
      <form class="inline-form" id="cfg-form">
        <label for="cfg-env">Environment</label><select id="cfg-env"></select>
      </form>
      <div class="two-col wide-right">
        <section aria-labelledby="cfg-list-title"><h2 id="cfg-list-title">Versions</h2><div id="cfg-list"></div></section>
        <section aria-labelledby="cfg-diff-title"><h2 id="cfg-diff-title">Diff</h2>
          <form class="inline-form" id="diff-form">
            <label for="diff-from">From</label><select id="diff-from"></select>
            <label for="diff-to">To</label><select id="diff-to"></select>
          </form>
          <div id="cfg-diff"></div></section>
      </div>
      <section aria-labelledby="cfg-version-title" id="cfg-version-section" hidden>
        <h2 id="cfg-version-title"></h2>
        <div id="cfg-version-facts"></div>
        <div class="two-col">
          <section aria-labelledby="cfg-base-title"><h3 id="cfg-base-title">Base ini</h3><div id="cfg-base"></div></section>
          <section aria-labelledby="cfg-ovl-title"><h3 id="cfg-ovl-title">Overlays, lowest precedence first</h3>
            <p class="muted">Applied in this order: label-selector overlays, then agent-id overlays; a later one wins.</p>
            <div id="cfg-overlay-list"></div></section>
        </div>
        <section aria-labelledby="cfg-files-title"><h3 id="cfg-files-title">Files and credentials</h3><div id="cfg-secrets"></div></section>
        <section aria-labelledby="cfg-render-title"><h3 id="cfg-render-title">Rendered for an agent</h3>
          <form class="inline-form" id="render-form">
            <label for="render-agent">Agent</label><select id="render-agent"></select>
            <span id="render-labels" class="muted"></span>
          </form>
          <div id="cfg-render"></div></section>
      </section>`;
    const envSelect = main.querySelector('#cfg-env');
    const fromSelect = main.querySelector('#diff-from');
    const toSelect = main.querySelector('#diff-to');
    const agentSelect = main.querySelector('#render-agent');
    const query = new URLSearchParams(location.hash.split('?')[1] ?? '');
    let versions = [];
    let desiredVersion = 0;
    let agents = [];
    let env = envParam || '';
    let selected = num(versionParam);   // 0: the desired version (or the newest).
    let chosenAgent = query.get('agent') ?? '';
    let shownKey = '';
    const versionCache = new Map();     // Versions never change once pushed.
    const renderCache = new Map();      // version|agent|labels -> RenderedConfig (or an error).
    let mounted = true;                 // A refresh may still finish after the page is left.

    const getVersion = (v) => {
      if (!versionCache.has(v)) {
        versionCache.set(v, api.get('GetConfig', { version: v }).catch((e) => { versionCache.delete(v); throw e; }));
      }
      return versionCache.get(v);
    };

    // Keeps the URL shareable (#/configs/ENV/N?agent=ID) without remounting the page.
    function rememberInUrl() {
      const agentPart = chosenAgent ? `?agent=${encodeURIComponent(chosenAgent)}` : '';
      const hash = `#/configs/${encodeURIComponent(env)}${selected ? `/${selected}` : ''}${agentPart}`;
      if (mounted && location.hash !== hash) history.replaceState(null, '', hash);
    }

    async function showDiff() {
      const from = num(fromSelect.value), to = num(toSelect.value);
      const key = `${from}-${to}`;
      if (!to || key === shownKey) return;
      shownKey = key;
      const [a, b] = await Promise.all([from ? getVersion(from) : Promise.resolve({ iniText: '' }), getVersion(to)]);
      setHtml(main.querySelector('#cfg-diff'), html`<p class="muted">${from ? version(from) : 'nothing'} → ${version(to)}: ${b.message || ''}</p>${renderDiff(a.iniText, b.iniText)}`);
    }

    async function showVersion() {
      const section = main.querySelector('#cfg-version-section');
      const listed = versions.find((v) => num(v.version) === selected);
      if (!listed) { section.hidden = true; return; }
      const parent = num(listed.parentVersion);
      const [shown, previous] = await Promise.all([getVersion(selected), parent ? getVersion(parent) : null]);
      if (num(shown.version) !== selected) return;  // Another version was picked meanwhile.
      section.hidden = false;
      section.dataset.version = String(selected);
      main.querySelector('#cfg-version-title').textContent = `Version ${version(selected)}`;
      setHtml(main.querySelector('#cfg-version-facts'), html`<dl class="facts">
        <div><dt>Message</dt><dd>${shown.message || '—'}</dd></div>
        <div><dt>Author</dt><dd>${shown.author}</dd></div>
        <div><dt>Pushed</dt><dd>${formatTime(shown.createdUnixMs)}</dd></div>
        <div><dt>Made from</dt><dd>${parent ? version(parent) : 'nothing'}</dd></div>
        <div><dt>sha256</dt><dd><code>${(shown.sha256 || '').slice(0, 12)}</code></dd></div></dl>`);
      setHtml(main.querySelector('#cfg-base'), html`<pre class="ini" id="cfg-base-ini" tabindex="0" aria-label="Base ini of ${version(selected)}">${shown.iniText}</pre>`);
      setHtml(main.querySelector('#cfg-secrets'), secretsTable(shown, parent, compareSecrets(shown, previous)));

      // The agent picker: the environment's agents, their labels beside the choice.
      if (!agents.some((a) => a.agentId === chosenAgent)) chosenAgent = agents[0]?.agentId ?? '';
      setHtml(agentSelect, html`${agents.map((a) => html`<option value="${a.agentId}"${a.agentId === chosenAgent ? html` selected` : ''}>${a.agentId}</option>`)}`);
      agentSelect.value = chosenAgent;
      const agent = agents.find((a) => a.agentId === chosenAgent);
      main.querySelector('#render-labels').textContent = agent ? `labels: ${labelText(agent.labels) || 'none'}` : '';
      rememberInUrl();

      let rendered = null;
      if (agent) {
        // A render depends on the version, the agent and its labels only.
        const key = `${selected}|${agent.agentId}|${labelText(agent.labels)}`;
        if (!renderCache.has(key)) {
          renderCache.set(key, api.get('RenderConfig', { agentId: agent.agentId, version: selected, environment: env })
            .catch((error) => ({ error })));
        }
        rendered = await renderCache.get(key);
        if (rendered.error && rendered.error.status !== 400 && rendered.error.status !== 404) renderCache.delete(key);
        if (num(shown.version) !== selected || agent.agentId !== chosenAgent) return;
      }
      const ordered = overlaysByPrecedence(shown.overlays);
      const applied = rendered && !rendered.error ? new Set(rendered.appliedOverlays ?? []) : null;
      setHtml(main.querySelector('#cfg-overlay-list'), overlayList(ordered, applied));
      const renderHost = main.querySelector('#cfg-render');
      if (!agent) {
        setHtml(renderHost, html`<p class="muted">No agent in ${env} yet.</p>`);
      } else if (rendered.error) {
        setHtml(renderHost, html`<p class="error-text" role="alert">Not rendered for ${agent.agentId}: ${rendered.error.message}</p>`);
      } else {
        const names = rendered.appliedOverlays ?? [];
        setHtml(renderHost, html`<div id="cfg-rendered" data-agent="${rendered.agentId}" data-version="${num(rendered.version)}">
          <p>${version(rendered.version)} as <strong>${rendered.agentId}</strong> runs it
            <span class="muted">(sha256 <code>${(rendered.sha256 || '').slice(0, 12)}</code>)</span>:
            ${names.length ? html`the base, then ${names.map((n, i) => html`${i ? ', then ' : ''}<span class="applied-overlay">${n}</span>`)}.` : 'the base, unchanged (no overlay applies).'}</p>
          <pre class="ini" id="cfg-render-ini" tabindex="0" aria-label="${version(rendered.version)} rendered for ${rendered.agentId}">${rendered.iniText}</pre>
          <details${names.length ? html` open` : ''}><summary>Changes from the base</summary>${renderDiff(shown.iniText, rendered.iniText)}</details>
        </div>`);
      }
    }

    fromSelect.addEventListener('change', () => showDiff().catch(() => {}));
    toSelect.addEventListener('change', () => showDiff().catch(() => {}));
    envSelect.addEventListener('change', () => { location.hash = `#/configs/${encodeURIComponent(envSelect.value)}`; });
    agentSelect.addEventListener('change', () => { chosenAgent = agentSelect.value; showVersion().catch(() => {}); });
    main.addEventListener('click', (event) => {
      const diffButton = event.target.closest('button[data-diff]');
      if (diffButton) {
        const v = versions.find((x) => num(x.version) === num(diffButton.dataset.diff));
        toSelect.value = String(num(v.version));
        fromSelect.value = String(num(v.parentVersion));
        showDiff().catch(() => {});
        return;
      }
      const versionLink = event.target.closest('a[data-version]');
      if (versionLink) {
        event.preventDefault();
        selected = num(versionLink.dataset.version);
        renderList();
        showVersion().catch(() => {});
      }
    });

    function renderList() {
      const desired = desiredVersion;
      setHtml(main.querySelector('#cfg-list'), versions.length === 0 ? html`<p class="muted">No version pushed to ${env} yet.</p>` : html`
        <table id="cfg-table"><caption class="sr-only">Config versions of ${env}</caption><thead><tr><th scope="col">Version</th><th scope="col">Message</th>
          <th scope="col">Author</th><th scope="col">Pushed</th><th scope="col">sha256</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
        <tbody>${versions.map((v) => html`<tr data-version="${num(v.version)}"${num(v.version) === selected ? html` aria-current="true" class="selected"` : ''}>
          <th scope="row"><a href="#/configs/${encodeURIComponent(env)}/${num(v.version)}" data-version="${num(v.version)}">${version(v.version)}</a>${num(v.version) === desired ? html` <span class="badge badge-ok">desired</span>` : ''}
            ${(v.overlays ?? []).length ? html` <span class="badge badge-neutral">${(v.overlays ?? []).length} overlay(s)</span>` : ''}</th>
          <td>${v.message}</td><td>${v.author}</td><td>${formatTime(v.createdUnixMs)}</td><td><code>${(v.sha256 || '').slice(0, 12)}</code></td>
          <td><button type="button" class="secondary small" data-diff="${num(v.version)}">Diff with ${num(v.parentVersion) ? version(v.parentVersion) : 'nothing'}</button></td></tr>`)}</tbody></table>`);
    }

    return {
      title: 'Config history',
      unmount() { mounted = false; },
      async refresh() {
        const envs = (await api.get('ListEnvironments')).environments ?? [];
        env = env || envSelect.value || envs[0]?.name || '';
        setHtml(envSelect, html`${envs.map((e) => html`<option${e.name === env ? html` selected` : ''}>${e.name}</option>`)}`);
        if (!env) { setHtml(main.querySelector('#cfg-list'), html`<p class="muted">No environment yet.</p>`); return; }
        desiredVersion = num(envs.find((e) => e.name === env)?.desiredVersion);
        const [list, agentList] = await Promise.all([
          api.get('ListConfigs', { environment: env }), api.get('ListAgents', { environment: env })]);
        versions = list.versions ?? [];
        agents = (agentList.agents ?? []).slice().sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0));
        if (!versions.some((v) => num(v.version) === selected)) {
          selected = versions.some((v) => num(v.version) === desiredVersion) ? desiredVersion : num(versions[0]?.version);
        }
        renderList();
        const options = html`<option value="0">(nothing)</option>${versions.map((v) => html`<option value="${num(v.version)}">${version(v.version)}</option>`)}`;
        const keepFrom = fromSelect.value, keepTo = toSelect.value;
        setHtml(fromSelect, options);
        setHtml(toSelect, options);
        if (keepTo && versions.some((v) => String(num(v.version)) === keepTo)) { fromSelect.value = keepFrom; toSelect.value = keepTo; }
        else if (versions.length) { toSelect.value = String(num(versions[0].version)); fromSelect.value = String(num(versions[0].parentVersion)); }
        await Promise.all([showDiff(), showVersion()]);
      },
    };
  },
};
