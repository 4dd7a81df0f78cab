// The page's training step written in TensorFlow.js, for scripts/bench-browser.sh: what a user
// would otherwise pick to train in a browser. Same encoder (3x3 stem + three stride-2 3x3 blocks,
// widths w, 2w, 4w, 8w, BatchNorm over 4 ghost chunks + ReLU, global average pool, MLP head,
// L2 norm), same MoCo step (two augmented views, momentum key encoder on a shuffled key batch,
// InfoNCE against a queue of n/2 keys with the image's own keys masked, SGD with momentum and
// weight decay, EMA update, enqueue). Augmentation: random resized crop + flip (cropAndResize)
// and per-image brightness / contrast / saturation jitter, as the page's V2 preset does at 32 px.
// Pixels are random: the work does not depend on them. Left out: BatchNorm running statistics
// (a few hundred numbers a step).
//
// The wasm backend has no Conv2DBackpropFilter kernel, so there the filter gradient is written
// out (wasmConv); everything else is TensorFlow.js's own kernels.
'use strict';
const params = new URLSearchParams(location.search);
const num = (k, d) => Number(params.get(k) || d);
const BACKEND = params.get('backend') || 'wasm';
const THREADS = num('threads', 1);
const WIDTH = num('width', 32);
const FEATURES = num('features', 128);
const BATCH = num('batch', 64);
const IMAGES = num('images', 500);
const SECONDS = num('seconds', 60);
const SIZE = 32;
const CHUNKS = 4;
const TAU = 0.2;
const EMA = 0.99;
const LR = 0.03;
const MOMENTUM = 0.9;
const WEIGHT_DECAY = 5e-4;
const QUEUE = Math.max(BATCH, Math.min(4096, Math.floor(IMAGES / 2)));

function report(result) {
  window.__bench = result;
  document.getElementById('out').textContent = JSON.stringify(result);
}

// A 3x3 convolution, padding 1: x [n, h, w, c], weight [3, 3, c, co] -> [n, h/s, w/s, co].
function conv3x3(x, weight, stride) {
  const p = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]); // [n, h+2, w+2, c]
  return BACKEND === 'wasm' ? wasmConv(stride, x.shape[3] === 3)(p, weight) : tf.conv2d(p, weight, stride, 'valid');
}

// The wasm backend's gaps, filled with its fast kernels (XNNPACK convolutions and matMul): it
// has no Conv2DBackpropFilter, its Conv2DBackpropInput and its Sum over leading axes are naive
// loops (about 1 s a step each at width 32, measured with tf.profile).
const wasmConvs = {};
function wasmConv(stride, first) {
  wasmConvs[[stride, first]] ||= tf.customGrad((p, weight, save) => {
    save([p, weight]);
    return {
      value: tf.conv2d(p, weight, stride, 'valid'), // [n, ho, wo, co]
      gradFunc: (dy, [pSaved, w]) => {
        const [n, hp, wp, c] = pSaved.shape;
        const [, ho, wo, co] = dy.shape;
        // Input gradient: the output gradient spread out by the stride (zeros between), padded
        // by 2 and correlated with the flipped, transposed filter. Not needed for the images.
        let dp = tf.zeros([n, hp, wp, c]);
        if (!first) {
          let d = dy;
          if (stride === 2) {
            d = tf.reshape(tf.stack([d, tf.zerosLike(d)], 3), [n, ho, 2 * wo, co]);
            d = tf.reshape(tf.stack([d, tf.zerosLike(d)], 2), [n, 2 * ho, 2 * wo, co]);
          }
          const wf = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]); // [3, 3, co, c]
          const full = tf.conv2d(tf.pad(d, [[0, 0], [2, 2], [2, 2], [0, 0]]), wf, 1, 'valid');
          dp = tf.slice(full, [0, 0, 0, 0], [n, hp, wp, c]); // [n, h+2, w+2, c]
        }
        // Filter gradient: dW[ky, kx, c, co] = sum over n, y, x of p[n, s y + ky, s x + kx, c]
        // dy[n, y, x, co], a convolution of the input's channels (as a batch) with the output
        // gradient (as a filter, dilated by the stride).
        const pc = tf.transpose(pSaved, [3, 1, 2, 0]); // [c, h+2, w+2, n]
        const f = tf.transpose(dy, [1, 2, 0, 3]); // [ho, wo, n, co]
        const dwc = tf.conv2d(pc, f, 1, 'valid', 'NHWC', stride); // [c, 3 or 4, 3 or 4, co]
        const dw = tf.transpose(tf.slice(dwc, [0, 0, 0, 0], [c, 3, 3, co]), [1, 2, 0, 3]); // [3, 3, c, co]
        return [dp, dw];
      },
    };
  });
  return wasmConvs[[stride, first]];
}

