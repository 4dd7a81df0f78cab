// The browser trainer (issue 5), on WebGPU (SwiftShader) and on the CPU fallback, with a tiny
// configuration: sample set, train past warm-up, pause and resume, galleries, hierarchy, map,
// metrics, export a session, reload and resume from the autosave, import the session; Stop.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { openApp, startServer, stopServer, artifacts, assertOwnOrigin, loadSample as loadImages, fillSettings, waitForProbe } from './harness.mjs';

before(startServer);
after(stopServer);

// A tiny run: 64 images, 4 steps an epoch, an E-step before every epoch after the first. The CPU
// run is longer so that there is time to pause it mid-run.
const TINY = {
  warmup_epochs: '1', width: '4', feature_dim: '16', batch_size: '16',
  num_clusters: '4, 8', queue_size: '32', kmeans_restarts: '1',
};
const SAMPLE = '64';
const LONG = 420_000;

const loadSample = (page) => loadImages(page, SAMPLE);
const setTiny = (page, epochs, extra = {}) => fillSettings(page, { ...TINY, epochs: String(epochs), ...extra });

// The CPU fallback page with the sample set and the tiny settings (plus `extra` inputs),
// training started: the setup the single-purpose tests below share.
async function startTinyCpuRun(epochs, extra = {}) {
  const opened = await openApp({ webgpu: false, query: '?cpu' });
  const { browser, page } = opened;
  try {
    await waitForProbe(page, 60_000);
    await loadSample(page);
    await setTiny(page, epochs, extra);
    await page.click('[data-testid=train]');
    return opened;
  } catch (e) {
    await browser.close();
    throw e;
  }
}

// A DOM click: while training, the galleries below re-render and the page's height changes,
// so Playwright's "stable position" wait can last the whole run.
const press = (page, id) => page.$eval(`[data-testid=${id}]`, (b) => b.click());
const state = (page) => page.getAttribute('[data-testid=status]', 'data-state');
const epoch = async (page) => Number(await page.getAttribute('[data-testid=status]', 'data-epoch'));

async function waitState(page, s, timeout = LONG) {
  await page.waitForFunction((want) => {
    const el = document.querySelector('[data-testid=status]');
    const err = document.querySelector('[data-testid=error]')?.textContent;
    if (err) throw new Error(`the page shows an error: ${err}`);
    return el && el.dataset.state === want;
  }, s, { timeout, polling: 200 });
}

