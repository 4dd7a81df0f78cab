// Browser training speed (not a test; scripts/bench-browser.sh), paired with TensorFlow.js in the
// same headless Chromium. The issue's setting: the sample set's 500 images, width 32, batch 64,
// augmentation on, no E-step (warm-up covers the run), images/s over BENCH_SECONDS of training
// after the first step, and the time from pressing Train to the first step. Contenders, each in
// its own browser, alternating over BENCH_ROUNDS rounds:
//   the page's CPU fallback (?cpu) of every build in BENCH_DISTS (default dist/), once for each
//   entry of BENCH_WORKERS (default "1 auto": one worker alone, and the page's own choice of
//   workers sharing each step, one per core);
//   TensorFlow.js 4.22 with tfjs-backend-wasm (SIMD; benches/tfjs: the same encoder and MoCo
//   step), with 1 thread and with BENCH_TFJS_THREADS (default 2) threads: served with
//   cross-origin isolation so that its threaded build runs, and told twice that many cores
//   (its thread pool is half of navigator.hardwareConcurrency);
//   with BENCH_WEBGPU=1 also the page on WebGPU and TensorFlow.js's WebGPU backend.
//   the native CLI on one thread (`RAYON_NUM_THREADS=1 pcl train`, PCL_BIN, the same settings
//   on 500 sample images), in the same rounds, since the machine's speed drifts between runs.
// Then one E-step in the page: all 1,870 images, K = 18 / 74 / 187 (BENCH_ESTEP=0 skips it).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { openApp, startServer, stopServer, dist, repo, loadSample, fillSettings, waitForProbe, BENCH_SETTINGS } from './harness.mjs';

const SECONDS = Number(process.env.BENCH_SECONDS || 60);
const WEBGPU = process.env.BENCH_WEBGPU === '1';
// Relative to the repository (the script runs from tests/e2e).
const builds = (process.env.BENCH_DISTS || dist).split(/\s+/).filter(Boolean).map((d) => path.resolve(repo, d));
const rounds = Number(process.env.BENCH_ROUNDS || 1);
const tfjsRoot = path.join(repo, 'benches/tfjs');
const TFJS = process.env.BENCH_TFJS !== '0' && fs.existsSync(path.join(tfjsRoot, 'node_modules'));
const ISOLATED = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };
// Counts WebGPU calls (compute dispatches, queue submits, buffer reads) in a page or worker.
const COUNT_GPU = `;(() => {
  if (self.__gpuCounts || typeof GPUComputePassEncoder === 'undefined') return;
  const counts = self.__gpuCounts = { dispatches: 0, submits: 0, reads: 0 };
  const wrap = (proto, name, key) => {
    const f = proto[name];
    proto[name] = function (...a) { counts[key] += 1; return f.apply(this, a); };
  };
  wrap(GPUComputePassEncoder.prototype, 'dispatchWorkgroups', 'dispatches');
  wrap(GPUComputePassEncoder.prototype, 'dispatchWorkgroupsIndirect', 'dispatches');
  wrap(GPUQueue.prototype, 'submit', 'submits');
  wrap(GPUBuffer.prototype, 'mapAsync', 'reads');
})();`;
const perStep = (c) => (c ? `; per step ${c.dispatches.toFixed(0)} dispatches, ${c.submits.toFixed(0)} submits, ${c.reads.toFixed(1)} buffer reads` : '');
const SETTINGS = BENCH_SETTINGS;

// A build's name: its folder, with the folder above where two builds share a name.
const label = (build) => (builds.filter((b) => path.basename(b) === path.basename(build)).length > 1
  ? `${path.basename(path.dirname(build))}/${path.basename(build)}` : path.basename(build));

