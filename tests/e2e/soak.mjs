// Soak benchmark (not a test; scripts/soak-browser.sh): a long run in the page on the CPU
// fallback, the worker's wasm memory and the autosave's size after every epoch. Prints the
// curve and its summary: memory should stop growing once the run is under way, and every
// autosave stays under the bound printed.
import { openApp, startServer, stopServer, loadSample, fillSettings, waitForProbe } from './harness.mjs';

const EPOCHS = Number(process.env.SOAK_EPOCHS || 100);
const IMAGES = process.env.SOAK_IMAGES || '500';
const SETTINGS = {
  warmup_epochs: '5', width: '8', feature_dim: '32', batch_size: '64', num_clusters: '10, 25',
  kmeans_restarts: '1', epochs: String(EPOCHS),
};

await startServer();
const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
try {
  await waitForProbe(page, 120_000);
  await loadSample(page, IMAGES, 120_000);
  await fillSettings(page, SETTINGS);
  const t0 = Date.now();
  await page.click('[data-testid=train]');
  const curve = [];
  let last = -1;
  for (;;) {
    const s = await page.evaluate(() => {
      const st = document.querySelector('[data-testid=status]').dataset;
      const au = document.querySelector('[data-testid=autosave]').dataset;
      return { state: st.state, epoch: Number(st.epoch), memory: Number(st.memoryBytes || 0), autosave: Number(au.bytes || 0), autosaved: au.epoch };
    });
    if (s.epoch !== last) {
      curve.push({ ...s, seconds: (Date.now() - t0) / 1000 });
      last = s.epoch;
      console.log(`epoch ${String(s.epoch).padStart(3)}  ${(s.seconds ?? (Date.now() - t0) / 1000).toFixed(0).padStart(5)} s  worker wasm memory ${(s.memory / 1e6).toFixed(1)} MB  last autosave ${(s.autosave / 1e6).toFixed(2)} MB (epoch ${s.autosaved})`);
    }
    if (s.state === 'done' || s.state === 'error') break;
    await page.waitForTimeout(500);
  }
  const done = await page.evaluate(() => ({
    memory: Number(document.querySelector('[data-testid=status]').dataset.memoryBytes || 0),
    autosave: Number(document.querySelector('[data-testid=autosave]').dataset.bytes || 0),
    error: document.querySelector('[data-testid=error]').textContent,
  }));
  const mem = curve.map((c) => c.memory).concat(done.memory).filter((m) => m > 0);
  const at10 = curve.find((c) => c.epoch >= 10)?.memory || mem[0];
  const maxAutosave = Math.max(done.autosave, ...curve.map((c) => c.autosave));
  console.log(`\n${IMAGES} images, ${EPOCHS} epochs in ${((Date.now() - t0) / 1000).toFixed(0)} s${done.error ? `; error: ${done.error}` : ''}`);
  console.log(`worker wasm memory: first ${(mem[0] / 1e6).toFixed(1)} MB, at epoch 10 ${(at10 / 1e6).toFixed(1)} MB, last ${(mem.at(-1) / 1e6).toFixed(1)} MB (growth after epoch 10: ${((mem.at(-1) - at10) / 1e6).toFixed(1)} MB)`);
  console.log(`largest autosave: ${(maxAutosave / 1e6).toFixed(2)} MB`);
} finally {
  await browser.close();
  stopServer();
}
