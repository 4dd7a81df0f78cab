// Recovery that cannot loop and storage that fails loudly (issue 13), on the CPU fallback with
// a tiny run: repeated crashes stop after three, a worker failing while it starts gives one
// message, a session that fails on its first step leaves the autosave alone, a worker dying
// without a message is reported and the run shows as stopped, a refused autosave turns
// autosave off while training goes on, and a second tab does not take over the first one's
// autosave.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { openApp, startServer, stopServer, artifacts, loadSample, fillSettings, openAdvanced, waitForProbe } from './harness.mjs';

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
// The stored session's and images' records (what a reload would resume).
const stored = (page) => page.evaluate(() => new Promise((ok) => {
  const r = indexedDB.open('pcl-studio', 1);
  r.onsuccess = () => {
    const store = r.result.transaction('kv').objectStore('kv');
    const s = store.get('session');
    const i = store.get('images');
    i.onsuccess = () => ok({
      epoch: s.result?.epoch, images: s.result?.images, fingerprint: s.result?.fingerprint,
      names: i.result?.names?.length, imagesFingerprint: i.result?.fingerprint,
    });
  };
}));
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
    await openAdvanced(page);
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

test('an update that breaks the weights at an epoch end never replaces the autosave', async () => {
  // The update ending epoch 80 leaves a non-finite weight behind a finite loss (a test hook):
  // the run stops as diverged, and the autosave stays the last good one (at most every 2 s),
  // which resumes.
  const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await probed(page);
    await page.evaluate(() => window.pclSimulateDivergence(80));
    await startRun(page, 120);
    await page.waitForFunction(() => /training stopped/.test(document.querySelector('[data-testid=error]')?.textContent ?? ''),
      null, { timeout: 240_000 });
    await page.waitForTimeout(1500);
    const kept = await stored(page);
    assert.ok(kept.epoch >= 1 && kept.epoch <= 80, `autosave of epoch ${kept.epoch}`);
    await page.reload();
    await page.waitForSelector('[data-testid=autosave-offer]', { timeout: 60_000 });
    await probed(page);
    await page.click('[data-testid=resume-autosave]');
    await page.waitForSelector(`[data-testid=status][data-state=paused][data-epoch="${kept.epoch}"]`, { timeout: 60_000 });
  } finally {
    await browser.close();
  }
});

test('two tabs: the run is stored with its own images, and a crash resumes only the tab\'s own run', async () => {
  const first = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await startRun(first.page, 400);
    await first.page.waitForFunction(() => Number(document.querySelector('[data-testid=autosave]').dataset.epoch) >= 1,
      null, { timeout: 120_000, polling: 50 });
    // A second tab loads other images and trains a run of its own: it stores nothing.
    const second = await openApp({ webgpu: false, query: '?cpu', context: first.context });
    const page = second.page;
    // It is offered the stored run, but cannot discard it: the first tab owns it.
    await page.waitForSelector('[data-testid=autosave-offer]', { timeout: 60_000 });
    assert.equal(await page.isDisabled('[data-testid=discard-autosave]'), true);
    await probed(page);
    await loadSample(page, 200);
    await fillSettings(page, { ...TINY, epochs: '400' });
    await page.click('[data-testid=train]');
    await page.waitForSelector('[data-testid=status][data-state=training]', { timeout: 60_000 });
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=status]').dataset.epoch) >= 2,
      null, { timeout: 120_000, polling: 100 });
    let kept = await stored(first.page);
    assert.equal(kept.names, 64);
    assert.equal(kept.fingerprint, kept.imagesFingerprint, 'the session and its images are one pair');
    // Its worker crashes: it resumes its own run, not the one the first tab stored.
    await page.evaluate(() => window.pclSimulateCrash());
    await page.waitForSelector('[data-testid=status][data-state=paused]', { timeout: 120_000 });
    assert.doesNotMatch(await errorText(page), /could not resume/);
    assert.equal(await page.getAttribute('[data-testid=image-count]', 'data-count'), '200');
    kept = await stored(first.page);
    assert.equal(kept.fingerprint, kept.imagesFingerprint);
    // When the first tab closes, the autosave passes to the second.
    assert.equal(await page.getAttribute('[data-testid=autosave]', 'data-off'), 'true');
    await first.page.close();
    await page.waitForSelector('[data-testid=autosave][data-off=false]', { timeout: 30_000 });
  } finally {
    await first.browser.close();
  }
});

test('a session file over the size limit is refused before it is read', async () => {
  const { browser, page } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await probed(page);
    // A sparse file: 1 GiB + 1 byte on disk costs nothing.
    const big = path.join(artifacts, 'too-big.pclstudio');
    const fd = fs.openSync(big, 'w');
    fs.ftruncateSync(fd, 2 ** 30 + 1);
    fs.closeSync(fd);
    await page.setInputFiles('[data-testid=import-session]', big);
    await page.waitForFunction(() => /at most 1073 MB/.test(document.querySelector('[data-testid=error]')?.textContent ?? ''),
      null, { timeout: 30_000 });
    fs.rmSync(big);
  } finally {
    await browser.close();
  }
});
