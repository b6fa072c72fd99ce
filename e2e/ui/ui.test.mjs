// End-to-end test of Hangar's web UI, run by e2e/ui_test.go (go test ./e2e/ -run TestUI).
// It drives Debian's Chromium with playwright-core as a person would: sign in, add an app, start
// a build with SSH access, see the SSH panel, run the page's one-line command with the real ssh
// client, open the browser terminal, run a command in it, detach it and continue in the same
// shell from a terminal (the one-line command on a pty), re-attach in the browser, log out with
// the terminal's close button and see the build finish; then the Start dialog: a workflow list held
// back until the dialog has opened (the request must carry the workflow shown), SSH only if a step
// fails, the branch picker, an error in the UI's words, and a breakpoint resumed with Continue. It
// saves a screenshot of each stage in $SCREENSHOT_DIR and fails if the page contacts any host
// but the server.
//
// Env: HANGAR_URL, HANGAR_TOKEN, REPO_PATH (a repository with workflow "hold"), SCREENSHOT_DIR.

import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fail, launch, need, serverURL } from './browser.mjs';

const base = serverURL();
const token = need('HANGAR_TOKEN');
const repo = need('REPO_PATH');
const shots = need('SCREENSHOT_DIR');
const origin = new URL(base).origin;
const appName = process.env.APP_NAME || 'ui-demo';

function step(msg) {
  console.log(`--- ${msg}`);
}

const sshHome = mkdtempSync(path.join(tmpdir(), 'hangar-ui-home-'));
// The whole run is bounded: a hung browser must not hang the test.
const b = await launch('UI', 5, shots, { args: ['--disable-quic'], colorScheme: 'light' });
const { context, page, pageErrors } = b;