// y * gamma + beta on rows y [m, c]; on wasm gamma's and beta's gradients are sums over the rows
// as a matMul with a row of ones.
const affine = tf.customGrad((y, gamma, beta, save) => {
  save([y, gamma]);
  return {
    value: tf.add(tf.mul(y, gamma), beta),
    gradFunc: (dy, [ys, g]) => {
      const ones = tf.ones([1, dy.shape[0]]);
      const c = g.shape[0];
      return [tf.mul(dy, g), tf.reshape(tf.matMul(ones, tf.mul(dy, ys)), [c]), tf.reshape(tf.matMul(ones, dy), [c])];
    },
  };
});

// BatchNorm in training mode over CHUNKS ghost batches, then ReLU: x [n, h, w, c].
function normRelu(x, gamma, beta) {
  const [n, h, w, c] = x.shape;
  const g = tf.reshape(x, [CHUNKS, n / CHUNKS, h, w, c]);
  const { mean, variance } = tf.moments(g, [1, 2, 3], true); // [CHUNKS, 1, 1, 1, c]
  const y = tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, 1e-5)));
  if (BACKEND !== 'wasm') return tf.relu(tf.reshape(tf.add(tf.mul(y, gamma), beta), [n, h, w, c]));
  return tf.relu(tf.reshape(affine(tf.reshape(y, [n * h * w, c]), gamma, beta), [n, h, w, c]));
}

function initEncoder() {
  const he = (shape, fanIn) => tf.variable(tf.randomNormal(shape, 0, Math.sqrt(2 / fanIn)));
  const layers = [];
  let cin = 3;
  for (const [cout, stride] of [[WIDTH, 1], [2 * WIDTH, 2], [4 * WIDTH, 2], [8 * WIDTH, 2]]) {
    layers.push({
      weight: he([3, 3, cin, cout], 9 * cin), stride,
      gamma: tf.variable(tf.ones([cout])), beta: tf.variable(tf.zeros([cout])),
    });
    cin = cout;
  }
  const d = 8 * WIDTH;
  return {
    layers,
    hiddenW: he([d, d], d), hiddenB: tf.variable(tf.zeros([d])),
    outW: he([d, FEATURES], d), outB: tf.variable(tf.zeros([FEATURES])),
  };
}

function variables(enc) {
  return [...enc.layers.flatMap((l) => [l.weight, l.gamma, l.beta]), enc.hiddenW, enc.hiddenB, enc.outW, enc.outB];
}

function encode(enc, x) {
  for (const l of enc.layers) x = normRelu(conv3x3(x, l.weight, l.stride), l.gamma, l.beta);
  const features = tf.mean(x, [1, 2]); // [n, 8w]
  const h = tf.relu(tf.add(tf.matMul(features, enc.hiddenW), enc.hiddenB)); // [n, 8w]
  const z = tf.add(tf.matMul(h, enc.outW), enc.outB); // [n, f]
  return tf.div(z, tf.add(tf.norm(z, 2, 1, true), 1e-12)); // [n, f], unit rows
}

