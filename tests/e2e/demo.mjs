// Benchmark (not a test; `scripts/bench-demo.sh`): the page's quick demo as a workshop runs it,
// paired with the CLI's. The whole sample set, the default preset, Train, on the CPU fallback
// with its helpers; then `pcl train --preset quick` on the same images and machine. Prints per
// run the epochs each trained in the budget, the page's level AMI and final k-means AMI against
// raw pixels' AMI, the CLI's AMI, and the page's epochs as a share of the CLI's, for DEMO_RUNS
// runs (default 1). PCL_BIN: the CLI binary. DEMO_SETTINGS: settings (JSON) over the preset in
// both, to measure a candidate preset before it is one. DEMO_DIST: the build to serve (default
// dist/, the dev build; a release build is what the published site runs).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { openApp, startServer, stopServer, loadSample, waitForProbe, fillSettings } from './harness.mjs';

const RUNS = Number(process.env.DEMO_RUNS || 1);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pcl-demo-'));
const sample = path.join(work, 'sample');
execFileSync(process.env.PCL_BIN, ['sample', '--out', sample]);
const settings = JSON.parse(process.env.DEMO_SETTINGS || '{}');
const config = path.join(work, 'settings.json');
fs.writeFileSync(config, JSON.stringify(settings));
const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;
const sd = (v) => Math.sqrt(v.reduce((a, b) => a + (b - mean(v)) ** 2, 0) / Math.max(1, v.length - 1));
const rows = [];
await startServer(process.env.DEMO_DIST || undefined);
try {
  for (let run = 1; run <= RUNS; run++) {
    const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
    let web;
    try {
      await waitForProbe(page, 120_000);
      await loadSample(page, 'all', 180_000);
      // 'all' cannot name its count in the selector: the whole set is 1,870 images.
      await page.waitForSelector('[data-testid=image-count][data-state=ready][data-count="1870"]', { timeout: 180_000 });
      if (Object.keys(settings).length) await fillSettings(page, settings);
      const t0 = Date.now();
      await page.click('[data-testid=train]');
      await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 1_200_000 });
      await page.waitForSelector('[data-testid=metrics][data-pixels-ami]:not([data-pixels-ami=""])', { timeout: 300_000 });
      web = await page.$eval('[data-testid=metrics]', (e) => ({ ...e.dataset }));
      web.seconds = (Date.now() - t0) / 1000;
    } finally {
      await browser.close();
    }
    // The CLI on the same images and machine, straight after (nothing else running).
    const out = path.join(work, `cli-${run}`);
    execFileSync(process.env.PCL_BIN, ['train', '--images', sample, '--out', out, '--preset', 'quick', '--seed', String(run), '--config', config], { stdio: 'ignore' });
    const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    const cli = metrics[metrics.length - 1];
    const levels = web.levelAmi.split(',').map(Number);
    const row = { epochs: Number(web.epochs), cliEpochs: cli.epoch, best: Math.max(...levels), ami: Number(web.ami), pixels: Number(web.pixelsAmi), cliAmi: cli.ami };
    rows.push(row);
    console.log(`run ${run}: page ${row.epochs} epochs in ${web.seconds.toFixed(0)} s; level AMI ${levels.map((a) => a.toFixed(3)).join(' / ')}; k-means AMI ${row.ami.toFixed(3)}; raw pixels ${row.pixels.toFixed(3)}; kNN ${Number(web.knn).toFixed(3)} | CLI ${row.cliEpochs} epochs, AMI ${row.cliAmi.toFixed(3)} | page / CLI epochs ${(row.epochs / row.cliEpochs).toFixed(2)}`);
  }
  const col = (k) => rows.map((r) => r[k]);
  const ratio = rows.map((r) => r.epochs / r.cliEpochs);
  console.log(`\n${RUNS} runs: page ${mean(col('epochs')).toFixed(1)} ± ${sd(col('epochs')).toFixed(1)} epochs, CLI ${mean(col('cliEpochs')).toFixed(1)} ± ${sd(col('cliEpochs')).toFixed(1)}; page / CLI ${mean(ratio).toFixed(2)} ± ${sd(ratio).toFixed(2)} (target 0.4)`);
  console.log(`page: best level AMI ${mean(col('best')).toFixed(3)} ± ${sd(col('best')).toFixed(3)}, k-means AMI ${mean(col('ami')).toFixed(3)} ± ${sd(col('ami')).toFixed(3)}, raw pixels ${mean(col('pixels')).toFixed(3)}; CLI AMI ${mean(col('cliAmi')).toFixed(3)} ± ${sd(col('cliAmi')).toFixed(3)}`);
  console.log(`page runs whose final AMI beats raw pixels': ${rows.filter((r) => r.ami > r.pixels).length} of ${RUNS}`);
} finally {
  stopServer();
  fs.rmSync(work, { recursive: true, force: true });
}
