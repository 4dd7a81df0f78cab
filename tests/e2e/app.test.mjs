// End-to-end tests of the built app (dist/) in Debian's headless Chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { openApp, startServer, stopServer, artifacts, assertOwnOrigin as ownOrigin } from './harness.mjs';

// SwiftShader runs WebGPU on the CPU: slow, so allow minutes for the training step.
const STEP_TIMEOUT = 240_000;

before(startServer);
after(stopServer);

async function probeLoss(page) {
  await page.waitForFunction(
    () => document.querySelector('[data-testid=probe]')?.dataset.loss?.length > 0
      || document.querySelector('[data-testid=probe]')?.textContent.startsWith('Error'),
    null, { timeout: STEP_TIMEOUT });
  const text = await page.textContent('[data-testid=probe]');
  assert.ok(!text.startsWith('Error'), text);
  return Number(await page.getAttribute('[data-testid=probe]', 'data-loss'));
}

function assertOwnOrigin(requests) {
  ownOrigin(assert, requests);
  assert.ok(requests.some((u) => u.endsWith('.wasm')), 'the wasm was fetched');
}

test('WebGPU: the worker reports the adapter and a finite loss from a real training step', async () => {
  const { browser, page, errors, requests } = await openApp({ webgpu: true, query: '?backend=webgpu' });
  try {
    await page.waitForSelector('[data-testid=backend][data-backend=webgpu]', { timeout: 60_000 });
    const adapter = (await page.textContent('[data-testid=backend]')).trim();
    assert.ok(adapter.length > 0 && adapter !== 'detecting…', `adapter name: ${adapter}`);
    // The name comes from the browser's GPUAdapter.info, not wgpu's generic placeholder.
    assert.doesNotMatch(adapter, /^BrowserWebGpu/, `adapter name: ${adapter}`);
    const limits = await page.locator('.limits li').count();
    assert.ok(limits >= 3, `shows the adapter's key limits (${limits})`);
    const loss = await probeLoss(page);
    assert.ok(Number.isFinite(loss) && loss > 0, `loss ${loss}`);
    await page.screenshot({ path: path.join(artifacts, 'backend-webgpu.png'), fullPage: true });
    assert.equal(await page.locator('[data-testid=backend-notice]').count(), 0);
    assert.equal(await page.getAttribute('[data-testid=backend]', 'data-choice'), 'forced');
    // SwiftShader is named for what it is.
    assert.match(adapter, /software/, adapter);
    assert.deepEqual(errors, []);
    assertOwnOrigin(requests);
    console.log(`webgpu adapter "${adapter}", probe loss ${loss}`);
  } finally {
    await browser.close();
  }
});

test('WebGPU on a software adapter: the page times both and trains on the faster CPU by itself', async () => {
  const { browser, page, errors } = await openApp({ webgpu: true });
  try {
    await page.waitForSelector('[data-testid=backend][data-choice=measured]', { timeout: 120_000 });
    const d = await page.$eval('[data-testid=backend]', (e) => ({ ...e.dataset }));
    const [gpu, cpu] = [Number(d.webgpuImgS), Number(d.cpuImgS)];
    console.log(`measured: WebGPU (SwiftShader) ${gpu} images/s, CPU ${cpu} images/s`);
    assert.ok(gpu > 0 && cpu > gpu, `WebGPU ${gpu}, CPU ${cpu}`);
    assert.equal(d.backend, 'cpu');
    assert.match(await page.textContent('[data-testid=backend-choice]'), /Measured: WebGPU [0-9.]+ images\/s, the CPU with \d+ workers? about [0-9.]+ images\/s: training on the CPU/);
    assert.ok(Number.isFinite(await probeLoss(page)), 'the chosen device trains');
    // The browser remembers the choice: a reload trains on the CPU without measuring again.
    await page.reload();
    await page.waitForSelector('[data-testid=backend][data-choice=remembered]', { timeout: 60_000 });
    assert.equal(await page.getAttribute('[data-testid=backend]', 'data-backend'), 'cpu');
    assert.match(await page.textContent('[data-testid=backend-choice]'), /Measured earlier in this browser: WebGPU [0-9.]+ images\/s/);
    // "The faster, measured" forgets it and measures again.
    await page.selectOption('[data-testid=backend-select]', 'webgpu');
    await page.waitForSelector('[data-testid=backend][data-choice=forced][data-backend=webgpu]', { timeout: 60_000 });
    await page.selectOption('[data-testid=backend-select]', 'auto');
    await page.waitForSelector('[data-testid=backend][data-choice=measured]', { timeout: 120_000 });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('No WebGPU: the CPU fallback runs the same step and says so', async () => {
  const { browser, page, errors, requests } = await openApp({ webgpu: false });
  try {
    await page.waitForSelector('[data-testid=backend][data-backend=cpu]', { timeout: 60_000 });
    assert.ok(await page.isVisible('[data-testid=backend-notice]'), 'the CPU notice is visible');
    const loss = await probeLoss(page);
    assert.ok(Number.isFinite(loss) && loss > 0, `loss ${loss}`);
    // The CPU kernels' values and gradients against plain loops inside each worker's wasm: its
    // v128 tap copies and tile-gemm's wasm lanes, which the native tests do not compile.
    const checks = [];
    for (const w of page.workers()) {
      const worst = await w.evaluate(() => (typeof self.pclKernelCheck === 'function' ? self.pclKernelCheck() : null));
      if (worst !== null) checks.push(worst);
    }
    assert.ok(checks.length >= 1, 'a worker offers the kernel check');
    for (const worst of checks) assert.ok(worst < 1e-4, `largest relative difference ${worst}`);
    await page.screenshot({ path: path.join(artifacts, 'backend-cpu.png'), fullPage: true });
    assert.deepEqual(errors, []);
    assertOwnOrigin(requests);
    console.log(`cpu fallback probe loss ${loss}; kernels in ${checks.length} workers within ${Math.max(...checks)} of plain loops`);
  } finally {
    await browser.close();
  }
});
