// The README's and docs/'s pictures of the page (not a test; `scripts/screenshots.sh`): the
// dashboard while training and after the run, at a laptop's 1366 x 768 and a projector's
// 1920 x 1080, and projector mode; 500 sample images, the quick demo shortened to 40 s.
import path from 'node:path';
import { openApp, startServer, stopServer, loadSample, waitForProbe, repo } from './harness.mjs';

const out = path.join(repo, 'docs/screenshots');
// Two animation frames and a pause first: a screenshot straight after a scroll or a resize
// caught parts of the page not yet repainted (a blank band, a card cut off).
const shot = async (page, name) => {
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(out, `${name}.jpg`), type: 'jpeg', quality: 80 });
};
await startServer();
const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
try {
  await page.setViewportSize({ width: 1366, height: 768 });
  await waitForProbe(page, 120_000);
  await loadSample(page, 500, 180_000);
  await page.fill('input[name=minutes]', '0.67');
  await page.dispatchEvent('input[name=minutes]', 'change');
  await page.click('[data-testid=train]');
  await page.waitForFunction(() => Number(document.querySelector('[data-testid=prototypes]')?.dataset.estep) >= 8,
    null, { timeout: 120_000, polling: 250 });
  for (const [w, h] of [[1366, 768], [1920, 1080]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, `training-${w}`);
  }
  await page.click('[data-testid=present]');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'projector-1920');
  await page.click('[data-testid=present]');
  await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 300_000 });
  await page.waitForTimeout(1000);
  for (const [w, h] of [[1366, 768], [1920, 1080]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.evaluate(() => document.querySelector('.explore').scrollIntoView());
    await shot(page, `explore-${w}`);
  }
  await page.evaluate(() => document.querySelector('[data-testid=views-card]').scrollIntoView());
  await shot(page, 'views-1920');
  console.log(`screenshots in ${out}`);
} finally {
  await browser.close();
  stopServer();
}
