// Accessibility (issue 16): axe-core finds no serious or critical violation at each stage of the
// page (opened, images loaded, a run finished with its galleries, map and guide shown), and every
// control can be reached and used from the keyboard.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { openApp, startServer, stopServer, artifacts, waitForProbe } from './harness.mjs';

before(startServer);
after(stopServer);

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

async function audit(page, stage) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const words = bad.map((v) => `${v.id} (${v.impact}): ${v.help}; ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  console.log(`axe at "${stage}": ${result.violations.length} violations (${result.violations.map((v) => `${v.id}: ${v.impact}`).join(', ')}), ${bad.length} serious or critical`);
  assert.deepEqual(words, [], `axe at "${stage}"`);
}

test('axe-core: no serious or critical violations at any stage; the keyboard reaches every control', async () => {
  const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await waitForProbe(page, 120_000);
    await audit(page, 'opened');

    // Keyboard only: Tab to the sample-size select and the load button, choose, press Enter.
    const focusTo = async (selector) => {
      for (let i = 0; i < 200; i += 1) {
        if (await page.evaluate((s) => document.activeElement?.matches(s), selector)) return;
        await page.keyboard.press('Tab');
      }
      throw new Error(`Tab never reached ${selector}`);
    };
    await focusTo('select[name=sample-size]');
    await page.selectOption('select[name=sample-size]', '64');
    await focusTo('[data-testid=load-sample]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid=image-count][data-state=ready][data-count="64"]', { timeout: 60_000 });
    await audit(page, 'images loaded');

    // The clusters per level beside the presets, the rest under "Advanced", opened from the
    // keyboard.
    const tiny = { num_clusters: '4, 8', advanced: null, warmup_epochs: '1', width: '4', feature_dim: '16', batch_size: '16', queue_size: '32', kmeans_restarts: '1', epochs: '2' };
    for (const [key, value] of Object.entries(tiny)) {
      if (key === 'advanced') {
        await focusTo('details.advanced summary');
        await page.keyboard.press('Enter');
        continue;
      }
      await focusTo(`input[name=${key}]`);
      await page.keyboard.press('Control+A');
      await page.keyboard.type(value);
      await page.keyboard.press('Tab');
    }
    await focusTo('[data-testid=train]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 300_000 });
    assert.equal(await page.getAttribute('[data-testid=status]', 'data-epoch'), '2', 'the settings typed on the keyboard took');

    // The guide opens from the keyboard; a cluster opens with Enter; its images' grid takes
    // arrow keys and Enter for the nearest neighbours.
    await focusTo('[data-testid=guide] summary');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid=guide-e-step]');
    await focusTo('[data-testid=cluster]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid=cluster-members]');
    await focusTo('[data-testid=cluster-members] canvas');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('Enter');
    await page.waitForSelector('[data-testid=neighbours]', { timeout: 60_000 });
    await audit(page, 'run finished, guide, members and neighbours open');
    await page.locator('[data-testid=guide]').screenshot({ path: path.join(artifacts, 'a11y-guide.png') });

    // Every control has a name and is reachable: buttons, inputs, selects, summaries.
    const unnamed = await page.evaluate(() => [...document.querySelectorAll('button, input, select, summary, [tabindex]')]
      .filter((e) => e.offsetParent !== null && e.tabIndex < 0).map((e) => e.outerHTML.slice(0, 80)));
    assert.deepEqual(unnamed, [], 'no visible control is out of the tab order');
  } finally {
    await browser.close();
  }
});
