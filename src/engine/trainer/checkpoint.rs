//! Checkpoints: the whole run as bytes (magic, a JSON header, then every tensor as f32) and
//! back. The bytes are untrusted on the way in: every length is checked against the bytes
//! present before anything is allocated, every count, index and pointer against the settings
//! and the images before the run continues (`check_state`).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::super::EngineError;
use super::super::bounded::{self, Bounded};
use super::super::config::PclConfig;
use super::super::data::Dataset;
use super::super::kmeans::Level;
use super::super::params::{flat_params, read_all};
use super::super::records::{HISTORY_STEPS, StepRecord};
use super::super::rng::Rng;
use super::{Clustering, Trainer};
use crate::intake::MAX_IMAGES;

impl Trainer {
    /// The whole run as bytes: header JSON, then every tensor as little-endian f32. All reads
    /// are asynchronous, so this works on WebGPU.
    pub async fn save(&self) -> Result<Vec<u8>, EngineError> {
        let model = flat_params(&self.model);
        let key = flat_params(&self.key);
        let velocity = self.sgd.velocity.clone();
        let counts = [model.len(), key.len(), velocity.len()];
        let [r, d] = self.queue.dims();
        let mut all = model;
        all.extend(key);
        all.extend(velocity);
        all.push(self.queue.clone().reshape([r * d]));
        let values = read_all(all).await?;
        // A checkpoint replaces the last good one (the CLI's `model`, the page's autosave), and
        // a file with a non-finite value could never be opened again: the update that broke the
        // state is undone instead, as for a non-finite loss.
        let finite = values.iter().flatten().all(|v| v.is_finite())
            && self.clustering.as_ref().is_none_or(|c| {
                c.levels
                    .iter()
                    .all(|l| l.centroids.iter().chain(&l.phi).all(|v| v.is_finite()))
            });
        if !finite {
            return Err(EngineError::NonFinite(format!(
                "the weights became non-finite at epoch {} step {}: the last update diverged \
                 and was undone; lower the learning rate",
                self.epoch, self.step
            )));
        }
        let header = CheckpointHeader {
            format: CHECKPOINT_FORMAT,
            config: self.config.clone(),
            epoch: self.epoch,
            step: self.step,
            order: self.order.clone(),
            rng: self.rng.clone(),
            queue_ptr: self.queue_ptr,
            queue_ids: self.queue_ids.clone(),
            seconds: self.seconds,
            warmup_share: Some(self.warmup_share),
            estep_done: self.estep_done,
            clustering: self
                .clustering
                .as_ref()
                .map(|c| (c.epoch, c.levels.clone())),
            history: self.history.clone(),
            tensor_counts: counts,
            tensor_lens: values.iter().map(Vec::len).collect(),
        };
        let json =
            serde_json::to_vec(&header).map_err(|e| EngineError::Checkpoint(e.to_string()))?;
        let mut out =
            Vec::with_capacity(16 + json.len() + values.iter().map(|v| v.len() * 4).sum::<usize>());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        for v in &values {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// The query encoder as burn record bytes (burn-pack, `Module::load_record` reads them).
    /// burn's recorder reads tensors synchronously, which WebGPU cannot; so the weights are read
    /// asynchronously first and recorded from a CPU copy.
    pub async fn save_model(&self) -> Result<Vec<u8>, EngineError> {
        let values = read_all(flat_params(&self.model.valid())).await?;
        let cpu = Device::flex();
        let copy = self.config.encoder().init(&cpu);
        let copy = super::super::params::load_params(copy, &values, &cpu)?;
        let bytes = copy
            .into_record()
            .into_bytes()
            .map_err(|e| EngineError::Checkpoint(e.to_string()))?;
        Ok(bytes.to_vec())
    }

    /// Continues a run saved by [`Trainer::save`] on `device`. The file is untrusted: every
    /// count, index and pointer is checked against the settings and the images before use.
    pub fn load(bytes: &[u8], data: &Dataset, device: &Device) -> Result<Self, EngineError> {
        // (read_checkpoint checks the settings first.)
        let (header, values) = read_checkpoint(bytes)?;
        let trained_on = header
            .clustering
            .as_ref()
            .and_then(|(_, l)| l.first().map(|l| l.assignments.len()))
            .unwrap_or(header.order.len());
        if trained_on != 0 && trained_on != data.len() {
            return Err(EngineError::Checkpoint(format!(
                "this run was trained on {trained_on} images but {} are loaded; load the same \
                 images first",
                data.len()
            )));
        }
        let mut t = Trainer::new(&header.config, data, device)?;
        let [nm, nk, nv] = header.tensor_counts;
        check_state(&header, &values, &t, data.len())?;
        let ad = device.clone().autodiff();
        t.model = super::super::params::load_params(t.model, &values[..nm], &ad)?;
        t.key = super::super::params::load_params(t.key, &values[nm..nm + nk], device)?;
        t.sgd.velocity = values[nm + nk..nm + nk + nv]
            .iter()
            .map(|v| Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device))
            .collect();
        let q = &values[nm + nk + nv];
        let d = t.config.feature_dim;
        if q.len() % d != 0 {
            return Err(EngineError::Checkpoint(format!(
                "queue has {} values, not a multiple of feature_dim {d}",
                q.len()
            )));
        }
        t.queue = Tensor::from_data(TensorData::new(q.clone(), [q.len() / d, d]), device);
        t.epoch = header.epoch;
        t.step = header.step;
        t.order = header.order;
        t.rng = header.rng;
        t.queue_ptr = header.queue_ptr;
        t.queue_ids = header.queue_ids;
        t.queue_ids.resize(q.len() / d, None);
        t.seconds_before = header.seconds;
        t.seconds = header.seconds;
        if let Some(share) = header.warmup_share {
            t.warmup_share = share;
        }
        t.estep_done = header.estep_done;
        t.clustering = header
            .clustering
            .map(|(epoch, levels)| Clustering::new(epoch, levels, d, device));
        t.history = header.history;
        Ok(t)
    }
}

/// The consistency of a checkpoint's state with its settings (already resolved into `fresh`, a
/// new trainer of the same settings) and with the `n` loaded images.
fn check_state(
    h: &CheckpointHeader,
    values: &[Vec<f32>],
    fresh: &Trainer,
    n: usize,
) -> Result<(), EngineError> {
    let bad = |why: String| Err(EngineError::Checkpoint(why));
    let c = &fresh.config;
    let [nm, nk, nv] = h.tensor_counts;
    if values.iter().flatten().any(|v| !v.is_finite()) {
        return bad("it holds values that are not finite (NaN or infinite)".into());
    }
    if nv != 0 && nv != nm {
        return bad(format!("{nv} velocities for {nm} parameters"));
    }
    let encoder_params = flat_params(&fresh.model).len();
    if nm != encoder_params || nk != encoder_params {
        return bad(format!(
            "{nm} query and {nk} key encoder tensors; the encoder of its settings has \
             {encoder_params}"
        ));
    }
    for i in fresh.model.running_var_positions() {
        for (which, v) in [("query", &values[i]), ("key", &values[nm + i])] {
            if v.iter().any(|&x| x <= 0.0) {
                return bad(format!(
                    "a running variance of the {which} encoder is not positive"
                ));
            }
        }
    }
    if nv == nm {
        for (i, (p, v)) in values[..nm]
            .iter()
            .zip(&values[nm + nk..nm + nk + nv])
            .enumerate()
        {
            if p.len() != v.len() {
                return bad(format!(
                    "velocity {i} has {} values, its parameter {}",
                    v.len(),
                    p.len()
                ));
            }
        }
    }
    let d = c.feature_dim;
    let rows = c.queue_size.expect("resolved");
    let q = values[nm + nk + nv].len();
    if q != rows * d {
        return bad(format!(
            "the queue has {q} values; {rows} rows of {d} expected"
        ));
    }
    if h.queue_ptr >= rows {
        return bad(format!(
            "queue pointer {} past the queue of {rows}",
            h.queue_ptr
        ));
    }
    if h.queue_ids.len() > rows || h.queue_ids.iter().flatten().any(|&i| i as usize >= n) {
        return bad("the queue's image ids do not fit the queue or the images".into());
    }
    let steps = fresh.steps_per_epoch(n);
    if h.step >= steps || h.epoch > c.epochs {
        return bad(format!(
            "epoch {} step {} is outside the run ({} epochs of {steps} steps)",
            h.epoch, h.step, c.epochs
        ));
    }
    if h.step > 0 && h.order.is_empty() {
        return bad("a run in the middle of an epoch without its image order".into());
    }
    if !h.order.is_empty() {
        let mut seen = vec![false; n];
        let permutation = h.order.len() == n
            && h.order
                .iter()
                .all(|&i| i < n && !std::mem::replace(&mut seen[i], true));
        if !permutation {
            return bad("the image order is not a permutation of the images".into());
        }
    }
    if h.estep_done.is_some_and(|e| e > h.epoch) {
        return bad("an E-step is recorded after the current epoch".into());
    }
    if let Some((epoch, levels)) = &h.clustering {
        if *epoch > h.epoch {
            return bad(format!(
                "its clustering is of epoch {epoch}, after the current epoch {}",
                h.epoch
            ));
        }
        if levels.len() != c.num_clusters.len() {
            return bad(format!(
                "{} clustering levels, the settings have {}",
                levels.len(),
                c.num_clusters.len()
            ));
        }
        for (m, (l, &want)) in levels.iter().zip(&c.num_clusters).enumerate() {
            if l.k != want {
                return bad(format!(
                    "clustering level {m} has K = {}, its settings {want}",
                    l.k
                ));
            }
            let mut counted = vec![0usize; l.k.min(n)];
            for &a in &l.assignments {
                if let Some(c) = counted.get_mut(a as usize) {
                    *c += 1;
                }
            }
            if l.sizes.len() == l.k && counted != l.sizes {
                return bad(format!(
                    "clustering level {m}: its cluster sizes are not those of its assignments"
                ));
            }
            if l.phi.iter().any(|&p| p <= 0.0) {
                return bad(format!("clustering level {m} has a concentration phi <= 0"));
            }
            let fits = l.k >= 1
                && l.k <= n
                && l.centroids.len() == l.k * d
                && l.phi.len() == l.k
                && l.sizes.len() == l.k
                && l.assignments.len() == n
                && l.assignments.iter().all(|&a| (a as usize) < l.k)
                && l.centroids.iter().chain(&l.phi).all(|v| v.is_finite());
            if !fits {
                return bad(format!(
                    "clustering level {m} does not fit its K, the feature size or the images"
                ));
            }
        }
    }
    Ok(())
}

const MAGIC: &[u8; 8] = b"PCLSTUD1";
/// Most seconds of training a session may record: 100 days, far past the longest budget.
const MAX_SECONDS: f64 = 100.0 * 86_400.0;
/// 2: BatchNorm running statistics among the parameters, the queue's image ids, `norm` in the
/// config. Format 1 (GroupNorm only) is read and converted (`from_format_1`).
const CHECKPOINT_FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub format: u32,
    pub config: PclConfig,
    pub epoch: usize,
    pub step: usize,
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_IMAGES>")]
    order: Vec<usize>,
    rng: Rng,
    queue_ptr: usize,
    #[serde(default, deserialize_with = "bounded::vec::<_, _, MAX_QUEUE>")]
    queue_ids: Vec<Option<u32>>,
    /// Seconds of training so far (as of the last budget check).
    #[serde(default)]
    seconds: f64,
    #[serde(default)]
    warmup_share: Option<f64>,
    estep_done: Option<usize>,
    #[serde(deserialize_with = "bounded_clustering")]
    pub clustering: Option<(usize, Vec<Level>)>,
    #[serde(deserialize_with = "bounded::vec::<_, _, HISTORY_STEPS>")]
    pub history: Vec<StepRecord>,
    tensor_counts: [usize; 3],
    #[serde(deserialize_with = "bounded::vec::<_, _, MAX_TENSORS>")]
    tensor_lens: Vec<usize>,
}

