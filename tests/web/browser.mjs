// The browser side of the dashboard tests: Debian's headless Chromium driven by playwright-core
// from the dashboard's own npm install (never a downloaded browser), pages that record console
// errors, screenshots as artifacts, and signing in.
import { copyFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export const requiredEnv = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set (run through ctest)`);
  return process.env[name];
};

export async function launchBrowser() {
  const { chromium } = createRequire(join(requiredEnv('PGFLEET_WEB_NODE_MODULES'), 'noop.js'))('playwright-core');
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    // A fresh profile is made by playwright for each launch; these keep Chromium from calling
    // home on a closed network.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export const artifacts = requiredEnv('PGFLEET_WEB_ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

// Console errors and uncaught exceptions of every page watched; tests assert it stays empty.
export const consoleErrors = [];

export function watch(page, who) {
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(`${who}: ${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => consoleErrors.push(`${who}: uncaught ${error.message}`));
  return page;
}

// Every screenshot is an artifact; one per page is also the README's (docs/screenshots/).
export async function screenshot(page, name, { forReadme = true } = {}) {
  const file = join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  if (forReadme && process.env.PGFLEET_UPDATE_SCREENSHOTS === '1') {
    const docs = join(here, '..', '..', 'docs', 'screenshots');
    mkdirSync(docs, { recursive: true });
    copyFileSync(file, join(docs, `${name}.png`));
  }
}

export async function login(page, url, token) {
  await page.goto(url);
  await page.waitForURL(/#\/login$/);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#agents-table').waitFor();
}
