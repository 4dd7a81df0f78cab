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
//! (Over 500 lines: one wire format per message, each with the checks that refuse a message
//! that does not add up, beside the helper's side that reads it; the embedding pass is in
//! `parallel/embed.rs`.)

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

mod embed;
pub use embed::{
    AfterChunk, EMBED_CHUNK, EmbedHeader, EmbedJob, EmbedResult, EmbeddedHeader, embed_images,
    run_embed,
};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::EngineError;
use super::config::ProtoMode;
use super::loss::{info_nce, proto_full, proto_sampled_rows};
use super::model::{BatchStats, Encoder, EncoderConfig};
use super::params::{flat_grads, flat_params, load_params, read_all};

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

/// One prototype level of a part, on the device.
pub struct PartLevel {
    pub centroids: Tensor<2>, // [K, d]
    pub phi: Tensor<1>,       // [K]
    /// The whole batch's clusters, [b].
    pub assign: Tensor<1, Int>,
    /// Sampled mode's negative prototypes [r'], shared by the batch.
    pub neg: Option<Tensor<1, Int>>,
}

/// What a part's loss needs beyond the encoder, on the device.
pub struct PartInputs {
    pub views: Tensor<4>,                // [n, 3, s, s]
    pub keys: Tensor<2>,                 // [n, d]
    pub queue: Tensor<2>,                // [r, d]
    pub masked: Option<Tensor<2, Bool>>, // [n, r]
    pub levels: Vec<PartLevel>,
    pub chunks: usize,
    pub tau: f64,
    pub proto_weight: f64,
    pub mode: ProtoMode,
    /// This part's rows over the batch's: its share of every mean.
    pub share: f64,
    /// The part's first row in the batch.
    pub first: usize,
}

/// A part's loss: `total` tracked for the backward pass; `values` (total, InfoNCE, instance
/// accuracy, one prototype term per level) detached; both already scaled by the part's share.
pub struct PartLoss {
    pub total: Tensor<1>,
    pub values: Vec<Tensor<1>>,
    pub stats: BatchStats,
}

/// The loss of one part of a batch in training mode (the whole batch when `share` is 1).
pub fn part_loss(model: &Encoder, p: PartInputs) -> PartLoss {
    let n = p.views.dims()[0];
    let (q, stats) = model.forward_train(p.views.autodiff(), p.chunks); // q: [n, d], tracked
    let (info, logits) = info_nce(
        q.clone(),
        p.keys,
        p.queue,
        p.tau,
        p.masked.map(|m| m.autodiff()),
    );
    let protos: Vec<Tensor<1>> = p
        .levels
        .into_iter()
        .map(|l| {
            let (cent, phi) = (l.centroids.autodiff(), l.phi.autodiff());
            match p.mode {
                ProtoMode::Full => {
                    let assign = l.assign.narrow(0, p.first, n).autodiff(); // [n]
                    proto_full(q.clone(), cent, phi, assign)
                }
                ProtoMode::Sampled => {
                    let neg = l.neg.map(|t| t.autodiff());
                    proto_sampled_rows(q.clone(), cent, phi, l.assign.autodiff(), neg, p.first)
                }
            }
        })
        .collect();
    let mut total = info.clone();
    if !protos.is_empty() {
        let m = protos.len() as f64;
        let sum = protos
            .iter()
            .cloned()
            .reduce(|a, b| a + b)
            .expect("non-empty");
        total = total + sum.mul_scalar(p.proto_weight / m);
    }
    // instance accuracy: positive (column 0) scored highest
    let acc = logits
        .without_autodiff()
        .argmax(1)
        .equal_elem(0)
        .float()
        .mean(); // acc: [1]
    let mut values = vec![
        total.clone().without_autodiff(),
        info.without_autodiff(),
        acc,
    ];
    values.extend(protos.iter().map(|t| t.clone().without_autodiff()));
    if p.share != 1.0 {
        total = total.mul_scalar(p.share);
        values = values.into_iter().map(|v| v.mul_scalar(p.share)).collect();
    }
    PartLoss {
        total,
        values,
        stats,
    }
}