/// Most tensors a session holds: the encoder has a few dozen parameters, each in the query
/// encoder, the key encoder and the velocity, and the queue.
const MAX_TENSORS: usize = 1024;
/// The largest queue the settings allow.
const MAX_QUEUE: usize = 65_536;
/// The most clustering levels the settings allow.
const MAX_LEVELS: usize = 8;

fn bounded_clustering<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<(usize, Vec<Level>)>, D::Error> {
    let c = Option::<(usize, Bounded<Level, MAX_LEVELS>)>::deserialize(d)?;
    Ok(c.map(|(epoch, levels)| (epoch, levels.0)))
}

/// Parses a checkpoint into its header and tensors, checking every length.
pub fn read_checkpoint(bytes: &[u8]) -> Result<(CheckpointHeader, Vec<Vec<f32>>), EngineError> {
    let bad = |why: String| EngineError::Checkpoint(why);
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a pcl-studio checkpoint (wrong magic bytes)".into()));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let json = usize::try_from(len)
        .ok()
        .and_then(|len| bytes.get(16..16usize.checked_add(len)?))
        .ok_or_else(|| {
            bad(format!(
                "header of {len} bytes runs past the file's {}",
                bytes.len()
            ))
        })?;
    let mut header: CheckpointHeader =
        serde_json::from_slice(json).map_err(|e| bad(format!("header: {e}")))?;
    if header.format != CHECKPOINT_FORMAT && header.format != 1 {
        return Err(bad(format!(
            "checkpoint format {} (this build reads 1 and {CHECKPOINT_FORMAT}); it was saved by \
             a newer pcl-studio",
            header.format
        )));
    }
    // The settings first: later checks (and a front end's reading of the images) rely on them.
    header.config.check()?;
    if !(header.seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&header.seconds)) {
        return Err(bad(format!(
            "{} seconds of training; a run has 0 to {MAX_SECONDS}",
            header.seconds
        )));
    }
    if header
        .warmup_share
        .is_some_and(|w| !(w.is_finite() && (0.0..=1.0).contains(&w)))
    {
        return Err(bad(
            "the warm-up's share of the run is not between 0 and 1".into()
        ));
    }
    // Every count and length against the header and the bytes present, before anything is
    // allocated for them.
    let [nm, nk, nv] = header.tensor_counts;
    let named = nm
        .checked_add(nk)
        .and_then(|x| x.checked_add(nv))
        .and_then(|x| x.checked_add(1));
    if named != Some(header.tensor_lens.len()) {
        return Err(bad(format!(
            "it lists {} tensor lengths, its header names {nm} + {nk} + {nv} + 1 tensors",
            header.tensor_lens.len(),
        )));
    }
    let mut off = 16 + json.len();
    let data_bytes = header
        .tensor_lens
        .iter()
        .try_fold(0usize, |sum, &n| n.checked_mul(4)?.checked_add(sum));
    let present = bytes.len() - off;
    match data_bytes {
        Some(need) if need == present => {}
        Some(need) if need < present => {
            return Err(bad(format!(
                "{} trailing bytes after the tensors",
                present - need
            )));
        }
        need => {
            return Err(bad(format!(
                "tensor data truncated: its tensors need {} bytes, the file has {present} after \
                 the header",
                need.map_or("more than any file has".into(), |b| b.to_string()),
            )));
        }
    }
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(header.tensor_lens.len());
    for &n in &header.tensor_lens {
        let raw = &bytes[off..off + 4 * n];
        values.push(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        );
        off += 4 * n;
    }
    if header.format == 1 {
        values = from_format_1(&mut header, values)?;
    }
    Ok((header, values))
}

