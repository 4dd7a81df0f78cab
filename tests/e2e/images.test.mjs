// Images in (issue 4): pickers, drop, the sample set, odd and bad files, the same pixels as the
// CLI. Decoding does not depend on the compute backend, so these run on the CPU fallback
// (`?cpu`), which starts faster.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { openApp, startServer, stopServer, artifacts, repo } from './harness.mjs';

const fixtures = path.join(repo, 'tests/fixtures/images');
const expected = JSON.parse(fs.readFileSync(`${fixtures}.expected.json`, 'utf8'));
const mustLoad = Object.entries(expected).filter(([, v]) => v === 'load').map(([k]) => k);
const mustSkip = Object.entries(expected).filter(([, v]) => v.startsWith('skip:'));

before(startServer);
after(stopServer);

async function waitReady(page, count) {
  await page.waitForSelector(
    `[data-testid=image-count][data-state=ready][data-count="${count}"]`, { timeout: 60_000 });
}

async function count(page) {
  return Number(await page.getAttribute('[data-testid=image-count]', 'data-count'));
}

test('a picked folder of odd and bad files: good ones load, bad ones are listed with reasons, pixels match the CLI', async () => {
  const { browser, page, errors } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    const t0 = Date.now();
    await page.setInputFiles('[data-testid=folder-input]', fixtures);
    await page.waitForSelector('[data-testid=image-count][data-state=ready]:not([data-count="0"])', { timeout: 60_000 });
    const seconds = (Date.now() - t0) / 1000;
    const n = await count(page);
    const files = Object.keys(expected).length;
    // Every "load" file, plus the truncated JPEG where this browser shows what arrived.
    assert.ok(n === mustLoad.length || n === mustLoad.length + 1, `loaded ${n}`);
    const skipped = await page.$$eval('[data-testid=skipped-file]',
      (els) => els.map((e) => [e.dataset.file, e.textContent]));
    const reasons = Object.fromEntries(skipped);
    for (const [file, verdict] of mustSkip) {
      const why = verdict.slice('skip:'.length);
      assert.ok(reasons[file], `${file} is listed as skipped: ${JSON.stringify(reasons)}`);
      assert.match(reasons[file], new RegExp(why), `${file}: ${reasons[file]}`);
    }
    assert.equal(n + skipped.length, files, 'every file is either loaded or listed');
    const thumbs = await page.$eval('[data-testid=thumbnails]', (c) => c.width);
    assert.ok(thumbs > 0, 'thumbnails are drawn');
    await page.screenshot({ path: path.join(artifacts, 'images-folder.png'), fullPage: true });

    // The CLI decodes the same folder; the stored pixels must agree.
    const dump = path.join(artifacts, 'cli-pixels.json');
    execFileSync(process.env.PCL_BIN, ['decode', '--images', fixtures, '--dump', dump]);
    const cli = JSON.parse(fs.readFileSync(dump, 'utf8'));
    const web = await page.evaluate(() => {
      const s = window.pclImages();
      return { side: s.side, names: s.names, pixels: Array.from(s.pixels) };
    });
    assert.equal(web.side, cli.side);
    const per = web.side * web.side * 3;
    const report = [];
    for (const [i, name] of web.names.entries()) {
      const a = web.pixels.slice(i * per, (i + 1) * per);
      const b = cli.images[name];
      if (!b) continue;
      let sum = 0; let max = 0;
      for (let j = 0; j < per; j += 1) { const d = Math.abs(a[j] - b[j]); sum += d; max = Math.max(max, d); }
      const mean = sum / per;
      report.push(`${name}: mean ${mean.toFixed(2)} max ${max}`);
      if (name === 'bad/truncated.jpg') continue; // decoders fill missing data differently
      // Lossless formats decode identically (alpha may round differently through the canvas);
      // JPEG decoders (libjpeg-turbo, zune-jpeg) differ in IDCT and chroma upsampling.
      const limit = /\.jpg$/.test(name) && !name.includes('really-a-png') ? 6 : 1.5;
      assert.ok(mean <= limit, `${name}: mean difference ${mean} over ${limit}`);
    }
    fs.writeFileSync(path.join(artifacts, 'pixel-diff.txt'), report.join('\n') + '\n');
    assert.ok(report.length >= mustLoad.length, `compared ${report.length} images`);
    assert.deepEqual(errors, []);
    console.log(`decoded ${files} files in ${seconds.toFixed(2)} s in the browser (${(files / seconds).toFixed(0)} files/s incl. upload); pixel check:\n  ${report.join('\n  ')}`);
  } finally {
    await browser.close();
  }
});

