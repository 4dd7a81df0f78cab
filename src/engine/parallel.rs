//! Data-parallel training steps for a back end that uses one core: the browser's CPU fallback,
//! where each Web Worker is its own wasm instance with no memory shared. The batch is cut into
//! parts of whole BatchNorm chunks, for the key encoder's pass (chunks of the shuffled batch) and
//! for the queries alike. A helper gets its part as plain values ([`SliceJob`]), runs the key
//! encoder on its chunks of the shuffled batch and sends those keys ([`KeysResult`]); once the
//! trainer has every key it sends each helper the keys of its query rows, and the helper answers
//! with its part's loss terms and gradients ([`SliceResult`]), which the trainer adds to its own
//! part's. Every loss term is a mean of per-row terms and each chunk's statistics stay inside one
//! part, so the sum is the whole batch's gradient up to the order of float additions
//! (tests/engine/parallel.rs: a step with helpers against the same step alone).
//!
//! This file is the trainer's side ([`gradients`]: split, send, sum); the messages are in
//! `parallel/wire.rs`, the helper's side in `parallel/helper.rs`, the embedding pass in
//! `parallel/embed.rs`.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;

use burn::prelude::*;

mod embed;
mod helper;
mod wire;
pub use embed::{
    AfterChunk, EMBED_CHUNK, EmbedHeader, EmbedJob, EmbedResult, EmbeddedHeader, embed_images,
    run_embed,
};
pub use helper::{HelperModels, PreparedPart, finish_part, prepare_part, run_keys, run_part};
pub use wire::{
    JobHeader, JobLevel, KeysHeader, KeysResult, ResultHeader, SliceJob, SliceResult, param_sizes,
};

use super::augment::{BatchWide, ViewParams, host_view, pair_views};
use super::config::PclConfig;
use super::error::EngineError;
use super::kmeans::Level;
use super::loss::{LossInputs, ProtoLevel, Queries, pcl_loss, pcl_loss_of, queries};
use super::model::{BatchStats, Encoder, mean_stats, on_cpu, shuffled, unshuffled};
use super::params::{flat_grads, flat_params, read_all};

/// A helper's answer, when it comes.
pub type Reply = Pin<Box<dyn Future<Output = Result<SliceResult, String>>>>;
/// A helper's keys, when they come.
pub type KeysReply = Pin<Box<dyn Future<Output = Result<KeysResult, String>>>>;
/// A helper's embeddings, when they come.
pub type EmbedReply = Pin<Box<dyn Future<Output = Result<EmbedResult, String>>>>;

/// A job handed to a helper: its keys come first, its result after [`Helpers::send_keys`].
pub struct Submitted {
    pub keys: KeysReply,
    pub result: Reply,
}

/// Other workers that compute parts of a step (the browser's helper workers).
pub trait Helpers {
    /// How many can take a job now.
    fn ready(&self) -> usize;
    /// Sends `job` to helper `index` (below `ready()`).
    fn submit(&self, index: usize, job: SliceJob) -> Submitted;
    /// Sends helper `index` the keys of its query rows ([rows, dim], batch order).
    fn send_keys(&self, index: usize, keys: Vec<f32>);
    /// Sends helper `index` (below `ready()`) images to embed; helpers that cannot, answer
    /// with an error and the trainer embeds their images itself.
    fn embed(&self, _index: usize, _job: EmbedJob) -> EmbedReply {
        Box::pin(async { Err("this helper does not embed".to_string()) })
    }
}

/// The batch rows `0..b` cut into `parts` ranges of whole chunks (of `b / chunks` rows, as the
/// encoder's `forward_train` cuts them). The first part, the trainer's own, gets no more than
/// any other: the trainer also runs the key encoder.
pub fn split_rows(b: usize, chunks: usize, parts: usize) -> Vec<Range<usize>> {
    let chunks = super::model::chunks_for(b, chunks);
    let rows = b / chunks.max(1);
    let parts = parts.clamp(1, chunks.max(1));
    let (base, extra) = (chunks / parts, chunks % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        // The remainder goes to the helpers (parts 1..), never to the trainer's part 0.
        let n = base + usize::from(p >= 1 && p <= extra);
        let end = if p + 1 == parts { b } else { start + n * rows };
        out.push(start..end);
        start = end;
    }
    out
}

