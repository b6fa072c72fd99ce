// The app page's environment variable groups, run by e2e/secrets_test.go (TestUIGroups) in Debian's
// Chromium with playwright-core: a value saved in the form is never shown again (the field empties,
// the page lists the key only); a build that echoes it shows ***** in its log.
//
// Env: HANGAR_URL, HANGAR_TOKEN, APP_NAME (whose workflow "echo" imports group play and echoes
// $PLAY_TOKEN), SECRET (the value to save as PLAY_TOKEN), SCREENSHOT_DIR.

import path from 'node:path';
import { launch, need, run, serverURL, signIn, waitBuild } from './browser.mjs';

const base = serverURL();
const token = need('HANGAR_TOKEN');
const appName = need('APP_NAME');
const secret = need('SECRET');
const shots = need('SCREENSHOT_DIR');

const b = await launch('groups', 3, shots);
const page = b.page;
// Every answer the page gets: none may hold the value.
const answers = [];
page.on('response', async (r) => {
  if (r.url().includes('/api/')) answers.push(r.text().then((t) => `${r.url()}: ${t}`, () => ''));
});

await run(b, path.join(shots, 'groups-failure.png'), async () => {
  await signIn(page, token);

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
  const built = await waitBuild(token, id);
  if (built.status !== 'finished') throw new Error(`build ${id} ended ${built.status}: ${built.message}`);
  await page.goto(`${base}/builds/${id}`);
  await page.locator('button.step', { hasText: 'Echo' }).click();
  await page.getByText('token=*****').waitFor();
  await page.screenshot({ path: path.join(shots, 'groups-02-build.png') });
  if ((await page.content()).includes(secret)) throw new Error('the build page shows the value');
  for (const a of await Promise.all(answers)) {
    if (a.includes(secret)) throw new Error(`an API answer holds the value: ${a.slice(0, 200)}`);
  }
});
