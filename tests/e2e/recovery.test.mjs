// Recovery that cannot loop and storage that fails loudly (issue 13), on the CPU fallback with
// a tiny run: repeated crashes stop after three, a worker failing while it starts gives one
// message, a session that fails on its first step leaves the autosave alone, a worker dying
// without a message is reported and the run shows as stopped, a refused autosave turns
// autosave off while training goes on, and a second tab does not take over the first one's
// autosave.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { openApp, startServer, stopServer, artifacts, loadSample, fillSettings, waitForProbe } from './harness.mjs';

before(startServer);
after(stopServer);

const TINY = {
  warmup_epochs: '1', width: '4', feature_dim: '16', batch_size: '16',
  num_clusters: '4, 8', queue_size: '32', kmeans_restarts: '1',
};

async function startRun(page, epochs) {
  await waitForProbe(page, 60_000);
  await loadSample(page, 64);
  await fillSettings(page, { ...TINY, epochs: String(epochs) });
  await page.click('[data-testid=train]');
}

const errorText = (page) => page.textContent('[data-testid=error]');
const probed = (page) => waitForProbe(page, 60_000);

test('three crashes stop the restarts with a message; the autosave stays', async () => {
  const { browser, page, context } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await startRun(page, 200);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=autosave]').dataset.epoch) >= 1,
      null, { timeout: 120_000, polling: 50 });
    const workers = () => page.workers().length;
    for (let crash = 1; crash <= 3; crash++) {
      await page.evaluate(() => window.pclSimulateCrash());
      await page.waitForFunction((n) => (document.querySelector('[data-testid=error]')?.textContent ?? '').includes(n < 3 ? 'Starting a new compute worker' : 'stopped restarting'),
        crash, { timeout: 60_000 }).catch(async (e) => { throw new Error(`crash ${crash}: ${e.message}; the page says: ${await errorText(page)}`); });
      if (crash < 3) await probed(page);
    }
    await page.waitForTimeout(3000);
    assert.equal(await page.getAttribute('[data-testid=status]', 'data-state'), 'error');
    assert.equal(workers(), 0, 'no worker is started again');
    const stored = await page.evaluate(() => new Promise((ok) => {
      const r = indexedDB.open('pcl-studio', 1);
      r.onsuccess = () => { const g = r.result.transaction('kv').objectStore('kv').get('session'); g.onsuccess = () => ok(!!g.result); };
    }));
    assert.ok(stored, 'the last autosave is kept');
    void context;
  } finally {
    await browser.close();
  }
});

test('a worker that fails while starting: one message, no restart loop', async () => {
  // `?crash-at-start` (development builds) makes every worker panic right after Start.
  const { browser, page } = await openApp({ webgpu: false, query: '?cpu&crash-at-start' });
  try {
    await page.waitForFunction(() => /failed while starting/.test(document.querySelector('[data-testid=error]')?.textContent ?? ''),
      null, { timeout: 60_000 });
    await page.waitForTimeout(3000);
    assert.equal(page.workers().length, 0, 'no worker is started again');
    assert.match(await errorText(page), /did not restart it/);
    assert.equal(await page.getAttribute('[data-testid=status]', 'data-state'), 'error');
  } finally {
    await browser.close();
  }
});

