//! The PCL engine: model, augmentation, E-step, ProtoNCE, the training state machine,
//! evaluation and checkpoints. It runs on any burn `Device` (flex CPU, wgpu natively, WebGPU in
//! the browser) and knows nothing of the browser: no web types, no synchronous tensor reads.

// Plain data, also in the page's build (no burn): settings, images, records, the RNG, errors.
pub mod bounded;
pub mod config;
pub mod data;
pub mod error;
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
pub mod pipelines;
#[cfg(feature = "engine")]
pub mod session;
#[cfg(feature = "engine")]
pub mod tiled;
#[cfg(feature = "engine")]
pub mod trainer;
#[cfg(feature = "engine")]
pub mod tsne;

pub use config::{AugPreset, Augmentation, NormKind, PclConfig, ProtoMode};
pub use data::Dataset;
pub use error::EngineError;
#[cfg(feature = "engine")]
pub use eval::{EVAL_KMEANS_RESTARTS, evaluate, evaluate_pixels, pixels_ami};
pub use records::{EvalReport, Phase, RunState, RunStatus, StepRecord};
#[cfg(feature = "engine")]
pub use trainer::{Event, Trainer};
