//! One file, over 500 lines: every rule about `PclConfig` (defaults, presets, bounds, the
//! schedule, the time budget) is here, so a setting is read and checked in one place.
//!
//! Training configuration: every knob of PCL with the defaults that suit small data, and the
//! rules that derive data-dependent defaults (K per level, queue size, batch) from the image count.

use serde::{Deserialize, Serialize};

use super::error::EngineError;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtoMode {
    /// Softmax over all K prototypes of a level (the paper's formula; exact and cheap at small K).
    Full,
    /// The official code's choice: the positive prototype and r sampled negative prototypes.
    Sampled,
}

/// A named augmentation recipe: it fills in every augmentation setting left empty.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AugPreset {
    /// PCL v1: RandomResizedCrop(0.2-1), ColorJitter(0.4,0.4,0.4,0.4) always, Grayscale 0.2, HFlip.
    V1,
    /// PCL v2 / MoCo v2: ColorJitter(0.4,0.4,0.4,0.1) p 0.8, Grayscale 0.2, blur (>= 64 px), HFlip.
    V2,
}

impl AugPreset {
    /// The recipe's values at training size `image_size`.
    pub fn recipe(self, image_size: usize) -> Augmentation {
        let v1 = self == AugPreset::V1;
        Augmentation {
            crop_scale: [0.2, 1.0],
            flip: true,
            jitter_strength: 0.4,
            jitter_prob: if v1 { 1.0 } else { 0.8 },
            hue: if v1 { 0.4 } else { 0.1 },
            grayscale_prob: 0.2,
            // MoCo v2's blur is for photographs of 224 px; below 64 px it erases what is left.
            blur_prob: if !v1 && image_size >= 64 { 0.5 } else { 0.0 },
        }
    }
}

/// What the two views of an image may differ in: the augmentation of a run, every value filled
/// in ([`PclConfig::aug`]).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Augmentation {
    /// RandomResizedCrop's area range, as shares of the image (aspect ratio 3/4 to 4/3).
    pub crop_scale: [f64; 2],
    /// Horizontal flip with probability one half.
    pub flip: bool,
    /// Brightness, contrast and saturation factors drawn from 1 - s to 1 + s.
    pub jitter_strength: f64,
    /// Probability that a view's colours are jittered at all.
    pub jitter_prob: f64,
    /// Hue shift drawn from -h to h (a share of the colour circle), with the jitter.
    pub hue: f64,
    pub grayscale_prob: f64,
    /// Probability of a Gaussian blur (sigma 0.1-2 at 224 px, scaled to the image).
    pub blur_prob: f64,
}

/// How the encoder normalises its activations.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// BatchNorm over ghost batches with the key batch shuffled across them (the official
    /// choice); running statistics in evaluation mode.
    #[default]
    Batch,
    /// GroupNorm: no batch statistics, training and evaluation alike.
    Group,
}

/// All settings of a run. `None` / empty fields are derived from the data by [`PclConfig::resolve`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PclConfig {
    /// Input side in pixels (32, 64 or 96): the images are stored at 9/8 of it, and the E-step,
    /// the evaluations and exports see their centre crops at this side.
    pub image_size: usize,
    /// The training views' side in pixels, from 16 up to `image_size` (`None`: `image_size`).
    /// Smaller views cost less arithmetic per step; the encoder pools over space, so it still
    /// embeds centre crops at `image_size`.
    pub view_size: Option<usize>,
    /// Channels of the first conv layer; the three stride-2 blocks double it each time.
    pub width: usize,
    /// Size of the L2-normalised embedding (the MLP head's output).
    pub feature_dim: usize,
    pub batch_size: usize,
    pub epochs: usize,
    /// Epochs of InfoNCE only before the first E-step.
    pub warmup_epochs: usize,
    /// Run the E-step before every `estep_every`-th epoch after warm-up.
    pub estep_every: usize,
    pub lr: f64,
    pub sgd_momentum: f64,
    pub weight_decay: f64,
    /// Cosine learning-rate schedule over all epochs (else constant).
    pub cosine: bool,
    /// tau: temperature of InfoNCE, and the mean of the concentrations phi.
    pub tau: f64,
    /// m: momentum of the key encoder's EMA.
    pub ema_momentum: f64,
    /// r: negatives in the queue. Derived: at most half the images.
    pub queue_size: Option<usize>,
    /// K per level, coarse to fine. Derived when empty. (Read with a bound well past the
    /// levels allowed, so that `check` names the limit of a long list.)
    #[serde(deserialize_with = "super::bounded::vec::<_, _, 64>")]
    pub num_clusters: Vec<usize>,
    pub proto_mode: ProtoMode,
    /// Weight of the prototype term (0 = InfoNCE only, the MoCo baseline).
    pub proto_weight: f64,
    pub kmeans_iters: usize,
    /// Restarts of k-means per level; the lowest inertia wins.
    pub kmeans_restarts: usize,
    /// The augmentation recipe; the settings below, where given, override its values.
    pub augmentation: AugPreset,
    /// Smallest crop, as a share of the image's area (RandomResizedCrop's scale).
    pub crop_min_scale: Option<f64>,
    /// Largest crop, as a share of the image's area.
    pub crop_max_scale: Option<f64>,
    pub flip: Option<bool>,
    /// Colour jitter: brightness, contrast and saturation factors within 1 +- this.
    pub jitter_strength: Option<f64>,
    pub jitter_prob: Option<f64>,
    /// Largest hue shift of the jitter, as a share of the colour circle.
    pub hue: Option<f64>,
    pub grayscale_prob: Option<f64>,
    pub blur_prob: Option<f64>,
    pub seed: u64,
    /// Normalisation layers of the encoder.
    pub norm: NormKind,
    /// Ghost batches of BatchNorm: the batch is normalised in this many equal chunks, and the
    /// key batch is shuffled across them.
    pub bn_chunks: usize,
    /// Mask the queue's keys of a query's own image out of its negatives.
    pub mask_self_negatives: bool,
    /// Time budget in minutes: the run re-plans `epochs` (and the warm-up, in proportion) after
    /// every epoch from its measured speed, so that the cosine schedule ends at the budget.
    /// `epochs` is then only the first plan.
    pub minutes: Option<f64>,
}

