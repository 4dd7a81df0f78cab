//! The EM loop as a step-wise state machine: each `advance` call does one unit of work (an
//! E-step, or one SGD step) and returns what happened, so a browser worker can pause, resume,
//! stop and report between calls. Every tensor read is asynchronous. (Over 500 lines: one type,
//! `Trainer`, whose step, E-step and undo share its state; its checkpoint is `trainer/`.)

use std::ops::Range;
use std::rc::Rc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::EngineError;
use super::augment::{ViewParams, augment, upload};
use super::config::{PclConfig, ProtoMode};
use super::data::Dataset;
use super::kmeans::{Level, Points, cluster_level};
use super::loss::{sample_negatives, self_negatives};
use super::model::{
    BN_MOMENTUM, BatchStats, Encoder, inverse_permutation, l2_normalize, mean_stats, shuffle_for_bn,
};
use super::parallel::{
    Helpers, JobHeader, JobLevel, PartInputs, PartLevel, Reply, SliceJob, chunks_in, param_sizes,
    part_loss, split_rows,
};
use super::params::{Sgd, ema_update, flat_grads, flat_params, read_all};
use super::rng::Rng;

use super::records::prototypes;
pub use super::records::{LevelSummary, Phase, StepRecord};

mod checkpoint;
mod embed;
pub use checkpoint::{CheckpointHeader, read_checkpoint};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Event {
    Step(StepRecord),
    EStep {
        epoch: usize,
        levels: Vec<LevelSummary>,
    },
    Done,
}

/// The latest clustering: host copies (for checkpoints and the UI) and device tensors.
#[derive(Clone, Debug)]
pub struct Clustering {
    pub epoch: usize,
    pub levels: Vec<Level>,
    centroids: Vec<Tensor<2>>,
    phi: Vec<Tensor<1>>,
}

impl Clustering {
    fn new(epoch: usize, levels: Vec<Level>, d: usize, device: &Device) -> Self {
        let centroids = levels
            .iter()
            .map(|l| Tensor::from_data(TensorData::new(l.centroids.clone(), [l.k, d]), device))
            .collect();
        let phi = levels
            .iter()
            .map(|l| Tensor::from_data(TensorData::new(l.phi.clone(), [l.k]), device))
            .collect();
        Self {
            epoch,
            levels,
            centroids,
            phi,
        }
    }
}

/// All images embedded: the head's unit embeddings and, when asked, the backbone features; each
/// as a device tensor [n, d] and its host copy.
pub struct Embedded {
    pub head: (Tensor<2>, Vec<f32>),
    pub backbone: Option<(Tensor<2>, Vec<f32>)>,
}

pub struct Trainer {
    pub config: PclConfig,
    device: Device,
    model: Encoder,
    key: Encoder,
    sgd: Sgd,
    /// queue: [r, d] unit rows; `queue_ptr` is the next row to overwrite (FIFO).
    queue: Tensor<2>,
    queue_ptr: usize,
    /// The image of each queue row (None for the random rows of a fresh queue).
    queue_ids: Vec<Option<u32>>,
    rng: Rng,
    pub epoch: usize,
    pub step: usize,
    order: Vec<usize>,
    estep_done: Option<usize>,
    pub clustering: Option<Clustering>,
    pub history: Vec<StepRecord>,
    last_good: Option<Snapshot>,
    /// Warm-up epochs / epochs as configured: kept when a time budget re-plans the epochs.
    warmup_share: f64,
    /// Seconds of training before this process resumed the run, and in all as of the last
    /// `fit_to_budget` (saved with the run, so a resumed run keeps its budget).
    seconds_before: f64,
    pub seconds: f64,
    /// Workers that compute parts of each step (the browser's CPU fallback); see `parallel`.
    helpers: Option<Rc<dyn Helpers>>,
    /// Why the helpers were let go, if one failed (its part was then done here).
    pub helper_failure: Option<String>,
    /// Test hook: the update of the last step of this epoch makes a weight non-finite while
    /// its loss was finite (what a diverging learning rate can do), to prove that no such
    /// state is ever saved.
    #[doc(hidden)]
    pub diverge_after_epoch: Option<usize>,
    /// Asked between the E-step's pieces of work; see [`Interrupt`].
    interrupt: Option<Interrupt>,
}

