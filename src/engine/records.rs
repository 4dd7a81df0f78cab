//! One file, over 500 lines: every record the engine sends the page, the wire format of both,
//! with its tests; none holds logic of its own beyond its words.
//!
//! The plain records the engine produces and the page shows: no tensor and no burn type, so the
//! page's build (without the `engine` feature) has them too.

use serde::{Deserialize, Serialize};

/// Loss parts and rates of one SGD step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub epoch: usize,
    pub step: usize,
    pub loss: f32,
    pub info_nce: f32,
    /// Prototype term per level (empty before the first E-step).
    #[serde(deserialize_with = "super::bounded::vec::<_, _, 64>")]
    pub proto: Vec<f32>,
    /// Fraction of queries whose positive key scored highest.
    pub instance_acc: f32,
    pub lr: f64,
    /// Set on the last step of an epoch.
    pub epoch_done: bool,
    /// Fraction of queries with an older key of their own image in the queue (masked out of
    /// the negatives unless `mask_self_negatives` is off).
    #[serde(default)]
    pub self_negatives: f32,
}

/// Most step records a run keeps (in memory, in every autosave, in the page's charts).
pub const HISTORY_STEPS: usize = 4096;

/// Keeps a step history bounded: at [`HISTORY_STEPS`] records its older half keeps every other
/// record, so recent steps stay dense and the whole run stays drawn.
pub fn thin_history(history: &mut Vec<StepRecord>) {
    if history.len() < HISTORY_STEPS {
        return;
    }
    let half = history.len() / 2;
    let mut i = 0;
    history.retain(|_| {
        i += 1;
        i > half || i % 2 == 1
    });
}

/// Summary of an E-step, per level.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LevelSummary {
    pub k: usize,
    pub inertia: f64,
    pub min_size: usize,
    pub max_size: usize,
    pub phi_min: f32,
    pub phi_max: f32,
    /// The coarsest level only: its clusters, largest first, each with its most typical images
    /// (the page's picture of what an E-step found).
    #[serde(default)]
    pub prototypes: Vec<Prototype>,
}

/// A cluster of an E-step: its size, concentration and the images nearest its prototype.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Prototype {
    pub cluster: u32,
    pub size: usize,
    pub phi: f32,
    /// Image indices, nearest the prototype first.
    pub typical: Vec<u32>,
}

/// Images shown per prototype.
pub const TYPICAL_IMAGES: usize = 4;

