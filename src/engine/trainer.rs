//! The EM loop as a step-wise state machine: each `advance` call does one unit of work (an
//! E-step, or one SGD step) and returns what happened, so a browser worker can pause, resume,
//! stop and report between calls. Every tensor read is asynchronous. (Over 500 lines: one type,
//! `Trainer`, whose step, E-step and undo share its state; its checkpoint is `trainer/`.)

use std::rc::Rc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::augment::ViewParams;
use super::config::{PclConfig, ProtoMode};
use super::data::Dataset;
use super::error::EngineError;
use super::kmeans::{Level, Points, cluster_level};
use super::loss::{sample_negatives, self_negatives};
use super::model::{BN_MOMENTUM, Encoder, l2_normalize, shuffle_for_bn};
use super::parallel::{self, Batch, Helpers, StepModels, Views};
use super::params::{Sgd, ema_update};
use super::rng::Rng;

use super::records::prototypes;
pub use super::records::{LevelSummary, Phase, StepRecord};

mod checkpoint;
mod embed;
mod prepare;
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

/// All images embedded: the head's unit embeddings [n, feature_dim] and, when asked, the
/// backbone features [n, 8 width], row-major on the host.
pub struct Embedded {
    pub head: Vec<f32>,
    pub backbone: Option<Vec<f32>>,
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
        let Embedded { head: host, .. } = self.embed(&key, data, false, progress, true).await?;
        if host.iter().any(|v| !v.is_finite()) {
            self.roll_back();
            return Err(EngineError::NonFinite(format!(
                "the embeddings became non-finite before epoch {}: the last update diverged and \
                 was undone; lower the learning rate",
                self.epoch + 1
            )));
        }
        let ks = self.config.num_clusters.clone();
        let points = Points::new(&host, self.config.feature_dim, &self.device)?;
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

    /// One M-step update, in the order of MoCo's `builder.py` and PCL's `main_pcl.py`: two
    /// augmented views of a batch, queries and (shuffled-BN) keys, InfoNCE + ProtoNCE, backward,
    /// SGD, the key encoder's momentum update, the keys into the queue.
    async fn train_step(&mut self, data: &Dataset) -> Result<StepRecord, EngineError> {
        let (n, b, s) = (data.len(), self.config.batch_size, self.config.view_side());
        let steps = self.steps_per_epoch(n);
        let idx = self.next_batch(n); // [b] image ids
        let imgs: Vec<&[u8]> = idx.iter().map(|&i| data.image(i)).collect();
        let params = ViewParams::pair(&mut self.rng, b, &self.config.aug(), s);
        // [b, 3, s, s] each, made where they are used (on the CPU each worker its rows)
        let views = Views::new(imgs, data.side, params, s, &self.device);
        // Shuffled BN: the key batch permuted across BatchNorm chunks, so that no query meets
        // its key in the same statistics.
        let perm = shuffle_for_bn(b, self.config.bn_chunks, &mut self.rng); // [b]
        let (masked, self_neg) = self_negatives(&idx, &self.queue_ids, n, &self.device); // [b, r]
        let masked = masked.filter(|_| self.config.mask_self_negatives);
        let levels = self.batch_prototypes(&idx);
        let batch = Batch {
            views,
            perm,
            masked,
            levels,
        };
        // k = f_k(v2) without gradient; the gradient of the loss of q = f_q(v1) (with the
        // helper workers on the browser's CPU fallback).
        let g = parallel::gradients(&self.step_models(), &batch, self.helpers.as_ref()).await?;
        if let Some(why) = g.helper_failure {
            self.helper_failure = Some(why);
            self.helpers = None;
        }
        if g.values.iter().any(|v| !v.is_finite()) {
            // Nothing was updated by this step; the previous update, whose weights gave this,
            // is undone too.
            self.roll_back();
            return Err(EngineError::NonFinite(format!(
                "loss became {} at epoch {} step {}; lower the learning rate or check the images",
                g.values[0], self.epoch, self.step
            )));
        }
        let lr = self
            .config
            .lr_at(self.epoch as f64 + self.step as f64 / steps as f64);
        self.keep_last_good();
        self.model = self
            .sgd
            .step_flat(self.model.clone(), &g.grads, lr)
            .update_running_stats(&g.query_stats, BN_MOMENTUM);
        // The key encoder averages the query's weights but keeps running statistics of its own
        // (of its shuffled passes), as MoCo's key encoder does.
        let key_stats = self.key.running_stats();
        self.key = ema_update(self.key.clone(), &self.model, self.config.ema_momentum)
            .with_running_stats(&key_stats)
            .update_running_stats(&g.key_stats, BN_MOMENTUM);
        self.enqueue(g.keys, &idx);
        if self.diverge_after_epoch == Some(self.epoch) && self.step + 1 == steps {
            self.model = super::params::map_params(self.model.clone(), |i, p| {
                if i == 0 { p * f32::NAN } else { p }
            });
        }
        let v = g.values;
        let record = StepRecord {
            epoch: self.epoch,
            step: self.step,
            loss: v[0],
            info_nce: v[1],
            instance_acc: v[2],
            proto: v[3..].to_vec(),
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

    /// The next batch's image ids: a new shuffled order at the start of every epoch.
    fn next_batch(&mut self, n: usize) -> Vec<usize> {
        let b = self.config.batch_size;
        if self.step == 0 || self.order.len() != n {
            self.order = self.rng.permutation(n);
        }
        self.order[self.step * b..(self.step + 1) * b].to_vec()
    }

    /// Per level of the latest clustering (none in warm-up, or with no prototype term): the
    /// clusters of the batch's images and, in sampled mode, the negative prototypes.
    fn batch_prototypes(&mut self, idx: &[usize]) -> Vec<(Vec<u32>, Vec<u32>)> {
        let Some(c) = self
            .clustering
            .as_ref()
            .filter(|_| self.config.proto_weight > 0.0)
        else {
            return Vec::new();
        };
        let r = self.config.queue_size.unwrap_or(idx.len());
        c.levels
            .iter()
            .map(|level| {
                let pos: Vec<u32> = idx.iter().map(|&i| level.assignments[i]).collect();
                let neg = match self.config.proto_mode {
                    ProtoMode::Full => Vec::new(),
                    ProtoMode::Sampled => sample_negatives(&pos, level.k, r, &mut self.rng),
                };
                (pos, neg)
            })
            .collect()
    }

    /// What a step reads of this trainer's state.
    fn step_models(&self) -> StepModels<'_> {
        let prototypes = self.clustering.as_ref().map_or(Vec::new(), |c| {
            (c.levels.iter().zip(&c.centroids).zip(&c.phi))
                .map(|((level, centroids), phi)| (level, centroids, phi))
                .collect()
        });
        StepModels {
            query: &self.model,
            key: &self.key,
            queue: &self.queue,
            prototypes,
            config: &self.config,
        }
    }

    /// Keeps the state before an update (see [`Snapshot`]); tensors are immutable and shared,
    /// so this costs no copy. The history is bounded first, so an undo truncates to a length
    /// that still holds.
    fn keep_last_good(&mut self) {
        super::records::thin_history(&mut self.history);
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