/// The small fields of a job; the floats travel beside it in one array (see [`SliceJob`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobHeader {
    pub encoder: EncoderConfig,
    /// Values of each parameter tensor, in visiting order.
    pub params: Vec<usize>,
    pub rows: usize,
    pub side: usize,
    pub dim: usize,
    pub queue_rows: usize,
    pub batch: usize,
    pub first: usize,
    pub chunks: usize,
    pub tau: f64,
    pub proto_weight: f64,
    pub mode: ProtoMode,
    /// (row of the part, queue row) pairs masked out of the negatives.
    pub masked: Vec<(u32, u32)>,
    pub levels: Vec<JobLevel>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobLevel {
    pub k: usize,
    pub assign: Vec<u32>,
    pub neg: Vec<u32>,
}

/// A part of a step for a helper: both encoders' parameters, the part's views, its chunks of
/// the shuffled batch for the key encoder (the same rows of the shuffled order), the queue and
/// the prototypes, as host values. `floats`: the query encoder's parameters in visiting order,
/// the key encoder's, views [rows, 3, side, side], key views [rows, 3, side, side], queue
/// [queue_rows, dim], then per level its centroids [k, dim] and concentrations [k].
#[derive(Clone, Debug, PartialEq)]
pub struct SliceJob {
    pub header: JobHeader,
    pub floats: Vec<f32>,
}

/// A helper's answer: its part's values (scaled like [`PartLoss::values`]), the gradient of
/// each parameter (0 values: none) and the part's batch statistics (channels per layer);
/// `floats`: the gradients in order, then each layer's mean and variance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResultHeader {
    pub values: Vec<f32>,
    pub grads: Vec<usize>,
    pub stats: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SliceResult {
    pub header: ResultHeader,
    pub floats: Vec<f32>,
}

fn bad(what: impl std::fmt::Display) -> EngineError {
    EngineError::Shape(format!("helper message: {what}"))
}

fn total(sizes: impl IntoIterator<Item = Option<usize>>) -> Result<usize, EngineError> {
    sizes
        .into_iter()
        .try_fold(0usize, |acc, s| s.and_then(|s| acc.checked_add(s)))
        .ok_or_else(|| bad("sizes overflow"))
}

impl SliceJob {
    /// The job's float sections in order: both encoders' parameters, views, key views, queue,
    /// then per level centroids and concentrations. Checks every size against the floats.
    fn sections(&self) -> Result<Vec<Range<usize>>, EngineError> {
        let h = &self.header;
        let mut sizes: Vec<Option<usize>> = h.params.iter().map(|&p| Some(p)).collect();
        sizes.extend(h.params.iter().map(|&p| Some(p)));
        let views = h
            .rows
            .checked_mul(3)
            .and_then(|v| v.checked_mul(h.side))
            .and_then(|v| v.checked_mul(h.side));
        sizes.push(views);
        sizes.push(views);
        sizes.push(h.queue_rows.checked_mul(h.dim));
        for l in &h.levels {
            sizes.push(l.k.checked_mul(h.dim));
            sizes.push(Some(l.k));
        }
        let want = total(sizes.iter().copied())?;
        if want != self.floats.len() {
            return Err(bad(format!(
                "the header needs {want} values, {} came",
                self.floats.len()
            )));
        }
        let mut start = 0;
        Ok(sizes
            .into_iter()
            .map(|s| {
                let end = start + s.unwrap_or(0);
                let r = start..end;
                start = end;
                r
            })
            .collect())
    }