impl Default for PclConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            view_size: None,
            width: 32,
            feature_dim: 128,
            batch_size: 256,
            epochs: 40,
            // Prototypes of an immature embedding pull images into wrong groups: on the sample
            // set, 15 warm-up epochs gave kNN 0.572 / AMI 0.210 against 0.539 / 0.199 with 5.
            warmup_epochs: 15,
            estep_every: 1,
            // The official PCL / MoCo learning rate; 0.06 collapsed the embedding on small sets.
            lr: 0.03,
            sgd_momentum: 0.9,
            weight_decay: 5e-4,
            cosine: true,
            tau: 0.2,
            ema_momentum: 0.99,
            queue_size: None,
            num_clusters: Vec::new(),
            proto_mode: ProtoMode::Full,
            // Half the official weight: at 1.0 on a few hundred to a few thousand images the
            // prototype term dominated and cost kNN accuracy (planted groups: 0.68 against
            // InfoNCE-only 0.88; 0.81 at 0.5). See README "Learning quality".
            proto_weight: 0.5,
            kmeans_iters: 20,
            kmeans_restarts: 3,
            augmentation: AugPreset::V2,
            crop_min_scale: None,
            crop_max_scale: None,
            flip: None,
            jitter_strength: None,
            jitter_prob: None,
            hue: None,
            grayscale_prob: None,
            blur_prob: None,
            seed: 0,
            norm: NormKind::Batch,
            bn_chunks: 4,
            mask_self_negatives: true,
            minutes: None,
        }
    }
}

/// Smallest number of images the trainer accepts: below it neither a batch nor clusters make sense.
pub const MIN_IMAGES: usize = 16;
/// The arithmetic rate [`PclConfig::check_demands`] assumes: a fast GPU's, so that only
/// settings no machine can run in time are refused.
pub const FAST_DEVICE_FLOPS: f64 = 1e12;

/// The memory a run may use here: a wasm worker's 4 GiB address space; natively the machine's
/// memory (Linux's /proc/meminfo; 16 GB where it cannot be read).
pub fn machine_memory_bytes() -> f64 {
    if cfg!(target_arch = "wasm32") {
        return 4.0 * (1u64 << 30) as f64;
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024.0)
        })
        .unwrap_or(16e9)
}

/// Estimated peak memory and E-step arithmetic of a run ([`PclConfig::demands`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demands {
    pub memory_bytes: f64,
    pub estep_flops: f64,
}

/// The largest `feature_dim`.
pub const MAX_FEATURE_DIM: usize = 1024;

/// What to tell a user who has fewer than [`MIN_IMAGES`] images.
pub fn too_few_images(n: usize) -> String {
    let have = match n {
        0 => "no images loaded".to_string(),
        1 => "1 image loaded".to_string(),
        n => format!("{n} images loaded"),
    };
    format!(
        "{have}; training needs at least {MIN_IMAGES} (contrast needs other images to tell \
         each one apart from)"
    )
}

/// The augmentation settings that may be empty (then the recipe's value, [`PclConfig::aug`]).
pub const AUGMENTATION_KEYS: [&str; 8] = [
    "crop_min_scale",
    "crop_max_scale",
    "flip",
    "jitter_strength",
    "jitter_prob",
    "hue",
    "grayscale_prob",
    "blur_prob",
];

/// The allowed range of a numeric setting, and why where it is not obvious.
pub struct Limit {
    pub key: &'static str,
    pub min: f64,
    pub max: f64,
    /// The minimum itself is not allowed (a rate or temperature of 0).
    pub open_min: bool,
    pub why: &'static str,
}

const fn lim(key: &'static str, min: f64, max: f64, open_min: bool, why: &'static str) -> Limit {
    Limit {
        key,
        min,
        max,
        open_min,
        why,
    }
}

