// Soak (not a test; `SOAK_DIVERGE=K scripts/soak-browser.sh`): a long CPU-fallback run whose
// weights break at the end of epoch K (the page's test hook: a finite loss, non-finite weights),
// the browser killed the moment the page says so (an autosave may be in flight), then a new
// browser on the same profile. The stored run must open, and be of an epoch before the break.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { startServer, stopServer, serverUrl, loadSample, fillSettings, waitForProbe } from './harness.mjs';

const K = Number(process.env.SOAK_DIVERGE || 20);
const IMAGES = process.env.SOAK_IMAGES || '500';
const SETTINGS = {
  warmup_epochs: '5', width: '8', feature_dim: '32', batch_size: '64', num_clusters: '10, 25',
  kmeans_restarts: '1', epochs: String(4 * K),
};
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'pcl-soak-'));
const open = () => chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless=new', '--disable-background-networking'],
});

await startServer();
try {
  let context = await open();
  let page = context.pages()[0] || await context.newPage();
  await page.goto(`${serverUrl()}?cpu`);
  await waitForProbe(page, 120_000);
  await page.evaluate((k) => window.pclSimulateDivergence(k), K);
  await loadSample(page, IMAGES, 120_000);
  await fillSettings(page, SETTINGS);
  const t0 = Date.now();
  await page.click('[data-testid=train]');
  await page.waitForFunction(() => /training stopped/.test(document.querySelector('[data-testid=error]')?.textContent ?? ''),
    null, { timeout: 3_600_000, polling: 20 });
  const shown = await page.getAttribute('[data-testid=autosave]', 'data-epoch');
  // Killed, not closed: whatever write was in flight is cut (Chromium's processes of this
  // profile, found by its folder on their command lines).
  execFileSync('pkill', ['-KILL', '-f', profile]);
  await context.close().catch(() => {});
  console.log(`diverged after epoch ${K} at ${((Date.now() - t0) / 1000).toFixed(0)} s; the page showed the autosave of epoch ${shown}`);

  context = await open();
  page = context.pages()[0] || await context.newPage();
  await page.goto(`${serverUrl()}?cpu`);
  await page.waitForSelector('[data-testid=autosave-offer]', { timeout: 60_000 });
  const offer = await page.textContent('[data-testid=autosave-offer]');
  const epoch = Number(offer.match(/epoch (\d+)/)[1]);
  await waitForProbe(page, 120_000);
  await page.click('[data-testid=resume-autosave]');
  await page.waitForSelector(`[data-testid=status][data-state=paused][data-epoch="${epoch}"]`, { timeout: 120_000 });
  const ok = epoch >= 1 && epoch <= K;
  console.log(`reopened: offered and resumed epoch ${epoch} (the break was at the end of epoch ${K}): ${ok ? 'OK' : 'WRONG'}`);
  await context.close();
  if (!ok) process.exitCode = 1;
} finally {
  stopServer();
  fs.rmSync(profile, { recursive: true, force: true });
}