/// `level`'s clusters, largest first, each with the [`TYPICAL_IMAGES`] members whose unit
/// embeddings (`features`, [n, d] row-major) lie nearest its prototype (highest dot product).
pub fn prototypes(
    assignments: &[u32],
    centroids: &[f32],
    phi: &[f32],
    sizes: &[usize],
    features: &[f32],
    d: usize,
) -> Vec<Prototype> {
    let k = sizes.len();
    let mut best: Vec<Vec<(f32, u32)>> = vec![Vec::new(); k];
    for (i, &c) in assignments.iter().enumerate() {
        let (c, row) = (c as usize, &features[i * d..(i + 1) * d]);
        let Some(centre) = centroids.get(c * d..(c + 1) * d) else {
            continue;
        };
        let score: f32 = row.iter().zip(centre).map(|(a, b)| a * b).sum();
        let list = &mut best[c];
        list.push((score, i as u32));
        if list.len() > TYPICAL_IMAGES {
            list.sort_by(|a, b| b.0.total_cmp(&a.0));
            list.truncate(TYPICAL_IMAGES);
        }
    }
    let mut out: Vec<Prototype> = best
        .into_iter()
        .enumerate()
        .map(|(c, mut list)| {
            list.sort_by(|a, b| b.0.total_cmp(&a.0));
            Prototype {
                cluster: c as u32,
                size: sizes[c],
                phi: phi.get(c).copied().unwrap_or(0.0),
                typical: list.into_iter().map(|(_, i)| i).collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.size.cmp(&a.size).then(a.cluster.cmp(&b.cluster)));
    out
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub knn_accuracy: f64,
    pub ami: f64,
    pub nmi: f64,
    pub linear_accuracy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterCard {
    pub size: usize,
    /// Concentration phi of the prototype (lower = tighter cluster).
    pub phi: f32,
    /// Member image indices, the most typical (closest to the prototype) first.
    pub members: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LevelView {
    pub k: usize,
    pub inertia: f64,
    /// Clusters, largest first.
    pub clusters: Vec<ClusterCard>,
    /// Per image, the index into `clusters`.
    pub assignments: Vec<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub epoch: usize,
    /// kNN, AMI / NMI of k-means with K = classes, linear probe.
    pub report: EvalReport,
    /// AMI and NMI of each clustering level against the labels.
    pub level_ami: Vec<f64>,
    pub level_nmi: Vec<f64>,
    /// The same against the fine labels (`coarse/fine` folders), where every image has one.
    #[serde(default)]
    pub level_ami_fine: Vec<f64>,
    #[serde(default)]
    pub level_nmi_fine: Vec<f64>,
    /// Raw pixels' AMI (k-means, K = classes) against the labels and the fine labels: the line
    /// a learned clustering should rise above.
    #[serde(default)]
    pub pixels_ami: Option<f64>,
    #[serde(default)]
    pub pixels_ami_fine: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExploreReport {
    pub epoch: usize,
    pub levels: Vec<LevelView>,
    /// PCA of the embeddings, per image.
    pub map: Vec<[f32; 2]>,
    pub metrics: Option<Metrics>,
}

/// What a run is doing, for progress displays (the page and the CLI word it themselves).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum Phase {
    /// Nothing yet, or between units of work.
    #[default]
    Waiting,
    /// Augmenting a batch and taking an SGD step.
    Training,
    /// E-step: embedding every image with the key encoder.
    Embedding {
        done: usize,
        total: usize,
    },
    /// E-step: k-means of one level (`level` counts from 0).
    KMeans {
        level: usize,
        levels: usize,
        k: usize,
    },
    /// Clusters view, map and metrics of the current encoder (after an E-step, and at the end
    /// of a run before its final status); `done` of `total` images embedded so far.
    Exploring {
        done: usize,
        total: usize,
    },
    /// Before the first step on a GPU: `done` of `total` kinds of the run's work run once, so
    /// that the device builds their kernels before the clock starts.
    Preparing {
        done: usize,
        total: usize,
    },
    /// A saved run was opened (`autosave`: the browser's own copy) at its epoch.
    Resumed {
        autosave: bool,
    },
    Paused,
    /// All planned epochs ran.
    Finished,
    /// Stopped by the user before the end.
    Stopped,
    /// Stopped by an error; the last good state is kept.
    Failed,
}

/// What the run is doing, in words (the page's status line, the CLI's progress line).
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Waiting | Phase::Training => f.write_str("augment + train"),
            Phase::Embedding { done, total } => {
                write!(f, "E-step: embedding images {done}/{total}")
            }
            Phase::KMeans { level, levels, k } => {
                write!(
                    f,
                    "E-step: k-means level {} of {levels} (K = {k})",
                    level + 1
                )
            }
            Phase::Exploring { done, total } if done < total => {
                write!(
                    f,
                    "computing the clusters view: embedding images {done}/{total}"
                )
            }
            Phase::Exploring { .. } => f.write_str("computing the clusters view"),
            Phase::Preparing { done, total } => {
                write!(
                    f,
                    "preparing the GPU: compiling kernels ({done} of {total})"
                )
            }
            Phase::Resumed { autosave } => write!(
                f,
                "resumed from the {}",
                if *autosave { "autosave" } else { "session" }
            ),
            Phase::Paused => f.write_str("paused"),
            Phase::Finished => f.write_str("finished"),
            Phase::Stopped => f.write_str("stopped"),
            Phase::Failed => f.write_str("stopped by an error"),
        }
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    #[default]
    Idle,
    Training,
    Paused,
    /// Finished or stopped: nothing runs, exports and views still work.
    Done,
    Error,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Idle => "idle",
            RunState::Training => "training",
            RunState::Paused => "paused",
            RunState::Done => "done",
            RunState::Error => "error",
        }
    }
}