test('an opened session that fails on its first step leaves the last autosave as it was', async () => {
  const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
  const readStored = () => page.evaluate(() => new Promise((ok) => {
    const r = indexedDB.open('pcl-studio', 1);
    r.onsuccess = () => { const g = r.result.transaction('kv').objectStore('kv').get('session'); g.onsuccess = () => ok(g.result && g.result.epoch); };
  }));
  // The update explodes the weights; the next loss, or the E-step's embeddings when an E-step
  // comes first, are non-finite, and the run stops with the state before that update. The
  // page keeps the run's own message (the clusters view of that state may fail too, quietly).
  const failed = (when) => page.waitForFunction(() => /became (inf|NaN|-inf|non-finite)/.test(document.querySelector('[data-testid=error]')?.textContent ?? ''),
    null, { timeout: 120_000 }).catch(async (e) => {
    throw new Error(`${when}: ${e.message}; the page says: ${await errorText(page)}; status ${await page.getAttribute('[data-testid=status]', 'data-state')}`);
  });
  try {
    await startRun(page, 3);
    await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 180_000 });
    assert.equal(await page.getAttribute('[data-testid=autosave]', 'data-epoch'), '3');
    // A learning rate that explodes at once: the run fails on its first step and keeps its
    // state before it, which exports as a session (the page's own format).
    await page.fill('input[name=lr]', '1000000000');
    await page.dispatchEvent('input[name=lr]', 'change');
    await page.click('[data-testid=train]');
    await failed('the new run');
    const download = page.waitForEvent('download');
    await page.click('[data-testid=export-session]');
    const bad = path.join(artifacts, 'session-fails-first-step.pclstudio');
    await (await download).saveAs(bad);
    assert.equal(await readStored(), 3, 'a new run that failed at once did not replace the autosave');

    // A fresh page: the autosave is offered; the bad session opened on the same images and
    // resumed fails again, once, and the autosave stays.
    await page.reload();
    await page.waitForSelector('[data-testid=autosave-offer]', { timeout: 60_000 });
    await probed(page);
    const workers = page.workers().length; // the worker and its helpers
    await loadSample(page, 64);
    await page.setInputFiles('[data-testid=import-session]', bad);
    await page.waitForSelector('[data-testid=status][data-state=paused]', { timeout: 60_000 });
    await page.click('[data-testid=pause]');
    await failed('the opened session');
    await page.waitForTimeout(1500);
    assert.equal(await readStored(), 3, 'the opened session did not replace the autosave');
    assert.equal(page.workers().length, workers, 'no crash, no restart');
    await page.reload();
    await page.waitForSelector('[data-testid=autosave-offer]', { timeout: 60_000 });
    assert.match(await page.textContent('[data-testid=autosave-offer]'), /epoch 3 on 64 images/);
  } finally {
    await browser.close();
  }
});

test('a worker that dies without a message is reported and the run stops', async () => {
  const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await startRun(page, 200);
    await page.waitForSelector('[data-testid=status][data-state=training]', { timeout: 60_000 });
    await page.evaluate(() => window.pclSimulateAbort());
    await page.waitForFunction(() => /without a message/.test(document.querySelector('[data-testid=error]')?.textContent ?? ''),
      null, { timeout: 30_000 });
    // The run shows as stopped until the new worker resumes the autosave, paused.
    await page.waitForSelector('[data-testid=status][data-state=error], [data-testid=status][data-state=paused]', { timeout: 60_000 });
  } finally {
    await browser.close();
  }
});

test('a refused autosave turns autosave off with a message and training goes on', async () => {
  const { browser, context, page } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    // Every write to the browser's storage fails as a full disk does.
    await context.addInitScript(() => {
      IDBObjectStore.prototype.put = function () {
        throw new DOMException('the quota has been exceeded', 'QuotaExceededError');
      };
    });
    await page.reload();
    await startRun(page, 6);
    await page.waitForSelector('[data-testid=autosave][data-off=true]', { timeout: 120_000 });
    assert.match(await errorText(page), /autosave is off/);
    await page.waitForSelector('[data-testid=status][data-state=done]', { timeout: 240_000 });
    assert.equal(await page.getAttribute('[data-testid=status]', 'data-epoch'), '6');
  } finally {
    await browser.close();
  }
});

test('a second tab does not take over the autosave of the first', async () => {
  const first = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await probed(first.page);
    const second = await openApp({ webgpu: false, query: '?cpu', context: first.context });
    await probed(second.page);
    await second.page.waitForSelector('[data-testid=autosave][data-off=true]', { timeout: 10_000 });
    assert.match(await second.page.textContent('[data-testid=autosave]'), /another tab/);
    assert.equal(await first.page.getAttribute('[data-testid=autosave]', 'data-off'), 'false');
  } finally {
    await first.browser.close();
  }
});