async function runFlow({ webgpu, name, epochs }) {
  // On the CPU fallback two workers share each step (the helper path), whatever the cores.
  const { browser, context, page, errors, requests } = await openApp({ webgpu, query: webgpu ? '?backend=webgpu' : '?cpu&workers=2' });
  const shot = (what) => page.screenshot({ path: path.join(artifacts, `trainer-${name}-${what}.png`), fullPage: true });
  try {
    await page.waitForSelector(`[data-testid=backend][data-backend=${webgpu ? 'webgpu' : 'cpu'}]`, { timeout: 60_000 });
    assert.equal(await page.getAttribute('[data-testid=workers]', 'data-workers'), webgpu ? '1' : '2');
    if (!webgpu) assert.match(await page.textContent('[data-testid=workers]'), /2 workers share each step/);
    await waitForProbe(page, 240_000);
    await loadSample(page);
    await setTiny(page, epochs);
    await page.evaluate(() => { window.__longTasks = []; });
    const t0 = Date.now();
    await page.click('[data-testid=train]');
    await waitState(page, 'training', 60_000);

    // Pause at once (it takes effect between steps), export, resume.
    const tPause = Date.now();
    await press(page, 'pause');
    await waitState(page, 'paused', 60_000);
    const pauseMs = Date.now() - tPause;
    const pausedAt = await epoch(page);
    await shot('paused');
    const download = page.waitForEvent('download');
    await page.click('[data-testid=export-session]');
    const session = path.join(artifacts, `session-${name}.pclstudio`);
    await (await download).saveAs(session);
    await press(page, 'pause');
    await waitState(page, 'training', 60_000);

    // Reload mid-run (past warm-up): the autosave (after every epoch and on pause) resumes.
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=autosave]').dataset.epoch) >= 2,
      null, { timeout: LONG, polling: 50 });
    const savedAt = Number(await page.getAttribute('[data-testid=autosave]', 'data-epoch'));
    // On WebGPU the run built its kernels before its first step, and none in its second epoch.
    let kernels = null;
    if (webgpu) {
      kernels = await page.$eval('[data-testid=kernels]', (e) => ({ ...e.dataset, text: e.textContent }));
      assert.ok(Number(kernels.prepared) > 20, `kernels built before the first step: ${JSON.stringify(kernels)}`);
      assert.equal(kernels.later, '0', `no kernel built after the first epoch: ${JSON.stringify(kernels)}`);
    }
    // An E-step ran before the second epoch: what it found shows as the coarsest clusters'
    // images, and its table (under "Every level in numbers") says how long it took.
    await page.waitForSelector('[data-testid=prototypes]', { timeout: 30_000 });
    assert.ok(Number(await page.getAttribute('[data-testid=prototypes]', 'data-count')) >= 2, 'the coarsest level\'s clusters are shown');
    await page.waitForSelector('[data-testid=estep][data-seconds]', { state: 'attached', timeout: 30_000 });
    const estepSeconds = Number(await page.getAttribute('[data-testid=estep]', 'data-seconds'));
    assert.ok(estepSeconds > 0 && estepSeconds < (Date.now() - t0) / 1000, `the last E-step took ${estepSeconds} s`);
    assert.match(await page.textContent('[data-testid=estep] caption'), /\(\d+\.\d s\)/);
    const longTasks = await page.evaluate(() => window.__longTasks);
    const rate = Number(await page.getAttribute('[data-testid=status]', 'data-images-per-s'));
    await page.reload();
    await page.waitForSelector('[data-testid=resume-autosave]', { timeout: 60_000 });
    await waitForProbe(page, 240_000);
    await page.evaluate(() => { window.__longTasks = []; }); // page start-up is not training
    await page.click('[data-testid=resume-autosave]');
    await page.waitForSelector('[data-testid=status][data-state=paused], [data-testid=status][data-state=done]', { timeout: 60_000 });
    assert.ok(await epoch(page) >= savedAt, `resumed at epoch ${await epoch(page)}, the autosave was ${savedAt}`);
    assert.equal(await page.getAttribute('[data-testid=image-count]', 'data-count'), SAMPLE);
    if (await state(page) === 'paused') await press(page, 'pause');
    await waitState(page, 'done');
    const seconds = (Date.now() - t0) / 1000;

    // Every view, with finite numbers.
    const points = Number(await page.getAttribute('[data-testid=loss-chart]', 'data-points'));
    assert.ok(points > 0, 'losses are plotted');
    const legend = await page.textContent('.legend');
    assert.doesNotMatch(legend, /NaN|inf/, legend);
    // Hover a chart: the readout gives the values of the step under the pointer, all finite.
    const chartBox = await page.locator("[data-testid=loss-chart]").boundingBox();
    await page.mouse.move(chartBox.x + chartBox.width * 0.6, chartBox.y + chartBox.height * 0.5);
    const readout = await page.textContent('[data-testid=chart-readout]');
    assert.match(readout, /^epoch [0-9.]+: loss [0-9.]+ · InfoNCE [0-9.]+/, readout);
    assert.doesNotMatch(readout, /NaN|inf/, readout);
    // The slider goes back to the first E-step's clusters.
    await page.fill('[data-testid=estep-slider]', '1');
    await page.waitForSelector('[data-testid=prototypes][data-estep="1"]', { timeout: 10_000 });
    for (const level of [0, 1]) {
      const n = await page.locator(`[data-testid=cluster][data-level="${level}"]`).count();
      assert.ok(n > 0, `clusters at level ${level}`);
    }
    const sizes = await page.$$eval('[data-testid=cluster][data-level="0"]', (els) => els.map((e) => Number(e.dataset.size)));
    assert.equal(sizes.reduce((a, b) => a + b, 0), Number(SAMPLE), 'level 0 clusters hold every image');
    assert.ok(await page.isVisible('[data-testid=hierarchy]'));
    await page.locator('[data-testid=cluster]').first().click();
    await page.waitForSelector('[data-testid=cluster-members]');
    // The most typical member (top-left tile): its nearest neighbours are shown.
    const members = await page.$('[data-testid=cluster-members] canvas');
    await members.scrollIntoViewIfNeeded();
    const mb = await members.boundingBox();
    await page.mouse.click(mb.x + 3, mb.y + 3);
    await page.waitForSelector('[data-testid=neighbours] canvas', { timeout: 30_000 });
    const map = await page.$('[data-testid=map]');
    const box = await map.boundingBox();
    assert.ok(box.width > 100, 'the map is drawn');
    const metrics = await page.$eval('[data-testid=metrics]', (e) => ({ ...e.dataset }));
    for (const k of ['knn', 'ami', 'nmi']) {
      assert.ok(Number.isFinite(Number(metrics[k])), `${k} = ${metrics[k]}`);
    }
    // Every level's clusters against the labels and the fine labels, and raw pixels' line for
    // each: 2 levels x 2 label kinds + 2 baselines.
    const amiLines = await page.getAttribute('[data-testid=ami-chart]', 'data-lines');
    assert.equal(amiLines, '6');
    assert.match(await page.textContent('[data-testid=metrics]'), /raw pixels vs fine labels/);
    await shot('done');
    longTasks.push(...await page.evaluate(() => window.__longTasks));
    const worst = Math.max(0, ...longTasks);

    // Import the exported session into a fresh page (same images) and continue it.
    await page.reload();
    await waitForProbe(page, 240_000);
    await page.click('button:has-text("Discard")');
    await loadSample(page);
    await page.setInputFiles('[data-testid=import-session]', session);
    await waitState(page, 'paused', 60_000);
    assert.equal(await epoch(page), pausedAt, 'the session continues where it was exported');
    await press(page, 'pause');
    await waitState(page, 'done');
    await shot('imported');

    // The CLI resumes the same session file on the same images.
    if (!webgpu) {
      const folder = path.join(artifacts, 'sample-64');
      const out = path.join(artifacts, 'cli-resumed');
      fs.rmSync(folder, { recursive: true, force: true });
      fs.rmSync(out, { recursive: true, force: true });
      execFileSync(process.env.PCL_BIN, ['sample', '--out', folder, '--limit', SAMPLE]);
      execFileSync(process.env.PCL_BIN, ['train', '--resume', session, '--images', folder, '--out', out],
        { stdio: ['ignore', 'ignore', 'pipe'] });
      const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      assert.equal(metrics.at(-1).epoch, epochs, 'the CLI finished the run the page exported');
    }

    assert.deepEqual(errors, []);
    assertOwnOrigin(assert, requests);
    const steps = 4 * epochs;
    console.log(`${name}: ${epochs} epochs (${steps} steps of 16 images + E-steps) in ${seconds.toFixed(1)} s incl. a reload; training ${rate} images/s; pause took ${pauseMs} ms; worst main-thread task during training ${worst.toFixed(0)} ms (${longTasks.length} long tasks); ${kernels ? `kernels ${JSON.stringify(kernels)}; ` : ''}metrics ${JSON.stringify(metrics)}`);
    return { worst, seconds };
  } catch (e) {
    await shot('failure').catch(() => {});
    const status = await page.textContent('[data-testid=status]').catch(() => '?');
    console.log(`failed at status: ${status}; offer: ${await page.locator('[data-testid=autosave-offer]').count()}`);
    throw e;
  } finally {
    await browser.close();
    void context;
  }
}

