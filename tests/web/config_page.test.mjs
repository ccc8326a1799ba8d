// The dashboard's config page, in a real headless Chromium against a real pgfleet-controller
// (with a secrets key), two real agents with different labels and a real PostgreSQL 15: a
// version's base, its overlays in precedence order, the render for each agent as the
// controller's RenderConfig makes it, and its files as fingerprints with changed/unchanged
// against the version before. Secrets are set with the real `fleetctl secrets set`, and their
// plaintext must appear nowhere: not in the page's text or markup, not in any JSON response the
// page fetched. Run by ctest (label web), with PGFLEET_FLEETCTL_BINARY besides what
// dashboard.test.mjs needs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { artifacts, consoleErrors, launchBrowser, login, requiredEnv as env, screenshot, watch } from './browser.mjs';
import { Fleet, waitFor } from './fleet.mjs';

const fleet = new Fleet({ controllerBinary: env('PGFLEET_CONTROLLER_BINARY'), agentBinary: env('PGFLEET_AGENT_BINARY') });
const fleetctlBinary = env('PGFLEET_FLEETCTL_BINARY');
const ENV = 'web';
// The passwords given to `fleetctl secrets set` on stdin: the first stored as plaintext (so it
// is in the auth_file's bytes), the second as a SCRAM-SHA-256 verifier.
const APP_PASSWORD = 'plain-Secret-7fd1e0c2';
const ADMIN_PASSWORD = 'scram-Secret-94b3aa51';
const SECRETS_IN_CLEAR = [APP_PASSWORD, ADMIN_PASSWORD, 'SCRAM-SHA-256$'];

let browser;
let agentA;
let agentB;
const v = {};   // The versions made below, by what they are.

