// Benchmark (not a test; `scripts/bench-demo.sh`): the page's quick demo as a workshop runs it.
// The whole sample set, the default preset, Train, on the CPU fallback with its helpers; prints
// the epochs trained in the budget, every level's AMI and the final k-means AMI against raw
// pixels' AMI, for DEMO_RUNS runs (default 1).
import { openApp, startServer, stopServer, loadSample, waitForProbe } from './harness.mjs';

const RUNS = Number(process.env.DEMO_RUNS || 1);
await startServer();
try {
  for (let run = 1; run <= RUNS; run++) {
    const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
    try {
      await waitForProbe(page, 120_000);
      await loadSample(page, 'all', 180_000);
      // 'all' cannot name its count in the selector: the whole set is 1,870 images.
      await page.waitForSelector('[data-testid=image-count][data-state=ready][data-count="1870"]', { timeout: 180_000 });
      const t0 = Date.now();
      await page.click('[data-testid=train]');
      await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 1_200_000 });
      await page.waitForSelector('[data-testid=metrics][data-pixels-ami]:not([data-pixels-ami=""])', { timeout: 300_000 });
      const m = await page.$eval('[data-testid=metrics]', (e) => ({ ...e.dataset }));
      const levels = m.levelAmi.split(',').map((a) => Number(a).toFixed(3)).join(' / ');
      console.log(`run ${run}: ${m.epochs} epochs in ${((Date.now() - t0) / 1000).toFixed(0)} s; level AMI ${levels}; k-means AMI ${Number(m.ami).toFixed(3)}; raw pixels ${Number(m.pixelsAmi).toFixed(3)}; kNN ${Number(m.knn).toFixed(3)}`);
    } finally {
      await browser.close();
    }
  }
} finally {
  stopServer();
}