    /// Checks what plain values can say before any tensor is made; returns the float
    /// sections (see `sections`).
    pub fn check(&self) -> Result<Vec<Range<usize>>, EngineError> {
        let h = &self.header;
        let sections = self.sections()?;
        if h.rows == 0 || h.dim == 0 || h.queue_rows == 0 || h.side == 0 {
            return Err(bad("an empty part, embedding, queue or image"));
        }
        if h.first.checked_add(h.rows).is_none_or(|end| end > h.batch) {
            return Err(bad(format!(
                "rows {}..{} of a batch of {}",
                h.first,
                h.first.saturating_add(h.rows),
                h.batch
            )));
        }
        if h.chunks == 0 || !h.rows.is_multiple_of(h.chunks) {
            return Err(bad(format!("{} rows in {} chunks", h.rows, h.chunks)));
        }
        if let Some(&(r, c)) = h
            .masked
            .iter()
            .find(|&&(r, c)| r as usize >= h.rows || c as usize >= h.queue_rows)
        {
            return Err(bad(format!(
                "masked ({r}, {c}) outside {} x {}",
                h.rows, h.queue_rows
            )));
        }
        for l in &h.levels {
            if l.assign.len() != h.batch {
                return Err(bad(format!(
                    "{} cluster ids for a batch of {}",
                    l.assign.len(),
                    h.batch
                )));
            }
            if l.assign.iter().chain(&l.neg).any(|&a| a as usize >= l.k) {
                return Err(bad(format!("a cluster id outside 0..{}", l.k)));
            }
        }
        Ok(sections)
    }