/// Every bound of the settings (the README's limits section lists them).
pub const LIMITS: &[Limit] = &[
    lim(
        "width",
        1.0,
        128.0,
        false,
        " (the encoder's memory grows with its square)",
    ),
    lim("feature_dim", 1.0, MAX_FEATURE_DIM as f64, false, ""),
    lim("batch_size", 2.0, 4096.0, false, ""),
    lim("epochs", 1.0, 100_000.0, false, ""),
    lim("warmup_epochs", 0.0, 100_000.0, false, ""),
    lim("estep_every", 1.0, 1000.0, false, ""),
    lim(
        "lr",
        0.0,
        1e9,
        true,
        " (high values diverge: a lesson, caught and undone)",
    ),
    lim("sgd_momentum", 0.0, 0.999, false, ""),
    lim("weight_decay", 0.0, 0.1, false, ""),
    lim("tau", 0.0, 10.0, true, ""),
    lim("ema_momentum", 0.0, 0.9999, false, ""),
    lim(
        "queue_size",
        1.0,
        65_536.0,
        false,
        " (and at most half the images)",
    ),
    lim(
        "levels",
        0.0,
        8.0,
        false,
        " clustering levels (num_clusters entries)",
    ),
    lim(
        "num_clusters",
        2.0,
        50_000.0,
        false,
        " per level (and at most the images)",
    ),
    lim("proto_weight", 0.0, 100.0, false, ""),
    lim("kmeans_iters", 1.0, 1000.0, false, ""),
    lim("kmeans_restarts", 1.0, 100.0, false, ""),
    lim(
        "bn_chunks",
        2.0,
        64.0,
        false,
        " (BatchNorm; 2 or more to shuffle keys across)",
    ),
    lim("minutes", 0.0, 1440.0, true, " (a day)"),
    lim(
        "crop_min_scale",
        0.0,
        1.0,
        true,
        " (a share of the image's area; at most crop_max_scale)",
    ),
    lim(
        "crop_max_scale",
        0.0,
        1.0,
        true,
        " (a share of the image's area)",
    ),
    lim(
        "jitter_strength",
        0.0,
        1.0,
        false,
        " (factors from 1 - s to 1 + s)",
    ),
    lim("jitter_prob", 0.0, 1.0, false, " (a probability)"),
    lim("hue", 0.0, 0.5, false, " (a share of the colour circle)"),
    lim("grayscale_prob", 0.0, 1.0, false, " (a probability)"),
    lim("blur_prob", 0.0, 1.0, false, " (a probability)"),
];

fn limit(key: &str) -> &'static Limit {
    LIMITS
        .iter()
        .find(|l| l.key == key)
        .expect("every checked setting has a limit")
}

/// Levenshtein distance, for "did you mean" on a misspelt setting.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The presets of the page and of `pcl train --preset`: each is defined by the time it may take
/// (a budget the run fits itself to) and the settings measured to learn most within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Two minutes: what a workshop sees first.
    Quick,
    /// Ten minutes.
    Thorough,
    /// The quick demo without the prototype term (InfoNCE only, the MoCo baseline).
    InfoNce,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Quick, Preset::Thorough, Preset::InfoNce];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Quick => "quick demo",
            Preset::Thorough => "thorough",
            Preset::InfoNce => "InfoNCE only (MoCo)",
        }
    }

    /// The word `pcl train --preset` takes.
    pub fn key(self) -> &'static str {
        match self {
            Preset::Quick => "quick",
            Preset::Thorough => "thorough",
            Preset::InfoNce => "infonce",
        }
    }

    pub fn from_key(key: &str) -> Result<Preset, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.key() == key)
            .ok_or_else(|| format!("--preset is quick, thorough or infonce, not '{key}'"))
    }

    /// The settings of this preset; fields derived from the data stay empty.
    pub fn config(self) -> PclConfig {
        match self {
            // `epochs` is only the first plan (the budget re-plans it); the warm-up keeps its
            // share of the run: a thirtieth. At 60 epochs on the sample set, 3 seeds, a warm-up
            // of 2 epochs gave PCL AMI 0.249 +- 0.005 against InfoNCE only's 0.236 +- 0.003;
            // of 10 (a sixth, the share before), 0.239 +- 0.001 (docs/measurements.md).
            //
            // Crops of at least 40% of the image instead of MoCo v2's 20%: at 60 epochs, 3 seeds,
            // AMI 0.280 +- 0.014 against 0.250 +- 0.010 on the sample set, 0.568 +- 0.062 against
            // 0.442 +- 0.149 on the digit scans, level on the textures; keeping colour (no hue
            // shift, no grayscale) lost 0.047 on the sample set (docs/measurements.md).
            //
            // Batches of 64, not 256: a two-minute run of a few thousand images is a few hundred
            // SGD steps at 256, and steps, not epochs, are what the encoder learns from. At 40
            // epochs (what the page trains in its two minutes) on the sample set, 3 seeds, AMI
            // 0.276 +- 0.009 against 0.232 +- 0.021; 128 gave 0.254, 32 0.267
            // (docs/measurements.md).
            //
            // Hue shifts up to 0.4 of the colour wheel (PCL v1's) instead of MoCo v2's 0.1: at
            // 30 epochs (what the page trains) on the sample set, 3 seeds, AMI 0.281 +- 0.014
            // against 0.254 +- 0.014, ahead in every seed; 0.5 gave 0.265, with half the views
            // grey 0.273. A hue shift changes nothing in a grey image (docs/measurements.md).
            //
            // A queue of the last 256 keys (four batches), not half the images: in a short run
            // the encoder moves fast and older keys are negatives of an encoder that is gone. At
            // 30 epochs, 3 seeds, AMI 0.300 +- 0.011 against 0.281 +- 0.014, ahead in every
            // seed; at 60, 0.310 +- 0.008 against 0.310 +- 0.004 (docs/measurements.md).
            //
            // Training views of 24 px; the encoder pools over space, so it embeds whole images
            // at 32 px as before. A crop shows its object larger than the whole image does, and
            // a smaller view evens that out (FixRes). In 2 minutes, 3 seeds: AMI 0.324 +- 0.009
            // against 0.307 +- 0.010 with views of 32 px (raw pixels 0.296); in the page above
            // raw pixels in 3 runs of 3 against 2 of 3 (docs/measurements.md).
            Preset::Quick => PclConfig {
                view_size: Some(24),
                width: 16,
                feature_dim: 64,
                batch_size: 64,
                epochs: 60,
                warmup_epochs: 2,
                kmeans_restarts: 1,
                minutes: Some(2.0),
                crop_min_scale: Some(0.4),
                hue: Some(0.4),
                queue_size: Some(256),
                ..PclConfig::default()
            },
            // The quick demo's training with a wider encoder and five times the budget. Its
            // recipe (batches of 64, views of 24 px, crops from 40%, hue shifts up to 0.4, a
            // queue of 256 keys) instead of MoCo v2's, in 10 minutes, 3 seeds on the sample set:
            // PCL AMI 0.363 +- 0.011 against 0.336 +- 0.015, InfoNCE only 0.304 +- 0.020
            // against 0.327 +- 0.008 (raw pixels 0.296); the grey folders in
            // docs/measurements.md.
            Preset::Thorough => PclConfig {
                width: 32,
                feature_dim: 128,
                minutes: Some(10.0),
                ..Preset::Quick.config()
            },
            Preset::InfoNce => Preset::Quick.config().info_nce_only(),
        }
    }
}