// Two random views of a batch: x [n, 32, 32, 3] in [0, 1].
function augment(x) {
  const n = x.shape[0];
  const boxes = [];
  for (let i = 0; i < n; i += 1) {
    const scale = 0.2 + 0.8 * Math.random();
    const ratio = Math.exp(Math.log(3 / 4) + Math.random() * Math.log(16 / 9));
    const w = Math.min(1, Math.sqrt(scale * ratio));
    const h = Math.min(1, Math.sqrt(scale / ratio));
    const x0 = Math.random() * (1 - w);
    const y0 = Math.random() * (1 - h);
    // x1 > x2 flips the crop horizontally.
    boxes.push(Math.random() < 0.5 ? [y0, x0, y0 + h, x0 + w] : [y0, x0 + w, y0 + h, x0]);
  }
  const idx = tf.range(0, n, 1, 'int32');
  const crops = tf.image.cropAndResize(x, tf.tensor2d(boxes), idx, [SIZE, SIZE]); // [n, 32, 32, 3]
  const jitter = () => tf.randomUniform([n, 1, 1, 1], 0.6, 1.4);
  let y = tf.mul(crops, jitter()); // brightness
  const mean = tf.mean(y, [1, 2, 3], true);
  y = tf.add(tf.mul(tf.sub(y, mean), jitter()), mean); // contrast
  const grey = tf.mean(y, 3, true);
  y = tf.add(tf.mul(tf.sub(y, grey), jitter()), grey); // saturation
  return tf.div(tf.sub(tf.clipByValue(y, 0, 1), 0.45), 0.225);
}

// Largest difference between the wasm stand-ins' gradients and TensorFlow.js's own (on its CPU
// backend, which has every gradient kernel), on small random inputs.
async function checkGradients() {
  let worst = 0;
  const run = async (backend, f, inputs) => {
    await tf.setBackend(backend);
    return tf.grads(f)(inputs.map((v) => tf.tensor(v))).map((t) => t.dataSync());
  };
  await tf.setBackend('cpu');
  const compare = (a, b) => a.forEach((t, i) => t.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - b[i][j])); }));
  for (const [stride, first, c, co, h] of [[1, true, 3, 8, 8], [2, false, 4, 6, 8], [1, false, 5, 3, 6]]) {
    const x = tf.randomNormal([2, h + 2, h + 2, c]).arraySync();
    const w = tf.randomNormal([3, 3, c, co]).arraySync();
    const o = tf.randomNormal([2, h / stride, h / stride, co]);
    const ours = await run('wasm', (a, b) => tf.sum(tf.mul(wasmConv(stride, first)(a, b), o)), [x, w]);
    const theirs = await run('cpu', (a, b) => tf.sum(tf.mul(tf.conv2d(a, b, stride, 'valid'), o)), [x, w]);
    compare(first ? ours.slice(1) : ours, first ? theirs.slice(1) : theirs);
  }
  const y = tf.randomNormal([10, 4]).arraySync();
  const g = tf.randomNormal([4]).arraySync();
  const b = tf.randomNormal([4]).arraySync();
  const o = tf.randomNormal([10, 4]);
  compare(await run('wasm', (p, q, r) => tf.sum(tf.mul(affine(p, q, r), o)), [y, g, b]),
    await run('cpu', (p, q, r) => tf.sum(tf.mul(tf.add(tf.mul(p, q), r), o)), [y, g, b]));
  return worst;
}

