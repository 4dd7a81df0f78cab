// Recovery that cannot loop and storage that fails loudly (issue 13), on the CPU fallback with
// a tiny run: repeated crashes stop after three, a worker dying without a message is reported
// and the run shows as stopped, a refused autosave turns autosave off while training goes on,
// and a second tab does not take over the first one's autosave.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openApp, startServer, stopServer } from './harness.mjs';

before(startServer);
after(stopServer);

const TINY = {
  warmup_epochs: '1', width: '4', feature_dim: '16', batch_size: '16',
  num_clusters: '4, 8', queue_size: '32', kmeans_restarts: '1',
};

async function startRun(page, epochs) {
  await page.waitForSelector('[data-testid=probe][data-loss]:not([data-loss=""])', { timeout: 60_000 });
  await page.selectOption('select[name=sample-size]', '64');
  await page.click('[data-testid=load-sample]');
  await page.waitForSelector('[data-testid=image-count][data-state=ready][data-count="64"]', { timeout: 60_000 });
  for (const [key, value] of Object.entries({ ...TINY, epochs: String(epochs) })) {
    await page.fill(`input[name=${key}]`, value);
    await page.dispatchEvent(`input[name=${key}]`, 'change');
  }
  await page.click('[data-testid=train]');
}

const errorText = (page) => page.textContent('[data-testid=error]');
const probed = (page) => page.waitForSelector('[data-testid=probe][data-loss]:not([data-loss=""])', { timeout: 60_000 });

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
        crash, { timeout: 30_000 });
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
