//! What the explorer shows after an E-step or at the end of a run, computed from one pass of
//! the query encoder over every image: clusters per level sorted by size with their members
//! ordered by closeness to the prototype (a run without prototypes: k-means at the same K), a
//! 2-D PCA map, and label metrics where labels exist.

use super::data::Dataset;
use super::error::EngineError;
use super::eval::label_metrics;
use super::eval::{ami, nmi, pca_2d};
use super::kmeans::{Points, cluster_level};
use super::rng::Rng;
use super::trainer::{Phase, Trainer};

pub use super::records::{ClusterCard, ExploreReport, LevelView, Metrics};

/// The report, plus the host embeddings [n, d] (unit rows) for nearest-neighbour queries.
pub async fn explore(
    trainer: &Trainer,
    data: &Dataset,
    progress: &mut dyn FnMut(Phase),
) -> Result<(ExploreReport, Vec<f32>), EngineError> {
    let labels = data.eval_labels();
    let embedded = trainer
        .embed_all(&trainer.encoder(), data, labels.is_some(), progress)
        .await?;
    let d = trainer.config.feature_dim;
    let super::trainer::Embedded {
        head: host,
        backbone,
    } = embedded;
    if host.iter().any(|v| !v.is_finite()) {
        // JSON has no NaN: nothing of this could reach the page.
        return Err(EngineError::NonFinite(
            "the encoder's embeddings are not finite: the last updates diverged; lower the \
             learning rate"
                .into(),
        ));
    }
    let levels: Vec<LevelView> = match trainer.clustering.as_ref() {
        Some(c) => c.levels.iter().map(|l| level_view(l, &host, d)).collect(),
        // No prototypes yet, or ever (the InfoNCE-only baseline): k-means at the settings' K
        // on this embedding, so that two runs can be set side by side cluster for cluster.
        None => {
            let points = Points::new(&host, d, trainer.device())?;
            let c = &trainer.config;
            let mut out = Vec::new();
            for (m, &k) in c.num_clusters.iter().enumerate() {
                let mut rng = Rng::new(c.seed ^ m as u64);
                let level = cluster_level(&points, k, c.kmeans_iters, 1, c.tau, &mut rng).await?;
                out.push(level_view(&level, &host, d));
            }
            out
        }
    };
    let metrics = match (labels, &backbone) {
        (Some(labels), Some(backbone)) => {
            let report = label_metrics(
                backbone,
                (&host, d),
                labels,
                trainer.config.seed,
                trainer.device(),
            )
            .await?;
            let assignments: Vec<&[u32]> = levels.iter().map(|l| &l.assignments[..]).collect();
            let scores = LevelScores::new(&assignments, labels, data.eval_fine_labels());
            Some(Metrics {
                epoch: trainer.epoch,
                report,
                level_ami: scores.ami,
                level_nmi: scores.nmi,
                level_ami_fine: scores.ami_fine,
                level_nmi_fine: scores.nmi_fine,
                pixels_ami: None,
                pixels_ami_fine: None,
            })
        }
        _ => None,
    };
    let report = ExploreReport {
        epoch: trainer.epoch,
        levels,
        map: pca_2d(&host, d),
        metrics,
    };
    Ok((report, host))
}

/// AMI and NMI of each clustering level against the labels and, where they exist, the fine
/// labels (empty vectors without them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LevelScores {
    pub ami: Vec<f64>,
    pub nmi: Vec<f64>,
    pub ami_fine: Vec<f64>,
    pub nmi_fine: Vec<f64>,
}

impl LevelScores {
    pub fn new(levels: &[&[u32]], labels: &[u32], fine: Option<&[u32]>) -> Self {
        let score = |truth: &[u32], f: fn(&[u32], &[u32]) -> f64| -> Vec<f64> {
            levels.iter().map(|a| f(truth, a)).collect()
        };
        Self {
            ami: score(labels, ami),
            nmi: score(labels, nmi),
            ami_fine: fine.map(|f| score(f, ami)).unwrap_or_default(),
            nmi_fine: fine.map(|f| score(f, nmi)).unwrap_or_default(),
        }
    }
}

fn level_view(level: &super::kmeans::Level, emb: &[f32], d: usize) -> LevelView {
    let k = level.k;
    let mut members: Vec<Vec<(f32, u32)>> = vec![Vec::new(); k];
    for (i, &c) in level.assignments.iter().enumerate() {
        let proto = &level.centroids[c as usize * d..(c as usize + 1) * d];
        let sim: f32 = emb[i * d..(i + 1) * d]
            .iter()
            .zip(proto)
            .map(|(a, b)| a * b)
            .sum();
        members[c as usize].push((sim, i as u32));
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(members[c].len()), c));
    let mut rank = vec![0u32; k];
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r as u32;
    }
    let clusters = order
        .iter()
        .map(|&c| {
            let mut m = std::mem::take(&mut members[c]);
            m.sort_by(|a, b| b.0.total_cmp(&a.0));
            ClusterCard {
                size: m.len(),
                phi: level.phi[c],
                members: m.into_iter().map(|(_, i)| i).collect(),
            }
        })
        .collect();
    LevelView {
        k,
        inertia: level.inertia,
        clusters,
        assignments: level
            .assignments
            .iter()
            .map(|&c| rank[c as usize])
            .collect(),
    }
}