    /// The job as `(json header, floats)` for a message.
    pub fn to_parts(&self) -> (String, &[f32]) {
        let json = serde_json::to_string(&self.header).expect("plain values");
        (json, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header = serde_json::from_str(json).map_err(|e| bad(format!("header: {e}")))?;
        let job = Self { header, floats };
        job.check()?;
        Ok(job)
    }
}

impl SliceResult {
    pub fn to_parts(&self) -> (String, &[f32]) {
        let json = serde_json::to_string(&self.header).expect("plain values");
        (json, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header: ResultHeader =
            serde_json::from_str(json).map_err(|e| bad(format!("header: {e}")))?;
        let stats = header.stats.iter().map(|&c| c.checked_mul(2));
        let want = total(header.grads.iter().map(|&g| Some(g)).chain(stats))?;
        if want != floats.len() {
            return Err(bad(format!(
                "the answer needs {want} values, {} came",
                floats.len()
            )));
        }
        Ok(Self { header, floats })
    }

    /// Gradients (None: the parameter had none) and batch statistics, on `device`; checked
    /// against the parameters' sizes `params` and the trainer's layers `layers` (channels).
    #[allow(clippy::type_complexity)]
    pub fn tensors(
        &self,
        params: &[usize],
        layers: &[usize],
        device: &Device,
    ) -> Result<(Vec<Option<Tensor<1>>>, BatchStats), EngineError> {
        let h = &self.header;
        if h.grads.len() != params.len()
            || h.grads.iter().zip(params).any(|(&g, &p)| g != 0 && g != p)
        {
            return Err(bad(format!(
                "gradients for {} parameters of sizes {:?}, the model has {}",
                h.grads.len(),
                &h.grads[..h.grads.len().min(4)],
                params.len()
            )));
        }
        if h.stats != layers {
            return Err(bad(format!(
                "statistics of {} layers, the model has {}",
                h.stats.len(),
                layers.len()
            )));
        }
        let mut floats = Floats::new(&self.floats, device);
        let grads = h
            .grads
            .iter()
            .map(|&g| (g > 0).then(|| floats.take(g)))
            .collect();
        Ok((grads, floats.stats(&h.stats)))
    }
}

/// The encoders a helper keeps between jobs, so only their values are replaced.
#[derive(Default)]
pub struct HelperModels {
    query: Option<(EncoderConfig, Encoder)>,
    key: Option<(EncoderConfig, Encoder)>,
}

/// `slot`'s encoder of `config` on `device` (kept or made), with `values` loaded.
fn loaded(
    slot: &mut Option<(EncoderConfig, Encoder)>,
    config: &EncoderConfig,
    values: Vec<Vec<f32>>,
    device: &Device,
) -> Result<Encoder, EngineError> {
    let model = match slot.take() {
        Some((c, m)) if c == *config => m,
        _ => config.init_zeros(device),
    };
    let model = load_params(model, &values, device)?;
    *slot = Some((config.clone(), model.clone()));
    Ok(model)
}

/// A helper's keys: the key encoder's output for its chunks of the shuffled batch, in shuffled
/// order ([rows, dim]), then those chunks' batch statistics (channels per layer: mean, var).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeysHeader {
    pub rows: usize,
    pub dim: usize,
    pub stats: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeysResult {
    pub header: KeysHeader,
    pub floats: Vec<f32>,
}

impl KeysResult {
    pub fn to_parts(&self) -> (String, &[f32]) {
        let json = serde_json::to_string(&self.header).expect("plain values");
        (json, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header: KeysHeader =
            serde_json::from_str(json).map_err(|e| bad(format!("header: {e}")))?;
        let stats = header.stats.iter().map(|&c| c.checked_mul(2));
        let want = total(std::iter::once(header.rows.checked_mul(header.dim)).chain(stats))?;
        if want != floats.len() {
            return Err(bad(format!(
                "the keys need {want} values, {} came",
                floats.len()
            )));
        }
        Ok(Self { header, floats })
    }

    /// The keys [rows, dim] and statistics on `device`, checked against what the trainer
    /// expects (`rows`, `dim`, channels per layer `layers`).
    pub fn tensors(
        &self,
        rows: usize,
        dim: usize,
        layers: &[usize],
        device: &Device,
    ) -> Result<(Tensor<2>, BatchStats), EngineError> {
        let h = &self.header;
        if (h.rows, h.dim) != (rows, dim) || h.stats != layers {
            return Err(bad(format!(
                "keys [{}, {}] with {} layers of statistics, expected [{rows}, {dim}] with {}",
                h.rows,
                h.dim,
                h.stats.len(),
                layers.len()
            )));
        }
        let mut floats = Floats::new(&self.floats, device);
        let keys = floats.take(rows * dim).reshape([rows, dim]);
        Ok((keys, floats.stats(&h.stats)))
    }
}

/// A helper's first half of a job: the key encoder on its chunks of the shuffled batch.
pub async fn run_keys(
    job: &SliceJob,
    device: &Device,
    models: &mut HelperModels,
) -> Result<KeysResult, EngineError> {
    let s = job.check()?;
    let h = &job.header;
    let np = h.params.len();
    let values: Vec<Vec<f32>> = s[np..2 * np]
        .iter()
        .map(|r| job.floats[r.clone()].to_vec())
        .collect();
    let key = loaded(&mut models.key, &h.encoder, values, device)?;
    let views = job.floats[s[2 * np + 1].clone()].to_vec();
    let views = Tensor::from_data(TensorData::new(views, [h.rows, 3, h.side, h.side]), device);
    let (keys, stats) = key.forward_train(views, h.chunks); // keys: [rows, d]
    let mut reads = vec![keys.reshape([-1])];
    let channels = push_stats(stats, &mut reads);
    let floats = read_all(reads).await?.concat();
    Ok(KeysResult {
        header: KeysHeader {
            rows: h.rows,
            dim: h.dim,
            stats: channels,
        },
        floats,
    })
}

/// A helper's second half: the part's loss and gradients, given the keys of its query rows
/// ([rows, dim], batch order).
pub async fn run_part(
    job: &SliceJob,
    keys: Vec<f32>,
    device: &Device,
    models: &mut HelperModels,
) -> Result<SliceResult, EngineError> {
    let s = job.check()?;
    let h = &job.header;
    let (rows, d, r) = (h.rows, h.dim, h.queue_rows);
    if keys.len() != rows * d {
        return Err(bad(format!(
            "{} key values for {rows} rows of {d}",
            keys.len()
        )));
    }
    let np = h.params.len();
    let values: Vec<Vec<f32>> = s[..np]
        .iter()
        .map(|r| job.floats[r.clone()].to_vec())
        .collect();
    let model = loaded(
        &mut models.query,
        &h.encoder,
        values,
        &device.clone().autodiff(),
    )?;
    let floats = |i: usize| job.floats[s[i].clone()].to_vec();
    let views = Tensor::from_data(
        TensorData::new(floats(2 * np), [rows, 3, h.side, h.side]),
        device,
    );
    let keys = Tensor::from_data(TensorData::new(keys, [rows, d]), device);
    let queue = Tensor::from_data(TensorData::new(floats(2 * np + 2), [r, d]), device);
    let masked = (!h.masked.is_empty()).then(|| {
        let mut m = vec![false; rows * r];
        for &(i, j) in &h.masked {
            m[i as usize * r + j as usize] = true;
        }
        Tensor::<2, Bool>::from_data(TensorData::new(m, [rows, r]), device)
    });
    let ints = |v: &[u32]| {
        let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        let n = v.len();
        Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device)
    };
    let levels = h
        .levels
        .iter()
        .enumerate()
        .map(|(m, l)| PartLevel {
            centroids: Tensor::from_data(
                TensorData::new(floats(2 * np + 3 + 2 * m), [l.k, d]),
                device,
            ),
            phi: Tensor::from_data(TensorData::new(floats(2 * np + 4 + 2 * m), [l.k]), device),
            assign: ints(&l.assign),
            neg: (!l.neg.is_empty()).then(|| ints(&l.neg)),
        })
        .collect();
    let part = part_loss(
        &model,
        PartInputs {
            views,
            keys,
            queue,
            masked,
            levels,
            chunks: h.chunks,
            tau: h.tau,
            proto_weight: h.proto_weight,
            mode: h.mode,
            share: h.rows as f64 / h.batch as f64,
            first: h.first,
        },
    );
    let grads = flat_grads(&model, &part.total.backward());
    let nv = part.values.len();
    let mut reads = part.values;
    let mut sizes = Vec::new();
    for g in grads.iter() {
        sizes.push(g.as_ref().map_or(0, |g| g.dims()[0]));
        reads.extend(g.clone());
    }
    let channels = push_stats(part.stats, &mut reads);
    let host = read_all(reads).await?;
    let values = host[..nv].iter().map(|v| v[0]).collect();
    Ok(SliceResult {
        header: ResultHeader {
            values,
            grads: sizes,
            stats: channels,
        },
        floats: host[nv..].concat(),
    })
}

/// Batch statistics appended to `reads` as each layer's mean then variance, the order
/// [`Floats::stats`] reads them back in; returns the channels per layer.
fn push_stats(stats: BatchStats, reads: &mut Vec<Tensor<1>>) -> Vec<usize> {
    stats
        .into_iter()
        .map(|(m, v)| {
            let c = m.dims()[0];
            reads.push(m);
            reads.push(v);
            c
        })
        .collect()
}

/// Reads an answer's floats in order, as device tensors.
struct Floats<'a> {
    floats: &'a [f32],
    at: usize,
    device: &'a Device,
}

impl<'a> Floats<'a> {
    fn new(floats: &'a [f32], device: &'a Device) -> Self {
        Self {
            floats,
            at: 0,
            device,
        }
    }

    /// The next `n` values as a tensor [n] (sizes were checked against the floats).
    fn take(&mut self, n: usize) -> Tensor<1> {
        let v = self.floats[self.at..self.at + n].to_vec();
        self.at += n;
        Tensor::from_data(TensorData::new(v, [n]), self.device)
    }

    /// A mean and a variance per layer of `channels`.
    fn stats(&mut self, channels: &[usize]) -> BatchStats {
        channels
            .iter()
            .map(|&c| (self.take(c), self.take(c)))
            .collect()
    }
}

/// The sizes of a module's parameters in visiting order (checks a helper's gradients).
pub fn param_sizes(model: &Encoder) -> Vec<usize> {
    flat_params(model).iter().map(|p| p.dims()[0]).collect()
}
