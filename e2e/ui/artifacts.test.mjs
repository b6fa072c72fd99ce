// A build's artifacts on its page, run by e2e/artifacts_test.go (TestUIArtifacts) in Debian's Chromium
// with playwright-core: the page lists the artifacts with their sizes, and its Download button saves one
// through the browser's own download (a single-use link: the token is never in a URL). The Go test
// compares the saved file with what the build wrote.
//
// Env: HANGAR_URL, HANGAR_TOKEN, BUILD_ID (an ended build with artifacts), ARTIFACT (its name),
// OUT_FILE (where to save the download), SCREENSHOT_DIR.

import path from 'node:path';
import { launch, need, run, serverURL, signIn } from './browser.mjs';

const base = serverURL();
const token = need('HANGAR_TOKEN');
const id = need('BUILD_ID');
const artifact = need('ARTIFACT');
const out = need('OUT_FILE');
const shots = need('SCREENSHOT_DIR');

const b = await launch('artifacts', 2, shots, { acceptDownloads: true });
const page = b.page;
// The token travels only in Authorization headers, never in a URL.
const urls = [];
page.on('request', (r) => urls.push(r.url()));

await run(b, path.join(shots, 'artifacts-failure.png'), async () => {
  await signIn(page, token);

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
});