/// Epochs that fit a time budget: the largest E such that the remaining epochs `epoch..E`, each
/// `train_secs` plus `estep_secs` where `estep_before` says an E-step runs, fit in
/// `remaining_secs` (E = `epoch`, the run ends, when not even half an epoch fits; at least 1).
/// `warmup_share` of E is the warm-up while it has not started.
pub fn epochs_for_budget(
    config: &PclConfig,
    epoch: usize,
    remaining_secs: f64,
    train_secs: f64,
    estep_secs: f64,
    warmup_share: f64,
) -> (usize, usize) {
    const MAX_EPOCHS: usize = 100_000;
    let plan = |e: usize| {
        let mut c = config.clone();
        c.epochs = e;
        if epoch < config.warmup_epochs || config.warmup_epochs == 0 {
            // The warm-up has not ended: it keeps its share of the run, never ending before now.
            c.warmup_epochs = ((e as f64 * warmup_share).round() as usize)
                .max(epoch)
                .min(e.saturating_sub(1));
        }
        c
    };
    // The epochs left and the E-steps among them, counted in closed form: a plan is checked in
    // constant time, so planning is linear in the epochs however large the budget.
    let cost = |c: &PclConfig| -> f64 {
        let left = c.epochs.saturating_sub(epoch);
        (left as f64) * train_secs + c.esteps_between(epoch, c.epochs) as f64 * estep_secs
    };
    if remaining_secs < 0.5 * train_secs {
        let c = plan(epoch.max(1));
        return (c.epochs, c.warmup_epochs.min(config.warmup_epochs));
    }
    let mut best = plan(epoch + 1);
    let mut e = epoch + 2;
    while e <= MAX_EPOCHS {
        let c = plan(e);
        if cost(&c) > remaining_secs {
            break;
        }
        best = c;
        e += 1;
    }
    (best.epochs, best.warmup_epochs)
}

impl PclConfig {
    /// The "InfoNCE only (MoCo)" baseline of the same settings.
    pub fn info_nce_only(mut self) -> Self {
        self.proto_weight = 0.0;
        self
    }

    /// Default K per level for `n` images: three granularities, coarse to fine, each in [2, n/2].
    pub fn default_clusters(n: usize) -> Vec<usize> {
        let mut ks: Vec<usize> = [n / 100, n / 25, n / 10]
            .iter()
            .map(|&k| k.clamp(2, (n / 2).max(2)))
            .collect();
        ks.dedup();
        ks
    }

    /// Every setting within its bounds ([`LIMITS`]); the message names the setting, its value
    /// and the allowed range. Bounds keep memory and time finite whatever a file says.
    pub fn check(&self) -> Result<(), EngineError> {
        let int = |key: &str, v: usize| -> Result<(), EngineError> {
            let l = limit(key);
            if (v as f64) < l.min || (v as f64) > l.max {
                return Err(EngineError::Config(format!(
                    "{key} is {v}; allowed: {} to {}{}",
                    l.min, l.max, l.why
                )));
            }
            Ok(())
        };
        let real = |key: &str, v: f64| -> Result<(), EngineError> {
            let l = limit(key);
            let inside =
                v.is_finite() && v <= l.max && if l.open_min { v > l.min } else { v >= l.min };
            if !inside {
                let from = if l.open_min { "above" } else { "from" };
                return Err(EngineError::Config(format!(
                    "{key} is {v}; allowed: {from} {} up to {}{}",
                    l.min, l.max, l.why
                )));
            }
            Ok(())
        };
        if ![32, 64, 96].contains(&self.image_size) {
            return Err(EngineError::Config(format!(
                "image_size is {}; allowed: 32, 64 or 96",
                self.image_size
            )));
        }
        if let Some(v) = self.view_size
            && !(16..=self.image_size).contains(&v)
        {
            return Err(EngineError::Config(format!(
                "view_size is {v}; allowed: from 16 up to image_size ({})",
                self.image_size
            )));
        }
        int("width", self.width)?;
        int("feature_dim", self.feature_dim)?;
        int("batch_size", self.batch_size)?;
        int("epochs", self.epochs)?;
        int("warmup_epochs", self.warmup_epochs)?;
        int("estep_every", self.estep_every)?;
        real("lr", self.lr)?;
        real("sgd_momentum", self.sgd_momentum)?;
        real("weight_decay", self.weight_decay)?;
        real("tau", self.tau)?;
        real("ema_momentum", self.ema_momentum)?;
        if let Some(r) = self.queue_size {
            int("queue_size", r)?;
        }
        int("levels", self.num_clusters.len())?;
        for &k in &self.num_clusters {
            int("num_clusters", k)?;
        }
        real("proto_weight", self.proto_weight)?;
        int("kmeans_iters", self.kmeans_iters)?;
        int("kmeans_restarts", self.kmeans_restarts)?;
        if self.norm == NormKind::Batch {
            int("bn_chunks", self.bn_chunks)?;
        }
        if let Some(m) = self.minutes {
            real("minutes", m)?;
        }
        let optional = [
            ("crop_min_scale", self.crop_min_scale),
            ("crop_max_scale", self.crop_max_scale),
            ("jitter_strength", self.jitter_strength),
            ("jitter_prob", self.jitter_prob),
            ("hue", self.hue),
            ("grayscale_prob", self.grayscale_prob),
            ("blur_prob", self.blur_prob),
        ];
        for (key, v) in optional {
            if let Some(v) = v {
                real(key, v)?;
            }
        }
        let [lo, hi] = self.aug().crop_scale;
        if lo > hi {
            return Err(EngineError::Config(format!(
                "crop_min_scale is {lo}, above crop_max_scale {hi}; the smallest crop cannot be \
                 larger than the largest"
            )));
        }
        Ok(())
    }

