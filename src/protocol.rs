//! Messages between the page (UI thread) and the Web Worker, sent as JSON strings of these serde
//! enums. The UI never sees a tensor: only these plain values. Where a message carries bytes
//! (files to decode, thumbnails, exported files), the page and the worker post a two-element
//! array `[json, payload]` and the payload travels as a JS object beside the JSON.

use serde::{Deserialize, Serialize};

use crate::backend::BackendInfo;
use crate::engine::PclConfig;
use crate::engine::records::{ExploreReport, LevelSummary, StepRecord};
pub use crate::engine::records::{Phase, RunState, RunStatus};
use crate::intake::{Label, Skipped};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ExportKind {
    /// The trained encoder's weights (burn record bytes).
    Model,
    /// Everything needed to resume: settings, both encoders, optimizer, queue, clusters,
    /// history (the CLI reads it too: `pcl train --resume`).
    Session,
    /// Assignments of every file per level, phi and sizes, as JSON.
    Clusters,
    /// Path, label and embedding of every image, as CSV.
    Embeddings,
    /// The encoder as safetensors under PyTorch's names (README, "Exports").
    Safetensors,
    /// The Embedding Projector's bundle as a zip: tensors.tsv, metadata.tsv, sprite.png,
    /// projector_config.json.
    Projector,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// Pick a compute backend (WebGPU unless `force_cpu`) and run one probe training step.
    Start {
        force_cpu: bool,
        /// Workers that share training on the CPU fallback (this one and its helpers); `None`:
        /// one per core, at most four (the page's `?workers=N`).
        #[serde(default)]
        workers: Option<usize>,
        /// Train on WebGPU wherever it initialises, without timing it against the CPU
        /// (`?backend=webgpu`).
        #[serde(default)]
        force_webgpu: bool,
    },
    /// Decode files; payload: an array of `File`/`Blob`, one per path (relative to the chosen
    /// or dropped folder, `/`-separated).
    AddFiles {
        paths: Vec<String>,
    },
    /// Load the built-in sample set, at most `limit` images spread over all its groups.
    LoadSample {
        limit: Option<usize>,
    },
    /// Images the page kept from an earlier load (after a reload, to resume an autosave);
    /// payload: their RGB bytes at the store size.
    RestoreImages {
        names: Vec<String>,
        labels: Vec<Label>,
    },
    ClearImages,
    Train {
        config: PclConfig,
    },
    Pause,
    Resume,
    Stop,
    Export(ExportKind),
    /// Resume a session file; payload: its bytes (an ArrayBuffer). `autosave` marks one read
    /// back from the browser's storage.
    Import {
        autosave: bool,
    },
    /// The nearest images to image `index` in the current embedding.
    Neighbours {
        index: usize,
    },
    /// A t-SNE map of the current embedding (computed between training steps, with progress).
    Tsne,
    /// The two training views of `count` images that `config`'s augmentation draws for its
    /// seed (the augmentation panel).
    Views {
        config: PclConfig,
        count: usize,
    },
    /// Test hook: make the worker panic, to prove that the page recovers from a crash
    /// (development builds only; a release worker answers with an error).
    SimulateCrash,
    /// Test hook: make the worker trap without a panic message, as running out of memory does
    /// (development builds only).
    SimulateAbort,
    /// Test hook: in the runs trained from now on, the update ending this epoch breaks the
    /// weights behind a finite loss (`Trainer::diverge_after_epoch`; development builds only).
    SimulateDivergence {
        epoch: usize,
    },
}

/// Images added to the worker's store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImagesAdded {
    /// Side of the stored images; the payload holds `names.len()` of them, RGB.
    pub side: usize,
    pub names: Vec<String>,
    pub labels: Vec<Label>,
    pub skipped: Vec<Skipped>,
    /// Images in the store after this addition.
    pub total: usize,
    pub memory_bytes: usize,
    pub seconds: f64,
    /// The last message of this load.
    pub last: bool,
}

/// The page trains at this side in pixels (its images are stored at
/// [`PclConfig::stored_size`] of it).
pub const TRAIN_SIZE: usize = 32;

/// Training views of a few images ([`ToWorker::Views`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ViewPairs {
    /// The images' indices in the store.
    pub indices: Vec<usize>,
    pub seed: u64,
    /// Side of each view in pixels.
    pub size: usize,
    /// The settings they were drawn with, to tell a stale answer from the current one.
    pub config: PclConfig,
    /// RGB bytes of the views (in the message's payload, not its JSON).
    #[serde(skip)]
    pub pixels: Vec<u8>,
}

