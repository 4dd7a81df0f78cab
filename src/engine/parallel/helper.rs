//! A helper's side of a shared step: it keeps both encoders between jobs (only their values
//! change), runs the key encoder on its chunks of the shuffled batch ([`run_keys`]) and, once it
//! has the keys of its query rows, its part's loss and gradients ([`run_part`]: its queries
//! and inputs made while the keys are on their way, [`prepare_part`], then [`finish_part`]).

use burn::prelude::*;

use super::wire::{KeysHeader, KeysResult, ResultHeader, SliceJob, SliceResult, bad};
use crate::engine::error::EngineError;
use crate::engine::loss::{LossInputs, ProtoLevel, Queries, pcl_loss_of, queries};
use crate::engine::model::{BatchStats, Encoder, EncoderConfig};
use crate::engine::params::{flat_grads, load_params, read_all};

/// The encoders a helper keeps between jobs, so only their values are replaced.
#[derive(Default)]
pub struct HelperModels {
    pub(super) query: Option<(EncoderConfig, Encoder)>,
    pub(super) key: Option<(EncoderConfig, Encoder)>,
}

/// `slot`'s encoder of `config` on `device` (kept or made), with `values` loaded.
pub(crate) fn loaded(
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
    let views = job.views(&s, 1, device); // [rows, 3, side, side]
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
/// ([rows, dim], batch order). [`prepare_part`] then [`finish_part`].
pub async fn run_part(
    job: &SliceJob,
    keys: Vec<f32>,
    device: &Device,
    models: &mut HelperModels,
) -> Result<SliceResult, EngineError> {
    finish_part(prepare_part(job, device, models)?, keys).await
}

/// The part's queries, its loss's other inputs and its query encoder: made while the helper
/// waits for the keys (the trainer is still finishing its own), not after they come.
pub struct PreparedPart {
    model: Encoder,
    queries: Queries,
    inputs: LossInputs,
    rows: usize,
    dim: usize,
}

/// The query encoder, the queries and the loss's other inputs of the job's part (the keys
/// aside).
pub fn prepare_part(
    job: &SliceJob,
    device: &Device,
    models: &mut HelperModels,
) -> Result<PreparedPart, EngineError> {
    let s = job.check()?;
    let h = &job.header;
    let (rows, d, r) = (h.rows, h.dim, h.queue_rows);
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
    let views = job.views(&s, 0, device); // [rows, 3, side, side]
    let queue = Tensor::from_data(TensorData::new(floats(2 * np + 4), [r, d]), device);
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
        .map(|(m, l)| ProtoLevel {
            centroids: Tensor::from_data(
                TensorData::new(floats(2 * np + 5 + 2 * m), [l.k, d]),
                device,
            ),
            phi: Tensor::from_data(TensorData::new(floats(2 * np + 6 + 2 * m), [l.k]), device),
            assign: ints(&l.assign),
            neg: (!l.neg.is_empty()).then(|| ints(&l.neg)),
        })
        .collect();
    let queries = queries(&model, views, h.chunks);
    let inputs = LossInputs {
        // replaced by the keys in finish_part
        keys: Tensor::zeros([rows, d], device),
        queue,
        masked,
        levels,
        chunks: h.chunks,
        tau: h.tau,
        proto_weight: h.proto_weight,
        mode: h.mode,
        share: h.rows as f64 / h.batch as f64,
        first: h.first,
    };
    Ok(PreparedPart {
        model,
        queries,
        inputs,
        rows,
        dim: d,
    })
}

/// The part's loss and gradients once the keys of its query rows came ([rows, dim], batch
/// order).
pub async fn finish_part(part: PreparedPart, keys: Vec<f32>) -> Result<SliceResult, EngineError> {
    let PreparedPart {
        model,
        queries,
        mut inputs,
        rows,
        dim: d,
    } = part;
    if keys.len() != rows * d {
        return Err(bad(format!(
            "{} key values for {rows} rows of {d}",
            keys.len()
        )));
    }
    inputs.keys = Tensor::from_data(TensorData::new(keys, [rows, d]), &inputs.queue.device());
    let part = pcl_loss_of(queries, inputs);
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