/// A format-1 checkpoint (GroupNorm, no running statistics) as format 2: the run continues with
/// GroupNorm, and every normalisation layer gets the unused running statistics (mean 0,
/// variance 1; velocity 0) after its gamma and beta. Per conv block the parameters were
/// [conv weight, gamma, beta], then the head's four.
fn from_format_1(
    header: &mut CheckpointHeader,
    values: Vec<Vec<f32>>,
) -> Result<Vec<Vec<f32>>, EngineError> {
    const BLOCKS: usize = 4;
    const OLD_BLOCK: usize = 3;
    const HEAD: usize = 4;
    let old_encoder = BLOCKS * OLD_BLOCK + HEAD;
    let [nm, nk, nv] = header.tensor_counts;
    let bad = |why: String| EngineError::Checkpoint(format!("format-1 session: {why}"));
    if nm != old_encoder || nk != old_encoder || (nv != 0 && nv != old_encoder) {
        return Err(bad(format!(
            "it names {nm} / {nk} / {nv} parameter tensors, the format-1 encoder had \
             {old_encoder}"
        )));
    }
    if values.len() != nm + nk + nv + 1 {
        return Err(bad(format!(
            "it holds {} tensors, its header names {}",
            values.len(),
            nm + nk + nv + 1
        )));
    }
    let widen = |part: &[Vec<f32>], velocity: bool| -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        for b in 0..BLOCKS {
            let block = &part[b * OLD_BLOCK..(b + 1) * OLD_BLOCK];
            out.extend(block.iter().cloned());
            let c = block[1].len(); // gamma
            out.push(vec![0.0; c]);
            out.push(vec![if velocity { 0.0 } else { 1.0 }; c]);
        }
        out.extend(part[BLOCKS * OLD_BLOCK..].iter().cloned());
        out
    };
    let mut out = widen(&values[..nm], false);
    out.extend(widen(&values[nm..nm + nk], false));
    if nv > 0 {
        out.extend(widen(&values[nm + nk..nm + nk + nv], true));
    }
    out.push(values[nm + nk + nv].clone());
    let new_encoder = old_encoder + 2 * BLOCKS;
    header.tensor_counts = [
        new_encoder,
        new_encoder,
        if nv > 0 { new_encoder } else { 0 },
    ];
    header.tensor_lens = out.iter().map(Vec::len).collect();
    header.config.norm = super::super::config::NormKind::Group;
    header.format = CHECKPOINT_FORMAT;
    Ok(out)
}
