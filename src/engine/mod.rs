//! The PCL engine: model, augmentation, E-step, ProtoNCE, the training state machine,
//! evaluation and checkpoints. It runs on any burn `Device` (flex CPU, wgpu natively, WebGPU in
//! the browser) and knows nothing of the browser: no web types, no synchronous tensor reads.

// Plain data, also in the page's build (no burn): settings, images, records, the RNG.
pub mod bounded;
pub mod config;
pub mod data;
pub mod records;
pub mod rng;

// The algorithm on burn tensors (the `engine` feature; the page is built without it).
#[cfg(feature = "engine")]
pub mod augment;
#[cfg(feature = "engine")]
pub mod eval;
#[cfg(feature = "engine")]
pub mod explore;
#[cfg(feature = "engine")]
pub mod export;
#[cfg(feature = "engine")]
pub mod kernels;
#[cfg(feature = "engine")]
pub mod kmeans;
#[cfg(feature = "engine")]
pub mod loss;
#[cfg(feature = "engine")]
pub mod model;
#[cfg(feature = "engine")]
pub mod parallel;
#[cfg(feature = "engine")]
pub mod params;
#[cfg(feature = "engine")]
pub mod session;
#[cfg(feature = "engine")]
pub mod trainer;
#[cfg(feature = "engine")]
pub mod tsne;

pub use config::{AugPreset, Augmentation, NormKind, PclConfig, ProtoMode};
pub use data::Dataset;
pub use records::{EvalReport, Phase, RunState, RunStatus, StepRecord};
#[cfg(feature = "engine")]
pub use trainer::{Event, Trainer};

#[cfg(feature = "engine")]
use burn::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// A setting that cannot work with this data.
    Config(String),
    /// Mismatched sizes; the message names both.
    Shape(String),
    /// The loss is NaN or infinite; the model was not updated.
    NonFinite(String),
    /// Reading from or running on the device failed (e.g. a lost GPU).
    Device(String),
    Checkpoint(String),
    /// A command (pause, stop) arrived during an E-step, which was dropped to run again later.
    Interrupted,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(m) => write!(f, "settings: {m}"),
            EngineError::Shape(m) => write!(f, "size mismatch: {m}"),
            EngineError::NonFinite(m) => write!(f, "training diverged: {m}"),
            EngineError::Device(m) => write!(f, "device: {m}"),
            EngineError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            EngineError::Interrupted => f.write_str("interrupted by a command"),
        }
    }
}

impl std::error::Error for EngineError {}

#[cfg(feature = "engine")]
/// All label-based metrics of the trainer's current encoder on `data`: kNN on backbone features,
/// AMI / NMI of k-means (K = classes) on the embeddings, linear probe on backbone features.
pub async fn evaluate(
    trainer: &Trainer,
    data: &Dataset,
    labels: &[u32],
) -> Result<EvalReport, EngineError> {
    let encoder = trainer.encoder();
    let mut quiet = |_: Phase| {};
    let embedded = trainer.embed_all(&encoder, data, true, &mut quiet).await?;
    let (emb, emb_host) = &embedded.head;
    let (backbone, backbone_host) = embedded.backbone.as_ref().expect("asked for the backbone");
    label_metrics(
        (backbone, backbone_host),
        (emb, emb_host),
        labels,
        trainer.config.seed,
    )
    .await
}

/// k-means restarts of every evaluation clustering (K = classes; the lowest inertia wins). With 3,
/// the AMI of one fixed embedding of the sample set moved by 0.008-0.015 (sd) between k-means
/// seeds, as much as between training seeds; with 30, by 0.000-0.005 (docs/measurements.md).
/// K is the number of classes, so the restarts cost little beside the embedding pass.
pub const EVAL_KMEANS_RESTARTS: usize = 30;