test('CPU fallback: train, pause, resume, explore, export, reload and resume, import', async () => {
  await runFlow({ webgpu: false, name: 'cpu', epochs: 40 });
});

test('WebGPU (SwiftShader): the same', async () => {
  await runFlow({ webgpu: true, name: 'webgpu', epochs: 4 });
});

test('an exploding loss stops the run with a message; images and settings stay', async () => {
  const { browser, page, errors } = await startTinyCpuRun(6, { lr: '1e9' });
  try {
    await page.waitForSelector('[data-testid=status][data-state=error]', { timeout: 120_000 });
    const message = await page.textContent('[data-testid=error]');
    assert.match(message, /loss became|diverged/, message);
    assert.equal(await page.getAttribute('[data-testid=image-count]', 'data-count'), SAMPLE);
    assert.equal(await page.inputValue('input[name=lr]'), '1000000000.0');
    await page.screenshot({ path: path.join(artifacts, 'trainer-diverged.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('a crashed worker is replaced and the run resumes from the autosave', async () => {
  const { browser, page, errors } = await startTinyCpuRun(40);
  try {
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=autosave]').dataset.epoch) >= 2,
      null, { timeout: LONG, polling: 50 });
    const savedAt = Number(await page.getAttribute('[data-testid=autosave]', 'data-epoch'));
    await page.evaluate(() => window.pclSimulateCrash());
    await page.waitForFunction(() => /crashed/.test(document.querySelector('[data-testid=error]').textContent));
    await page.waitForSelector('[data-testid=status][data-state=paused], [data-testid=status][data-state=done]', { timeout: 120_000 });
    assert.ok(await epoch(page) >= savedAt, `resumed at ${await epoch(page)}, autosave ${savedAt}`);
    assert.equal(await page.getAttribute('[data-testid=image-count]', 'data-count'), SAMPLE);
    if (await state(page) === 'paused') await press(page, 'pause');
    await waitState(page, 'done');
    await page.screenshot({ path: path.join(artifacts, 'trainer-recovered.png'), fullPage: true });
    // The panic itself is reported by the browser as an error in the old worker; nothing else.
    assert.deepEqual(errors.filter((e) => !/simulated crash|unreachable|panicked/.test(e)), []);
  } finally {
    await browser.close();
  }
});

test('Stop shows at once, the run ends with its clusters view and is saved', async () => {
  const { browser, page, errors } = await startTinyCpuRun(40);
  try {
    // Past the first E-step (before epoch 1), so that the run has clusters to show.
    await page.waitForFunction(() => Number(document.querySelector('[data-testid=status]').dataset.epoch) >= 2,
      null, { timeout: LONG, polling: 50 });
    // Every state and text the status shows from the press on, in order.
    await page.evaluate(() => {
      const el = document.querySelector('[data-testid=status]');
      window.__shown = [];
      const note = () => window.__shown.push(`${el.dataset.state}: ${el.textContent}`);
      new MutationObserver(note).observe(el, { attributes: true, childList: true, characterData: true, subtree: true });
    });
    const t0 = Date.now();
    await press(page, 'stop');
    await waitState(page, 'done', 60_000);
    const stopMs = Date.now() - t0;
    const shown = await page.evaluate(() => window.__shown);
    const first = (re) => shown.findIndex((s) => re.test(s));
    const stopping = first(/^training: .*stopping after the current step/);
    const ending = first(/^ending: .*computing the clusters view/);
    const done = first(/^done: .*stopped/);
    assert.ok(stopping >= 0 && stopping < ending && ending < done, JSON.stringify(shown));
    const at = await epoch(page);
    assert.ok(at >= 2 && at < 40, `stopped at epoch ${at}`);
    assert.ok(await page.locator('[data-testid=cluster][data-level="0"]').count() > 0, 'the final clusters view');
    await page.waitForFunction((e) => Number(document.querySelector('[data-testid=autosave]').dataset.epoch) === e,
      at, { timeout: 30_000, polling: 50 });
    assert.ok(await page.isEnabled('[data-testid=train]'));
    assert.ok(await page.isDisabled('[data-testid=stop]'));
    assert.deepEqual(errors, []);
    console.log(`stop: from the press to the stopped run ${stopMs} ms at epoch ${at}`);
  } finally {
    await browser.close();
  }
});

// The file a button downloads, as bytes.
async function download(page, id) {
  const [file] = await Promise.all([page.waitForEvent('download'), press(page, id)]);
  return fs.readFileSync(await file.path());
}

test('one click runs the InfoNCE-only baseline and both curves are shown', async () => {
  const { browser, page, errors } = await startTinyCpuRun(3);
  try {
    await waitState(page, 'done');
    // Exports for other tools: safetensors under PyTorch's names, the Projector's zip.
    const st = await download(page, 'export-safetensors');
    const headerLen = Number(st.readBigUInt64LE(0));
    const header = JSON.parse(st.subarray(8, 8 + headerLen).toString());
    assert.deepEqual(header['backbone.0.weight'].shape, [4, 3, 3, 3]);
    assert.ok(header['backbone.1.running_var'] && header['head.2.bias']);
    const zip = await download(page, 'export-projector');
    const names = [];
    for (let at = 0; zip.readUInt32LE(at) === 0x04034b50;) {
      const size = zip.readUInt32LE(at + 18), nameLen = zip.readUInt16LE(at + 26);
      names.push(zip.subarray(at + 30, at + 30 + nameLen).toString());
      const body = zip.subarray(at + 30 + nameLen, at + 30 + nameLen + size);
      if (names.at(-1) === 'tensors.tsv') assert.equal(body.toString().trim().split('\n').length, 64);
      if (names.at(-1) === 'sprite.png') assert.equal(body.subarray(1, 4).toString(), 'PNG');
      at += 30 + nameLen + size;
    }
    assert.deepEqual(names, ['tensors.tsv', 'metadata.tsv', 'sprite.png', 'projector_config.json']);
    // The t-SNE map: computed in the worker with progress, drawn, and hovering shows an image.
    await page.selectOption('[data-testid=map-layout]', 'tsne');
    await page.waitForFunction(() => /t-SNE: iteration \d+|t-SNE ready/.test(document.querySelector('[data-testid=tsne-progress]').textContent),
      null, { timeout: 60_000, polling: 20 });
    await page.waitForSelector('[data-testid=map][data-kind=tsne]', { timeout: 120_000 });
    // Sweep the pointer over the map (8-unit steps of its 400, under the 10-unit pick radius).
    const shown = await page.$eval('[data-testid=map]', async (canvas) => {
      const r = canvas.getBoundingClientRect();
      for (let y = 0.02; y < 1; y += 0.02) {
        for (let x = 0.02; x < 1; x += 0.02) {
          canvas.dispatchEvent(new MouseEvent('mousemove', {
            clientX: r.left + x * r.width, clientY: r.top + y * r.height, bubbles: true,
          }));
          await new Promise((ok) => setTimeout(ok, 0));
          if (document.querySelector('[data-testid=map-hover]')) return true;
        }
      }
      return false;
    });
    assert.ok(shown, 'hovering the t-SNE map shows an image');
    await press(page, 'baseline');
    await page.waitForFunction(() => /InfoNCE only/.test(document.querySelector('[data-testid=metrics]')?.textContent ?? ''),
      null, { timeout: LONG });
    await waitState(page, 'done');
    const legend = await page.textContent('[data-testid=metrics] .legend');
    assert.match(legend, /PCL/);
    assert.match(legend, /InfoNCE only/);
    // One kNN line per run (the AMI chart beside it has the baseline's k-means levels too).
    assert.equal(await page.locator('[data-testid=metrics] > svg:not([data-testid=ami-chart]) polyline').count(), 2);
    // PCL and the baseline side by side: each run's coarsest clusters and map, with its AMI.
    await page.waitForSelector('[data-testid=compare]', { timeout: 30_000 });
    const sides = await page.$$eval('[data-testid=compare] .side', (els) => els.map((e) => [e.dataset.run, e.querySelectorAll('.cluster').length]));
    assert.deepEqual(sides.map((s) => s[0]), ['PCL', 'InfoNCE only']);
    assert.ok(sides.every((s) => s[1] >= 2), JSON.stringify(sides));
    await page.screenshot({ path: path.join(artifacts, 'trainer-baseline.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
