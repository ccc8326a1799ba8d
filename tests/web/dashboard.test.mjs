// Browser tests of the dashboard: real headless Chromium (Debian's, driven by playwright-core)
// against a real pgfleet-controller with two real agents in front of a real PostgreSQL 15.
// Run by ctest (label web); see tests/CMakeLists.txt for the environment it needs:
//   PGFLEET_CONTROLLER_BINARY, PGFLEET_AGENT_BINARY, PGFLEET_WEB_NODE_MODULES,
//   PGFLEET_WEB_ARTIFACTS (screenshots), PGFLEET_UPDATE_SCREENSHOTS=1 (also docs/screenshots/),
//   PGFLEET_WEB_ROOT (another dist dir, e.g. to drive a sanitizer build of the controller).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { artifacts, consoleErrors, launchBrowser, login as loginAt, requiredEnv as env, screenshot, watch } from './browser.mjs';
import { Fleet, waitFor } from './fleet.mjs';

const fleet = new Fleet({ controllerBinary: env('PGFLEET_CONTROLLER_BINARY'), agentBinary: env('PGFLEET_AGENT_BINARY') });
let browser;
let agents;

const login = (page, token) => loginAt(page, fleet.url, token);

before(async () => {
  await fleet.startPostgres();
  // Without PGFLEET_WEB_ROOT the controller finds <build>/web/dist by itself, as in run.sh.
  await fleet.startController({
    bootstrapToken: 'pgf_web_test_bootstrap',
    extraArgs: process.env.PGFLEET_WEB_ROOT ? [`--web-root=${process.env.PGFLEET_WEB_ROOT}`] : [],
  });
  agents = [await fleet.startAgent({ id: 'dev-1', env: 'dev' }), await fleet.startAgent({ id: 'dev-2', env: 'dev' })];
  const operator = fleet.tokens.operator;
  await waitFor('both agents connected', async () => {
    const { json } = await fleet.api('ListAgents', { token: operator });
    return (json?.agents ?? []).filter((a) => a.connected).length === 2;
  });
  // Two config versions: v1 becomes desired now, v2 is rolled out from the UI.
  const push = async (poolSize, message) => {
    const { status, json } = await fleet.api('PushConfig', { token: operator, body: { environment: 'dev', iniText: fleet.iniText(agents[0].port, { poolSize }), message } });
    assert.equal(status, 200, JSON.stringify(json));
    return Number(json.version);
  };
  const v1 = await push(10, 'baseline pool of 10');
  const desired = await fleet.api('SetDesiredConfig', { token: operator, body: { environment: 'dev', version: v1 } });
  assert.equal(desired.status, 200, JSON.stringify(desired.json));
  await push(12, 'raise default_pool_size to 12');
  await waitFor('both agents on v1', async () => {
    const { json } = await fleet.api('ListAgents', { token: operator });
    return (json?.agents ?? []).filter((a) => Number(a.appliedVersion) === v1).length === 2;
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const { controllerExit } = await fleet.stop({ logDir: join(artifacts, 'logs') });
  assert.deepEqual(controllerExit, { code: 0, signal: null }, 'the controller stops cleanly on SIGTERM (see logs/controller.log)');
});

test('the API answers JSON errors and refuses what a role may not do', async () => {
  const noToken = await fleet.api('ListAgents');
  assert.equal(noToken.status, 401);
  assert.equal(noToken.json.error.code, 'UNAUTHENTICATED');
  const badToken = await fleet.api('ListAgents', { token: 'pgf_not_a_token' });
  assert.equal(badToken.status, 401);
  const viewerPause = await fleet.api('Pause', { token: fleet.tokens.viewer, body: { environment: 'dev', database: 'appdb', durationSeconds: 60 } });
  assert.equal(viewerPause.status, 403, JSON.stringify(viewerPause.json));
  assert.equal(viewerPause.json.error.code, 'PERMISSION_DENIED');
  const viewerRollout = await fleet.api('StartRollout', { token: fleet.tokens.viewer, body: { environment: 'dev', version: 2 } });
  assert.equal(viewerRollout.status, 403);
  const viewerRead = await fleet.api('ListAgents', { token: fleet.tokens.viewer });
  assert.equal(viewerRead.status, 200);
  assert.equal(viewerRead.json.agents.length, 2);
  const unknownAgent = await fleet.api('GetAgent', { token: fleet.tokens.viewer, params: { agentId: 'nope' } });
  assert.equal(unknownAgent.status, 404);
  const badJson = await fleet.api('Pause', { token: fleet.tokens.operator, body: { environment: 'dev', noSuchField: 1 } });
  assert.equal(badJson.status, 400);
  const mutatingGet = await fleet.api('Pause', { token: fleet.tokens.operator, params: { environment: 'dev' } });
  assert.equal(mutatingGet.status, 405);
  const unknownMethod = await fleet.api('DropEverything', { token: fleet.tokens.operator });
  assert.equal(unknownMethod.status, 404);
  // Static files: nothing outside the web root, and the page forbids anything not from us.
  const traversal = await fetch(`${fleet.url}..%2f..%2fetc/passwd`);
  assert.ok(traversal.status === 400 || traversal.status === 404, `traversal answered ${traversal.status}`);
  const index = await fetch(fleet.url);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-security-policy'), /default-src 'self'/);
});

test('an operator logs in, sees agents and pools, watches load, rolls out, pauses and resumes', async () => {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  const page = watch(await context.newPage(), 'operator');

  await page.goto(fleet.url);
  await page.waitForURL(/#\/login$/);
  assert.equal(await page.getByRole('button', { name: 'Log out' }).isVisible(), false);
  assert.equal(await page.getByRole('navigation', { name: 'Main' }).isVisible(), false);
  await screenshot(page, 'login');
  await login(page, fleet.tokens.operator);
  await assert.doesNotReject(page.locator('#whoami', { hasText: 'operator-olga' }).waitFor());

  // Overview: both agents up, on the desired version.
  for (const agent of agents) {
    const row = page.locator(`#agents-table tr[data-agent="${agent.id}"]`);
    await row.getByText('up', { exact: true }).waitFor();
    await row.getByText('in sync').waitFor();
  }
  await page.locator('#envs').getByText('dev', { exact: true }).waitFor();

  // Agent detail under load: the pool shows up and the transactions chart moves.
  await page.locator('#agents-table').getByRole('link', { name: 'dev-1' }).click();
  await page.waitForURL(/#\/agents\/dev-1$/);
  const tpsChart = page.locator('figure[data-chart="tps"]');
  await tpsChart.locator('canvas').waitFor();
  const canvasBefore = await tpsChart.locator('canvas').evaluate((c) => c.toDataURL());
  const load = fleet.pgbench(agents[0].port, { clients: 4, seconds: 12 });
  await waitFor('a transactions-per-second sample above zero', async () =>
    Number((await tpsChart.getAttribute('data-latest')) ?? 0) > 0, { timeoutMs: 20000 });
  await page.locator('#pools-table').getByRole('rowheader', { name: 'appdb' }).waitFor();
  await waitFor('clients in the clients chart', async () =>
    Number(((await page.locator('figure[data-chart="clients"]').getAttribute('data-points')) ?? 0)) >= 3);
  const pointsEarly = Number(await tpsChart.getAttribute('data-points'));
  await waitFor('more tps samples as the load runs', async () => Number(await tpsChart.getAttribute('data-points')) > pointsEarly);
  const canvasAfter = await tpsChart.locator('canvas').evaluate((c) => c.toDataURL());
  assert.notEqual(canvasAfter, canvasBefore, 'the tps chart was redrawn with the new samples');
  assert.match(await tpsChart.locator('.chart-latest').textContent(), /tps \d/);
  await screenshot(page, 'agent');
  await load;

  // Rollout of v2 from the UI, followed live to the end.
  await page.getByRole('link', { name: 'Rollouts' }).click();
  await page.getByLabel('Environment', { exact: true }).selectOption('dev');
  await page.getByLabel('Version', { exact: true }).selectOption({ label: 'v2 — raise default_pool_size to 12' });
  await page.getByLabel('Waves').fill('1,100%');
  await page.getByLabel('Bake (seconds)').fill('2');
  await page.getByRole('button', { name: 'Start rollout' }).click();
  await page.waitForURL(/#\/rollouts\/\d+$/);
  await page.locator('#rollout-detail[data-state="succeeded"]').waitFor({ timeout: 60000 });
  await page.locator('#diff ins', { hasText: 'default_pool_size = 12' }).waitFor();
  await page.locator('#diff del', { hasText: 'default_pool_size = 10' }).waitFor();
  await screenshot(page, 'rollouts');

  // Config history with the diff between v1 and v2.
  await page.getByRole('link', { name: 'Config history' }).click();
  await page.locator('#cfg-table').getByText('raise default_pool_size to 12').waitFor();
  await page.locator('#cfg-diff ins', { hasText: 'default_pool_size = 12' }).waitFor();
  await screenshot(page, 'configs');

  // Maintenance: pause appdb across dev from the UI, watch every agent drain, resume.
  await page.getByRole('link', { name: 'Maintenance' }).click();
  await page.getByLabel('Environment', { exact: true }).selectOption('dev');
  await page.getByLabel('Database', { exact: true }).fill('appdb');
  await page.getByLabel('Duration (minutes)').fill('5');
  await page.getByLabel('Reason', { exact: true }).fill('VACUUM FULL from the dashboard test');
  await page.getByRole('button', { name: 'Pause now' }).click();
  const window = page.locator('article.window');
  await window.first().waitFor();
  for (const agent of agents) {
    await window.locator(`tr[data-agent="${agent.id}"][data-state="paused"]`).waitFor({ timeout: 30000 });
  }
  await page.locator('article.window[data-state="paused"]').waitFor();
  await screenshot(page, 'maintenance');
  // The overview shows the open window at a glance (the README's overview screenshot).
  await page.getByRole('link', { name: 'Fleet' }).click();
  await page.locator('#open-windows').getByText('paused').waitFor();
  await page.locator('#envs').getByText('paused').waitFor();
  await screenshot(page, 'overview');
  await page.getByRole('link', { name: 'Maintenance' }).click();
  await window.getByRole('button', { name: 'Resume now' }).click();
  await page.locator('#mw-open').getByText('No open window.').waitFor({ timeout: 30000 });
  await page.locator('#mw-history').getByText('completed').waitFor();
  // The agents really resumed: a query goes through dev-2 again.
  const { json } = await fleet.api('ListAgents', { token: fleet.tokens.operator });
  await waitFor('no pause left on any agent', async () => {
    const now = await fleet.api('ListAgents', { token: fleet.tokens.operator });
    return now.json.agents.every((a) => (a.lastMetrics?.pauses ?? []).length === 0);
  });
  assert.equal(json.agents.length, 2);

  await context.close();
  assert.deepEqual(consoleErrors, []);
});

test('a viewer sees the fleet but cannot press the buttons', async () => {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  const page = watch(await context.newPage(), 'viewer');
  await login(page, fleet.tokens.viewer);
  await page.locator('#whoami', { hasText: 'viewer' }).waitFor();
  await page.locator('#agents-table tr[data-agent="dev-2"]').getByText('up', { exact: true }).waitFor();

  await page.goto(`${fleet.url}#/maintenance`);
  await page.locator('#mw-history').getByText('completed').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Pause now' }).isDisabled(), true);
  assert.equal(await page.getByRole('button', { name: 'Schedule' }).isDisabled(), true);

  await page.goto(`${fleet.url}#/rollouts`);
  await page.locator('#rollout-detail').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Start rollout' }).isDisabled(), true);

  await page.goto(`${fleet.url}#/agents/dev-1`);
  await page.locator('#pools-table').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Pause on this agent' }).isDisabled(), true);
  await screenshot(page, 'viewer-agent', { forReadme: false });
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/#\/login$/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pgfleet.token')), null);
  await context.close();
  assert.deepEqual(consoleErrors, []);
});

test('the fleet view filters agents by a label selector and shows a bad one inline', async () => {
  const operator = fleet.tokens.operator;
  for (const [agentId, zone] of [['dev-1', 'a'], ['dev-2', 'b']]) {
    const labelled = await fleet.api('SetAgentLabels', { token: operator, body: { agentId, set: { zone } } });
    assert.equal(labelled.status, 200, JSON.stringify(labelled.json));
  }
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  const page = watch(await context.newPage(), 'selector');
  const errorsBefore = consoleErrors.length;
  await login(page, fleet.tokens.viewer);
  const rows = page.locator('#agents-table tbody tr');
  await page.locator('#agents-table tr[data-agent="dev-2"]').getByText('zone=b').waitFor();

  await page.getByLabel('Label selector').fill('zone=a');
  await waitFor('only dev-1 listed', async () => (await rows.count()) === 1);
  await page.locator('#agents-table tr[data-agent="dev-1"]').waitFor();
  await page.getByLabel('Label selector').fill('zone notin (a)');
  await page.locator('#agents-table tr[data-agent="dev-2"]').waitFor();
  await waitFor('only dev-2 listed', async () => (await rows.count()) === 1);

  // A selector the controller cannot parse: its message, naming the column, next to the box.
  await page.getByLabel('Label selector').fill('zone in (a');
  await page.locator('#selector-error', { hasText: 'column' }).waitFor();
  assert.equal(await page.getByLabel('Label selector').getAttribute('aria-invalid'), 'true');
  await screenshot(page, 'fleet-selector-error', { forReadme: false });
  await page.getByLabel('Label selector').fill('zone=z');
  await page.locator('#no-match').waitFor();
  assert.equal(await page.locator('#selector-error').textContent(), '');
  await page.getByLabel('Label selector').fill('');
  await waitFor('both agents listed again', async () => (await rows.count()) === 2);
  await context.close();
  // The browser reports the 400 of the bad selector as a failed resource load; nothing else.
  const fresh = consoleErrors.splice(errorsBefore);
  assert.deepEqual(fresh.filter((e) => !/status of 400/.test(e)), []);
});

// Last, as it replaces every agent's process: a restart rollout from the UI. Each agent hands
// over to a new process of its binary and keeps its config, and the page and the history say
// it was a restart, not a config change.
test('an operator restarts the agents with a restart rollout', async () => {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  const page = watch(await context.newPage(), 'restart');
  await login(page, fleet.tokens.operator);
  const { json } = await fleet.api('ListAgents', { token: fleet.tokens.operator });
  const pidsBefore = new Map(json.agents.map((a) => [a.agentId, a.pid]));
  await page.getByRole('link', { name: 'Rollouts' }).click();
  await page.getByLabel('Environment', { exact: true }).selectOption('dev');
  await page.getByLabel('Kind', { exact: true }).selectOption('restart');
  assert.equal(await page.getByLabel('Version', { exact: true }).isDisabled(), true);
  await page.getByLabel('Waves').fill('100%');
  await page.getByLabel('Bake (seconds)').fill('1');
  await page.getByRole('button', { name: 'Start rollout' }).click();
  await page.waitForURL(/#\/rollouts\/\d+$/);
  await page.locator('#rollout-detail[data-kind="restart"][data-state="succeeded"]').waitFor({ timeout: 90000 });
  await page.locator('#rollout-detail .rollout-head', { hasText: 'restart on v' }).waitFor();
  await page.locator('#diff', { hasText: 'A restart changes no config' }).waitFor();
  const historyKinds = await page.locator('#history tbody tr td:nth-child(2)').allTextContents();
  assert.deepEqual(historyKinds.map((k) => k.trim()).sort(), ['config', 'restart']);
  await waitFor('both agents back, each in a new process', async () => {
    const now = await fleet.api('ListAgents', { token: fleet.tokens.operator });
    return now.json.agents.filter((a) => a.connected && a.pid && a.pid !== pidsBefore.get(a.agentId)).length === 2;
  }, { timeoutMs: 60000 });
  await screenshot(page, 'restart-rollout', { forReadme: false });
  await context.close();
  assert.deepEqual(consoleErrors, []);
});
