// Shared by the end-to-end tests: the static server of dist/ and a Chromium page on it.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');
export const dist = path.join(repo, 'dist');
export const artifacts = path.join(here, 'artifacts');
fs.mkdirSync(artifacts, { recursive: true });

const BASE_ARGS = [
  '--no-sandbox', '--disable-background-networking', '--no-first-run',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--headless=new',
];
// WebGPU on the machine's real GPU (scripts/bench-gpu.sh on a GPU machine) instead of
// SwiftShader: Vulkan, and no blocklist.
const GPU_ARGS = process.env.PCL_CHROMIUM_GPU === '1'
  ? ['--enable-features=Vulkan,VulkanFromANGLE', '--use-angle=vulkan', '--ignore-gpu-blocklist']
  : [];

let server;
// dist/ (the dev build) unless a test serves a built site; `port` keeps the origin of an
// earlier server (a site test restarts it after going offline).
// (node:test passes hooks a context: anything but a path means dist/.)
export async function startServer(root, port = 0, headers = {}) {
  server = await serve(typeof root === 'string' ? root : dist, port, headers);
  return server;
}
export function stopServer() { server.close(); }
export function serverUrl() { return server.url; }

// Long main-thread tasks, recorded from page start (the Long Tasks API).
const LONG_TASKS = `
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push(e.duration);
  }).observe({ entryTypes: ['longtask'] });
`;

// `init`: more script to run in the page before its own.
export async function openApp({ webgpu, query = '', context: existing, args = [], wait = 'load', init = '' } = {}) {
  const browser = existing ? null : await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [...BASE_ARGS, ...(webgpu ? ['--enable-unsafe-webgpu', ...GPU_ARGS] : []), ...args],
  });
  const context = existing || await browser.newContext({ acceptDownloads: true });
  await context.addInitScript(LONG_TASKS + init);
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // Worker requests are not page requests: record them through the context too.
  context.on('request', (r) => requests.push(r.url()));
  page.on('worker', (w) => w.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); }));
  await page.goto(server.url + query, { waitUntil: wait });
  return { browser: browser || { close: () => context.close() }, context, page, errors, requests };
}

// Waits until the worker's probe step (one training step at start-up) reported its loss: the
// device is ready.
export async function waitForProbe(page, timeout) {
  await page.waitForSelector('[data-testid=probe][data-loss]:not([data-loss=""])', { timeout });
}

// Loads `count` images of the sample set (or 'all') and waits until they are in.
export async function loadSample(page, count, timeout = 60_000) {
  await page.selectOption('select[name=sample-size]', String(count));
  await page.click('[data-testid=load-sample]');
  const loaded = count === 'all' ? '' : `[data-count="${count}"]`;
  await page.waitForSelector(`[data-testid=image-count][data-state=ready]${loaded}`, { timeout });
}

// The browser benchmarks' training setting (the issue's): width 32, batch 64, no E-step.
export const BENCH_SETTINGS = { width: '32', batch_size: '64', feature_dim: '128', epochs: '1000', warmup_epochs: '1000', minutes: '' };

// Opens the train card's "Advanced settings" (most settings live there).
export async function openAdvanced(page) {
  await page.$eval('details.advanced', (d) => { d.open = true; });
}

// Types each setting into its input and commits it, as a user leaving the input does.
export async function fillSettings(page, settings) {
  await openAdvanced(page);
  for (const [key, value] of Object.entries(settings)) {
    await page.fill(`input[name=${key}]`, String(value));
    await page.dispatchEvent(`input[name=${key}]`, 'change');
  }
}

export function assertOwnOrigin(assert, requests) {
  const origin = new URL(server.url).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:') && !u.startsWith('blob:'));
  assert.deepEqual(foreign, [], 'every request goes to the page origin');
}
