// A build's artifacts on its page, run by e2e/artifacts_test.go (TestUIArtifacts) in Debian's Chromium
// with playwright-core: the page lists the artifacts with their sizes, and its Download button saves one
// through the browser's own download (a single-use link: the token is never in a URL). The Go test
// compares the saved file with what the build wrote.
//
// Env: HANGAR_URL, HANGAR_TOKEN, BUILD_ID (an ended build with artifacts), ARTIFACT (its name),
// OUT_FILE (where to save the download), SCREENSHOT_DIR.

import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const base = need('HANGAR_URL').replace(/\/$/, '');
const token = need('HANGAR_TOKEN');
const id = need('BUILD_ID');
const artifact = need('ARTIFACT');
const out = need('OUT_FILE');
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

const overall = setTimeout(() => fail('the artifacts test did not finish within 2 minutes'), 2 * 60 * 1000);
mkdirSync(shots, { recursive: true });
const userData = mkdtempSync(path.join(tmpdir(), 'hangar-ui-artifacts-'));
const context = await chromium.launchPersistentContext(userData, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  acceptDownloads: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(60_000);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
// The token travels only in Authorization headers, never in a URL.
const urls = [];
page.on('request', (r) => urls.push(r.url()));

let failed = null;
try {
  await page.goto(base + '/');
  await page.waitForURL(/\/signin/);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Builds', level: 1 }).waitFor();

  console.log(`--- build ${id} lists its artifacts`);
  await page.goto(`${base}/builds/${id}`);
  await page.getByRole('heading', { name: 'Artifacts', exact: true }).waitFor();
  const row = page.locator(`tr[data-artifact="${artifact}"]`);
  await row.waitFor();
  const size = (await row.locator('td.num').textContent())?.trim();
  if (!size || !/^\d+(\.\d)? (B|KiB|MiB)$/.test(size)) throw new Error(`the size column shows ${JSON.stringify(size)}`);
  await page.locator('button.step', { hasText: 'Show links' }).getByText('Publishing').waitFor();
  await page.screenshot({ path: path.join(shots, 'artifacts-01-build.png') });

  console.log(`--- download ${artifact}`);
  const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('button', { name: `Download ${artifact}` }).click()]);
  const want = artifact.split('/').pop();
  if (download.suggestedFilename() !== want) throw new Error(`suggested file name ${download.suggestedFilename()}, want ${want}`);
  const failure = await download.failure();
  if (failure) throw new Error(`the download failed: ${failure}`);
  await download.saveAs(out);
  const leaked = urls.filter((u) => u.includes(token));
  if (leaked.length) throw new Error(`the token is in a URL: ${leaked[0]}`);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  console.log('PASS');
} catch (e) {
  failed = e;
  await page.screenshot({ path: path.join(shots, 'artifacts-failure.png') }).catch(() => {});
}
await context.close();
rmSync(userData, { recursive: true, force: true });
clearTimeout(overall);
if (failed) fail(failed.stack || String(failed));