async function pageRun(build, webgpu, workers = 'auto') {
  await startServer(build);
  // WebGPU forced: left to measure, the page would train on the faster of the two.
  const query = webgpu ? '?backend=webgpu' : `?cpu${workers === 'auto' ? '' : `&workers=${workers}`}`;
  const { browser, page } = await openApp({ webgpu, query });
  // The worker's WebGPU calls are counted from its start (it asks for the device after load).
  const worker = webgpu ? (page.workers()[0] || await page.waitForEvent('worker', { timeout: 60_000 })) : null;
  if (worker) await worker.evaluate(COUNT_GPU);
  try {
    await waitForProbe(page, 300_000);
    await loadSample(page, 500, 120_000);
    await fillSettings(page, SETTINGS);
    const t0 = Date.now();
    await page.click('[data-testid=train]');
    await page.waitForFunction(() => {
      const s = document.querySelector('[data-testid=status]').dataset;
      return s.state === 'training' && Number(s.imagesPerS) > 0;
    }, null, { timeout: 600_000, polling: 50 });
    const firstStep = (Date.now() - t0) / 1000;
    const progress = async () => Number(await page.getAttribute('progress', 'value'));
    const counts = async () => (worker ? worker.evaluate(() => ({ ...self.__gpuCounts })) : null);
    const [p0, c0] = [await progress(), await counts()];
    await page.waitForTimeout(SECONDS * 1000);
    const [p1, c1] = [await progress(), await counts()];
    const rate = Number(await page.getAttribute('[data-testid=status]', 'data-images-per-s'));
    const backend = await page.getAttribute('[data-testid=backend]', 'data-backend');
    // builds from before helper workers have no such attribute: one worker
    const used = Number(await page.$eval('[data-testid=workers]', (e) => e.dataset.workers).catch(() => 1)) || 1;
    const steps = p1 - p0;
    const gpu = c0 && c1 && steps > 0 ? Object.fromEntries(Object.keys(c1).map((k) => [k, (c1[k] - c0[k]) / steps])) : null;
    const name = `page ${label(build)} ${backend}${webgpu ? '' : ` ${used} worker${used > 1 ? 's' : ''}`}`;
    // On WebGPU the kernels are built before the first step; how long that took, and how many.
    const kernels = webgpu ? await page.$eval('[data-testid=kernels]', (e) => ({ ...e.dataset })).catch(() => null) : null;
    return { name, rate, firstStep, gpu, kernels };
  } finally {
    await browser.close();
    stopServer();
  }
}

async function tfjsRun(backend, threads) {
  await startServer(tfjsRoot, 0, ISOLATED);
  const webgpu = backend === 'webgpu';
  const cores = `;Object.defineProperty(Navigator.prototype, 'hardwareConcurrency', { get: () => ${2 * threads} });`;
  const init = webgpu ? COUNT_GPU : (threads > 1 ? cores : '');
  const { browser, page } = await openApp({ webgpu, query: `?backend=${backend}&threads=${threads}&seconds=${SECONDS}`, init });
  try {
    let result;
    const deadline = Date.now() + (SECONDS + 900) * 1000;
    while (!(result = await page.evaluate(() => window.__bench)) && Date.now() < deadline) {
      await page.waitForTimeout(500);
    }
    if (!result || result.error) throw new Error(`TensorFlow.js ${backend}: ${result ? result.error : 'no result in time'}`);
    const name = `TensorFlow.js ${result.backend}${webgpu ? '' : ` ${result.threads} thread${result.threads > 1 ? 's' : ''}`}`;
    if (result.gradientCheck !== null) console.log(`TensorFlow.js wasm gradients written out: largest difference from its CPU backend's ${result.gradientCheck.toExponential(1)}`);
    return { name, rate: result.imagesPerS, firstStep: result.firstStep, gpu: result.perStep };
  } finally {
    await browser.close();
    stopServer();
  }
}

// One E-step of the page on the CPU fallback: warm-up of one epoch, then k-means on 1,870.
async function estepRun(build) {
  await startServer(build);
  const { browser, page } = await openApp({ query: '?cpu' });
  try {
    await waitForProbe(page, 300_000);
    await loadSample(page, 'all', 180_000);
    await fillSettings(page, { ...SETTINGS, warmup_epochs: '1' });
    await page.click('[data-testid=train]');
    await page.waitForSelector('[data-testid=estep][data-seconds]', { timeout: 900_000 });
    const seconds = Number(await page.getAttribute('[data-testid=estep]', 'data-seconds'));
    const caption = await page.textContent('[data-testid=estep] caption');
    const ks = await page.$$eval('[data-testid=estep] tr td:nth-child(2)', (tds) => tds.map((t) => t.textContent));
    return { seconds, caption, ks };
  } finally {
    await browser.close();
    stopServer();
  }
}

