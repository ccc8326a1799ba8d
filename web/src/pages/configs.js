// Config history per environment, with a diff between any two versions.
import { api } from '../api.js';
import { formatTime, html, num, renderDiff, setHtml, version } from '../util.js';

export const configsPage = {
  mount(main, [envParam]) {
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
      </div>`;
    const envSelect = main.querySelector('#cfg-env');
    const fromSelect = main.querySelector('#diff-from');
    const toSelect = main.querySelector('#diff-to');
    let versions = [];
    let shownKey = '';

    async function showDiff() {
      const from = num(fromSelect.value), to = num(toSelect.value);
      const key = `${from}-${to}`;
      if (!to || key === shownKey) return;
      shownKey = key;
      const [a, b] = await Promise.all([
        from ? api.get('GetConfig', { version: from }) : Promise.resolve({ iniText: '' }),
        api.get('GetConfig', { version: to }),
      ]);
      setHtml(main.querySelector('#cfg-diff'), html`<p class="muted">${from ? version(from) : 'nothing'} → ${version(to)}: ${b.message || ''}</p>${renderDiff(a.iniText, b.iniText)}`);
    }
    fromSelect.addEventListener('change', () => showDiff().catch(() => {}));
    toSelect.addEventListener('change', () => showDiff().catch(() => {}));
    envSelect.addEventListener('change', () => { location.hash = `#/configs/${encodeURIComponent(envSelect.value)}`; });
    main.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-diff]');
      if (!button) return;
      const v = versions.find((x) => num(x.version) === num(button.dataset.diff));
      toSelect.value = String(num(v.version));
      fromSelect.value = String(num(v.parentVersion));
      showDiff().catch(() => {});
    });

    return {
      title: 'Config history',
      async refresh() {
        const envs = (await api.get('ListEnvironments')).environments ?? [];
        const env = envParam || envSelect.value || envs[0]?.name || '';
        setHtml(envSelect, html`${envs.map((e) => html`<option${e.name === env ? html` selected` : ''}>${e.name}</option>`)}`);
        if (!env) { setHtml(main.querySelector('#cfg-list'), html`<p class="muted">No environment yet.</p>`); return; }
        const desired = num(envs.find((e) => e.name === env)?.desiredVersion);
        versions = (await api.get('ListConfigs', { environment: env })).versions ?? [];
        setHtml(main.querySelector('#cfg-list'), versions.length === 0 ? html`<p class="muted">No version pushed to ${env} yet.</p>` : html`
          <table id="cfg-table"><caption class="sr-only">Config versions of ${env}</caption><thead><tr><th scope="col">Version</th><th scope="col">Message</th>
            <th scope="col">Author</th><th scope="col">Pushed</th><th scope="col">sha256</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${versions.map((v) => html`<tr><th scope="row">${version(v.version)}${num(v.version) === desired ? html` <span class="badge badge-ok">desired</span>` : ''}</th>
            <td>${v.message}</td><td>${v.author}</td><td>${formatTime(v.createdUnixMs)}</td><td><code>${(v.sha256 || '').slice(0, 12)}</code></td>
            <td><button type="button" class="secondary small" data-diff="${num(v.version)}">Diff with ${num(v.parentVersion) ? version(v.parentVersion) : 'nothing'}</button></td></tr>`)}</tbody></table>`);
        const options = html`<option value="0">(nothing)</option>${versions.map((v) => html`<option value="${num(v.version)}">${version(v.version)}</option>`)}`;
        const keepFrom = fromSelect.value, keepTo = toSelect.value;
        setHtml(fromSelect, options);
        setHtml(toSelect, options);
        if (keepTo && versions.some((v) => String(num(v.version)) === keepTo)) { fromSelect.value = keepFrom; toSelect.value = keepTo; }
        else if (versions.length) { toSelect.value = String(num(versions[0].version)); fromSelect.value = String(num(versions[0].parentVersion)); }
        await showDiff();
      },
    };
  },
};
