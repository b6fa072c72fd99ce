// The Start dialog's inputs form, run by e2e/workflow_test.go (TestUIInputs) in Debian's Chromium
// with playwright-core: the app page lists what Hangar does not run of each workflow; the Start
// dialog shows a form built from the workflow's inputs (a choice, a checkbox, a number); the
// build it starts gets the values, and its skipped step shows why.
//
// Env: HANGAR_URL, HANGAR_TOKEN, APP_NAME (an app whose codemagic.yaml is e2e's featuresFile),
// SCREENSHOT_DIR.

import path from 'node:path';
import { launch, need, run, serverURL, signIn, waitBuild } from './browser.mjs';

const base = serverURL();
const token = need('HANGAR_TOKEN');
const appName = need('APP_NAME');
const shots = need('SCREENSHOT_DIR');

const b = await launch('inputs', 3, shots);
const page = b.page;

await run(b, path.join(shots, 'inputs-failure.png'), async () => {
  await signIn(page, token);

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
  const built = await waitBuild(token, id);
  if (built.status !== 'finished') throw new Error(`build ${id} ended ${built.status}: ${built.message}`);
  const tests = built.steps.find((s) => s.name === 'Tests');
  if (tests.status !== 'skipped' || !tests.reason.includes('inputs.runTests')) throw new Error(`Tests step: ${JSON.stringify(tests)}`);
  await page.locator('button.step', { hasText: 'Show' }).click();
  await page.getByText('flavor=prod count=7').waitFor();
  await page.locator('button.step', { hasText: 'Tests' }).click();
  await page.getByText('Skipped: when.condition is false').waitFor();
  const title = await page.locator('button.step', { hasText: 'Tests' }).getAttribute('title');
  if (!title || !title.includes('when.condition is false: ${{ inputs.runTests }}')) throw new Error(`the skipped step's title: ${title}`);
  await page.screenshot({ path: path.join(shots, 'inputs-03-build.png') });
});