// The native CLI, one thread, on about BENCH_SECONDS of training: its own images/s, as it prints.
async function nativeRun() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pcl-bench-'));
  try {
    const images = path.join(dir, 'images');
    execFileSync(process.env.PCL_BIN, ['sample', '--out', images, '--limit', '500']);
    const config = path.join(dir, 'config.json');
    // about 350 images/s on one core of the 2-core machine
    const epochs = Math.max(2, Math.round((SECONDS * 350) / 500));
    fs.writeFileSync(config, JSON.stringify({ width: 32, feature_dim: 128, batch_size: 64, epochs, warmup_epochs: 100000, minutes: null }));
    const run = spawnSync(process.env.PCL_BIN, ['train', '--images', images, '--out', path.join(dir, 'run'), '--config', config],
      { env: { ...process.env, RAYON_NUM_THREADS: '1' }, encoding: 'utf8', maxBuffer: 64 << 20 });
    // The progress bar's rate at the last step: training only, as the page's figure.
    const rates = [...run.stderr.matchAll(/(\d+) img\/s/g)].map((m) => Number(m[1]));
    if (run.status !== 0 || !rates.length) throw new Error(`native CLI: ${run.stderr.slice(-300)}`);
    return { name: 'native CLI 1 thread', rate: rates[rates.length - 1], firstStep: 0, gpu: null };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// BENCH_ONLY_WEBGPU=1 (scripts/bench-gpu.sh): the page on WebGPU and TensorFlow.js WebGPU only.
const ONLY_WEBGPU = process.env.BENCH_ONLY_WEBGPU === '1';
const contenders = [];
for (const build of builds) {
  for (const w of ONLY_WEBGPU ? [] : (process.env.BENCH_WORKERS || '1 auto').split(/\s+/).filter(Boolean)) {
    contenders.push(() => pageRun(build, false, w));
  }
  if (WEBGPU || ONLY_WEBGPU) contenders.push(() => pageRun(build, true));
}
if (process.env.PCL_BIN && process.env.BENCH_NATIVE !== '0' && !ONLY_WEBGPU) contenders.push(nativeRun);
if (TFJS) {
  if (!ONLY_WEBGPU) contenders.push(() => tfjsRun('wasm', 1), () => tfjsRun('wasm', Number(process.env.BENCH_TFJS_THREADS || 2)));
  if (WEBGPU || ONLY_WEBGPU) contenders.push(() => tfjsRun('webgpu', 0));
} else {
  console.log('TensorFlow.js left out (BENCH_TFJS=0 or benches/tfjs/node_modules missing)');
}

const results = {};
for (let round = 0; round < rounds; round += 1) {
  for (const run of contenders) {
    let r;
    try {
      r = await run();
    } catch (e) {
      console.log(`round ${round + 1}: ${String(e.message).split('\n')[0]}`); // one contender's failure is a figure too
      continue;
    }
    console.log(`round ${round + 1} ${r.name}: ${r.rate.toFixed(1)} images/s over ${SECONDS} s; first step ${r.firstStep.toFixed(1)} s after start${perStep(r.gpu)}`);
    (results[r.name] ||= []).push(r);
  }
}

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
console.log(`\nMedians of ${rounds} round(s):`);
for (const [name, rs] of Object.entries(results)) {
  console.log(`  ${name}: ${median(rs.map((r) => r.rate)).toFixed(1)} images/s (${rs.map((r) => r.rate.toFixed(1)).join(', ')}); first step ${median(rs.map((r) => r.firstStep)).toFixed(1)} s`);
}
// Paired ratios: the page against TensorFlow.js on the same kind of device, round by round.
const pairs = [['cpu', 'TensorFlow.js wasm 1 thread'], ['cpu', 'TensorFlow.js wasm 2 threads'], ['webgpu', 'TensorFlow.js webgpu'], ['cpu', 'native CLI 1 thread']];
for (const [ours, theirs] of pairs) {
  for (const name of Object.keys(results).filter((n) => n.startsWith('page ') && n.includes(` ${ours}`))) {
    if (!results[theirs]) continue;
    const n = Math.min(results[name].length, results[theirs].length); // rounds where both ran
    const ratios = results[name].slice(0, n).map((r, i) => r.rate / results[theirs][i].rate);
    console.log(`  ${name} / ${theirs}: ${median(ratios).toFixed(2)}x (rounds ${ratios.map((x) => x.toFixed(2)).join(', ')})`);
  }
}
// BENCH_JSON: every contender's rounds as JSON, for scripts/bench-gpu.sh.
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ seconds: SECONDS, results }, null, 1));
if (process.env.BENCH_ESTEP !== '0' && !ONLY_WEBGPU) {
  const e = await estepRun(builds[0]);
  console.log(`E-step in the page (CPU fallback, ${path.basename(builds[0])}): ${e.seconds.toFixed(2)} s for 1,870 images, K = ${e.ks.join(' / ')} (${e.caption})`);
}