    /// The training views' side: `view_size`, else `image_size`.
    pub fn view_side(&self) -> usize {
        self.view_size.unwrap_or(self.image_size)
    }

    /// The run's augmentation: the recipe ([`PclConfig::augmentation`]) with every setting
    /// given here in its place.
    pub fn aug(&self) -> Augmentation {
        let r = self.augmentation.recipe(self.image_size);
        Augmentation {
            crop_scale: [
                self.crop_min_scale.unwrap_or(r.crop_scale[0]),
                self.crop_max_scale.unwrap_or(r.crop_scale[1]),
            ],
            flip: self.flip.unwrap_or(r.flip),
            jitter_strength: self.jitter_strength.unwrap_or(r.jitter_strength),
            jitter_prob: self.jitter_prob.unwrap_or(r.jitter_prob),
            hue: self.hue.unwrap_or(r.hue),
            grayscale_prob: self.grayscale_prob.unwrap_or(r.grayscale_prob),
            blur_prob: self.blur_prob.unwrap_or(r.blur_prob),
        }
    }

    /// Settings from JSON (a `--config` file, a page's settings): the fields given over
    /// `base`; an unknown key is an error naming the nearest known one.
    pub fn from_json(base: &PclConfig, json: &serde_json::Value) -> Result<PclConfig, String> {
        let given = json
            .as_object()
            .ok_or("settings must be a JSON object of setting: value")?;
        let mut merged = serde_json::to_value(base).map_err(|e| e.to_string())?;
        let known = merged
            .as_object_mut()
            .expect("a struct serialises as an object");
        for (key, value) in given {
            if !known.contains_key(key) {
                let nearest = known
                    .keys()
                    .min_by_key(|k| edit_distance(k, key))
                    .expect("settings exist");
                return Err(format!(
                    "unknown setting '{key}'; did you mean '{nearest}'?"
                ));
            }
            known.insert(key.clone(), value.clone());
        }
        let config: PclConfig =
            serde_json::from_value(merged).map_err(|e| format!("not valid settings: {e}"))?;
        config.check().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// Fills derived fields for a data set of `n` images and checks every setting.
    pub fn resolve(&self, n: usize) -> Result<PclConfig, EngineError> {
        if n < MIN_IMAGES {
            return Err(EngineError::Config(too_few_images(n)));
        }
        self.check()?;
        let mut c = self.clone();
        // Small data gets smaller batches: at least eight steps per epoch where the data allows
        // (a few hundred images in batches of 256 would give SGD only a handful of steps), and a
        // batch never exceeds half the data.
        let cap = (n / 8).max(16).min(n / 2);
        c.batch_size = c.batch_size.min(cap).max(2);
        if c.norm == NormKind::Batch {
            if c.bn_chunks < 2 {
                return Err(EngineError::Config(format!(
                    "bn_chunks is {}; BatchNorm needs at least 2 chunks to shuffle the keys \
                     across (or norm \"group\")",
                    c.bn_chunks
                )));
            }
            // Equal chunks of at least two images each.
            c.bn_chunks = c.bn_chunks.min(c.batch_size / 2).max(2);
            c.batch_size = (c.batch_size - c.batch_size % c.bn_chunks).max(c.bn_chunks);
        }
        let max_queue = n / 2;
        let r = c
            .queue_size
            .unwrap_or(4096)
            .min(max_queue)
            .max(c.batch_size);
        c.queue_size = Some(r);
        if c.num_clusters.is_empty() {
            c.num_clusters = Self::default_clusters(n);
        }
        for &k in &c.num_clusters {
            if k < 2 || k > n {
                return Err(EngineError::Config(format!(
                    "K = {k} clusters cannot be formed from {n} images (need 2 <= K <= {n})"
                )));
            }
        }
        c.estep_every = c.estep_every.max(1);
        c.kmeans_restarts = c.kmeans_restarts.max(1);
        c.kmeans_iters = c.kmeans_iters.max(1);
        Ok(c)
    }

    /// What a run of these (resolved) settings on `n` images asks of the machine, estimated
    /// before it starts: settings that pass every limit one by one can still be impossible
    /// together (width 128 with a batch of 1,000; K = 50,000 at 8 levels with 1,000
    /// iterations and 100 restarts).
    pub fn demands(&self, n: usize) -> Demands {
        let (s, w, b) = (
            self.image_size as f64,
            self.width as f64,
            self.batch_size as f64,
        );
        let (d, n_f) = (self.feature_dim as f64, n as f64);
        // One image's activations: w channels at s x s, then 2w, 4w, 8w at a quarter of the
        // pixels each time (1.875 s^2 w values a layer); training keeps about sixteen such
        // tensors (convolution, normalisation, ReLU, gradients, the CPU path's gathered taps at
        // nine times the input); the key pass (no gradient) a third as much.
        let image_values = 1.875 * s * s * w;
        let step_bytes = image_values * 16.0 * 4.0 * b * (1.0 + 1.0 / 3.0);
        // Parameters: four 3x3 convolutions and the head; with the key encoder, velocity,
        // gradients and the state kept to undo a step.
        let params =
            9.0 * (3.0 * w + 2.0 * w * w + 8.0 * w * w + 32.0 * w * w) + 64.0 * w * w + 8.0 * w * d;
        let params_bytes = params * 4.0 * 5.0;
        let stored = Self::stored_size(self.image_size) as f64;
        let data_bytes = n_f * stored * stored * 3.0;
        let queue_bytes = self.queue_size.unwrap_or(0) as f64 * d * 4.0;
        // The E-step: every image's embedding, a block of about a million distances, each
        // level's centroids, kept on the host too.
        let k_sum: f64 = self.num_clusters.iter().map(|&k| k as f64).sum();
        let estep_bytes = (n_f * d + 1e6 + k_sum * d) * 4.0 * 2.0;
        let memory_bytes = step_bytes.max(estep_bytes) + params_bytes + data_bytes + queue_bytes;
        // Lloyd's assignment step: 2 n K d per iteration, every restart and level; and the
        // embedding pass (a forward of every image: 18 s^2 (3w + 1.5 w^2) for the convolutions).
        let forward = 18.0 * s * s * (3.0 * w + 1.5 * w * w);
        let iterations = (self.kmeans_iters * self.kmeans_restarts) as f64;
        let estep_flops = 2.0 * n_f * k_sum * d * iterations + n_f * forward;
        Demands {
            memory_bytes,
            estep_flops,
        }
    }

    /// Refuses settings whose [`PclConfig::demands`] cannot fit `memory_bytes` or whose E-step
    /// would take beyond 100 times the time budget (a day without one) even on a fast device
    /// ([`FAST_DEVICE_FLOPS`]); the message says what to lower.
    pub fn check_demands(&self, n: usize, memory_bytes: f64) -> Result<(), EngineError> {
        let need = self.demands(n);
        let gb = |b: f64| b / 1e9;
        if need.memory_bytes > memory_bytes {
            return Err(EngineError::Config(format!(
                "these settings need about {:.1} GB for {n} images, more than the {:.1} GB this \
                 device has; lower the width, the batch size or the image size",
                gb(need.memory_bytes),
                gb(memory_bytes)
            )));
        }
        let budget_s = self.minutes.map_or(86_400.0, |m| m * 60.0);
        let estep_s = need.estep_flops / FAST_DEVICE_FLOPS;
        if estep_s > 100.0 * budget_s {
            return Err(EngineError::Config(format!(
                "one E-step of these settings would take about {:.0} minutes even on a fast GPU, \
                 over 100 times the run's {:.0} minutes; lower the clusters per level, the \
                 levels, kmeans_iters or kmeans_restarts",
                estep_s / 60.0,
                budget_s / 60.0
            )));
        }
        Ok(())
    }

    /// Number of the stored (pre-crop) image side: a little larger than the training size so
    /// that crops have room.
    pub const fn stored_size(image_size: usize) -> usize {
        image_size * 9 / 8
    }

    /// Learning rate at fractional epoch `t` (cosine decay to 0, as MoCo v2).
    pub fn lr_at(&self, t: f64) -> f64 {
        if self.cosine {
            self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t / self.epochs as f64).cos())
        } else {
            self.lr
        }
    }

    /// How many epochs in `from..to` have an E-step before them ([`PclConfig::estep_before`]).
    pub fn esteps_between(&self, from: usize, to: usize) -> usize {
        let prototypes = self.proto_weight > 0.0;
        if !prototypes {
            return 0;
        }
        let every = self.estep_every.max(1);
        let w = self.warmup_epochs;
        let (a, b) = (from.max(w) - w, to.max(w) - w);
        // Multiples of `every` in a..b.
        if b <= a {
            0
        } else {
            b.div_ceil(every) - a.div_ceil(every)
        }
    }

    /// Whether the E-step runs before `epoch` (0-based).
    pub fn estep_before(&self, epoch: usize) -> bool {
        self.proto_weight > 0.0
            && epoch >= self.warmup_epochs
            && (epoch - self.warmup_epochs).is_multiple_of(self.estep_every.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_defaults_respect_the_data() {
        let c = PclConfig::default().resolve(2000).unwrap();
        assert_eq!(c.num_clusters, vec![20, 80, 200]);
        assert_eq!(c.queue_size, Some(1000));
        assert_eq!(c.batch_size, 248); // 250, rounded to BatchNorm's 4 equal chunks
        assert_eq!(
            PclConfig::default().resolve(10_000).unwrap().batch_size,
            256
        );
        let small = PclConfig::default().resolve(40).unwrap();
        assert_eq!(small.batch_size, 16);
        assert!(small.queue_size.unwrap() <= 20);
        assert!(small.num_clusters.iter().all(|&k| (2..=20).contains(&k)));
    }

    #[test]
    fn bad_settings_are_errors_not_panics() {
        let e = PclConfig::default().resolve(3).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        let c = PclConfig {
            num_clusters: vec![500],
            ..Default::default()
        };
        let e = c.resolve(100).unwrap_err();
        assert!(e.to_string().contains("K = 500"), "{e}");
    }

    #[test]
    fn augmentation_settings_override_their_recipe_and_older_sessions_keep_theirs() {
        let d = PclConfig::default();
        assert_eq!(d.aug(), AugPreset::V2.recipe(32));
        assert_eq!(d.aug().blur_prob, 0.0, "no blur at 32 px");
        let big = PclConfig {
            image_size: 64,
            ..d.clone()
        };
        assert_eq!(big.aug().blur_prob, 0.5);
        // A session's settings from before these fields: its recipe, in full.
        let mut old = serde_json::to_value(PclConfig::default()).unwrap();
        for key in AUGMENTATION_KEYS {
            old.as_object_mut().unwrap().remove(key);
        }
        old["augmentation"] = serde_json::json!("v1");
        let old: PclConfig = serde_json::from_value(old).unwrap();
        assert_eq!(old.aug(), AugPreset::V1.recipe(32));
        let c = PclConfig::from_json(&d, &serde_json::json!({"hue": 0, "flip": false})).unwrap();
        assert_eq!(
            (c.aug().hue, c.aug().flip, c.aug().jitter_prob),
            (0.0, false, 0.8)
        );
        for (json, message) in [
            (
                serde_json::json!({"hue": 0.6}),
                "hue is 0.6; allowed: from 0 up to 0.5",
            ),
            (
                serde_json::json!({"blur_prob": "often"}),
                "not valid settings",
            ),
            (
                serde_json::json!({"jitter_strength": 1.5}),
                "jitter_strength is 1.5",
            ),
            (
                serde_json::json!({"crop_max_scale": 0.1}),
                "above crop_max_scale 0.1",
            ),
        ] {
            let e = PclConfig::from_json(&d, &json).unwrap_err();
            assert!(e.contains(message), "{json}: {e}");
        }
    }

    #[test]
    fn every_setting_has_bounds_that_name_the_range() {
        let bad = |c: PclConfig| c.check().unwrap_err().to_string();
        let d = PclConfig::default;
        assert!(
            bad(PclConfig {
                epochs: usize::MAX,
                ..d()
            })
            .contains("epochs is")
        );
        assert!(bad(PclConfig { width: 4096, ..d() }).contains("1 to 128"));
        assert!(
            bad(PclConfig {
                feature_dim: 1 << 20,
                ..d()
            })
            .contains("feature_dim")
        );
        assert!(
            bad(PclConfig {
                kmeans_restarts: 1 << 40,
                ..d()
            })
            .contains("kmeans_restarts")
        );
        assert!(
            bad(PclConfig {
                weight_decay: -0.1,
                ..d()
            })
            .contains("weight_decay")
        );
        assert!(
            bad(PclConfig {
                sgd_momentum: 5.0,
                ..d()
            })
            .contains("sgd_momentum")
        );
        assert!(
            bad(PclConfig {
                lr: f64::NAN,
                ..d()
            })
            .contains("lr is NaN")
        );
        assert!(bad(PclConfig { lr: 0.0, ..d() }).contains("above 0"));
        assert!(
            bad(PclConfig {
                num_clusters: vec![10; 5000],
                ..d()
            })
            .contains("levels")
        );
        assert!(
            bad(PclConfig {
                minutes: Some(1e9),
                ..d()
            })
            .contains("minutes")
        );
        assert!(
            bad(PclConfig {
                image_size: 48,
                ..d()
            })
            .contains("32, 64 or 96")
        );
        for p in Preset::ALL {
            assert!(p.config().check().is_ok(), "{p:?}");
        }
        // Every bound listed is checked by name (a typo in LIMITS would panic here).
        for l in LIMITS {
            let _ = limit(l.key);
            assert!(l.min <= l.max, "{}", l.key);
        }
    }

    #[test]
    fn settings_files_name_the_nearest_key_for_a_misspelt_one() {
        let base = Preset::Quick.config();
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        let e = PclConfig::from_json(&base, &json(r#"{"epoch": 3}"#)).unwrap_err();
        assert!(
            e.contains("unknown setting 'epoch'") && e.contains("'epochs'"),
            "{e}"
        );
        let e = PclConfig::from_json(&base, &json(r#"{"learning_rate": 0.1, "lr": 1}"#));
        assert!(e.is_err());
        let e = PclConfig::from_json(&base, &json(r#"{"width": 100000}"#)).unwrap_err();
        assert!(e.contains("width is 100000"), "{e}");
        let e = PclConfig::from_json(&base, &json(r#"[1, 2]"#)).unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        let e = PclConfig::from_json(&base, &json(r#"{"epochs": -1}"#)).unwrap_err();
        assert!(e.contains("not valid settings"), "{e}");
        // Given fields over the base; the others stay.
        let c = PclConfig::from_json(&base, &json(r#"{"epochs": 7}"#)).unwrap();
        assert_eq!((c.epochs, c.width), (7, base.width));
    }

    #[test]
    fn a_time_budget_plans_the_epochs_and_keeps_the_warmup_share() {
        let c = PclConfig {
            epochs: 10,
            warmup_epochs: 4,
            ..Default::default()
        };
        // One epoch done at 2 s; 100 s left; E-steps cost 1 s: 4 s of warm-up share.
        let (e, w) = epochs_for_budget(&c, 1, 100.0, 2.0, 1.0, 0.4);
        let planned = PclConfig {
            epochs: e,
            warmup_epochs: w,
            ..c.clone()
        };
        let cost: f64 = (1..e)
            .map(|j| 2.0 + if planned.estep_before(j) { 1.0 } else { 0.0 })
            .sum();
        assert!(
            cost <= 100.0 && cost + 3.0 > 100.0,
            "{e} epochs cost {cost}"
        );
        assert_eq!(w, (e as f64 * 0.4).round() as usize);
        // Once the E-steps have started, the warm-up stays where it was.
        let (_, w) = epochs_for_budget(&c, 6, 100.0, 2.0, 1.0, 0.4);
        assert_eq!(w, 4);
        // No time left: the run ends where it is; a little time: one more epoch.
        assert_eq!(epochs_for_budget(&c, 3, 0.0, 2.0, 1.0, 0.4).0, 3);
        assert_eq!(epochs_for_budget(&c, 3, 1.5, 2.0, 1.0, 0.4).0, 4);
        // Presets: the CLI's words, and their budgets.
        assert_eq!(Preset::from_key("quick").unwrap(), Preset::Quick);
        assert!(
            Preset::from_key("fast")
                .unwrap_err()
                .contains("quick, thorough or infonce")
        );
        assert_eq!(Preset::InfoNce.config().proto_weight, 0.0);
        assert!(Preset::ALL.iter().all(|p| p.config().minutes.is_some()));
        // PCL's presets warm up for a thirtieth of the run (measured: longer cost AMI).
        for p in [Preset::Quick, Preset::Thorough] {
            let c = p.config();
            assert_eq!(c.epochs, 30 * c.warmup_epochs, "{}", p.name());
        }
        let bad = PclConfig {
            minutes: Some(-1.0),
            ..Default::default()
        };
        assert!(
            bad.resolve(100)
                .unwrap_err()
                .to_string()
                .contains("minutes")
        );
    }

    #[test]
    fn schedule_and_estep_timing() {
        let c = PclConfig {
            epochs: 10,
            warmup_epochs: 2,
            estep_every: 2,
            ..Default::default()
        };
        assert!((c.lr_at(0.0) - c.lr).abs() < 1e-12);
        assert!(c.lr_at(10.0).abs() < 1e-12);
        assert!(!c.estep_before(1));
        assert!(c.estep_before(2) && !c.estep_before(3) && c.estep_before(4));
        assert!(!c.clone().info_nce_only().estep_before(2));
    }

    #[test]
    fn esteps_between_counts_what_estep_before_says() {
        for (w, every, pw) in [
            (0, 1, 0.5),
            (3, 1, 0.5),
            (2, 3, 1.0),
            (5, 4, 0.5),
            (2, 1, 0.0),
        ] {
            let c = PclConfig {
                warmup_epochs: w,
                estep_every: every,
                proto_weight: pw,
                ..PclConfig::default()
            };
            for from in 0..12 {
                for to in 0..14 {
                    let counted = (from..to).filter(|&j| c.estep_before(j)).count();
                    assert_eq!(
                        c.esteps_between(from, to),
                        counted,
                        "{w} {every} {from}..{to}"
                    );
                }
            }
        }
    }

    #[test]
    fn planning_a_huge_budget_is_linear_and_bounded() {
        // A day's budget on a folder whose epochs take a millisecond, and a session's
        // `seconds` of -1e300 (refused on load, but the planner must not care): each plan is
        // capped at the most epochs a run may have (checking 100,000 plans of up to 100,000
        // epochs each was the quadratic cost).
        let c = PclConfig {
            epochs: 100,
            warmup_epochs: 10,
            ..PclConfig::default()
        };
        for remaining in [86_400.0, 1e300, f64::MAX] {
            let (e, w) = epochs_for_budget(&c, 5, remaining, 1e-3, 1e-4, 0.1);
            assert_eq!(e, 100_000);
            assert!(w < e);
        }
    }

    #[test]
    fn settings_impossible_together_are_refused_and_the_presets_pass() {
        let gib = 4.0 * (1u64 << 30) as f64;
        // Every preset on the sample set's size and on the most images, in the worker's 4 GiB.
        for p in Preset::ALL {
            for n in [1870, 50_000] {
                let c = p.config().resolve(n).unwrap();
                assert!(
                    c.check_demands(n, gib).is_ok(),
                    "{p:?} {n}: {:?}",
                    c.demands(n)
                );
            }
        }
        // Width 128 with a batch near 1,000.
        let wide = PclConfig {
            width: 128,
            batch_size: 1000,
            ..PclConfig::default()
        }
        .resolve(10_000)
        .unwrap();
        let e = wide.check_demands(10_000, gib).unwrap_err().to_string();
        assert!(e.contains("GB") && e.contains("width"), "{e}");
        // K = 50,000 at 8 levels, 1,000 iterations, 100 restarts, on 50,000 images.
        let slow = PclConfig {
            num_clusters: vec![50_000; 8],
            kmeans_iters: 1000,
            kmeans_restarts: 100,
            minutes: Some(2.0),
            ..PclConfig::default()
        }
        .resolve(50_000)
        .unwrap();
        let e = slow.check_demands(50_000, 1e15).unwrap_err().to_string();
        assert!(e.contains("E-step") && e.contains("kmeans_restarts"), "{e}");
    }
}