/// This build's id (build.rs: a hash of the sources): the page, its worker and the worker's
/// helpers only work together when theirs are equal.
pub const BUILD_ID: &str = env!("PCL_BUILD_ID");

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromWorker {
    /// The worker's wasm is loaded and it listens; messages sent before this would be lost.
    /// `build`: its [`BUILD_ID`], which must be the page's (or the main worker's, for a helper).
    Ready {
        #[serde(default)]
        build: String,
    },
    /// The backend the worker got.
    Backend(BackendInfo),
    /// One forward + backward + optimizer step of the encoder ran; its loss, read back
    /// asynchronously, and the wall time of the step.
    ProbeStep {
        loss: f32,
        millis: f64,
    },
    /// Decoding progress.
    Loading {
        done: usize,
        total: usize,
        eta_s: Option<f64>,
    },
    /// Payload: the new images' RGB bytes.
    Images(ImagesAdded),
    ImagesCleared,
    Status(RunStatus),
    /// Steps since the last such message (sent at most ten times a second).
    Steps(Vec<StepRecord>),
    /// Every step of a resumed run so far (replaces the charts' data).
    History(Vec<StepRecord>),
    /// An E-step finished: per level K, inertia, size and phi ranges.
    EStepDone {
        epoch: usize,
        levels: Vec<LevelSummary>,
        seconds: f64,
    },
    /// After every E-step and at the end: clusters, map, metrics.
    Explore(Box<ExploreReport>),
    /// Payload: the file's bytes.
    File {
        kind: ExportKind,
        name: String,
    },
    /// Payload: session bytes to keep in the browser's storage.
    Autosave {
        epoch: usize,
    },
    Neighbours {
        index: usize,
        neighbours: Vec<(usize, f32)>,
    },
    /// t-SNE iterations done of all; `points` once it is finished (one per image).
    Tsne {
        done: usize,
        total: usize,
        points: Option<Vec<[f32; 2]>>,
    },
    /// Payload: the two views of each image, RGB at `size` px: image 0's first, its second,
    /// image 1's first, ...
    Views(ViewPairs),
    /// Something the user should read; the run and the images stay as they were.
    Error(String),
    /// The worker cannot go on (it panicked, or the GPU device was lost): the page starts a new
    /// worker and resumes from the last autosave.
    Crashed(String),
}

/// From the worker to its helper workers (more instances of the worker's wasm on the CPU
/// fallback): parts of a step and of an embedding pass. The page never sees these.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToHelper {
    /// Compute a part of a training step
    /// (`engine::parallel::SliceJob`: `header` its JSON; payload: its floats, a Float32Array).
    Part { id: u64, header: String },
    /// The keys of part `id`'s query rows (payload: a Float32Array [rows, dim]).
    PartKeys { id: u64 },
    /// Embed images (`engine::parallel::EmbedJob`: `header` its JSON; payload:
    /// its floats).
    Embed { id: u64, header: String },
}

/// From a helper worker to the worker (besides the [`FromWorker`] messages every worker sends:
/// `Ready`, `Crashed`, `Error`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromHelper {
    /// Its keys for part `id` (`KeysResult`: `header` its JSON; payload: its
    /// floats).
    PartKeys { id: u64, header: String },
    /// The part `id` computed (`SliceResult`: `header`
    /// its JSON; payload: its floats).
    PartDone { id: u64, header: String },
    /// The embeddings of job `id` (`EmbedResult`: `header` its JSON; payload:
    /// its floats).
    Embedded { id: u64, header: String },
    /// The part `id` could not be computed.
    PartFailed { id: u64, error: String },
}

impl ToHelper {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// `None`: not a message to a helper (then it is one to a worker).
    pub fn from_json(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }
}

impl FromHelper {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// `None`: not a helper's own message (then it is one every worker sends).
    pub fn from_json(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }
}

impl ToWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad message to worker: {e}"))
    }
}

impl FromWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad message from worker: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = FromWorker::ProbeStep {
            loss: 1.5,
            millis: 20.0,
        };
        assert_eq!(FromWorker::from_json(&m.to_json()).unwrap(), m);
        for m in [
            ToWorker::Start {
                force_cpu: true,
                workers: None,
                force_webgpu: false,
            },
            ToWorker::Train {
                config: PclConfig::default(),
            },
            ToWorker::Export(ExportKind::Session),
            ToWorker::AddFiles {
                paths: vec!["a/b.png".into()],
            },
        ] {
            assert_eq!(ToWorker::from_json(&m.to_json()).unwrap(), m);
        }
        assert!(FromWorker::from_json("{").is_err());
        assert_eq!(RunState::Paused.as_str(), "paused");
    }
}