/// Progress of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunStatus {
    pub state: RunState,
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub phase: Phase,
    pub images_per_s: f64,
    pub eta_s: Option<f64>,
    /// The settings as resolved for the data (derived K, queue, batch filled in).
    pub config: Option<crate::engine::PclConfig>,
    /// Bytes of the compute side's heap where the front end knows them (the browser worker's
    /// wasm memory: it only grows, so a flat figure means a run that holds its memory).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// On a GPU: the kernels its device built for this run (see [`KernelCounts`]).
    #[serde(default)]
    pub kernels: Option<KernelCounts>,
}

/// The GPU kernels (compute pipelines) a run's device built: before the first step, in its
/// preparation; during the first epoch trained after it; in all later epochs. A kernel built
/// mid-epoch stalls a step while the driver compiles it; the preparation runs every kind of
/// the run's work once so that `later` stays 0. `counted`: false where the counter could not
/// be switched on (then the counts are 0 and say nothing).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelCounts {
    pub counted: bool,
    pub prepared: u64,
    pub prepare_seconds: f64,
    pub first_epoch: u64,
    pub later: u64,
    /// Seconds of the first step after the preparation (0 until it ran): a steady step's,
    /// where the preparation built every kernel it needs.
    #[serde(default)]
    pub first_step_seconds: f64,
}

impl KernelCounts {
    /// The counts in a sentence for the backend card.
    pub fn words(&self) -> String {
        // The first epoch may build a few more (the raw-pixel baseline, an evaluation); a kernel
        // built after it is what the preparation is there to prevent.
        let since = match (self.first_epoch, self.later) {
            (0, 0) => "none since".to_string(),
            (first, 0) => format!("{first} more in the first epoch, none after it"),
            (first, later) => format!("{first} more in the first epoch and {later} after it"),
        };
        let first = match self.first_step_seconds {
            s if s > 0.0 => format!("; the first step took {s:.2} s"),
            _ => String::new(),
        };
        format!(
            "GPU kernels: {} compiled before the first step ({:.1} s), {since}{first}.",
            self.prepared, self.prepare_seconds
        )
    }
}

/// One epoch of a run in numbers: means of its steps, the E-step clusters' agreement with the
/// labels, evaluation where it ran (one row of the CLI's metrics.json).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// Epochs done (1 after the first).
    pub epoch: usize,
    pub loss: f64,
    pub info_nce: f64,
    pub proto: Vec<f64>,
    pub instance_acc: f64,
    /// Fraction of queries with an older key of their own image in the queue (masked).
    pub self_negatives: f64,
    pub lr: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nmi: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_accuracy: Option<f64>,
    /// Per clustering level, the E-step clusters' AMI / NMI against the labels and fine labels.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub level_ami: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub level_nmi: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub level_ami_fine: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub level_nmi_fine: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels_ami: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels_ami_fine: Option<f64>,
    /// Epochs of the run as planned after this one (a time budget re-plans them).
    pub epochs_planned: usize,
    /// On a GPU: the kernels its device built during this epoch (its E-step included).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kernels_built: Option<u64>,
    pub seconds: f64,
}

