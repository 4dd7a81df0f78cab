// Where the worker's time goes (not a test): trains the bench's setting (500 sample images,
// width 32, batch 64, CPU fallback) for PROFILE_SECONDS (default 30) with V8's sampling profiler
// on, then prints the busiest functions of the busiest isolate (the worker, or with
// PROFILE_WORKERS=2 the worker or its helper) by `node --prof-process`. Needs function names:
// the dev build (dist/), or PROFILE_DIST, e.g. a release build that keeps them
// (`CARGO_PROFILE_WEB_STRIP=none trunk build --release --dist DIR`). Usage, from tests/e2e:
//   node profile-browser.mjs            (then read the printed report path)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { openApp, startServer, stopServer, loadSample, fillSettings, waitForProbe, BENCH_SETTINGS } from './harness.mjs';

const seconds = Number(process.env.PROFILE_SECONDS || 30);
const workers = process.env.PROFILE_WORKERS || '1';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pcl-profile-'));
await startServer(process.env.PROFILE_DIST ? path.resolve(process.env.PROFILE_DIST) : undefined);
const { browser, page } = await openApp({
  query: `?cpu&workers=${workers}`,
  args: [`--js-flags=--prof --logfile=${path.join(dir, 'v8.log')}`],
});
try {
  await waitForProbe(page, 300_000);
  await loadSample(page, 500, 120_000);
  await fillSettings(page, BENCH_SETTINGS);
  await page.click('[data-testid=train]');
  await page.waitForTimeout(seconds * 1000);
  console.log(`images/s: ${await page.getAttribute('[data-testid=status]', 'data-images-per-s')}`);
} finally {
  await browser.close();
  stopServer();
}
// One log per isolate; the worker's is the largest.
const logs = fs.readdirSync(dir).map((f) => path.join(dir, f)).sort((a, b) => fs.statSync(b).size - fs.statSync(a).size);
const report = path.join(dir, 'report.txt');
fs.writeFileSync(report, execFileSync(process.execPath, ['--prof-process', logs[0]], { maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'ignore'] }));
console.log(fs.readFileSync(report, 'utf8').split('\n').slice(0, 30).join('\n'));
console.log(`whole report (with callers): ${report}`);