/// BatchNorm chunks in a part of `rows` rows of a batch of `b` cut into `chunks` (whole chunks,
/// as [`split_rows`] cuts them).
pub fn chunks_in(b: usize, chunks: usize, rows: usize) -> usize {
    super::model::chunks_for(b, chunks) * rows / b.max(1)
}

/// A step's two views (the queries', the keys'), made where they are needed. On the CPU they
/// are made on the host from the stored pixels, each worker its own rows: a helper makes its
/// part's from the pixels in its job while the trainer makes its own, instead of waiting for
/// the trainer to make the whole batch's. On a GPU, tensors of the whole batch.
// One per step, made once and never moved in a loop: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Views<'a> {
    /// The queries' and the keys' [b, 3, s, s], batch order.
    Tensors([Tensor<4>; 2]),
    Host(HostViews<'a>),
}

/// What a batch's views are made from on the host: the stored images (RGB, `side` px), the
/// queries' and the keys' parameters, the views' side.
pub struct HostViews<'a> {
    pub pixels: Vec<&'a [u8]>,
    pub side: usize,
    pub params: [ViewParams; 2],
    pub size: usize,
    device: Device,
}

impl HostViews<'_> {
    /// View `which` (0 queries, 1 keys) of the batch rows `rows`: [rows, 3, s, s].
    fn make(&self, which: usize, rows: Vec<usize>) -> Tensor<4> {
        let p = &self.params[which];
        let images: Vec<&[u8]> = rows.iter().map(|&i| self.pixels[i]).collect();
        let selected = p.select(rows.iter().copied());
        let v = host_view(&images, self.side, &selected, self.size, p.batch_wide());
        let s = self.size;
        Tensor::from_data(TensorData::new(v, [rows.len(), 3, s, s]), &self.device)
    }
}

impl<'a> Views<'a> {
    /// The views of the stored images `pixels` (RGB, `side` px) drawn with `params` (queries',
    /// keys'), `size` px, on `device`.
    pub fn new(
        pixels: Vec<&'a [u8]>,
        side: usize,
        params: [ViewParams; 2],
        size: usize,
        device: &Device,
    ) -> Self {
        if on_cpu(device) {
            return Views::Host(HostViews {
                pixels,
                side,
                params,
                size,
                device: device.clone(),
            });
        }
        Views::Tensors(pair_views(&pixels, side, &params, size, device))
    }

    /// The queries' views of the batch rows `rows`: [rows, 3, s, s].
    pub fn query(&self, rows: Range<usize>) -> Tensor<4> {
        match self {
            Views::Tensors(v) => v[0].clone().narrow(0, rows.start, rows.len()),
            Views::Host(h) => h.make(0, rows.collect()),
        }
    }

    /// The keys' views of the whole batch, batch order: [b, 3, s, s].
    pub fn keys(&self, b: usize) -> Tensor<4> {
        match self {
            Views::Tensors(v) => v[1].clone(),
            Views::Host(h) => h.make(1, (0..b).collect()),
        }
    }

    /// The keys' views at the places `at` of the shuffled batch (image `perm[j]` at j).
    pub fn keys_shuffled(&self, perm: &[usize], at: Range<usize>) -> Tensor<4> {
        match self {
            Views::Tensors(v) => {
                shuffled(v[1].clone(), perm).narrow(0, at.start, at.len()) // [rows, 3, s, s]
            }
            Views::Host(h) => h.make(1, perm[at].to_vec()),
        }
    }
}