impl EpochRecord {
    /// Means of the steps of one epoch that took `seconds`.
    pub fn from_steps(steps: &[StepRecord], seconds: f64) -> Self {
        let n = steps.len().max(1) as f64;
        let mean = |f: &dyn Fn(&StepRecord) -> f64| steps.iter().map(f).sum::<f64>() / n;
        let levels = steps.last().map_or(0, |s| s.proto.len());
        Self {
            epoch: steps.last().map_or(0, |s| s.epoch + 1),
            loss: mean(&|s| s.loss as f64),
            info_nce: mean(&|s| s.info_nce as f64),
            proto: (0..levels)
                .map(|m| mean(&|s| s.proto.get(m).copied().unwrap_or(0.0) as f64))
                .collect(),
            instance_acc: mean(&|s| s.instance_acc as f64),
            self_negatives: mean(&|s| s.self_negatives as f64),
            lr: steps.last().map_or(0.0, |s| s.lr),
            seconds,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_counts_say_what_was_built_and_when() {
        let mut k = super::KernelCounts {
            counted: true,
            prepared: 215,
            prepare_seconds: 3.04,
            ..Default::default()
        };
        assert_eq!(
            k.words(),
            "GPU kernels: 215 compiled before the first step (3.0 s), none since."
        );
        k.first_epoch = 5;
        assert!(
            k.words()
                .ends_with("5 more in the first epoch, none after it."),
            "{}",
            k.words()
        );
        k.later = 2;
        k.first_step_seconds = 0.214;
        assert!(
            k.words()
                .ends_with("5 more in the first epoch and 2 after it; the first step took 0.21 s."),
            "{}",
            k.words()
        );
    }

    use super::*;

    #[test]
    fn prototypes_come_largest_first_with_their_nearest_members() {
        // 2-d unit vectors: cluster 0 around (1, 0) with 3 members, cluster 1 around (0, 1) with
        // 6; image 4 sits right on cluster 1's prototype, image 0 on cluster 0's.
        let f = |a: f32| [a.cos(), a.sin()];
        let angles = [
            0.0,
            0.3,
            -0.2,
            1.2,
            std::f32::consts::FRAC_PI_2,
            1.0,
            1.4,
            1.3,
            0.9,
        ];
        let features: Vec<f32> = angles.iter().flat_map(|&a| f(a)).collect();
        let assignments = [0, 0, 0, 1, 1, 1, 1, 1, 1];
        let centroids = [1.0, 0.0, 0.0, 1.0];
        let p = prototypes(&assignments, &centroids, &[0.1, 0.2], &[3, 6], &features, 2);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].cluster, p[0].size, p[0].phi), (1, 6, 0.2));
        assert_eq!(
            p[0].typical,
            vec![4, 6, 7, 3],
            "nearest the prototype first, at most 4"
        );
        assert_eq!(p[1].typical, vec![0, 2, 1]);
    }

    #[test]
    fn history_stays_bounded_and_keeps_the_latest_steps() {
        let record = |step: usize| StepRecord {
            epoch: 0,
            step,
            loss: 1.0,
            info_nce: 1.0,
            proto: Vec::new(),
            instance_acc: 0.0,
            lr: 0.1,
            epoch_done: false,
            self_negatives: 0.0,
        };
        let mut h = Vec::new();
        for step in 0..100_000 {
            thin_history(&mut h);
            h.push(record(step));
        }
        assert!(h.len() <= HISTORY_STEPS, "{}", h.len());
        assert!(h.len() > HISTORY_STEPS / 2);
        assert_eq!(h.last().unwrap().step, 99_999);
        assert!(
            h.first().unwrap().step < 100,
            "the start of the run stays drawn"
        );
        assert!(h.windows(2).all(|w| w[0].step < w[1].step));
    }

    #[test]
    fn a_phase_reads_the_same_in_the_page_and_the_cli() {
        let kmeans = Phase::KMeans {
            level: 0,
            levels: 3,
            k: 18,
        };
        assert_eq!(kmeans.to_string(), "E-step: k-means level 1 of 3 (K = 18)");
        let view = Phase::Exploring { done: 5, total: 9 };
        assert_eq!(
            view.to_string(),
            "computing the clusters view: embedding images 5/9"
        );
        let done = Phase::Exploring { done: 9, total: 9 };
        assert_eq!(done.to_string(), "computing the clusters view");
        let resumed = Phase::Resumed { autosave: true };
        assert_eq!(resumed.to_string(), "resumed from the autosave");
    }
}