/// The `count` images closest to image `index` by cosine similarity of unit embeddings.
pub fn neighbours(emb: &[f32], d: usize, index: usize, count: usize) -> Vec<(usize, f32)> {
    let q = &emb[index * d..(index + 1) * d];
    let mut sims: Vec<(usize, f32)> = emb
        .chunks(d)
        .enumerate()
        .filter(|&(i, _)| i != index)
        .map(|(i, r)| (i, r.iter().zip(q).map(|(a, b)| a * b).sum()))
        .collect();
    sims.sort_by(|a, b| b.1.total_cmp(&a.1));
    sims.truncate(count);
    sims
}

/// Every clustering level as JSON: K, epoch, inertia, phi, sizes and the cluster of every image,
/// in the order of `files` (a list, not a map by name: two folders may hold equal names).
pub fn clusters_json(trainer: &Trainer, data: &Dataset) -> String {
    let levels: Vec<serde_json::Value> = trainer
        .clustering
        .as_ref()
        .map(|c| {
            c.levels
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "k": l.k,
                        "epoch": c.epoch,
                        "inertia": l.inertia,
                        "phi": l.phi,
                        "sizes": l.sizes,
                        "assignment": l.assignments,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let files = &data.names;
    serde_json::to_string_pretty(&serde_json::json!({ "files": files, "levels": levels }))
        .expect("plain data")
}

/// One CSV row per image: path, label, then the `d` embedding values.
pub fn embeddings_csv(data: &Dataset, emb: &[f32], d: usize) -> String {
    let label_of = |i: usize| -> String {
        data.labels
            .as_ref()
            .map(|l| data.class_names[l[i] as usize].clone())
            .unwrap_or_default()
    };
    let mut csv = String::from("path,label");
    for j in 0..d {
        csv.push_str(&format!(",e{j}"));
    }
    csv.push('\n');
    for i in 0..data.len().min(emb.len() / d.max(1)) {
        csv.push_str(&csv_field(&data.names[i]));
        csv.push(',');
        csv.push_str(&csv_field(&label_of(i)));
        for v in &emb[i * d..(i + 1) * d] {
            csv.push_str(&format!(",{v}"));
        }
        csv.push('\n');
    }
    csv
}

/// `s`, with a `'` before it where it would start a spreadsheet formula (a leading
/// `= + - @`, tab or carriage return; OWASP's advice for CSV injection): for every table a
/// user may open in a spreadsheet (embeddings.csv, the Projector's metadata.tsv).
pub fn not_a_formula(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// A CSV field that a spreadsheet reads as text: quoted where it holds a separator, a quote or
/// a line break, and a leading `= + - @` (or tab / carriage return), which would start a
/// formula, neutralised with a `'` (OWASP's advice for CSV injection).
fn csv_field(s: &str) -> String {
    let text = not_a_formula(s);
    let formula = text.len() != s.len();
    if formula || text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kmeans::Level;

    #[test]
    fn clusters_sort_by_size_and_members_by_closeness() {
        // 2-d unit embeddings; cluster 1 has three members, cluster 0 one.
        let emb = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 0.8, 0.6];
        let level = Level {
            k: 2,
            assignments: vec![0, 1, 1, 1],
            centroids: vec![1.0, 0.0, 0.0, 1.0],
            phi: vec![0.1, 0.3],
            sizes: vec![1, 3],
            inertia: 0.5,
        };
        let v = level_view(&level, &emb, 2);
        assert_eq!(v.clusters[0].size, 3);
        assert_eq!(v.clusters[0].phi, 0.3);
        assert_eq!(v.clusters[0].members, vec![1, 2, 3]);
        assert_eq!(v.assignments, vec![1, 0, 0, 0]);
        assert_eq!(neighbours(&emb, 2, 2, 2)[0].0, 3);
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(csv_field("plain/name.png"), "plain/name.png");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1.png"), "\"'+1.png\"");
        assert_eq!(csv_field("-x"), "\"'-x\"");
        assert_eq!(csv_field("@sum"), "\"'@sum\"");
        assert_eq!(csv_field("a\rb"), "\"a\rb\"");
    }
}