// Every request of the page must go to the server.
const foreign = [];
const watch = (page) => {
  page.on('request', (r) => {
    const u = new URL(r.url());
    if ((u.protocol === 'data:' || u.protocol === 'blob:') && !u.host) return;
    if (u.origin !== origin) foreign.push(`${r.method()} ${r.url()}`);
  });
  page.on('websocket', (ws) => {
    const u = new URL(ws.url());
    if (u.host !== new URL(origin).host) foreign.push(`WebSocket ${ws.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`browser console: ${m.text()}`);
  });
};
context.pages().forEach(watch);
context.on('page', watch);

let n = 0;
async function shot(page, name) {
  n++;
  const file = path.join(shots, `${String(n).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  console.log(`screenshot ${file}`);
}

const run = (cmd, args, env, timeout = 120_000) =>
  new Promise((resolve) => {
    execFile(cmd, args, { env, timeout }, (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });

// live runs cmd on a pty (script(1)) and lets the test type into it and wait for its output.
function live(cmdline, env) {
  const p = spawn('script', ['-qfec', cmdline, '/dev/null'], { env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  return {
    type: (line) => p.stdin.write(line + '\n'),
    async waitFor(text, timeout = 30_000) {
      const until = Date.now() + timeout;
      while (!out.includes(text)) {
        if (Date.now() > until) throw new Error(`the terminal did not show ${JSON.stringify(text)}:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    // kill -9 the whole client (script, bash, ssh): a lost connection.
    kill: () => process.kill(-p.pid, 'SIGKILL'),
  };
}

// waitEvents waits until build id has n events of kind.
async function waitEvents(id, kind, n) {
  const until = Date.now() + 30_000;
  for (;;) {
    const r = await fetch(`${base}/api/v1/builds/${id}/events`, { headers: { Authorization: `Bearer ${token}` } });
    const evs = r.ok ? await r.json() : [];
    if ((Array.isArray(evs) ? evs : (evs.events ?? [])).filter((e) => e.kind === kind).length >= n) return;
    if (Date.now() > until) throw new Error(`build ${id}: fewer than ${n} ${kind} events`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

let failed = null;

try {
  step('sign in');
  await page.goto(base + '/');
  await page.waitForURL(/\/signin/);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shot(page, 'signin');
  await page.getByLabel('API token').fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('This token was refused').waitFor();
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Builds', level: 1 }).waitFor();
  await shot(page, 'builds-empty');

  step('add an app');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Apps' }).click();
  await page.getByRole('heading', { name: 'Apps', level: 1 }).waitFor();
  await page.getByRole('button', { name: 'Add app' }).click();
  const addDialog = page.getByRole('dialog', { name: 'Add app' });
  await addDialog.waitFor();
  // Escape closes the dialog and gives focus back to the button that opened it.
  await page.keyboard.press('Escape');
  await addDialog.waitFor({ state: 'hidden' });
  const focused = await page.evaluate(() => document.activeElement?.textContent);
  if (focused !== 'Add app') throw new Error(`after Escape, focus is on ${JSON.stringify(focused)}, not the Add app button`);
  await page.getByRole('button', { name: 'Add app' }).click();
  await addDialog.getByLabel('Name', { exact: true }).fill(appName);
  await addDialog.getByLabel('Repository', { exact: true }).fill(repo);
  await shot(page, 'add-app');
  await addDialog.getByRole('button', { name: 'Add app' }).click();
  await addDialog.getByText('was added').waitFor();
  const secret = await addDialog.locator('pre[aria-label="webhook secret"]').textContent();
  if (!secret || secret.trim().length < 16) throw new Error(`no webhook secret shown once: ${JSON.stringify(secret)}`);
  await shot(page, 'app-added');
  await addDialog.getByRole('button', { name: `Open ${appName}` }).click();
  await page.getByRole('heading', { name: appName, level: 1 }).waitFor();
  await page.getByRole('heading', { name: 'Hold for SSH' }).waitFor();
  await shot(page, 'app');

  step('start a build with SSH access');
  await page.getByRole('button', { name: 'Start new build' }).click();
  const startDialog = page.getByRole('dialog', { name: 'Start new build' });
  await startDialog.waitFor();
  await startDialog.getByLabel('Workflow').selectOption('hold');
  const sshBox = startDialog.getByLabel('Enable SSH access');
  if (await sshBox.isDisabled()) throw new Error('"Enable SSH access" is disabled on a server with SSH');
  await sshBox.check();
  await shot(page, 'start-build');
  await startDialog.getByRole('button', { name: 'Start build' }).click();
  await page.waitForURL(/\/builds\/\d+$/);
  const buildId = Number(new URL(page.url()).pathname.split('/').pop());

  step('the SSH panel appears');
  const command = page.locator('#ssh-command');
  await command.waitFor({ timeout: 90_000 });
  const oneLiner = (await command.textContent()).trim();
  if (!/^curl -fsSL '.+' \| bash$/.test(oneLiner)) throw new Error(`unexpected one-line command: ${oneLiner}`);
  await page.locator('#ssh-powershell').waitFor();
  await page.getByTestId('ssh-countdown').waitFor();
  // The command says how long it works; a loopback server is not warned of.
  const expiry = (await page.getByTestId('ssh-command-expiry').textContent()) ?? '';
  if (!/works until .+ left\)/.test(expiry)) throw new Error(`the one-line command's expiry is not shown: ${JSON.stringify(expiry)}`);
  if (await page.getByTestId('ssh-transport-warning').count()) throw new Error('a plain-HTTP warning on a loopback server');
  // The build's log shows the step's output, in colour.
  await page.locator('.log .ansi-green-fg', { hasText: 'ready' }).waitFor();
  await shot(page, 'ssh-ready');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator('.ssh').scrollIntoViewIfNeeded();
  await shot(page, 'ssh-ready-phone');
  await page.setViewportSize({ width: 1280, height: 900 });

  step('the one-liner works with the real ssh client');
  const withCommand = oneLiner.replace(/\| bash$/, '| bash -s -- printenv FCI_BUILD_DIR');
  const r = await run('bash', ['-c', withCommand], { HOME: sshHome, PATH: process.env.PATH, LANG: 'C.UTF-8' });
  if (r.code !== 0 || r.stdout.trim() !== '/home/builder/clone') {
    throw new Error(`one-liner: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`);
  }
  console.log(`one-liner printed ${r.stdout.trim()}`);

  step('more time from the SSH panel');
  await page.getByRole('button', { name: '+10 min' }).click();
  await waitEvents(buildId, 'ssh_extended', 1);

  step('the browser terminal');
  await page.getByRole('button', { name: 'Open terminal' }).click();
  await page.locator('[data-terminal-state="open"]').waitFor({ timeout: 60_000 });
  const rows = page.locator('.term-box .xterm-rows');
  // Wait for the shell's prompt before typing.
  await page.waitForFunction(() => /\$\s*$/m.test(document.querySelector('.term-box .xterm-rows')?.innerText ?? ''), null, { timeout: 30_000 });
  await page.locator('.term-box .xterm-helper-textarea').focus();
  await page.keyboard.type('printenv FCI_BUILD_DIR\n', { delay: 20 });
  await page.waitForFunction(
    () => (document.querySelector('.term-box .xterm-rows')?.innerText ?? '').split('\n').some((l) => l.trim() === '/home/builder/clone'),
    null,
    { timeout: 30_000 },
  );
  console.log('the terminal printed /home/builder/clone');
  await shot(page, 'terminal');
  // Resizing the window resizes the terminal (fit addon → resize message).
  const before = await rows.evaluate((e) => e.children.length);
  await page.setViewportSize({ width: 1280, height: 600 });
  await page.waitForFunction((b) => document.querySelector('.term-box .xterm-rows').children.length !== b, before, { timeout: 10_000 });
  await page.setViewportSize({ width: 1280, height: 900 });

  step('detach in the browser, continue from a terminal');
  await page.locator('.term-box .xterm-helper-textarea').focus();
  await page.keyboard.type('export FROM_BROWSER=yes; echo browser-mark-$((3*4))\n', { delay: 20 });
  await page.waitForFunction(() => (document.querySelector('.term-box .xterm-rows')?.innerText ?? '').includes('browser-mark-12'), null, { timeout: 30_000 });
  await page.locator('#detach-terminal').click();
  await page.getByRole('button', { name: 'Open terminal' }).waitFor();
  await waitEvents(buildId, 'ssh_login_detach', 1);
  const env = { HOME: sshHome, PATH: process.env.PATH, LANG: 'C.UTF-8', TERM: 'xterm' };
  const term = live(oneLiner, env);
  await term.waitFor('browser-mark-12'); // the browser's screen, restored
  term.type('echo "got-$FROM_BROWSER"');
  await term.waitFor('got-yes');
  console.log('the terminal continued the browser\'s shell');
  term.kill();
  await waitEvents(buildId, 'ssh_login_detach', 2);

  step('re-attach in the browser; its close button logs out and the build finishes');
  await page.getByRole('button', { name: 'Open terminal' }).click();
  await page.locator('[data-terminal-state="open"]').waitFor({ timeout: 60_000 });
  await page.waitForFunction(() => (document.querySelector('.term-box .xterm-rows')?.innerText ?? '').includes('got-yes'), null, { timeout: 30_000 });
  await shot(page, 'terminal-reattached');
  await page.locator('#close-terminal').click();
  await page.locator(`.page-head [data-status="finished"]`).waitFor({ timeout: 60_000 });
  await page.locator('[data-terminal-state="closed"]').waitFor();
  await page.getByTestId('ssh-closed').waitFor();
  await shot(page, 'finished');

  step('rerun it with SSH from its page');
  await page.getByRole('button', { name: 'Rerun with SSH' }).click();
  await page.waitForURL((u) => /\/builds\/\d+$/.test(u.pathname) && Number(u.pathname.split('/').pop()) !== buildId);
  const rerunId = Number(new URL(page.url()).pathname.split('/').pop());
  await page.getByTestId('reruns').getByRole('link', { name: `build ${buildId}` }).waitFor();
  const cancel = await fetch(`${base}/api/v1/builds/${rerunId}/cancel`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  if (!cancel.ok) throw new Error(`cancel the rerun: ${cancel.status}`);
  await page.locator('.page-head [data-status="canceled"]').waitFor({ timeout: 60_000 });
  await page.goto(`${base}/builds/${buildId}`);
  await page.getByTestId('reruns').getByRole('link', { name: `build ${rerunId}` }).waitFor();

  step('the Start dialog: a workflow list that arrives late, and the request carries the workflow shown');
  await page.goto(`${base}/apps/${appName}`);
  await page.getByRole('heading', { name: appName, level: 1 }).waitFor();
  // Hold back the workflow list until the dialog is open and has asked.
  let release;
  const gate = new Promise((r) => (release = r));
  const isWorkflows = (u) => u.pathname === `/api/v1/apps/${appName}/workflows`;
  await page.route(isWorkflows, async (route) => {
    await gate;
    await route.continue();
  });
  const asked = page.waitForRequest((r) => isWorkflows(new URL(r.url())));
  await page.getByRole('button', { name: 'Start new build' }).click();
  const dlg = page.getByRole('dialog', { name: 'Start new build' });
  await dlg.waitFor();
  await asked;
  const wfSelect = dlg.locator('#sb-workflow');
  const startButton = dlg.getByRole('button', { name: 'Start build' });
  if (!(await wfSelect.isDisabled()) || !(await startButton.isDisabled())) {
    throw new Error('while the workflow list is on its way, the workflow field or Start build is usable');
  }
  await shot(page, 'start-waiting-for-workflows');
  release();
  await dlg.locator('select#sb-workflow:not([disabled])').waitFor();
  await page.unroute(isWorkflows);
  const shown = await wfSelect.evaluate((s) => ({ value: s.value, label: s.selectedOptions[0]?.textContent }));
  if (shown.label !== 'Demo (demo)' || shown.value !== 'demo') throw new Error(`the dialog shows ${JSON.stringify(shown)}, want Demo (demo) first`);
  await dlg.getByLabel('Enable SSH access').check();
  await dlg.getByLabel('Only if a step fails').check();
  await shot(page, 'start-on-failure');
  const isStart = (r) => r.method() === 'POST' && new URL(r.url()).pathname === '/api/v1/builds';
  let [sent] = await Promise.all([page.waitForRequest(isStart), startButton.click()]);
  let body = sent.postDataJSON();
  if (body.workflow !== shown.value || body.ssh_on_failure !== true || body.ssh || body.ssh_break_before) {
    throw new Error(`the dialog showed ${shown.label} with SSH only if a step fails, and sent ${JSON.stringify(body)}`);
  }
  await page.waitForURL(/\/builds\/\d+$/);
  const demoId = Number(new URL(page.url()).pathname.split('/').pop());
  await page.getByTestId('ssh-mode').getByText('Only if a step fails').waitFor();
  await page.locator('.page-head [data-status="finished"]').waitFor({ timeout: 90_000 });
  await page.getByTestId('ssh-mode').getByText('not opened, no key was made').waitFor();
  const demo = await (await fetch(`${base}/api/v1/builds/${demoId}`, { headers: { Authorization: `Bearer ${token}` } })).json();
  if (demo.workflow !== 'demo' || demo.ssh.mode !== 'on-failure' || demo.ssh.enabled) throw new Error(`the demo build: ${JSON.stringify(demo)}`);
  await shot(page, 'on-failure-passed');

  step('the branch picker: the repository\'s branches, default first, and a typed one');
  await page.goto(`${base}/apps/${appName}`);
  await page.getByRole('button', { name: 'Start new build' }).click();
  await dlg.waitFor();
  await dlg.locator('#sb-branches option[value="feature/late"]').waitFor({ state: 'attached' });
  const branches = await dlg.locator('#sb-branches option').evaluateAll((os) => os.map((o) => o.value));
  if (branches[0] !== 'main' || !branches.includes('feature/late')) throw new Error(`branch suggestions ${JSON.stringify(branches)}, want main first`);
  if ((await dlg.getByLabel('Branch').getAttribute('placeholder')) !== 'main') throw new Error('the branch field does not show the default branch');
  await dlg.getByLabel('Branch').fill('feature/late');
  // That branch's workflow file has one workflow more.
  await dlg.locator('#sb-workflow option[value="feature-only"]').waitFor({ state: 'attached' });
  await dlg.getByLabel('Workflow').selectOption('feature-only');
  await shot(page, 'start-branch');
  [sent] = await Promise.all([page.waitForRequest(isStart), startButton.click()]);
  body = sent.postDataJSON();
  if (body.branch !== 'feature/late' || body.workflow !== 'feature-only' || body.ssh || body.ssh_on_failure) {
    throw new Error(`the branch build sent ${JSON.stringify(body)}`);
  }
  await page.waitForURL(/\/builds\/\d+$/);
  await page.locator('.page-head [data-status="finished"]').waitFor({ timeout: 90_000 });
  await page.locator('.log').getByText('feature-ran', { exact: true }).first().waitFor();

  step('a branch the repository lacks: the dialog says so in its own words');
  await page.goto(`${base}/apps/${appName}`);
  await page.getByRole('button', { name: 'Start new build' }).click();
  await dlg.waitFor();
  await dlg.locator('#sb-branches option[value="main"]').waitFor({ state: 'attached' });
  await dlg.getByLabel('Branch').fill('no-such-branch');
  await dlg.getByText('The repository has no branch “no-such-branch”').first().waitFor();
  await dlg.locator('button[type="submit"]:not([disabled])').waitFor();
  await startButton.click();
  const alert = dlg.getByRole('alert');
  await alert.waitFor();
  const said = (await alert.textContent()) ?? '';
  if (!said.includes('The repository has no branch “no-such-branch”') || /--|`|API/.test(said)) throw new Error(`the dialog's error: ${JSON.stringify(said)}`);
  if ((await page.evaluate(() => document.activeElement?.id)) !== 'sb-branch') throw new Error('the branch field is not focused after its error');
  if ((await dlg.getByLabel('Branch').getAttribute('aria-invalid')) !== 'true') throw new Error('the branch field is not marked invalid');
  await shot(page, 'start-branch-error');
  await dlg.getByRole('button', { name: 'Cancel' }).click();
  await dlg.waitFor({ state: 'hidden' });

  step('a breakpoint from the dialog, resumed with the Continue button');
  await page.getByRole('button', { name: 'Start new build' }).click();
  await dlg.waitFor();
  await dlg.locator('#sb-workflow option[value="paused"]').waitFor({ state: 'attached' });
  await dlg.getByLabel('Workflow').selectOption('paused');
  await dlg.getByLabel('Enable SSH access').check();
  await dlg.getByLabel('After the breakpoint').check();
  await shot(page, 'start-breakpoint');
  [sent] = await Promise.all([page.waitForRequest(isStart), startButton.click()]);
  body = sent.postDataJSON();
  if (body.workflow !== 'paused' || body.ssh !== true || JSON.stringify(body.ssh_break_before) !== '["2"]') {
    throw new Error(`the breakpoint build sent ${JSON.stringify(body)}`);
  }
  await page.waitForURL(/\/builds\/\d+$/);
  const pausedId = Number(new URL(page.url()).pathname.split('/').pop());
  const notice = page.getByTestId('paused');
  await notice.waitFor({ timeout: 90_000 });
  if (!((await notice.textContent()) ?? '').includes('After the breakpoint')) throw new Error(`the pause notice: ${await notice.textContent()}`);
  await page.getByTestId('ssh-mode').getByText('Always').waitFor();
  await shot(page, 'paused');
  await notice.getByRole('button', { name: 'Continue build' }).click();
  await notice.waitFor({ state: 'hidden' });
  await page.locator('.page-head [data-status="waiting_for_ssh"]').waitFor({ timeout: 60_000 });
  const resumed = await (await fetch(`${base}/api/v1/builds/${pausedId}`, { headers: { Authorization: `Bearer ${token}` } })).json();
  if (resumed.steps[3]?.name !== 'After the breakpoint' || resumed.steps[3].status !== 'success') throw new Error(`after Continue: ${JSON.stringify(resumed.steps)}`);
  await shot(page, 'resumed');
  const stop = await fetch(`${base}/api/v1/builds/${pausedId}/cancel`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
  if (!stop.ok) throw new Error(`cancel the paused build: ${stop.status}`);
  await page.locator('.page-head [data-status="canceled"]').waitFor({ timeout: 60_000 });

  step('the builds list shows it');
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Builds' }).click();
  await page.locator(`tr[data-build="${buildId}"] [data-status="finished"]`).waitFor();
  await shot(page, 'builds');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, 'builds-phone');
} catch (e) {
  failed = e;
  try {
    await shot(page, 'failure');
  } catch {
    /* the page is gone */
  }
}

await b.close();
rmSync(sshHome, { recursive: true, force: true });

if (foreign.length) {
  console.error(`the page contacted other hosts than ${origin}:\n  ${foreign.join('\n  ')}`);
  failed ??= new Error('requests to other hosts');
}
if (pageErrors.length) {
  console.error(`errors in the page:\n  ${pageErrors.join('\n  ')}`);
  failed ??= new Error('errors in the page');
}
if (failed) fail(failed.stack || String(failed));
console.log('PASS: the web UI signs in, adds an app, starts an SSH build, extends it, connects with ssh and the browser terminal, moves the shell between them, finishes it and reruns it with SSH; the Start dialog sends the workflow it shows when its list comes late, picks branches, words errors, and starts SSH on failure and a breakpoint that Continue resumes');