/// A training batch as the loss needs it, on the device.
pub struct Batch<'a> {
    pub views: Views<'a>,
    pub perm: Vec<usize>, // [b]: the key batch's shuffle across BatchNorm chunks
    pub masked: Option<Tensor<2, Bool>>, // [b, r]: queue rows that are no negative of a row
    /// Per prototype level in use: the batch's clusters [b] and (sampled mode) the negative
    /// prototypes shared by the batch.
    pub levels: Vec<(Vec<u32>, Vec<u32>)>,
}

/// What a step reads of the trainer's state.
pub struct StepModels<'a> {
    /// The query encoder (autodiff).
    pub query: &'a Encoder,
    pub key: &'a Encoder,
    pub queue: &'a Tensor<2>, // [r, d]
    /// Per level of the latest clustering: its host values, centroids [K, d], phi [K].
    pub prototypes: Vec<(&'a Level, &'a Tensor<2>, &'a Tensor<1>)>,
    pub config: &'a PclConfig,
}

/// A step's keys and the gradient of its loss.
pub struct Gradients {
    pub keys: Tensor<2>, // [b, d], batch order, no gradient
    pub key_stats: BatchStats,
    /// Total, InfoNCE, instance accuracy, then ProtoNCE per level.
    pub values: Vec<f32>,
    /// Per parameter of the query encoder, in visiting order (None: no gradient).
    pub grads: Vec<Option<Tensor<1>>>,
    pub query_stats: BatchStats,
    /// Why a helper failed, if one did: its part was done here, and none should be asked again.
    pub helper_failure: Option<String>,
}

/// The keys k = f_k(key views) and the gradient of the loss of q = f_q(views): on the
/// trainer alone, or (on a CPU back end with helpers ready) in parts of whole BatchNorm chunks,
/// one per worker, summed here.
pub async fn gradients(
    m: &StepModels<'_>,
    batch: &Batch<'_>,
    helpers: Option<&Rc<dyn Helpers>>,
) -> Result<Gradients, EngineError> {
    let b = batch.perm.len();
    let chunks = m.config.bn_chunks;
    let helpers = helpers.filter(|h| h.ready() > 0 && m.query.runs_on_cpu());
    let parts = match helpers {
        Some(h) => split_rows(b, chunks, 1 + h.ready()),
        None => std::iter::once(0..b).collect(),
    };
    let mut helper_failure = None;
    let shared = match helpers {
        Some(h) if parts.len() > 1 => match shared_keys(m, h, &parts, batch).await? {
            Ok(shared) => Some(shared),
            Err(e) => {
                helper_failure = Some(e);
                None
            }
        },
        _ => None,
    };
    let (keys, key_stats, pending, made) = match shared {
        Some((k, stats, pending, own)) => (k, stats, pending, Some(own)),
        None => {
            // No helpers, or one failed in the key pass: the whole step runs here.
            let (k, stats) = m
                .key
                .forward_shuffled(batch.views.keys(b), chunks, &batch.perm); // k: [b, d], no gradient
            (k, stats, Vec::new(), None)
        }
    };
    let parts = if pending.is_empty() {
        std::iter::once(0..b).collect()
    } else {
        parts
    };
    let own_queries = made.unwrap_or_else(|| {
        let own = parts[0].clone();
        queries(
            m.query,
            batch.views.query(own.clone()),
            chunks_in(b, chunks, own.len()),
        )
    });
    let device = keys.device();
    let inputs = |rows: Range<usize>| -> LossInputs {
        let n = rows.len();
        LossInputs {
            keys: keys.clone().narrow(0, rows.start, n),
            queue: m.queue.clone(),
            masked: batch.masked.clone().map(|x| x.narrow(0, rows.start, n)),
            levels: batch
                .levels
                .iter()
                .zip(&m.prototypes)
                .map(|((pos, neg), (_, centroids, phi))| ProtoLevel {
                    centroids: (*centroids).clone(),
                    phi: (*phi).clone(),
                    assign: ints(pos, &device),
                    neg: (!neg.is_empty()).then(|| ints(neg, &device)),
                })
                .collect(),
            chunks: chunks_in(b, chunks, n),
            tau: m.config.tau,
            proto_weight: m.config.proto_weight,
            mode: m.config.proto_mode,
            share: n as f64 / b as f64,
            first: rows.start,
        }
    };
    let own = pcl_loss_of(own_queries, inputs(parts[0].clone()));
    let mut values: Vec<f32> = read_all(own.values).await?.into_iter().flatten().collect();
    let mut grads = flat_grads(m.query, &own.total.backward());
    let mut stats = vec![(parts[0].len(), own.stats)];
    let (sizes, layers) = if pending.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let layers = stats[0].1.iter().map(|(mean, _)| mean.dims()[0]).collect();
        (param_sizes(m.query), layers)
    };
    for (reply, rows) in pending.into_iter().zip(&parts[1..]) {
        let answer = reply.await.map_err(EngineError::Device).and_then(|r| {
            let (g, st) = r.tensors(&sizes, &layers, &device)?;
            Ok((r.header.values, g, st))
        });
        let (v, g, st) = match answer {
            Ok(a) => a,
            Err(e) => {
                // A helper that failed is not asked again; its part is done here.
                helper_failure = Some(e.to_string());
                let part = pcl_loss(
                    m.query,
                    batch.views.query(rows.clone()),
                    inputs(rows.clone()),
                );
                let v = read_all(part.values).await?.into_iter().flatten().collect();
                (v, flat_grads(m.query, &part.total.backward()), part.stats)
            }
        };
        if v.len() != values.len() {
            return Err(EngineError::Shape(format!(
                "a part of the step gave {} loss values, another {}",
                v.len(),
                values.len()
            )));
        }
        values.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
        for (a, b) in grads.iter_mut().zip(g) {
            *a = match (a.take(), b) {
                (Some(x), Some(y)) => Some(x + y),
                (x, y) => x.or(y),
            };
        }
        stats.push((rows.len(), st));
    }
    Ok(Gradients {
        keys,
        key_stats,
        values,
        grads,
        query_stats: mean_stats(stats),
        helper_failure,
    })
}

