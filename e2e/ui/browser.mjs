// What the UI tests (*.test.mjs, run by e2e/*_test.go) share: their environment, Debian's Chromium
// driven by playwright-core, signing in, waiting for a build, and the end of a run.

import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

// need returns environment variable name, or fails the test if it is not set.
export function need(name) {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
}

// fail ends the test with msg.
export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

// serverURL is the server's URL (HANGAR_URL) without a trailing slash.
export const serverURL = () => need('HANGAR_URL').replace(/\/$/, '');

// launch starts Chromium in a fresh profile for the test called name, which fails if it has not
// ended (close) within minutes; it makes the screenshot directory shots. options are more of
// playwright's launchPersistentContext options (args are added to the common ones). It returns the
// browser context, its first page (60 s default timeout), the errors of every page of the context,
// and close, which closes the browser and removes the profile.
export async function launch(name, minutes, shots, { args = [], ...options } = {}) {
  const overall = setTimeout(() => fail(`the ${name} test did not finish within ${minutes} minutes`), minutes * 60 * 1000);
  mkdirSync(shots, { recursive: true });
  const userData = mkdtempSync(path.join(tmpdir(), `hangar-ui-${name}-`));
  const context = await chromium.launchPersistentContext(userData, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
    viewport: { width: 1280, height: 900 },
    ...options,
  });
  const pageErrors = [];
  const watch = (p) => p.on('pageerror', (e) => pageErrors.push(e.message));
  context.pages().forEach(watch);
  context.on('page', watch);
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(60_000);
  return {
    context,
    page,
    pageErrors,
    async close() {
      await context.close();
      rmSync(userData, { recursive: true, force: true });
      clearTimeout(overall);
    },
  };
}

// signIn signs page in with token.
export async function signIn(page, token) {
  await page.goto(serverURL() + '/');
  await page.waitForURL(/\/signin/);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Builds', level: 1 }).waitFor();
}

// waitBuild waits (two minutes at most) until build id has ended, and returns it.
export async function waitBuild(token, id) {
  let b;
  for (let i = 0; i < 600; i++) {
    const r = await fetch(`${serverURL()}/api/v1/builds/${id}`, { headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) throw new Error(`GET build ${id}: ${r.status}`);
    b = await r.json();
    if (['finished', 'failed', 'canceled', 'timeout'].includes(b.status)) return b;
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`build ${id} still ${b.status} after two minutes`);
}

// run runs test, the body of a test in browser b (of launch): on an error it saves a screenshot
// in failureShot; then it closes the browser and fails the test if test threw or a page had an
// error, else it says PASS.
export async function run(b, failureShot, test) {
  let failed = null;
  try {
    await test();
    if (b.pageErrors.length) throw new Error(`page errors: ${b.pageErrors.join('; ')}`);
  } catch (e) {
    failed = e;
    await b.page.screenshot({ path: failureShot }).catch(() => {});
  }
  await b.close();
  if (failed) fail(failed.stack || String(failed));
  console.log('PASS');
}
