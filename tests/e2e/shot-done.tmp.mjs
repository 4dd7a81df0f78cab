import { openApp, startServer, stopServer, loadSample, waitForProbe } from './harness.mjs';
await startServer();
const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
await page.setViewportSize({ width: 1366, height: 768 });
await waitForProbe(page, 120_000);
await loadSample(page, 500, 180_000);
await page.fill('input[name=minutes]', '0.4');
await page.dispatchEvent('input[name=minutes]', 'change');
await page.click('[data-testid=train]');
await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 300_000 });
await page.waitForTimeout(1500);
for (const [w, h] of [[1366, 768], [1920, 1080]]) {
  await page.setViewportSize({ width: w, height: h });
  await page.evaluate(() => document.querySelector('.explore').scrollIntoView());
  await page.screenshot({ path: `/tmp/done-${w}.png` });
  await page.evaluate(() => document.querySelector('[data-testid=hierarchy]').scrollIntoView());
  await page.screenshot({ path: `/tmp/done-${w}-hier.png` });
}
await page.click('[data-testid=present]');
await page.evaluate(() => window.scrollTo(0, 0));
await page.screenshot({ path: `/tmp/present-1920.png` });
await browser.close();
stopServer();
