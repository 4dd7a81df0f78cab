//! The EM loop as a step-wise state machine: each `advance` call does one unit of work (an
//! E-step, or one SGD step) and returns what happened, so a browser worker can pause, resume,
//! stop and report between calls. Every tensor read is asynchronous.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::EngineError;
use super::augment::{ViewParams, augment, center_view, upload};
use super::config::{PclConfig, ProtoMode};
use super::data::Dataset;
use super::kmeans::{Level, Points, cluster_level};
use super::loss::{info_nce, proto_full, proto_sampled, sample_negatives, self_negatives};
use super::model::{BN_MOMENTUM, Encoder, EncoderConfig, l2_normalize, shuffle_for_bn};
use super::params::{Sgd, ema_update, read_all};
use super::rng::Rng;

pub use super::records::{LevelSummary, Phase, StepRecord};

mod checkpoint;
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
}

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
        let want = PclConfig::stored_size(config.image_size);
        if data.side != want {
            return Err(EngineError::Shape(format!(
                "images are stored at {0}x{0}, training at {1} px needs {2}x{2}",
                data.side, config.image_size, want
            )));
        }
        device.seed(config.seed);
        let enc = EncoderConfig::new(config.width, config.feature_dim).with_norm(config.norm);
        let model = enc.init(&device.clone().autodiff());
        let key = model.valid();
        let r = config.queue_size.expect("resolved");
        let queue = l2_normalize(Tensor::random(
            [r, config.feature_dim],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            device,
        ));
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

    /// Embeddings of every image by `encoder`, centre crop, no augmentation, in one pass; with
    /// `with_backbone` also the (L2-normalised) backbone features of the same pass.
    pub async fn embed_all(
        &self,
        encoder: &Encoder,
        data: &Dataset,
        with_backbone: bool,
        progress: &mut dyn FnMut(Phase),
    ) -> Result<Embedded, EngineError> {
        let n = data.len();
        let chunk = 256;
        let (mut heads, mut backbones) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let imgs: Vec<&[u8]> = (start..end).map(|i| data.image(i)).collect();
            let x = center_view(
                upload(&imgs, data.side, &self.device),
                self.config.image_size,
            );
            let f = encoder.backbone(x); // f: [b, 8w]
            if with_backbone {
                backbones.push(l2_normalize(f.clone()));
            }
            heads.push(encoder.head(f)); // [b, feature_dim]
            progress(Phase::Embedding {
                done: end,
                total: n,
            });
        }
        let head = Tensor::cat(heads, 0); // head: [n, feature_dim]
        let backbone = with_backbone.then(|| Tensor::cat(backbones, 0)); // [n, 8w]
        let mut reads = vec![head.clone().reshape([-1])];
        reads.extend(backbone.iter().map(|b| b.clone().reshape([-1])));
        let mut host = read_all(reads).await?.into_iter();
        let head_host = host.next().unwrap_or_default();
        Ok(Embedded {
            head: (head, head_host),
            backbone: backbone.map(|b| (b, host.next().unwrap_or_default())),
        })
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
        } = self.embed_all(&key, data, false, progress).await?;
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
        let summaries = levels
            .iter()
            .map(|l| LevelSummary {
                k: l.k,
                inertia: l.inertia,
                min_size: l.sizes.iter().copied().min().unwrap_or(0),
                max_size: l.sizes.iter().copied().max().unwrap_or(0),
                phi_min: l.phi.iter().cloned().fold(f32::INFINITY, f32::min),
                phi_max: l.phi.iter().cloned().fold(0.0, f32::max),
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
        let p1 = ViewParams::sample(&mut self.rng, b, self.config.augmentation, s);
        let p2 = ViewParams::sample(&mut self.rng, b, self.config.augmentation, s);
        let v1 = augment(x.clone(), &p1, s); // v1: [b, 3, s, s]
        let v2 = augment(x, &p2, s);

        // Training mode: BatchNorm per chunk of the batch; the key batch shuffled across chunks
        // so that no query meets its key in the same statistics (shuffled BN).
        let chunks = self.config.bn_chunks;
        let (q, q_stats) = self.model.forward_train(v1.autodiff(), chunks); // q: [b, d], tracked
        let perm = shuffle_for_bn(b, chunks, &mut self.rng);
        let (k, k_stats) = self.key.forward_shuffled(v2, chunks, &perm); // k: [b, d], no gradient
        let (masked, self_neg) = self_negatives(&idx, &self.queue_ids, n_img, &self.device);
        let masked = masked.filter(|_| self.config.mask_self_negatives);
        let (info, logits) = info_nce(
            q.clone(),
            k.clone(),
            self.queue.clone(),
            self.config.tau,
            masked.map(|m| m.autodiff()),
        );
        let mut protos = Vec::new();
        if let Some(c) = &self.clustering
            && self.config.proto_weight > 0.0
        {
            for (m, level) in c.levels.iter().enumerate() {
                let pos: Vec<u32> = idx.iter().map(|&i| level.assignments[i]).collect();
                let assign = ints(&pos, &self.device).autodiff();
                let cent = c.centroids[m].clone().autodiff();
                let phi = c.phi[m].clone().autodiff();
                let term = match self.config.proto_mode {
                    ProtoMode::Full => proto_full(q.clone(), cent, phi, assign),
                    ProtoMode::Sampled => {
                        let r = self.config.queue_size.unwrap_or(b);
                        let neg = sample_negatives(&pos, level.k, r, &mut self.rng);
                        let neg = (!neg.is_empty()).then(|| ints(&neg, &self.device).autodiff());
                        proto_sampled(q.clone(), cent, phi, assign, neg)
                    }
                };
                protos.push(term);
            }
        }
        let mut total = info.clone();
        if !protos.is_empty() {
            let m = protos.len() as f64;
            let sum = protos
                .iter()
                .cloned()
                .reduce(|a, b| a + b)
                .expect("non-empty");
            total = total + sum.mul_scalar(self.config.proto_weight / m);
        }
        // instance accuracy: positive (column 0) scored highest
        let acc = logits
            .without_autodiff()
            .argmax(1)
            .equal_elem(0)
            .float()
            .mean(); // acc: [1]
        let mut report = vec![
            total.clone().without_autodiff(),
            info.without_autodiff(),
            acc,
        ];
        report.extend(protos.iter().map(|p| p.clone().without_autodiff()));
        let values: Vec<f32> = read_all(report).await?.into_iter().flatten().collect();
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
        let grads = total.backward();
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
            .step(self.model.clone(), &grads, lr)
            .update_running_stats(&q_stats, BN_MOMENTUM);
        // The key encoder averages the query's weights but keeps running statistics of its own
        // (of its shuffled passes), as MoCo's key encoder does.
        let key_stats = self.key.running_stats();
        self.key = ema_update(self.key.clone(), &self.model, self.config.ema_momentum)
            .with_running_stats(&key_stats)
            .update_running_stats(&k_stats, BN_MOMENTUM);
        self.enqueue(k, &idx);

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
