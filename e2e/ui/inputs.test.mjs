// The Start dialog's inputs form, run by e2e/workflow_test.go (TestUIInputs) in Debian's Chromium
// with playwright-core: the app page lists what Hangar does not run of each workflow; the Start
// dialog shows a form built from the workflow's inputs (a choice, a checkbox, a number); the
// build it starts gets the values, and its skipped step shows why.
//
// Env: HANGAR_URL, HANGAR_TOKEN, APP_NAME (an app whose codemagic.yaml is e2e's featuresFile),
// SCREENSHOT_DIR.

import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const base = need('HANGAR_URL').replace(/\/$/, '');
const token = need('HANGAR_TOKEN');
const appName = need('APP_NAME');
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

const overall = setTimeout(() => fail('the inputs test did not finish within 3 minutes'), 3 * 60 * 1000);
mkdirSync(shots, { recursive: true });
const userData = mkdtempSync(path.join(tmpdir(), 'hangar-ui-inputs-'));
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

  console.log('--- the app page says what is not run');
  await page.goto(`${base}/apps/${appName}`);
  await page.getByRole('heading', { name: 'Features' }).waitFor();
  const card = page.locator('li.wf-card', { has: page.getByRole('heading', { name: 'Features' }) });
  await card.getByText('1 key is not run by Hangar').click();
  await card.getByText('this publisher is NOT run by Hangar').waitFor();
  await card.getByText('inputs: flavor (choice, default dev), runTests (boolean, default true), count (number, default 2)').waitFor();
  await page.screenshot({ path: path.join(shots, 'inputs-01-app.png') });

  console.log('--- the Start dialog has a form for the inputs');
  await card.getByRole('button', { name: 'Start a build of Features' }).click();
  const dialog = page.getByRole('dialog', { name: 'Start new build' });
  await dialog.waitFor();
  const flavor = dialog.getByLabel('flavor');
  await flavor.waitFor();
  if ((await flavor.inputValue()) !== 'dev') throw new Error('flavor is not prefilled with its default');
  const runTests = dialog.getByLabel('runTests');
  if (!(await runTests.isChecked())) throw new Error('runTests is not prefilled with its default (true)');
  await dialog.getByText('Run tests before the build').waitFor();
  await flavor.selectOption('prod');
  await runTests.uncheck();
  await dialog.getByLabel('count').fill('7');
  await page.screenshot({ path: path.join(shots, 'inputs-02-dialog.png') });
  await dialog.getByRole('button', { name: 'Start build' }).click();
  await page.waitForURL(/\/builds\/\d+$/);
  const id = Number(page.url().split('/').pop());

  console.log(`--- build ${id} gets the values`);
  let b;
  for (let i = 0; i < 600; i++) {
    b = await buildOf(id);
    if (['finished', 'failed', 'canceled', 'timeout'].includes(b.status)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (b.status !== 'finished') throw new Error(`build ${id} ended ${b.status}: ${b.message}`);
  const tests = b.steps.find((s) => s.name === 'Tests');
  if (tests.status !== 'skipped' || !tests.reason.includes('inputs.runTests')) throw new Error(`Tests step: ${JSON.stringify(tests)}`);
  await page.locator('button.step', { hasText: 'Show' }).click();
  await page.getByText('flavor=prod count=7').waitFor();
  await page.locator('button.step', { hasText: 'Tests' }).click();
  await page.getByText('Skipped: when.condition is false').waitFor();
  const title = await page.locator('button.step', { hasText: 'Tests' }).getAttribute('title');
  if (!title || !title.includes('when.condition is false: ${{ inputs.runTests }}')) throw new Error(`the skipped step's title: ${title}`);
  await page.screenshot({ path: path.join(shots, 'inputs-03-build.png') });
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  console.log('PASS');
} catch (e) {
  failed = e;
  await page.screenshot({ path: path.join(shots, 'inputs-failure.png') }).catch(() => {});
}
await context.close();
rmSync(userData, { recursive: true, force: true });
clearTimeout(overall);
if (failed) fail(failed.stack || String(failed));
