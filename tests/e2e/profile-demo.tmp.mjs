import { openApp, startServer, stopServer, loadSample, waitForProbe } from './harness.mjs';
await startServer();
const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
await waitForProbe(page, 120_000);
await loadSample(page, 'all', 180_000);
await page.waitForSelector('[data-testid=image-count][data-state=ready][data-count="1870"]', { timeout: 180_000 });
const t0 = Date.now();
await page.click('[data-testid=train]');
const phases = {}; let last = Date.now(); let esteps = [];
while (true) {
  const s = await page.$eval('[data-testid=status]', (e) => ({ state: e.dataset.state, text: e.textContent, epoch: e.dataset.epoch }));
  const now = Date.now();
  let key = s.text.replace(/[0-9]+\/[0-9]+/g, 'N').replace(/epoch [0-9]+.*?(—|-|,)/, '').slice(0, 60);
  if (/augment \+ train/.test(s.text)) key = 'train'; else if (/E-step: embedding/.test(s.text)) key = 'estep-embed'; else if (/k-means/.test(s.text)) key = 'estep-kmeans'; else if (/clusters view/.test(s.text)) key = 'explore';
  phases[key] = (phases[key] || 0) + (now - last); last = now;
  if (s.state === 'done') break;
  await new Promise((r) => setTimeout(r, 100));
}
const es = await page.$eval('[data-testid=estep]', (e) => e.dataset.seconds).catch(() => '');
const m = await page.$eval('[data-testid=metrics]', (e) => ({ ...e.dataset }));
console.log(`total ${(Date.now() - t0) / 1000}s epochs ${m.epochs}`);
for (const [k, v] of Object.entries(phases).sort((a, b) => b[1] - a[1])) console.log(`${(v / 1000).toFixed(1)} s  ${k}`);
console.log('last estep seconds', es);
await browser.close();
stopServer();