/// How a front end that takes commands while the engine works (the browser's worker) gets a
/// word in during an E-step: awaited between its pieces of work (a chunk of images embedded, a
/// k-means level), it yields to the front end's messages and says whether a command came (pause,
/// stop). The E-step is then dropped, to run again, identically, when training goes on.
pub type Interrupt = Rc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool>>>>;

/// The state before the last update. A finite loss can still give non-finite weights (a huge
/// learning rate); the next read finds them, and the run goes back here instead of keeping them.
struct Snapshot {
    model: Encoder,
    key: Encoder,
    velocity: Vec<Tensor<1>>,
    queue: Tensor<2>,
    queue_ptr: usize,
    queue_ids: Vec<Option<u32>>,
    epoch: usize,
    step: usize,
    history_len: usize,
}

fn ints(values: &[u32], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i32> = values.iter().map(|&x| x as i32).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

impl Trainer {
    /// A fresh run. `device` is a plain device (no autodiff); the trainer derives its own.
    pub fn new(config: &PclConfig, data: &Dataset, device: &Device) -> Result<Self, EngineError> {
        let config = config.resolve(data.len())?;
        config.check_demands(data.len(), super::config::machine_memory_bytes())?;
        let want = PclConfig::stored_size(config.image_size);
        if data.side != want {
            return Err(EngineError::Shape(format!(
                "images are stored at {0}x{0}, training at {1} px needs {2}x{2}",
                data.side, config.image_size, want
            )));
        }
        // The device's random numbers are one stream per process: seeding and drawing hold a
        // lock, so runs started at once (tests, threads) each get their seed's weights.
        static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let (model, key, queue) = {
            let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
            device.seed(config.seed);
            let model = config.encoder().init(&device.clone().autodiff());
            // Parameters are drawn lazily; `valid` draws them (before the queue).
            let key = model.valid();
            let r = config.queue_size.expect("resolved");
            let queue = l2_normalize(Tensor::random(
                [r, config.feature_dim],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                device,
            ));
            (model, key, queue)
        };
        let r = config.queue_size.expect("resolved");
        Ok(Self {
            sgd: Sgd::new(config.sgd_momentum, config.weight_decay),
            rng: Rng::new(config.seed),
            device: device.clone(),
            model,
            key,
            queue,
            queue_ptr: 0,
            queue_ids: vec![None; r],
            epoch: 0,
            step: 0,
            order: Vec::new(),
            estep_done: None,
            clustering: None,
            history: Vec::new(),
            last_good: None,
            warmup_share: config.warmup_epochs as f64 / config.epochs.max(1) as f64,
            seconds_before: 0.0,
            seconds: 0.0,
            helpers: None,
            helper_failure: None,
            diverge_after_epoch: None,
            interrupt: None,
            config,
        })
    }

    pub fn steps_per_epoch(&self, n: usize) -> usize {
        (n / self.config.batch_size).max(1)
    }

    pub fn is_done(&self) -> bool {
        self.epoch >= self.config.epochs
    }

    /// With a time budget (`config.minutes`), re-plans the epochs (and the warm-up's share of
    /// them while it lasts) from the speed so far: `elapsed_secs` since the run started (of
    /// this process), of which `estep_secs` went to E-steps. Call it after an epoch ends;
    /// returns whether the plan changed. Without a budget it does nothing.
    pub fn fit_to_budget(
        &mut self,
        elapsed_secs: f64,
        estep_secs: f64,
        epochs_timed: usize,
    ) -> bool {
        let Some(minutes) = self.config.minutes else {
            return false;
        };
        if epochs_timed == 0 || self.is_done() {
            return false;
        }
        self.seconds = self.seconds_before + elapsed_secs;
        let first = self.epoch.saturating_sub(epochs_timed);
        let esteps = (first..self.epoch)
            .filter(|&j| self.config.estep_before(j))
            .count();
        let train_secs = ((elapsed_secs - estep_secs) / epochs_timed as f64).max(1e-6);
        // Before the first E-step its cost is a guess: embedding every image once and k-means
        // are about a third of an epoch at this scale.
        let estep_cost = if esteps > 0 {
            estep_secs / esteps as f64
        } else {
            0.35 * train_secs
        };
        let (epochs, warmup) = super::config::epochs_for_budget(
            &self.config,
            self.epoch,
            minutes * 60.0 - self.seconds,
            train_secs,
            estep_cost,
            self.warmup_share,
        );
        let changed = (epochs, warmup) != (self.config.epochs, self.config.warmup_epochs);
        self.config.epochs = epochs;
        self.config.warmup_epochs = warmup;
        changed
    }

    /// Lets a command interrupt an E-step ([`Interrupt`]).
    pub fn set_interrupt(&mut self, interrupt: Option<Interrupt>) {
        self.interrupt = interrupt;
    }

    /// Whether a command came since the E-step began (yielding to the front end to hear it).
    async fn interrupted(&self) -> Result<(), EngineError> {
        match &self.interrupt {
            Some(asked) if asked().await => Err(EngineError::Interrupted),
            _ => Ok(()),
        }
    }

    /// Lets `helpers` compute parts of each step from now on (on the CPU back end only).
    pub fn set_helpers(&mut self, helpers: Option<Rc<dyn Helpers>>) {
        self.helpers = helpers;
    }

    /// The key pass with the helpers: each gets its job (the batch rows `parts[i + 1]` for its
    /// queries, the same rows of the shuffled batch for the key encoder) and sends its keys; this
    /// worker runs the key encoder on its own rows, puts the keys in batch order and sends each
    /// helper those of its query rows. Returns the keys [b, d], their statistics and the
    /// helpers' pending results; `None` when a helper failed (then none is used again).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    async fn shared_keys(
        &mut self,
        helpers: Rc<dyn Helpers>,
        parts: &[Range<usize>],
        v1: &Tensor<4>,
        v2: &Tensor<4>,
        perm: &[usize],
        masked: Option<&Tensor<2, Bool>>,
        levels: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Option<(Tensor<2>, BatchStats, Vec<Reply>)>, EngineError> {
        let b = perm.len();
        let d = self.config.feature_dim;
        let order: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
        let shuffled = v2.clone().select(0, ints(&order, &self.device)); // [b, 3, s, s]
        let jobs = self
            .jobs(&parts[1..], v1, &shuffled, masked, levels)
            .await?;
        let submitted: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| helpers.submit(i, job))
            .collect();
        let own = parts[0].clone();
        let chunks = chunks_in(b, self.config.bn_chunks, own.len());
        let (k_own, s_own) = self
            .key
            .forward_train(shuffled.narrow(0, own.start, own.len()), chunks); // [rows, d]
        let layers: Vec<usize> = s_own.iter().map(|(m, _)| m.dims()[0]).collect();
        let (mut keys, mut stats) = (vec![k_own], vec![(own.len(), s_own)]);
        let mut results = Vec::new();
        for (job, rows) in submitted.into_iter().zip(&parts[1..]) {
            let got = job
                .keys
                .await
                .map_err(EngineError::Device)
                .and_then(|r| r.tensors(rows.len(), d, &layers, &self.device));
            match got {
                Ok((k, st)) => {
                    keys.push(k);
                    stats.push((rows.len(), st));
                    results.push(job.result);
                }
                Err(e) => {
                    self.helper_failure = Some(e.to_string());
                    self.helpers = None;
                    return Ok(None);
                }
            }
        }
        let back: Vec<u32> = inverse_permutation(perm)
            .iter()
            .map(|&i| i as u32)
            .collect();
        let k = Tensor::cat(keys, 0).select(0, ints(&back, &self.device)); // [b, d], batch order
        let host = read_all(vec![k.clone().reshape([-1])]).await?.remove(0);
        for (i, rows) in parts[1..].iter().enumerate() {
            helpers.send_keys(i, host[rows.start * d..rows.end * d].to_vec());
        }
        Ok(Some((k, mean_stats(stats), results)))
    }

    /// Host copies of what the helpers need for the batch rows `parts` (see `parallel`);
    /// `shuffled`: the key encoder's views in shuffled order.
    async fn jobs(
        &self,
        parts: &[Range<usize>],
        v1: &Tensor<4>,
        shuffled: &Tensor<4>,
        masked: Option<&Tensor<2, Bool>>,
        levels: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<SliceJob>, EngineError> {
        let [b, _, side, _] = v1.dims();
        let [r, d] = self.queue.dims();
        let params = flat_params(&self.model);
        let np = params.len();
        let mut reads = params;
        reads.extend(flat_params(&self.key));
        reads.push(v1.clone().reshape([-1]));
        reads.push(shuffled.clone().reshape([-1]));
        reads.push(self.queue.clone().reshape([-1]));
        if let Some(m) = masked {
            reads.push(m.clone().int().float().reshape([-1]));
        }
        let host = read_all(reads).await?;
        let (views, key_views, queue) = (&host[2 * np], &host[2 * np + 1], &host[2 * np + 2]);
        let mask = host.get(2 * np + 3);
        let image = 3 * side * side;
        let c = self.clustering.as_ref();
        Ok(parts
            .iter()
            .map(|rows| {
                let mut floats: Vec<f32> = host[..2 * np].concat();
                floats.extend_from_slice(&views[rows.start * image..rows.end * image]);
                floats.extend_from_slice(&key_views[rows.start * image..rows.end * image]);
                floats.extend_from_slice(queue);
                let mut job_levels = Vec::new();
                for (m, (pos, neg)) in levels.iter().enumerate() {
                    let level = &c.expect("levels come from a clustering").levels[m];
                    floats.extend_from_slice(&level.centroids);
                    floats.extend_from_slice(&level.phi);
                    job_levels.push(JobLevel {
                        k: level.k,
                        assign: pos.clone(),
                        neg: neg.clone(),
                    });
                }
                let masked = mask.map_or(Vec::new(), |m| {
                    (rows.start..rows.end)
                        .flat_map(|i| (0..r).map(move |j| (i, j)))
                        .filter(|&(i, j)| m[i * r + j] != 0.0)
                        .map(|(i, j)| ((i - rows.start) as u32, j as u32))
                        .collect()
                });
                SliceJob {
                    header: JobHeader {
                        encoder: self.config.encoder(),
                        params: host[..np].iter().map(Vec::len).collect(),
                        rows: rows.len(),
                        side,
                        dim: d,
                        queue_rows: r,
                        batch: b,
                        first: rows.start,
                        chunks: chunks_in(b, self.config.bn_chunks, rows.len()),
                        tau: self.config.tau,
                        proto_weight: self.config.proto_weight,
                        mode: self.config.proto_mode,
                        masked,
                        levels: job_levels,
                    },
                    floats,
                }
            })
            .collect())
    }

    /// The device the run trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The query encoder, without autodiff.
    pub fn encoder(&self) -> Encoder {
        self.model.valid()
    }

    /// One unit of work: the E-step when one is due, else one SGD step.
    pub async fn advance(
        &mut self,
        data: &Dataset,
        progress: &mut dyn FnMut(Phase),
    ) -> Result<Event, EngineError> {
        if self.is_done() {
            return Ok(Event::Done);
        }
        if self.step == 0
            && self.config.estep_before(self.epoch)
            && self.estep_done != Some(self.epoch)
        {
            let levels = self.e_step(data, progress).await?;
            return Ok(Event::EStep {
                epoch: self.epoch,
                levels,
            });
        }
        progress(Phase::Training);
        self.train_step(data).await.map(Event::Step)
    }

    async fn e_step(
        &mut self,
        data: &Dataset,
        progress: &mut dyn FnMut(Phase),
    ) -> Result<Vec<LevelSummary>, EngineError> {
        let key = self.key.clone();
        let Embedded {
            head: (feats, host),
            ..
        } = self.embed(&key, data, false, progress, true).await?;
        if host.iter().any(|v| !v.is_finite()) {
            self.roll_back();
            return Err(EngineError::NonFinite(format!(
                "the embeddings became non-finite before epoch {}: the last update diverged and \
                 was undone; lower the learning rate",
                self.epoch + 1
            )));
        }
        let ks = self.config.num_clusters.clone();
        let points = Points::new(&feats, &host)?;
        let mut levels = Vec::new();
        for (m, &k) in ks.iter().enumerate() {
            self.interrupted().await?;
            progress(Phase::KMeans {
                level: m,
                levels: ks.len(),
                k,
            });
            // Seeded per level and epoch, as the official code seeds faiss with the level index.
            let mut rng = Rng::new(self.config.seed ^ ((self.epoch as u64) << 32) ^ m as u64);
            let level = cluster_level(
                &points,
                k,
                self.config.kmeans_iters,
                self.config.kmeans_restarts,
                self.config.tau,
                &mut rng,
            )
            .await?;
            levels.push(level);
        }
        let d = self.config.feature_dim;
        let summaries = levels
            .iter()
            .enumerate()
            .map(|(m, l)| LevelSummary {
                k: l.k,
                inertia: l.inertia,
                min_size: l.sizes.iter().copied().min().unwrap_or(0),
                max_size: l.sizes.iter().copied().max().unwrap_or(0),
                phi_min: l.phi.iter().cloned().fold(f32::INFINITY, f32::min),
                phi_max: l.phi.iter().cloned().fold(0.0, f32::max),
                prototypes: if m == 0 {
                    prototypes(&l.assignments, &l.centroids, &l.phi, &l.sizes, &host, d)
                } else {
                    Vec::new()
                },
            })
            .collect();
        self.clustering = Some(Clustering::new(
            self.epoch,
            levels,
            self.config.feature_dim,
            &self.device,
        ));
        self.estep_done = Some(self.epoch);
        Ok(summaries)
    }

    async fn train_step(&mut self, data: &Dataset) -> Result<StepRecord, EngineError> {
        let n_img = data.len();
        let b = self.config.batch_size;
        let steps = self.steps_per_epoch(n_img);
        if self.step == 0 || self.order.len() != n_img {
            self.order = self.rng.permutation(n_img);
        }
        let idx: Vec<usize> = self.order[self.step * b..(self.step + 1) * b].to_vec();
        let imgs: Vec<&[u8]> = idx.iter().map(|&i| data.image(i)).collect();
        let x = upload(&imgs, data.side, &self.device); // x: [b, 3, S, S]
        let s = self.config.image_size;
        let [p1, p2] = ViewParams::pair(&mut self.rng, b, &self.config.aug(), s);
        let v1 = augment(x.clone(), &p1, s); // v1: [b, 3, s, s]
        let v2 = augment(x, &p2, s);

        // Training mode: BatchNorm per chunk of the batch; the key batch shuffled across chunks
        // so that no query meets its key in the same statistics (shuffled BN).
        let chunks = self.config.bn_chunks;
        let perm = shuffle_for_bn(b, chunks, &mut self.rng);
        let (masked, self_neg) = self_negatives(&idx, &self.queue_ids, n_img, &self.device);
        let masked = masked.filter(|_| self.config.mask_self_negatives);
        // Per level: the batch's clusters and (sampled mode) the negative prototypes.
        let mut levels = Vec::new();
        if let Some(c) = &self.clustering
            && self.config.proto_weight > 0.0
        {
            for level in &c.levels {
                let pos: Vec<u32> = idx.iter().map(|&i| level.assignments[i]).collect();
                let neg = match self.config.proto_mode {
                    ProtoMode::Full => Vec::new(),
                    ProtoMode::Sampled => {
                        let r = self.config.queue_size.unwrap_or(b);
                        sample_negatives(&pos, level.k, r, &mut self.rng)
                    }
                };
                levels.push((pos, neg));
            }
        }
        let parts = match &self.helpers {
            Some(h) if h.ready() > 0 && self.model.runs_on_cpu() => {
                split_rows(b, chunks, 1 + h.ready())
            }
            _ => std::iter::once(0..b).collect(),
        };
        // The key pass, shared with the helpers when there are parts (they get their query
        // parts' jobs with it and answer once they have their keys).
        let shared = match self.helpers.clone() {
            Some(h) if parts.len() > 1 => {
                self.shared_keys(h, &parts, &v1, &v2, &perm, masked.as_ref(), &levels)
                    .await?
            }
            _ => None,
        };
        let (k, k_stats, pending) = shared.unwrap_or_else(|| {
            // No helpers, or one failed in the key pass (then all are let go): the whole step
            // runs here.
            let (k, stats) = self.key.forward_shuffled(v2, chunks, &perm); // k: [b, d], no gradient
            (k, stats, Vec::new())
        });
        let parts = if pending.is_empty() {
            std::iter::once(0..b).collect()
        } else {
            parts
        };
        let inputs = |rows: Range<usize>| -> PartInputs {
            let n = rows.len();
            let clustering = self.clustering.as_ref();
            PartInputs {
                views: v1.clone().narrow(0, rows.start, n),
                keys: k.clone().narrow(0, rows.start, n),
                queue: self.queue.clone(),
                masked: masked.clone().map(|m| m.narrow(0, rows.start, n)),
                levels: levels
                    .iter()
                    .enumerate()
                    .map(|(m, (pos, neg))| {
                        let c = clustering.expect("levels come from a clustering");
                        PartLevel {
                            centroids: c.centroids[m].clone(),
                            phi: c.phi[m].clone(),
                            assign: ints(pos, &self.device),
                            neg: (!neg.is_empty()).then(|| ints(neg, &self.device)),
                        }
                    })
                    .collect(),
                chunks: chunks_in(b, chunks, n),
                tau: self.config.tau,
                proto_weight: self.config.proto_weight,
                mode: self.config.proto_mode,
                share: n as f64 / b as f64,
                first: rows.start,
            }
        };
        let own = part_loss(&self.model, inputs(parts[0].clone()));
        let mut values: Vec<f32> = read_all(own.values).await?.into_iter().flatten().collect();
        let mut grads = flat_grads(&self.model, &own.total.backward());
        let mut stats = vec![(parts[0].len(), own.stats)];
        if !pending.is_empty() {
            let sizes = param_sizes(&self.model);
            let layers: Vec<usize> = stats[0].1.iter().map(|(m, _)| m.dims()[0]).collect();
            for (reply, rows) in pending.into_iter().zip(&parts[1..]) {
                let answer = reply.await.map_err(EngineError::Device).and_then(|r| {
                    let (g, st) = r.tensors(&sizes, &layers, &self.device)?;
                    Ok((r.header.values, g, st))
                });
                let (v, g, st) = match answer {
                    Ok(a) => a,
                    Err(e) => {
                        // A helper that failed is not asked again; its part is done here.
                        self.helper_failure = Some(e.to_string());
                        self.helpers = None;
                        let part = part_loss(&self.model, inputs(rows.clone()));
                        let v = read_all(part.values).await?.into_iter().flatten().collect();
                        (
                            v,
                            flat_grads(&self.model, &part.total.backward()),
                            part.stats,
                        )
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
        }
        let q_stats = mean_stats(stats);
        if values.iter().any(|v| !v.is_finite()) {
            // Nothing was updated by this step; the previous update, whose weights gave this,
            // is undone too.
            self.roll_back();
            return Err(EngineError::NonFinite(format!(
                "loss became {} at epoch {} step {}; lower the learning rate or check the images",
                values[0], self.epoch, self.step
            )));
        }

        let lr = self
            .config
            .lr_at(self.epoch as f64 + self.step as f64 / steps as f64);
        // Bounded before the snapshot, so an undo truncates to a length that still holds.
        super::records::thin_history(&mut self.history);
        // Tensors are immutable and shared: keeping the previous state costs no copy.
        self.last_good = Some(Snapshot {
            model: self.model.clone(),
            key: self.key.clone(),
            velocity: self.sgd.velocity.clone(),
            queue: self.queue.clone(),
            queue_ptr: self.queue_ptr,
            queue_ids: self.queue_ids.clone(),
            epoch: self.epoch,
            step: self.step,
            history_len: self.history.len(),
        });
        self.model = self
            .sgd
            .step_flat(self.model.clone(), &grads, lr)
            .update_running_stats(&q_stats, BN_MOMENTUM);
        // The key encoder averages the query's weights but keeps running statistics of its own
        // (of its shuffled passes), as MoCo's key encoder does.
        let key_stats = self.key.running_stats();
        self.key = ema_update(self.key.clone(), &self.model, self.config.ema_momentum)
            .with_running_stats(&key_stats)
            .update_running_stats(&k_stats, BN_MOMENTUM);
        self.enqueue(k, &idx);
        if self.diverge_after_epoch == Some(self.epoch) && self.step + 1 == steps {
            self.model = super::params::map_params(self.model.clone(), |i, p| {
                if i == 0 { p * f32::NAN } else { p }
            });
        }

        let record = StepRecord {
            epoch: self.epoch,
            step: self.step,
            loss: values[0],
            info_nce: values[1],
            instance_acc: values[2],
            proto: values[3..].to_vec(),
            lr,
            epoch_done: self.step + 1 == steps,
            self_negatives: self_neg as f32 / b as f32,
        };
        self.step += 1;
        if self.step == steps {
            self.step = 0;
            self.epoch += 1;
        }
        self.history.push(record.clone());
        Ok(record)
    }

    /// The run as session bytes ([`Trainer::save`]) for a checkpoint, which replaces the last
    /// good one: when any value is not finite, the update that made it so is undone
    /// (as for a non-finite loss) and the error says so.
    pub async fn save_checked(&mut self) -> Result<Vec<u8>, EngineError> {
        let saved = self.save().await;
        if let Err(EngineError::NonFinite(_)) = saved {
            self.roll_back();
        }
        saved
    }

    /// Goes back to the state before the last update (see [`Snapshot`]).
    fn roll_back(&mut self) {
        if let Some(s) = self.last_good.take() {
            self.model = s.model;
            self.key = s.key;
            self.sgd.velocity = s.velocity;
            self.queue = s.queue;
            self.queue_ptr = s.queue_ptr;
            self.queue_ids = s.queue_ids;
            self.epoch = s.epoch;
            self.step = s.step;
            self.history.truncate(s.history_len);
        }
    }

    /// FIFO: overwrite the oldest rows with the newest keys (of images `ids`), wrapping around.
    fn enqueue(&mut self, keys: Tensor<2>, ids: &[usize]) {
        let [r, d] = self.queue.dims();
        let n = keys.dims()[0].min(r);
        for (j, &id) in ids.iter().take(n).enumerate() {
            self.queue_ids[(self.queue_ptr + j) % r] = Some(id as u32);
        }
        let first = n.min(r - self.queue_ptr);
        let p = self.queue_ptr;
        self.queue = self
            .queue
            .clone()
            .slice_assign([p..p + first, 0..d], keys.clone().slice([0..first, 0..d]));
        if first < n {
            self.queue = self
                .queue
                .clone()
                .slice_assign([0..n - first, 0..d], keys.slice([first..n, 0..d]));
        }
        self.queue_ptr = (p + n) % r;
    }
}