test('picked files and dropped files add to what is loaded; too few images get a clear message', async () => {
  const { browser, page, errors } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await page.setInputFiles('[data-testid=image-input]', [
      path.join(fixtures, 'red/r0.png'), path.join(fixtures, 'odd/one-pixel.png'),
    ]);
    await waitReady(page, 2);
    await page.click('[data-testid=train]');
    await page.waitForFunction(() => /at least 16/.test(document.querySelector('[data-testid=error]').textContent));
    // A drop of loose files (one of them broken): the earlier two stay.
    await page.evaluate(async () => {
      const dt = new DataTransfer();
      const bytes = await (await fetch('/sample/emoji.png')).arrayBuffer();
      dt.items.add(new File([bytes], 'atlas.png', { type: 'image/png' }));
      dt.items.add(new File(['not an image'], 'broken.jpg', { type: 'image/jpeg' }));
      const zone = document.querySelector('.dropzone');
      zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await waitReady(page, 3);
    const skipped = await page.$$eval('[data-testid=skipped-file]', (els) => els.map((e) => e.dataset.file));
    assert.deepEqual(skipped, ['broken.jpg']);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('the sample set loads with one click', async () => {
  const { browser, page, errors } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await page.waitForSelector('[data-testid=backend][data-backend=cpu]', { timeout: 60_000 });
    const t0 = Date.now();
    await page.click('[data-testid=load-sample]');
    await waitReady(page, 1870);
    const seconds = (Date.now() - t0) / 1000;
    await page.screenshot({ path: path.join(artifacts, 'images-sample.png'), fullPage: true });
    assert.deepEqual(errors, []);
    console.log(`sample set: 1870 images in ${seconds.toFixed(2)} s`);
    assert.ok(seconds < 10, `sample load took ${seconds} s`);
  } finally {
    await browser.close();
  }
});

test('an empty folder says so; webcam snapshots join the images', async () => {
  const { browser, page, errors } = await openApp({
    webgpu: false,
    query: '?cpu',
    args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  try {
    const empty = path.join(artifacts, 'empty-folder');
    fs.mkdirSync(empty, { recursive: true });
    await page.setInputFiles('[data-testid=folder-input]', empty);
    await page.waitForFunction(() => /no files/.test(document.querySelector('[data-testid=error]').textContent));
    await page.click('summary:has-text("Webcam")');
    await page.click('button:has-text("Start camera")');
    await page.waitForFunction(() => document.querySelector('video').videoWidth > 0, null, { timeout: 30_000 });
    await page.click('button:has-text("Snap")');
    await page.click('button:has-text("Snap")');
    await waitReady(page, 2);
    const names = await page.evaluate(() => window.pclImages().names);
    assert.deepEqual(names, ['webcam/snapshot-1.png', 'webcam/snapshot-2.png']);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test('decode throughput: 200 camera-sized JPEGs in the browser and in the CLI', async () => {
  const { browser, page, errors } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    const n = 200;
    // Photos stand-ins: 640 x 480 JPEGs with gradients and noise, encoded by the browser.
    const files = await page.evaluate(async (n) => {
      const out = [];
      for (let i = 0; i < n; i += 1) {
        const c = new OffscreenCanvas(640, 480);
        const g = c.getContext('2d');
        const grad = g.createLinearGradient(0, 0, 640, 480);
        grad.addColorStop(0, `hsl(${(i * 37) % 360} 70% 50%)`);
        grad.addColorStop(1, `hsl(${(i * 91) % 360} 60% 40%)`);
        g.fillStyle = grad; g.fillRect(0, 0, 640, 480);
        for (let k = 0; k < 40; k += 1) {
          g.fillStyle = `hsl(${(i * 13 + k * 29) % 360} 80% 60%)`;
          g.beginPath(); g.arc((k * 97 + i * 7) % 640, (k * 53 + i * 11) % 480, 10 + (k % 30), 0, 7); g.fill();
        }
        const blob = await c.convertToBlob({ type: 'image/jpeg', quality: 0.9 });
        out.push(Array.from(new Uint8Array(await blob.arrayBuffer())));
      }
      return out;
    }, n);
    const dir = path.join(artifacts, 'photos');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    files.forEach((bytes, i) => fs.writeFileSync(path.join(dir, `photo-${String(i).padStart(3, '0')}.jpg`), Buffer.from(bytes)));
    await page.setInputFiles('[data-testid=image-input]', fs.readdirSync(dir).map((f) => path.join(dir, f)));
    await waitReady(page, n);
    const text = await page.textContent('[data-testid=image-count]');
    const browserRate = Number(/([\d.]+) files\/s/.exec(text)[1]);
    const cli = execFileSync(process.env.PCL_BIN, ['decode', '--images', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const cliRate = Number(/([\d.]+) files\/s/.exec(cli)[1]);
    assert.ok(browserRate > 0 && cliRate > 0);
    assert.deepEqual(errors, []);
    console.log(`decode throughput, 640x480 JPEG: browser worker ${browserRate} files/s, CLI ${cliRate} files/s`);
  } finally {
    await browser.close();
  }
});

test('the augmentation panel shows the training views: the CLI\'s for the same seed; a setting or a new draw changes them', async () => {
  // A synthetic folder of lossless PNGs: the browser and the CLI decode the same pixels.
  const dir = path.join(artifacts, 'views-synth');
  fs.rmSync(dir, { recursive: true, force: true });
  execFileSync(process.env.PCL_BIN, ['synth', '--out', dir, '--per-group', '4']);
  const { browser, page, errors } = await openApp({ webgpu: false, query: '?cpu' });
  try {
    await page.setInputFiles('[data-testid=folder-input]', dir);
    await page.waitForSelector('[data-testid=views][data-count="6"]', { timeout: 60_000 });
    const web = await page.evaluate(() => {
      const v = window.pclViews();
      return { seed: v.seed, size: v.size, names: v.names, pixels: Array.from(v.pixels) };
    });
    assert.equal(web.seed, 0);
    const dump = path.join(artifacts, 'cli-views.json');
    execFileSync(process.env.PCL_BIN, ['views', '--images', dir, '--seed', '0', '--count', '6', '--dump', dump]);
    const cli = JSON.parse(fs.readFileSync(dump, 'utf8'));
    assert.deepEqual(web.names.map((n) => n.replace(/^views-synth\//, '')), cli.names, 'the same images are shown');
    const flat = cli.views.flat(2);
    assert.equal(web.pixels.length, flat.length);
    let sum = 0; let max = 0;
    for (let j = 0; j < flat.length; j += 1) { const d = Math.abs(web.pixels[j] - flat[j]); sum += d; max = Math.max(max, d); }
    const mean = sum / flat.length;
    console.log(`views: page against CLI, mean difference ${mean.toFixed(3)}, max ${max}`);
    assert.ok(mean < 0.5 && max <= 3, `views differ from the CLI's: mean ${mean}, max ${max}`);
    assert.equal(web.size, cli.size, 'the views have the training side');
    const view = web.size * web.size * 3;
    const first = web.pixels.slice(0, view);
    const second = web.pixels.slice(view, 2 * view);
    assert.notDeepEqual(first, second, 'the two views of an image differ');

    // Every view grey: typed into the panel's settings, the views are drawn again.
    await page.click('[data-testid=views-card] summary');
    await page.fill('#setting-grayscale_prob', '1');
    await page.press('#setting-grayscale_prob', 'Tab');
    await page.waitForFunction(() => {
      const p = window.pclViews().pixels;
      for (let j = 0; j < p.length; j += 3) if (Math.abs(p[j] - p[j + 1]) > 1 || Math.abs(p[j + 1] - p[j + 2]) > 1) return false;
      return true;
    }, null, { timeout: 30_000 });
    // A new draw: the next seed, other views.
    await page.click('[data-testid=new-views]');
    await page.waitForSelector('[data-testid=views][data-seed="1"]', { timeout: 30_000 });
    await page.screenshot({ path: path.join(artifacts, 'views-panel.png'), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
