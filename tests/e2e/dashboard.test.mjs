// The workshop dashboard (issue 35): at a laptop's and a projector's size, while training, the
// controls, the live chart and the latest E-step's clusters are on screen together; the charts
// have axes, E-step marks and hover values; the E-step history steps back through at least ten
// E-steps; projector mode keeps the chart and the clusters on one 1920 x 1080 screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { openApp, startServer, stopServer, artifacts, loadSample, fillSettings, waitForProbe } from './harness.mjs';

before(startServer);
after(stopServer);

// The whole of each element inside the viewport.
async function onScreen(page, selectors) {
  const size = page.viewportSize();
  const out = {};
  for (const s of selectors) {
    const b = await page.locator(s).first().boundingBox();
    out[s] = b && b.y >= 0 && b.x >= 0 && b.y + b.height <= size.height + 1 && b.x + b.width <= size.width + 1;
  }
  return out;
}

test('while training, the controls, the live chart and the E-step\'s clusters share one screen at 1366 x 768 and 1920 x 1080', async () => {
  const { browser, page, errors } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await page.setViewportSize({ width: 1366, height: 768 });
    await waitForProbe(page, 60_000);
    await loadSample(page, '200');
    // Tiny, and long enough to watch: an E-step before every epoch after the first.
    await fillSettings(page, { warmup_epochs: '1', width: '4', feature_dim: '16', batch_size: '16', num_clusters: '4, 8', queue_size: '32', kmeans_restarts: '1', epochs: '400' });
    await page.$eval('details.advanced', (d) => { d.open = false; });
    await page.click('[data-testid=train]');
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=prototypes]')?.dataset.estep) >= 12,
      null, { timeout: 240_000, polling: 200 });
    const wanted = ['[data-testid=train]', '[data-testid=stop]', '[data-testid=preset-quick]', '[data-testid=loss-chart]', '[data-testid=prototypes]', '[data-testid=status]'];
    for (const [w, h] of [[1366, 768], [1920, 1080]]) {
      await page.setViewportSize({ width: w, height: h });
      await page.evaluate(() => window.scrollTo(0, 0));
      const seen = await onScreen(page, wanted);
      await page.screenshot({ path: path.join(artifacts, `dashboard-training-${w}.png`) });
      assert.ok(Object.values(seen).every(Boolean), `${w} x ${h}: ${JSON.stringify(seen)}`);
    }

    // Axes: tick labels on both axes, one mark per E-step, and hover values.
    const ticks = await page.$$eval('[data-testid=loss-chart] [data-testid=tick]', (t) => t.map((e) => e.textContent));
    assert.ok(ticks.length >= 6 && ticks.includes('0'), `ticks ${ticks}`);
    const marks = await page.locator('[data-testid=loss-chart] [data-testid=estep-mark]').count();
    assert.ok(marks >= 12, `${marks} E-step marks`);
    const box = await page.locator('[data-testid=accuracy-chart]').boundingBox();
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
    assert.match(await page.textContent('[data-testid=chart-readout]'), /^epoch [0-9.]+: loss [0-9.]+/);

    // The E-step history: back ten E-steps, each showing its own clusters, then forward again.
    const latest = Number(await page.getAttribute('[data-testid=prototypes]', 'data-estep'));
    for (let at = latest - 10; at <= latest - 8; at += 1) {
      await page.fill('[data-testid=estep-slider]', String(at));
      await page.waitForSelector(`[data-testid=prototypes][data-estep="${at}"]`, { timeout: 10_000 });
      assert.ok(Number(await page.getAttribute('[data-testid=prototypes]', 'data-count')) >= 2);
    }

    // Projector mode: the chart and the clusters on one screen, in larger type.
    await page.setViewportSize({ width: 1920, height: 1080 });
    await page.click('[data-testid=present]');
    await page.evaluate(() => window.scrollTo(0, 0));
    assert.equal(await page.getAttribute('[data-testid=present]', 'aria-pressed'), 'true');
    const big = await onScreen(page, ['[data-testid=loss-chart]', '[data-testid=prototypes]', '[data-testid=live-map]', '[data-testid=stop]']);
    await page.screenshot({ path: path.join(artifacts, 'dashboard-projector-1920.png') });
    assert.ok(Object.values(big).every(Boolean), `projector: ${JSON.stringify(big)}`);
    const font = await page.$eval('body', (b) => parseFloat(getComputedStyle(b).fontSize));
    assert.ok(font >= 18, `projector type ${font}px`);
    await page.click('[data-testid=present]');
    await page.click('[data-testid=stop]');
    await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 120_000 });

    // After the run its clusters, hierarchy and map start within the first two screens.
    for (const [w, h] of [[1366, 768], [1920, 1080]]) {
      await page.setViewportSize({ width: w, height: h });
      await page.evaluate(() => window.scrollTo(0, 0));
      const tops = await page.$$eval('[data-testid=cluster-gallery], [data-testid=hierarchy], [data-testid=map]',
        (els) => els.map((e) => e.getBoundingClientRect().top + window.scrollY));
      assert.equal(tops.length, 3);
      assert.ok(tops.every((t) => t < 2 * h), `${w} x ${h}: tops ${tops}`);
      await page.evaluate(() => document.querySelector('.explore').scrollIntoView());
      await page.screenshot({ path: path.join(artifacts, `dashboard-explore-${w}.png`) });
    }

    // Linked views: pointing at a gallery's cluster shows its images on the map (the others
    // faded, its most typical image ringed).
    const cluster = page.locator('[data-testid=cluster][data-level="1"]').nth(1);
    await cluster.scrollIntoViewIfNeeded();
    await cluster.hover();
    await page.waitForSelector('[data-testid=map][data-focus="1"]', { timeout: 10_000 });
    await page.mouse.move(0, 0);
    await page.waitForSelector('[data-testid=map][data-focus=""]', { timeout: 10_000 });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
