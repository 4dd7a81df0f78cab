// End-to-end tests of the built app (dist/) in Debian's headless Chromium.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, '../../dist');
const artifacts = path.join(here, 'artifacts');
fs.mkdirSync(artifacts, { recursive: true });

const BASE_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--no-first-run',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--headless=new',
];
// SwiftShader runs WebGPU on the CPU: slow, so allow minutes for the training step.
const STEP_TIMEOUT = 240_000;

let server;
before(async () => { server = await serve(dist); });
after(() => server.close());

async function openApp({ webgpu }) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: webgpu ? [...BASE_ARGS, '--enable-unsafe-webgpu'] : BASE_ARGS,
  });
  const page = await browser.newPage();
  const errors = [];
  const requests = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => requests.push(r.url()));
  browser.on('disconnected', () => {});
  // Worker requests are not page requests: record them through the context too.
  page.context().on('request', (r) => requests.push(r.url()));
  page.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); }));
  await page.goto(server.url);
  return { browser, page, errors, requests };
}

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
  const origin = new URL(server.url).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:') && !u.startsWith('blob:'));
  assert.deepEqual(foreign, [], 'every request goes to the page origin');
  assert.ok(requests.some((u) => u.endsWith('.wasm')), 'the wasm was fetched');
}

test('WebGPU: the worker reports the adapter and a finite loss from a real training step', async () => {
  const { browser, page, errors, requests } = await openApp({ webgpu: true });
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
    assert.deepEqual(errors, []);
    assertOwnOrigin(requests);
    console.log(`webgpu adapter "${adapter}", probe loss ${loss}`);
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
    await page.screenshot({ path: path.join(artifacts, 'backend-cpu.png'), fullPage: true });
    assert.deepEqual(errors, []);
    assertOwnOrigin(requests);
    console.log(`cpu fallback probe loss ${loss}`);
  } finally {
    await browser.close();
  }
});