#[cfg(feature = "engine")]
/// kNN and the linear probe on `features`, AMI / NMI of k-means (K = classes) on `clustered`;
/// each given as the device tensor [n, d] with unit rows and its host copy.
pub(crate) async fn label_metrics(
    features: (&Tensor<2>, &[f32]),
    clustered: (&Tensor<2>, &[f32]),
    labels: &[u32],
    seed: u64,
) -> Result<EvalReport, EngineError> {
    let knn_accuracy = eval::knn_accuracy(features.0, labels, 20, 0.07).await?;
    let d = features.0.dims()[1];
    let points = kmeans::Points::new(clustered.0, clustered.1)?;
    let clusters = class_clustering(&points, labels, seed).await?;
    Ok(EvalReport {
        knn_accuracy,
        ami: eval::ami(labels, &clusters),
        nmi: eval::nmi(labels, &clusters),
        linear_accuracy: eval::linear_probe(features.1, d, labels, seed),
    })
}

#[cfg(feature = "engine")]
/// Raw pixels' k-means AMI (K = classes) against the labels and the fine labels, each where the
/// data has them: the line the learned clusterings are drawn against.
pub async fn pixels_ami(
    data: &Dataset,
    image_size: usize,
    seed: u64,
    device: &Device,
) -> Result<(Option<f64>, Option<f64>), EngineError> {
    let (coarse, fine) = (data.eval_labels(), data.eval_fine_labels());
    if coarse.is_none() && fine.is_none() {
        return Ok((None, None));
    }
    let (feats, host) = pixel_features(data, image_size, device).await?;
    let points = kmeans::Points::new(&feats, &host)?;
    let coarse = match coarse {
        Some(l) => Some(kmeans_ami(&points, l, seed).await?),
        None => None,
    };
    let fine = match fine {
        Some(l) => Some(kmeans_ami(&points, l, seed).await?),
        None => None,
    };
    Ok((coarse, fine))
}

#[cfg(feature = "engine")]
/// AMI of k-means with K = the number of classes against `labels`.
async fn kmeans_ami(
    points: &kmeans::Points<'_>,
    labels: &[u32],
    seed: u64,
) -> Result<f64, EngineError> {
    Ok(eval::ami(
        labels,
        &class_clustering(points, labels, seed).await?,
    ))
}

#[cfg(feature = "engine")]
/// The evaluation's clustering: k-means with K = the number of classes of `labels`, the best
/// of [`EVAL_KMEANS_RESTARTS`]; the cluster of every point.
async fn class_clustering(
    points: &kmeans::Points<'_>,
    labels: &[u32],
    seed: u64,
) -> Result<Vec<u32>, EngineError> {
    let classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
    let mut rng = rng::Rng::new(seed);
    let k = classes.min(labels.len());
    let km = kmeans::kmeans_restarts(points, k, 20, EVAL_KMEANS_RESTARTS, &mut rng).await?;
    Ok(km.assignments)
}

#[cfg(feature = "engine")]
/// Every image's centre crop, flattened, as unit rows [n, 3 s s], and the host copy.
async fn pixel_features(
    data: &Dataset,
    image_size: usize,
    device: &Device,
) -> Result<(Tensor<2>, Vec<f32>), EngineError> {
    let n = data.len();
    let mut parts = Vec::new();
    for start in (0..n).step_by(256) {
        let end = (start + 256).min(n);
        let imgs: Vec<&[u8]> = (start..end).map(|i| data.image(i)).collect();
        let x = augment::center_view(augment::upload(&imgs, data.side, device), image_size);
        parts.push(model::l2_normalize(x.flatten(1, 3)));
    }
    let feats = Tensor::cat(parts, 0);
    let d = feats.dims()[1];
    let host = params::read_all(vec![feats.clone().reshape([n * d])]).await?;
    Ok((feats, host.into_iter().next().unwrap_or_default()))
}

#[cfg(feature = "engine")]
/// The same metrics on raw pixels (centre crop, flattened, unit rows): the floor that learned
/// features must beat.
pub async fn evaluate_pixels(
    data: &Dataset,
    labels: &[u32],
    image_size: usize,
    device: &Device,
) -> Result<EvalReport, EngineError> {
    let (feats, host) = pixel_features(data, image_size, device).await?;
    label_metrics((&feats, &host), (&feats, &host), labels, 0).await
}