function fleetctl(args, { input } = {}) {
  const result = spawnSync(fleetctlBinary, [`--controller=127.0.0.1:${fleet.grpcPort}`, ...args], {
    encoding: 'utf8', input, env: { ...process.env, PGFLEET_TOKEN: fleet.bootstrapToken },
  });
  assert.equal(result.status, 0, `fleetctl ${args.join(' ')}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

function baseIni({ poolSize = 10 } = {}) {
  // server_idle_timeout is there for the zone-a overlay to remove.
  return `${fleet.iniText(agentA.port, { poolSize })}server_idle_timeout = 600\n`;
}

// Listed agent overlay first: the page must still show it after the label overlay, because
// agent-id overlays take precedence over label-selector ones.
const OVERLAYS = [
  { agentId: 'cfg-a', set: [{ section: 'pgbouncer', key: 'max_client_conn', value: '150' }] },
  {
    name: 'zone a pools', selector: 'zone=a',
    set: [{ section: 'pgbouncer', key: 'default_pool_size', value: '40' }],
    remove: [{ section: 'pgbouncer', key: 'server_idle_timeout' }],
  },
];

async function push(body, token = fleet.tokens.operator) {
  const { status, json } = await fleet.api('PushConfig', { token, body: { environment: ENV, ...body } });
  assert.equal(status, 200, JSON.stringify(json));
  return Number(json.version);
}

before(async () => {
  await fleet.startPostgres();
  const keyFile = join(fleet.dir, 'secrets.key');
  writeFileSync(keyFile, `${'5a'.repeat(32)}\n`, { mode: 0o600 });
  await fleet.startController({
    bootstrapToken: 'pgf_web_config_bootstrap',
    extraArgs: [`--secrets-key-file=${keyFile}`,
      ...(process.env.PGFLEET_WEB_ROOT ? [`--web-root=${process.env.PGFLEET_WEB_ROOT}`] : [])],
  });
  agentA = await fleet.startAgent({ id: 'cfg-a', env: ENV, labels: 'zone=a,size=large' });
  agentB = await fleet.startAgent({ id: 'cfg-b', env: ENV, labels: 'zone=b,size=small' });
  await waitFor('both agents connected with their labels', async () => {
    const { json } = await fleet.api('ListAgents', { token: fleet.tokens.viewer, params: { environment: ENV, selector: 'zone in (a,b)' } });
    return (json?.agents ?? []).filter((a) => a.connected).length === 2;
  });
  v.base = await push({ iniText: baseIni(), message: 'base only' });
  const desired = await fleet.api('SetDesiredConfig', { token: fleet.tokens.operator, body: { environment: ENV, version: v.base } });
  assert.equal(desired.status, 200, JSON.stringify(desired.json));
  await waitFor('both agents running the base', async () => {
    const { json } = await fleet.api('ListAgents', { token: fleet.tokens.viewer, params: { environment: ENV } });
    return (json?.agents ?? []).filter((a) => Number(a.appliedVersion) === v.base).length === 2;
  });
  v.overlays = await push({ iniText: baseIni(), overlays: OVERLAYS, message: 'per-zone pools' });
  // Each `secrets set` makes a version from the newest one (ini and overlays kept).
  const versionOf = (out) => Number(/config version v(\d+)/.exec(out)?.[1]);
  v.appSecret = versionOf(fleetctl(['secrets', 'set', '--env', ENV, '--user', 'app', '--plaintext', '-m', 'app password'], { input: `${APP_PASSWORD}\n` }));
  v.adminSecret = versionOf(fleetctl(['secrets', 'set', '--env', ENV, '--user', 'admin', '-m', 'admin password'], { input: `${ADMIN_PASSWORD}\n` }));
  // An ini-only push: it inherits the files unchanged.
  v.iniOnly = await push({ iniText: baseIni({ poolSize: 12 }), overlays: OVERLAYS, message: 'base pool 12' });
  assert.ok(v.base < v.overlays && v.overlays < v.appSecret && v.appSecret < v.adminSecret && v.adminSecret < v.iniOnly, JSON.stringify(v));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const { controllerExit } = await fleet.stop({ logDir: join(artifacts, 'config-page-logs') });
  assert.deepEqual(controllerExit, { code: 0, signal: null }, 'the controller stops cleanly on SIGTERM (see config-page-logs/controller.log)');
});

test('the config page shows base, overlays in precedence order, per-agent renders and files as fingerprints only', async () => {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const page = watch(await context.newPage(), 'config page');
  // Every API answer the page gets, read in full.
  const apiBodies = [];
  page.on('response', (response) => {
    if (new URL(response.url()).pathname.startsWith('/api/')) {
      apiBodies.push(response.text().then((body) => ({ url: response.url(), body })).catch(() => null));
    }
  });
  // A viewer: renders and fingerprints are a viewer's reads.
  await login(page, fleet.url, fleet.tokens.viewer);
  await page.goto(`${fleet.url}#/configs/${ENV}/${v.overlays}`);
  const section = page.locator(`#cfg-version-section[data-version="${v.overlays}"]`);
  await section.waitFor();
  await page.locator('#cfg-table').getByText('per-zone pools').waitFor();

  // The base, as pushed.
  const baseText = await page.locator('#cfg-base-ini').textContent();
  assert.equal(baseText, baseIni());

  // Overlays, lowest precedence first: the label overlay (listed second) before the agent one.
  const overlays = page.locator('#cfg-overlays > li');
  await waitFor('both overlays listed', async () => (await overlays.count()) === 2);
  assert.deepEqual(await overlays.evaluateAll((items) => items.map((li) => li.dataset.overlay)),
    ['overlay "zone a pools"', 'overlay #1 (agent cfg-a)']);
  const zoneOverlay = overlays.nth(0);
  assert.match(await zoneOverlay.locator('.overlay-target').textContent(), /selector zone=a/);
  assert.match(await zoneOverlay.locator('tr.overlay-set').textContent(), /\[pgbouncer\]\s*default_pool_size\s*40/);
  assert.match(await zoneOverlay.locator('.overlay-remove').textContent(), /\[pgbouncer\] server_idle_timeout/);
  const agentOverlay = overlays.nth(1);
  assert.match(await agentOverlay.locator('.overlay-target').textContent(), /agent cfg-a/);
  assert.match(await agentOverlay.locator('tr.overlay-set').textContent(), /max_client_conn\s*150/);

  // The render for agent A, then for agent B, each the controller's own.
  const renderFor = async (agentId, version = v.overlays) => {
    await page.getByLabel('Agent', { exact: true }).selectOption(agentId);
    const rendered = page.locator(`#cfg-rendered[data-agent="${agentId}"][data-version="${version}"]`);
    await rendered.waitFor();
    const fromApi = await fleet.api('RenderConfig', { token: fleet.tokens.viewer, params: { agentId, version } });
    assert.equal(fromApi.status, 200, JSON.stringify(fromApi.json));
    const shown = await rendered.locator('#cfg-render-ini').textContent();
    assert.equal(shown, fromApi.json.iniText, `the page shows RenderConfig's ini for ${agentId}`);
    return shown;
  };
  const renderA = await renderFor('cfg-a');
  assert.match(renderA, /^default_pool_size = 40$/m);
  assert.match(renderA, /^max_client_conn = 150$/m);
  assert.doesNotMatch(renderA, /server_idle_timeout/);
  assert.match(await page.locator('#render-labels').textContent(), /size=large,zone=a/);
  assert.equal(await overlays.nth(0).getByText('applies to the chosen agent').count(), 1);
  assert.equal(await overlays.nth(1).getByText('applies to the chosen agent').count(), 1);
  await page.locator('#cfg-rendered .diff-add', { hasText: 'default_pool_size = 40' }).waitFor();
  await screenshot(page, 'config-render');

  const renderB = await renderFor('cfg-b');
  assert.match(renderB, /^default_pool_size = 10$/m);
  assert.match(renderB, /^max_client_conn = 200$/m);
  assert.match(renderB, /^server_idle_timeout = 600$/m);
  assert.notEqual(renderA, renderB);
  assert.equal(renderB, baseIni(), 'no overlay targets cfg-b: it runs the base');
  await overlays.nth(0).getByText('not for the chosen agent').waitFor();
  await overlays.nth(1).getByText('not for the chosen agent').waitFor();
  assert.match(page.url(), new RegExp(`#/configs/${ENV}/${v.overlays}\\?agent=cfg-b$`), 'the URL names the version and agent shown');

  // Files: none before the secrets; the auth_file new, then changed, then unchanged.
  await page.locator('#cfg-files-none').waitFor();
  const fingerprint = async (version) => {
    const { json } = await fleet.api('GetConfig', { token: fleet.tokens.viewer, params: { version } });
    const authFile = json.files.find((f) => f.key === 'auth_file');
    assert.match(authFile.fingerprint, /^[0-9a-f]{12}$/);
    return authFile.fingerprint;
  };
  const showVersion = async (version) => {
    await page.locator('#cfg-table').getByRole('link', { name: `v${version}`, exact: true }).click();
    await page.locator(`#cfg-version-section[data-version="${version}"]`).waitFor();
    // Its render for the chosen agent (B), so the page fetched that too.
    await page.locator(`#cfg-rendered[data-agent="cfg-b"][data-version="${version}"]`).waitFor();
    return page.locator('#cfg-files tr[data-file="auth_file"]');
  };
  let row = await showVersion(v.appSecret);
  assert.equal(await row.getAttribute('data-state'), 'new');
  assert.equal(await row.locator('code.fingerprint').textContent(), await fingerprint(v.appSecret));
  assert.match(await page.locator('#cfg-files thead').textContent(), new RegExp(`vs v${v.overlays}`));

  row = await showVersion(v.adminSecret);
  assert.equal(await row.getAttribute('data-state'), 'changed');
  assert.equal(await row.locator('code.fingerprint').textContent(), await fingerprint(v.adminSecret));
  assert.notEqual(await fingerprint(v.adminSecret), await fingerprint(v.appSecret));
  assert.match(await row.textContent(), new RegExp(`was ${await fingerprint(v.appSecret)}`));
  await screenshot(page, 'config-files', { forReadme: false });

  row = await showVersion(v.iniOnly);
  assert.equal(await row.getAttribute('data-state'), 'unchanged');
  assert.equal(await row.locator('code.fingerprint').textContent(), await fingerprint(v.adminSecret));
  assert.match(await row.textContent(), /unchanged/);
  // A version with secrets, rendered for A as well: the page asks for it, and it is A's.
  assert.match(await renderFor('cfg-a', v.iniOnly), /^default_pool_size = 40$/m);

  // The plaintext (and any verifier) is nowhere: not in the text, not in the markup, not in
  // a single JSON answer the page received.
  const text = await page.evaluate(() => document.body.innerText);
  const markup = await page.content();
  const bodies = (await Promise.all(apiBodies)).filter(Boolean);
  const urls = bodies.map((b) => new URL(b.url).pathname);
  for (const method of ['ListConfigs', 'GetConfig', 'RenderConfig', 'ListAgents']) {
    assert.ok(urls.includes(`/api/${method}`), `the page fetched ${method} (fetched: ${[...new Set(urls)].join(', ')})`);
  }
  // The answers were really read: the fingerprints the page shows came in them.
  const adminFingerprint = await fingerprint(v.adminSecret);
  assert.ok(bodies.some(({ body }) => body.includes(adminFingerprint)), 'the collected answers hold the fingerprints');
  for (const secret of SECRETS_IN_CLEAR) {
    assert.equal(text.includes(secret), false, `"${secret}" in the page text`);
    assert.equal(markup.includes(secret), false, `"${secret}" in the page markup`);
    for (const { url, body } of bodies) assert.equal(body.includes(secret), false, `"${secret}" in ${url}`);
  }
  // The same holds for the API as any viewer or operator script reads it.
  for (const version of [v.appSecret, v.adminSecret, v.iniOnly]) {
    for (const token of [fleet.tokens.viewer, fleet.tokens.operator]) {
      const got = await fleet.api('GetConfig', { token, params: { version } });
      for (const secret of SECRETS_IN_CLEAR) assert.equal(JSON.stringify(got.json).includes(secret), false);
    }
  }
  await context.close();
  assert.deepEqual(consoleErrors, []);
});

test('a version number not in the environment shows its desired version instead', async () => {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  const page = watch(await context.newPage(), 'config page errors');
  const errorsBefore = consoleErrors.length;
  await login(page, fleet.url, fleet.tokens.viewer);
  // A version number that is not this environment's: the page falls back to the desired one.
  await page.goto(`${fleet.url}#/configs/${ENV}/999999`);
  await page.locator(`#cfg-version-section[data-version="${v.base}"]`).waitFor();
  assert.match(await page.locator('#cfg-version-title').textContent(), new RegExp(`v${v.base}\\b`));
  await page.locator('#cfg-overlays-none').waitFor();
  await context.close();
  assert.deepEqual(consoleErrors.slice(errorsBefore), []);
});
