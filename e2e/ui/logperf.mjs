// Measures the web UI with a 100,000-line step: while the lines stream in live, and when the
// finished build's page is opened. Not part of the test suite; run it against a server on this
// machine (it makes a git repository in a temporary directory and adds it as an app):
//
//   HANGAR_URL=http://127.0.0.1:8080 HANGAR_TOKEN=$(cat hangar-data/admin-token) node e2e/ui/logperf.mjs
//
// It prints how long the lines took to show, the browser's long tasks (> 50 ms), frame intervals
// while scrolling through the log, the number of log rows in the DOM, and layout shifts.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const base = (process.env.HANGAR_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const token = process.env.HANGAR_TOKEN;
if (!token) throw new Error('set HANGAR_TOKEN');
const LINES = Number(process.env.LINES || 100000);

const api = async (method, p, body) => {
  const r = await fetch(base + p, { method, headers: { Authorization: 'Bearer ' + token }, body: body && JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
  return r.json();
};

// A repository whose workflow prints LINES lines, then some more slowly.
const dir = mkdtempSync(path.join(tmpdir(), 'hangar-logperf-'));
const work = path.join(dir, 'work');
const git = (...a) => execFileSync('git', a, { cwd: work, stdio: 'pipe' });
execFileSync('git', ['init', '-q', '-b', 'main', work]);
writeFileSync(
  path.join(work, 'codemagic.yaml'),
  `workflows:
  big:
    max_build_duration: 10
    scripts:
      - name: Big log
        script: seq 1 ${LINES} | sed 's/^/\\x1b[32mok\\x1b[0m log line /'
      - name: After
        script: for i in $(seq 1 6); do echo "tick $i"; sleep 0.5; done
`,
);
git('add', '-A');
git('-c', 'user.name=perf', '-c', 'user.email=perf@example.invalid', 'commit', '-qm', 'perf');
execFileSync('git', ['clone', '-q', '--bare', work, path.join(dir, 'repo.git')]);
const app = `logperf-${Date.now().toString(36)}`;
await api('POST', '/api/v1/apps', { name: app, repo: path.join(dir, 'repo.git') });

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await ctx.addInitScript((t) => {
  localStorage.setItem('hangar.token', t);
  window.__long = [];
  window.__cls = 0;
  new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__long.push(Math.round(e.duration)))).observe({ type: 'longtask', buffered: true });
  new PerformanceObserver((l) => l.getEntries().forEach((e) => (window.__cls += e.hadRecentInput ? 0 : e.value))).observe({ type: 'layout-shift', buffered: true });
}, token);
const page = await ctx.newPage();
const last = page.locator('.ln-n', { hasText: new RegExp(`^${LINES}$`) });

// 1. Live: open the page as the build starts.
const b = await api('POST', '/api/v1/builds', { app, workflow: 'big' });
let t0 = Date.now();
await page.goto(`${base}/builds/${b.id}`);
// Keep the view on the big step (it would move on to the next one by itself).
await page.locator('[data-step="2"]').click();
await last.waitFor({ timeout: 120000 });
console.log(`live: line ${LINES} on screen (followed at the bottom) ${Date.now() - t0} ms after opening the page`);
await page.locator('.page-head [data-status="finished"]').waitFor({ timeout: 120000 });
const done = await api('GET', `/api/v1/builds/${b.id}`);
const stepEnd = Date.parse(done.steps[2].finished_at) - Date.parse(done.created_at);
console.log(`live: (the step itself ran ${done.steps[2].duration_ms} ms and ended ${stepEnd} ms after the build was created)`);
let stats = await page.evaluate(() => ({ long: window.__long.splice(0), cls: window.__cls.toFixed(4) }));
console.log(`live: long tasks ${JSON.stringify(stats.long)} ms; layout shift ${stats.cls}`);

// 2. The finished build, opened afresh: every line comes at once.
await page.goto('about:blank');
t0 = Date.now();
await page.goto(`${base}/builds/${b.id}`);
await page.locator('[data-step="2"]').click();
await last.waitFor({ timeout: 120000 });
console.log(`finished: line ${LINES} on screen ${Date.now() - t0} ms after opening the page`);
stats = await page.evaluate(() => ({ long: window.__long.splice(0), rows: document.querySelectorAll('.log-rows > .ln').length, nodes: document.getElementsByTagName('*').length }));
console.log(`finished: long tasks ${JSON.stringify(stats.long)} ms; ${stats.rows} log rows and ${stats.nodes} elements in the DOM`);

// 3. Scrolling: jumps to random places, then steady scrolling.
const frames = await page.evaluate(async () => {
  const sc = document.querySelector('.log');
  const gaps = [];
  let t = performance.now();
  for (let i = 0; i < 240; i++) {
    sc.scrollTop = i < 120 ? Math.random() * sc.scrollHeight : sc.scrollTop + 400;
    await new Promise((r) => requestAnimationFrame(r));
    const n = performance.now();
    gaps.push(n - t);
    t = n;
  }
  gaps.sort((a, b) => a - b);
  return { median: gaps[120].toFixed(1), p95: gaps[228].toFixed(1), long: window.__long.splice(0) };
});
console.log(`scrolling: frame interval median ${frames.median} ms, p95 ${frames.p95} ms; long tasks ${JSON.stringify(frames.long)}`);

await browser.close();
await fetch(`${base}/api/v1/apps/${app}`, { method: 'DELETE', headers: { Authorization: 'Bearer ' + token } });
rmSync(dir, { recursive: true, force: true });
