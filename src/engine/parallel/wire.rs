//! The messages of a step shared with helpers, as plain values: a job ([`SliceJob`]), a helper's
//! keys ([`KeysResult`]) and its part's loss and gradients ([`SliceResult`]). Each travels as a
//! JSON header and one array of floats beside it; every size in a header is checked against
//! the floats (and against what the trainer expects) before a tensor is made of them.

use std::ops::Range;

use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::augment::{BatchWide, ViewParams, host_view};
use crate::engine::config::ProtoMode;
use crate::engine::error::EngineError;
use crate::engine::model::{BatchStats, Encoder, EncoderConfig};
use crate::engine::params::flat_params;

/// A message's `(json header, floats)`.
pub(crate) fn to_parts<'a, H: Serialize>(header: &H, floats: &'a [f32]) -> (String, &'a [f32]) {
    let json = serde_json::to_string(header).expect("plain values");
    (json, floats)
}

/// A message's header read from its JSON.
pub(crate) fn header<H: DeserializeOwned>(json: &str) -> Result<H, EngineError> {
    serde_json::from_str(json).map_err(|e| bad(format!("header: {e}")))
}

/// The small fields of a job; the floats travel beside it in one array (see [`SliceJob`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobHeader {
    pub encoder: EncoderConfig,
    /// Values of each parameter tensor, in visiting order.
    pub params: Vec<usize>,
    pub rows: usize,
    /// The stored images' side and the views' (px).
    pub stored: usize,
    pub side: usize,
    /// The queries' and the keys' whole-batch choices (see [`BatchWide`]).
    pub wide: [BatchWide; 2],
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

/// A part of a step for a helper: both encoders' parameters, the stored pixels and view
/// parameters of the part's rows and of its chunks of the shuffled batch for the key encoder
/// (the same rows of the shuffled order), from which it makes the views itself, the queue and
/// the prototypes, as host values. `floats`: the query encoder's parameters in visiting order,
/// the key encoder's, pixels [rows, stored, stored, 3] (values 0-255), key pixels (the same),
/// view parameters [rows, ViewParams::FLOATS], key view parameters (the same), queue
/// [queue_rows, dim], then per level its centroids [k, dim] and concentrations [k].
#[derive(Clone, Debug, PartialEq)]
pub struct SliceJob {
    pub header: JobHeader,
    pub floats: Vec<f32>,
}

/// A helper's answer: its part's values (scaled like [`crate::engine::loss::PclLoss::values`]), the gradient of
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

/// The largest view a job may ask a helper to make (the settings allow up to 96 px).
const MAX_VIEW_SIDE: usize = 512;

pub(crate) fn bad(what: impl std::fmt::Display) -> EngineError {
    EngineError::Shape(format!("helper message: {what}"))
}

pub(crate) fn total(sizes: impl IntoIterator<Item = Option<usize>>) -> Result<usize, EngineError> {
    sizes
        .into_iter()
        .try_fold(0usize, |acc, s| s.and_then(|s| acc.checked_add(s)))
        .ok_or_else(|| bad("sizes overflow"))
}

impl SliceJob {
    /// The job's float sections in order: both encoders' parameters, pixels, key pixels, view
    /// parameters, key view parameters, queue, then per level centroids and concentrations.
    /// Checks every size against the floats.
    fn sections(&self) -> Result<Vec<Range<usize>>, EngineError> {
        let h = &self.header;
        let mut sizes: Vec<Option<usize>> = h.params.iter().map(|&p| Some(p)).collect();
        sizes.extend(h.params.iter().map(|&p| Some(p)));
        let pixels = h
            .rows
            .checked_mul(3)
            .and_then(|v| v.checked_mul(h.stored))
            .and_then(|v| v.checked_mul(h.stored));
        sizes.push(pixels);
        sizes.push(pixels);
        let view_params = h.rows.checked_mul(ViewParams::FLOATS);
        sizes.push(view_params);
        sizes.push(view_params);
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
        if h.rows == 0 || h.dim == 0 || h.queue_rows == 0 || h.side == 0 || h.stored == 0 {
            return Err(bad("an empty part, embedding, queue or image"));
        }
        // The views are made here: their side is bounded as the settings bound it.
        if h.side > MAX_VIEW_SIDE {
            return Err(bad(format!("views of {} px", h.side)));
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

    /// The views `which` (0 the queries', 1 the keys') of the job's rows, made from its pixels
    /// and view parameters: [rows, 3, side, side] on `device`. `sections` from [`Self::check`].
    pub(crate) fn views(
        &self,
        sections: &[Range<usize>],
        which: usize,
        device: &Device,
    ) -> Tensor<4> {
        let h = &self.header;
        let np = h.params.len();
        let pixels: Vec<u8> = self.floats[sections[2 * np + which].clone()]
            .iter()
            .map(|&v| v as u8) // saturating; NaN gives 0
            .collect();
        let images: Vec<&[u8]> = pixels.chunks_exact(3 * h.stored * h.stored).collect();
        let params = ViewParams::from_floats(&self.floats[sections[2 * np + 2 + which].clone()]);
        let v = host_view(&images, h.stored, &params, h.side, h.wide[which]);
        Tensor::from_data(TensorData::new(v, [h.rows, 3, h.side, h.side]), device)
    }

    /// The job as `(json header, floats)` for a message.
    pub fn to_parts(&self) -> (String, &[f32]) {
        to_parts(&self.header, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header = header(json)?;
        let job = Self { header, floats };
        job.check()?;
        Ok(job)
    }
}

impl SliceResult {
    pub fn to_parts(&self) -> (String, &[f32]) {
        to_parts(&self.header, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header: ResultHeader = header(json)?;
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
        to_parts(&self.header, &self.floats)
    }

    pub fn from_parts(json: &str, floats: Vec<f32>) -> Result<Self, EngineError> {
        let header: KeysHeader = header(json)?;
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

/// Reads an answer's floats in order, as device tensors.
pub(crate) struct Floats<'a> {
    floats: &'a [f32],
    at: usize,
    device: &'a Device,
}

impl<'a> Floats<'a> {
    pub(crate) fn new(floats: &'a [f32], device: &'a Device) -> Self {
        Self {
            floats,
            at: 0,
            device,
        }
    }

    /// The next `n` values as a tensor [n] (sizes were checked against the floats).
    pub(crate) fn take(&mut self, n: usize) -> Tensor<1> {
        let v = self.floats[self.at..self.at + n].to_vec();
        self.at += n;
        Tensor::from_data(TensorData::new(v, [n]), self.device)
    }

    /// A mean and a variance per layer of `channels`.
    pub(crate) fn stats(&mut self, channels: &[usize]) -> BatchStats {
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
