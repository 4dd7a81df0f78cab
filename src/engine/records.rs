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

/// Summary of an E-step, per level.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LevelSummary {
    pub k: usize,
    pub inertia: f64,
    pub min_size: usize,
    pub max_size: usize,
    pub phi_min: f32,
    pub phi_max: f32,
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