/// Indices as a device tensor.
fn ints(values: &[u32], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i32> = values.iter().map(|&x| x as i32).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

/// Keys, their statistics, the helpers' pending answers and the trainer's own queries.
type SharedKeys = (Tensor<2>, BatchStats, Vec<Reply>, Queries);

/// The key pass with the helpers: each gets its job (the batch rows `parts[i + 1]` for its
/// queries, the same rows of the shuffled batch for the key encoder) and sends its keys; the
/// trainer runs the key encoder on its own rows, then its own queries while the helpers' keys
/// are on their way, puts the keys in batch order and sends each helper those of its query
/// rows. `Err(why)` when a helper failed.
async fn shared_keys(
    m: &StepModels<'_>,
    helpers: &Rc<dyn Helpers>,
    parts: &[Range<usize>],
    batch: &Batch<'_>,
) -> Result<Result<SharedKeys, String>, EngineError> {
    let b = batch.perm.len();
    let d = m.config.feature_dim;
    let device = m.queue.device();
    let jobs = jobs(m, batch, &parts[1..]).await?;
    let submitted: Vec<_> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| helpers.submit(i, job))
        .collect();
    let own = parts[0].clone();
    let chunks = chunks_in(b, m.config.bn_chunks, own.len());
    let (k_own, s_own) = m
        .key
        .forward_train(batch.views.keys_shuffled(&batch.perm, own.clone()), chunks); // [rows, d]
    let layers: Vec<usize> = s_own.iter().map(|(mean, _)| mean.dims()[0]).collect();
    let own_queries = queries(m.query, batch.views.query(own.clone()), chunks);
    let (mut keys, mut stats) = (vec![k_own], vec![(own.len(), s_own)]);
    let mut results = Vec::new();
    for (job, rows) in submitted.into_iter().zip(&parts[1..]) {
        let got = job
            .keys
            .await
            .map_err(EngineError::Device)
            .and_then(|r| r.tensors(rows.len(), d, &layers, &device));
        match got {
            Ok((k, st)) => {
                keys.push(k);
                stats.push((rows.len(), st));
                results.push(job.result);
            }
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    let k = unshuffled(Tensor::cat(keys, 0), &batch.perm); // [b, d], batch order
    let host = read_all(vec![k.clone().reshape([-1])]).await?.remove(0);
    for (i, rows) in parts[1..].iter().enumerate() {
        helpers.send_keys(i, host[rows.start * d..rows.end * d].to_vec());
    }
    Ok(Ok((k, mean_stats(stats), results, own_queries)))
}

/// Host copies of what the helpers need for the batch rows `parts`: each gets the stored pixels
/// and view parameters of its rows (and of its places in the shuffled key batch) and makes its
/// views itself.
async fn jobs(
    m: &StepModels<'_>,
    batch: &Batch<'_>,
    parts: &[Range<usize>],
) -> Result<Vec<SliceJob>, EngineError> {
    let Views::Host(HostViews {
        pixels,
        side: stored,
        params: view_params,
        size,
        ..
    }) = &batch.views
    else {
        return Err(EngineError::Device(
            "helpers share only steps whose batch is on the CPU".into(),
        ));
    };
    let b = batch.perm.len();
    let [r, d] = m.queue.dims();
    let params = flat_params(m.query);
    let np = params.len();
    let mut reads = params;
    reads.extend(flat_params(m.key));
    reads.push(m.queue.clone().reshape([-1]));
    if let Some(x) = &batch.masked {
        reads.push(x.clone().int().float().reshape([-1]));
    }
    let host = read_all(reads).await?;
    let queue = &host[2 * np];
    let mask = host.get(2 * np + 1);
    let wide: [BatchWide; 2] = view_params.each_ref().map(ViewParams::batch_wide);
    Ok(parts
        .iter()
        .map(|rows| {
            let mut floats: Vec<f32> = host[..2 * np].concat();
            let key_rows: Vec<usize> = batch.perm[rows.clone()].to_vec();
            for images in [rows.clone().collect::<Vec<_>>(), key_rows.clone()] {
                for &i in &images {
                    floats.extend(pixels[i].iter().map(|&v| v as f32));
                }
            }
            floats.extend(view_params[0].select(rows.clone()).to_floats());
            floats.extend(view_params[1].select(key_rows).to_floats());
            floats.extend_from_slice(queue);
            let mut job_levels = Vec::new();
            for ((pos, neg), (level, _, _)) in batch.levels.iter().zip(&m.prototypes) {
                floats.extend_from_slice(&level.centroids);
                floats.extend_from_slice(&level.phi);
                job_levels.push(JobLevel {
                    k: level.k,
                    assign: pos.clone(),
                    neg: neg.clone(),
                });
            }
            let masked = mask.map_or(Vec::new(), |x| {
                (rows.start..rows.end)
                    .flat_map(|i| (0..r).map(move |j| (i, j)))
                    .filter(|&(i, j)| x[i * r + j] != 0.0)
                    .map(|(i, j)| ((i - rows.start) as u32, j as u32))
                    .collect()
            });
            SliceJob {
                header: JobHeader {
                    encoder: m.config.encoder(),
                    params: host[..np].iter().map(Vec::len).collect(),
                    rows: rows.len(),
                    stored: *stored,
                    side: *size,
                    wide,
                    dim: d,
                    queue_rows: r,
                    batch: b,
                    first: rows.start,
                    chunks: chunks_in(b, m.config.bn_chunks, rows.len()),
                    tau: m.config.tau,
                    proto_weight: m.config.proto_weight,
                    mode: m.config.proto_mode,
                    masked,
                    levels: job_levels,
                },
                floats,
            }
        })
        .collect())
}