async function main() {
  let gradientCheck = null;
  if (BACKEND === 'wasm') {
    tf.wasm.setWasmPaths(new URL('node_modules/@tensorflow/tfjs-backend-wasm/dist/', location.href).href);
    tf.wasm.setThreadsCount(THREADS);
    gradientCheck = await checkGradients();
  }
  if (!(await tf.setBackend(BACKEND))) throw new Error(`backend ${BACKEND} did not start`);
  await tf.ready();
  const images = tf.randomUniform([IMAGES, SIZE, SIZE, 3]);
  const query = initEncoder();
  const key = initEncoder();
  const qVars = variables(query);
  const kVars = variables(key);
  kVars.forEach((v, i) => v.assign(qVars[i]));
  const velocity = qVars.map((v) => tf.variable(tf.zerosLike(v)));
  let queue = tf.variable(tf.div(tf.randomNormal([QUEUE, FEATURES]), Math.sqrt(FEATURES)));
  let queueIds = tf.variable(tf.fill([QUEUE], -1, 'int32'));
  let ptr = 0;
  let order = [];

  const step = async () => {
    if (order.length < BATCH) order = Array.from(tf.util.createShuffledIndices(IMAGES));
    const ids = order.splice(0, BATCH);
    const loss = tf.tidy(() => {
      const idsT = tf.tensor1d(ids, 'int32');
      const x = tf.gather(images, idsT); // [b, 32, 32, 3]
      const v1 = augment(x);
      const v2 = augment(x);
      // Keys: shuffled across the BatchNorm chunks, encoded, restored to the queries' order.
      const perm = Int32Array.from(tf.util.createShuffledIndices(BATCH));
      const unperm = new Int32Array(BATCH);
      perm.forEach((p, i) => { unperm[p] = i; });
      const k = tf.gather(encode(key, tf.gather(v2, tf.tensor1d(perm, 'int32'))), tf.tensor1d(unperm, 'int32')); // [b, f]
      const self = tf.equal(tf.expandDims(idsT, 1), tf.expandDims(queueIds, 0)); // [b, r]
      const { value, grads } = tf.variableGrads(() => {
        const q = encode(query, v1); // [b, f]
        const pos = tf.sum(tf.mul(q, k), 1, true); // [b, 1]
        const neg = tf.where(self, tf.fill(self.shape, -1e9), tf.matMul(q, queue, false, true)); // [b, r]
        const logits = tf.div(tf.concat([pos, neg], 1), TAU); // [b, 1 + r]
        return tf.neg(tf.mean(tf.slice(tf.logSoftmax(logits), [0, 0], [-1, 1]))); // positives are column 0
      }, qVars);
      qVars.forEach((v, i) => {
        const g = tf.add(grads[v.name], tf.mul(v, WEIGHT_DECAY));
        velocity[i].assign(tf.add(tf.mul(velocity[i], MOMENTUM), g));
        v.assign(tf.sub(v, tf.mul(velocity[i], LR)));
      });
      kVars.forEach((v, i) => v.assign(tf.add(tf.mul(v, EMA), tf.mul(qVars[i], 1 - EMA))));
      const end = Math.min(ptr + BATCH, QUEUE);
      const kept = k.slice([0, 0], [end - ptr, FEATURES]);
      queue.assign(tf.concat([queue.slice([0, 0], [ptr, FEATURES]), kept, queue.slice([end, 0], [QUEUE - end, FEATURES])], 0));
      queueIds.assign(tf.concat([queueIds.slice(0, ptr), idsT.slice(0, end - ptr), queueIds.slice(end, QUEUE - end)], 0));
      ptr = end % QUEUE;
      return value;
    });
    const l = (await loss.data())[0]; // the page also reads the loss every step
    loss.dispose();
    if (!Number.isFinite(l)) throw new Error(`loss ${l}`);
    return l;
  };

  const t0 = performance.now();
  await step();
  if (params.get('profile')) {
    const prof = await tf.profile(() => step());
    const by = {};
    for (const k of prof.kernels) by[k.name] = (by[k.name] || 0) + k.kernelTimeMs;
    report({ profile: Object.entries(by).sort((a, b) => b[1] - a[1]).slice(0, 12) });
    return;
  }
  const firstStep = (performance.now() - t0) / 1000;
  let steps = 0;
  let lossValue = 0;
  const counts0 = { ...self.__gpuCounts }; // WebGPU calls, when the benchmark counts them
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000 || steps < 2) {
    lossValue = await step();
    steps += 1;
  }
  const secs = (performance.now() - start) / 1000;
  report({
    backend: tf.getBackend(), threads: BACKEND === 'wasm' ? tf.wasm.getThreadsCount() : 0,
    imagesPerS: (steps * BATCH) / secs, steps, seconds: secs, firstStep, loss: lossValue,
    tensors: tf.memory().numTensors, gradientCheck,
    perStep: self.__gpuCounts ? Object.fromEntries(Object.entries(self.__gpuCounts).map(([k, v]) => [k, (v - counts0[k]) / steps])) : null,
  });
}

main().catch((e) => report({ error: String(e && e.stack || e) }));
