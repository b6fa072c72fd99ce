// The app page's environment variable groups, run by e2e/secrets_test.go (TestUIGroups) in Debian's
// Chromium with playwright-core: a value saved in the form is never shown again (the field empties,
// the page lists the key only); a build that echoes it shows ***** in its log.
//
// Env: HANGAR_URL, HANGAR_TOKEN, APP_NAME (whose workflow "echo" imports group play and echoes
// $PLAY_TOKEN), SECRET (the value to save as PLAY_TOKEN), SCREENSHOT_DIR.

import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const base = need('HANGAR_URL').replace(/\/$/, '');
const token = need('HANGAR_TOKEN');
const appName = need('APP_NAME');
const secret = need('SECRET');
const shots = need('SCREENSHOT_DIR');

function need(name) {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
}

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

const overall = setTimeout(() => fail('the groups test did not finish within 3 minutes'), 3 * 60 * 1000);
mkdirSync(shots, { recursive: true });
const userData = mkdtempSync(path.join(tmpdir(), 'hangar-ui-groups-'));
const context = await chromium.launchPersistentContext(userData, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(60_000);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
// Every answer the page gets: none may hold the value.
const answers = [];
page.on('response', async (r) => {
  if (r.url().includes('/api/')) answers.push(r.text().then((t) => `${r.url()}: ${t}`, () => ''));
});

async function buildOf(id) {
  const r = await fetch(`${base}/api/v1/builds/${id}`, { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`GET build ${id}: ${r.status}`);
  return r.json();
}

let failed = null;
try {
  await page.goto(base + '/');
  await page.waitForURL(/\/signin/);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Builds', level: 1 }).waitFor();

  console.log('--- save a value in a new group');
  await page.goto(`${base}/apps/${appName}`);
  await page.getByRole('heading', { name: 'Environment variable groups' }).waitFor();
  await page.getByText('No groups yet.').waitFor();
  await page.getByLabel('Group', { exact: true }).fill('play');
  await page.getByLabel('Name', { exact: true }).fill('PLAY_TOKEN');
  const value = page.getByLabel('Value', { exact: true });
  await value.fill(secret);
  await page.getByRole('button', { name: 'Save variable' }).click();
  await page.getByText('Saved PLAY_TOKEN in group play. Its value is not shown again.').waitFor();
  if ((await value.inputValue()) !== '') throw new Error('the value field still holds the value after saving');
  const row = page.locator('tr[data-group="play"]');
  await row.locator('[data-key="PLAY_TOKEN"]').waitFor();
  await page.screenshot({ path: path.join(shots, 'groups-01-saved.png') });

  console.log('--- replace it and add a second key, then delete that one');
  await page.getByLabel('Group', { exact: true }).fill('play');
  await page.getByLabel('Name', { exact: true }).fill('EXTRA');
  await value.fill('extra-value');
  await page.getByRole('button', { name: 'Save variable' }).click();
  await row.locator('[data-key="EXTRA"]').waitFor();
  await page.getByRole('button', { name: 'Delete EXTRA from play' }).click();
  await row.locator('[data-key="EXTRA"]').waitFor({ state: 'detached' });

  if ((await page.content()).includes(secret)) throw new Error('the page shows the value');

  console.log('--- a build echoing it shows *****');
  const r = await fetch(`${base}/api/v1/builds`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ app: appName, workflow: 'echo' }),
  });
  if (r.status !== 201) throw new Error(`start a build: ${r.status} ${await r.text()}`);
  const id = (await r.json()).id;
  let b;
  for (let i = 0; i < 600; i++) {
    b = await buildOf(id);
    if (['finished', 'failed', 'canceled', 'timeout'].includes(b.status)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (b.status !== 'finished') throw new Error(`build ${id} ended ${b.status}: ${b.message}`);
  await page.goto(`${base}/builds/${id}`);
  await page.locator('button.step', { hasText: 'Echo' }).click();
  await page.getByText('token=*****').waitFor();
  await page.screenshot({ path: path.join(shots, 'groups-02-build.png') });
  if ((await page.content()).includes(secret)) throw new Error('the build page shows the value');
  for (const a of await Promise.all(answers)) {
    if (a.includes(secret)) throw new Error(`an API answer holds the value: ${a.slice(0, 200)}`);
  }
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  console.log('PASS');
} catch (e) {
  failed = e;
  await page.screenshot({ path: path.join(shots, 'groups-failure.png') }).catch(() => {});
}
await context.close();
rmSync(userData, { recursive: true, force: true });
clearTimeout(overall);
if (failed) fail(failed.stack || String(failed));
