// Browser training speed (not a test; scripts/bench-browser.sh): the page's own images/s on
// the CPU fallback (and WebGPU with BENCH_WEBGPU=1), the setting: the sample set's 500
// images, width 32, batch 64, augmentation on, no E-step (warm-up covers the run), measured
// over BENCH_SECONDS of training after the first step; and the time from pressing Train to the
// first step.
import path from 'node:path';
import { openApp, startServer, stopServer, dist, loadSample, fillSettings } from './harness.mjs';

const SECONDS = Number(process.env.BENCH_SECONDS || 60);
const paths = process.env.BENCH_WEBGPU === '1' ? [false, true] : [false];
// BENCH_DISTS="A B": builds to compare, alternating over BENCH_ROUNDS paired rounds.
const builds = (process.env.BENCH_DISTS || dist).split(/\s+/).filter(Boolean).map((d) => path.resolve(d));
const rounds = Number(process.env.BENCH_ROUNDS || 1);

const results = {};
for (let round = 0; round < rounds; round += 1) for (const build of builds) {
await startServer(build);
for (const webgpu of paths) {
  const { browser, page } = await openApp({ webgpu, query: webgpu ? '' : '?cpu' });
  try {
    await page.waitForSelector('[data-testid=probe][data-loss]:not([data-loss=""])', { timeout: 300_000 });
    await loadSample(page, 500, 120_000);
    await fillSettings(page, { width: '32', batch_size: '64', feature_dim: '128', epochs: '1000', warmup_epochs: '1000', minutes: '' });
    const t0 = Date.now();
    await page.click('[data-testid=train]');
    await page.waitForFunction(() => {
      const s = document.querySelector('[data-testid=status]').dataset;
      return s.state === 'training' && Number(s.imagesPerS) > 0;
    }, null, { timeout: 600_000, polling: 50 });
    const firstStep = (Date.now() - t0) / 1000;
    await page.waitForTimeout(SECONDS * 1000);
    const rate = Number(await page.getAttribute('[data-testid=status]', 'data-images-per-s'));
    const backend = await page.getAttribute('[data-testid=backend]', 'data-backend');
    console.log(`${path.basename(build)} ${backend}: ${rate.toFixed(1)} images/s (the page's own figure after ${SECONDS} s of training); first step ${firstStep.toFixed(1)} s after pressing Train`);
    (results[`${path.basename(build)} ${backend}`] ||= []).push(rate);
  } finally {
    await browser.close();
  }
}
stopServer();
}
for (const [what, rates] of Object.entries(results)) {
  console.log(`${what}: ${rates.map((r) => r.toFixed(1)).join(', ')} images/s`);
}
