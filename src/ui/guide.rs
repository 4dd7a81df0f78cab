//! "What am I looking at?": a walk through one E-step and one M-step of the live run, in words a
//! workshop can read aloud, built from the page's state (plain Rust, tested natively). The guide
//! card draws the images each part names.

use crate::engine::records::{ClusterCard, ExploreReport, StepRecord};
use crate::ui::state::PageState;

/// One part of the guide: a heading, paragraphs, and images to show beside them (indices into
/// the loaded images, most typical first).
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    pub id: &'static str,
    pub title: String,
    pub text: Vec<String>,
    pub images: Vec<Vec<usize>>,
}

/// The guide for the page as it is now: what to do next before a run, then the E-step, the
/// M-step and the comparison with InfoNCE alone as the run produces them.
pub fn guide(s: &PageState) -> Vec<Part> {
    let mut parts = vec![overview(s)];
    if let Some(ex) = &s.explore {
        parts.push(e_step(ex, s.images.count));
    }
    if let Some(step) = s.steps.last() {
        parts.push(m_step(step, s));
    }
    parts.push(comparison(s));
    parts
}

fn overview(s: &PageState) -> Part {
    let mut text = vec![
        "Each training step shows the encoder two randomly cropped and coloured views of the \
         same images. It learns to tell an image's other view (the key, from a slowly moving \
         momentum copy of the encoder) from the keys of many other images kept in a queue: \
         that is InfoNCE, instance discrimination."
            .to_string(),
        "Every few epochs an E-step looks at the whole folder: it embeds every image and runs \
         k-means at several granularities. Each cluster's mean is a prototype. From then on, \
         each M-step also pulls every image towards its own prototypes and away from the \
         others (ProtoNCE), so images that look alike in meaning gather."
            .to_string(),
    ];
    let next = if s.images.count == 0 {
        "Start by loading images: a folder of your own, or the sample set."
    } else if s.run.config.is_none() {
        "Press Train; the first E-step comes after the warm-up epochs."
    } else if s.explore.is_none() {
        "Training: the first E-step comes after the warm-up epochs, and this guide fills in."
    } else {
        ""
    };
    if !next.is_empty() {
        text.push(next.to_string());
    }
    Part {
        id: "overview",
        title: "What am I looking at?".into(),
        text,
        images: Vec::new(),
    }
}

/// The tightest and the loosest cluster of the coarsest level (lowest and highest phi), among
/// clusters with at least two members.
fn extremes(clusters: &[ClusterCard]) -> Option<(&ClusterCard, &ClusterCard)> {
    let real = || clusters.iter().filter(|c| c.size >= 2);
    let tight = real().min_by(|a, b| a.phi.total_cmp(&b.phi))?;
    let loose = real().max_by(|a, b| a.phi.total_cmp(&b.phi))?;
    Some((tight, loose))
}

fn top(card: &ClusterCard, n: usize) -> Vec<usize> {
    card.members.iter().take(n).map(|&i| i as usize).collect()
}

fn e_step(ex: &ExploreReport, images: usize) -> Part {
    let ks: Vec<String> = ex.levels.iter().map(|l| l.k.to_string()).collect();
    let mut text = vec![format!(
        "E-step at epoch {}: the momentum encoder embedded all {images} images, and k-means \
         split them into {} clusters ({} levels, coarse to fine). The galleries below show them.",
        ex.epoch,
        ks.join(", "),
        ks.len()
    )];
    let mut shown = Vec::new();
    let coarse = ex.levels.iter().min_by_key(|l| l.k);
    if let Some((tight, loose)) = coarse.and_then(|l| extremes(&l.clusters)) {
        text.push(format!(
            "Concentration φ measures how spread a cluster is: the mean distance of its members \
             to the prototype, damped for large clusters (φ = Σ‖v − c‖ / (Z log(Z + 10))), then \
             scaled so that the average φ is the temperature τ. The tightest cluster of the \
             coarsest level (first row, {} images) has φ {:.3}; the loosest (second row, {} \
             images) has φ {:.3}.",
            tight.size, tight.phi, loose.size, loose.phi
        ));
        text.push(
            "ProtoNCE divides each similarity to a prototype by that prototype's φ: a tight \
             cluster (small φ) pulls its members hard and sharply, a loose one gently, so loose \
             clusters are not collapsed into a point before they mean something."
                .to_string(),
        );
        shown.push(top(tight, 8));
        shown.push(top(loose, 8));
    }
    Part {
        id: "e-step",
        title: "One E-step: which images formed which prototype".into(),
        text,
        images: shown,
    }
}

fn m_step(step: &StepRecord, s: &PageState) -> Part {
    let batch = s.run.config.as_ref().map_or(0, |c| c.batch_size);
    let mut text = vec![format!(
        "M-step (epoch {}, step {}): {batch} images, two views each, one SGD step. InfoNCE \
         loss {:.3}: {:.0}% of the queries found their own key first among the queue's keys.",
        step.epoch + 1,
        step.step + 1,
        step.info_nce,
        100.0 * step.instance_acc
    )];
    if step.proto.is_empty() {
        text.push(
            "No prototype term yet: during warm-up the encoder learns instances only, so that \
             the first E-step clusters something better than noise."
                .to_string(),
        );
    } else {
        let per_level: Vec<String> = step.proto.iter().map(|p| format!("{p:.3}")).collect();
        text.push(format!(
            "ProtoNCE per level: {} (log K would be chance). The total loss {:.3} is InfoNCE \
             plus the mean of these, weighted.",
            per_level.join(", "),
            step.loss
        ));
    }
    Part {
        id: "m-step",
        title: "One M-step: what the encoder is pulled towards".into(),
        text,
        images: Vec::new(),
    }
}

/// The last AMI (best level against the labels) of a curve, if it has labels.
fn last_ami(metrics: &[crate::engine::records::Metrics]) -> Option<f64> {
    let m = metrics.last()?;
    m.level_ami
        .iter()
        .copied()
        .filter(|a| a.is_finite())
        .reduce(f64::max)
}

fn comparison(s: &PageState) -> Part {
    let mut text = vec![
        "Why InfoNCE alone clusters worse: it treats every other image as a negative, even \
         one of the same kind, and pushes them apart as hard as any other. ProtoNCE gives \
         images of a cluster a shared target instead, so the embedding keeps the groups that \
         k-means can find again."
            .to_string(),
    ];
    let pixels = s.curve.metrics.last().and_then(|m| m.pixels_ami);
    let this = last_ami(&s.curve.metrics);
    let other = s
        .earlier
        .iter()
        .rev()
        .find(|c| c.label != s.curve.label)
        .and_then(|c| last_ami(&c.metrics).map(|a| (c.label.clone(), a)));
    match (this, pixels) {
        (Some(a), Some(p)) => {
            text.push(format!(
                "Measured on this folder's labels (AMI of the best level, 0 = chance, 1 = the \
                 labels exactly): {} {a:.3}, raw pixels {p:.3}.",
                s.curve.label
            ));
            if a <= p {
                let epochs = s.curve.metrics.last().map_or(0, |m| m.epoch);
                text.push(format!(
                    "Not above raw pixels yet, after {epochs} epochs: k-means on the pixels \
                     already finds the groups that colour and layout set apart, and a short run \
                     has learned little more. More epochs lift it (the thorough preset, or more \
                     minutes in the settings): on the whole sample set 60 epochs reach about \
                     0.31, above raw pixels."
                ));
            }
        }
        _ => text.push(
            "With labelled folders (one subfolder per class) the page measures it: the AMI of \
             each level's clusters against the labels, next to raw pixels'."
                .to_string(),
        ),
    }
    match other {
        Some((label, a)) => text.push(format!("The earlier {label} run reached {a:.3}.")),
        None => text.push(
            "Run the InfoNCE-only preset on the same images to see the difference in your own \
             curves."
                .to_string(),
        ),
    }
    Part {
        id: "compare",
        title: "PCL against InfoNCE alone".into(),
        text,
        images: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PclConfig;
    use crate::engine::records::{LevelView, Metrics};
    use crate::ui::state::RunCurve;

    fn card(size: usize, phi: f32, first: u32) -> ClusterCard {
        ClusterCard {
            size,
            phi,
            members: (first..first + size as u32).collect(),
        }
    }

    fn metrics(ami: &[f64], pixels: f64) -> Metrics {
        Metrics {
            level_ami: ami.to_vec(),
            pixels_ami: Some(pixels),
            ..Default::default()
        }
    }

    #[test]
    fn before_images_the_guide_says_to_load_them() {
        let s = PageState::new(false);
        let g = guide(&s);
        assert_eq!(g.len(), 2);
        assert!(g[0].text.last().unwrap().contains("loading images"));
        assert!(g[1].text.iter().any(|t| t.contains("InfoNCE-only preset")));
    }

    #[test]
    fn the_e_step_names_the_tightest_and_loosest_cluster_of_the_coarsest_level() {
        let mut s = PageState::new(false);
        s.images.count = 30;
        s.explore = Some(ExploreReport {
            epoch: 4,
            levels: vec![
                LevelView {
                    k: 5,
                    inertia: 0.0,
                    clusters: vec![card(20, 0.5, 100), card(1, 0.01, 0), card(9, 0.08, 200)],
                    assignments: vec![],
                },
                LevelView {
                    k: 3,
                    inertia: 0.0,
                    clusters: vec![card(12, 0.2, 0), card(10, 0.05, 50), card(8, 0.9, 70)],
                    assignments: vec![],
                },
            ],
            map: vec![],
            metrics: None,
        });
        let e = &guide(&s)[1];
        assert_eq!(e.id, "e-step");
        assert!(e.text[0].contains("epoch 4") && e.text[0].contains("5, 3 clusters"));
        // Level with K = 3 is the coarsest: tight = phi 0.05 (10 images), loose = phi 0.9.
        assert!(
            e.text[1].contains("10 images) has φ 0.050"),
            "{}",
            e.text[1]
        );
        assert!(e.text[1].contains("8 images) has φ 0.900"), "{}", e.text[1]);
        assert_eq!(e.images[0], (50..58).collect::<Vec<_>>());
        assert_eq!(e.images[1], (70..78).collect::<Vec<_>>());
    }

    #[test]
    fn the_m_step_shows_warm_up_then_the_prototype_terms() {
        let mut s = PageState::new(false);
        s.images.count = 64;
        s.run.config = Some(PclConfig::default());
        let mut step = StepRecord {
            epoch: 0,
            step: 2,
            loss: 5.0,
            info_nce: 5.0,
            proto: vec![],
            instance_acc: 0.25,
            lr: 0.03,
            epoch_done: false,
            self_negatives: 0.0,
        };
        s.steps = vec![step.clone()];
        let m = guide(&s).into_iter().find(|p| p.id == "m-step").unwrap();
        assert!(m.text[0].contains("25% of the queries"));
        assert!(m.text[1].contains("warm-up"));
        step.proto = vec![1.5, 2.25];
        s.steps = vec![step];
        let m = guide(&s).into_iter().find(|p| p.id == "m-step").unwrap();
        assert!(m.text[1].contains("1.500, 2.250"), "{}", m.text[1]);
    }

    #[test]
    fn the_comparison_uses_this_run_pixels_and_the_earlier_infonce_run() {
        let mut s = PageState::new(false);
        s.curve = RunCurve {
            label: "PCL".into(),
            metrics: vec![metrics(&[0.30, 0.35], 0.29)],
        };
        s.earlier = vec![RunCurve {
            label: "InfoNCE only".into(),
            metrics: vec![metrics(&[0.31, f64::NAN], 0.29)],
        }];
        let c = guide(&s).pop().unwrap();
        assert!(
            c.text[1].contains("PCL 0.350, raw pixels 0.290"),
            "{}",
            c.text[1]
        );
        assert_eq!(c.text[2], "The earlier InfoNCE only run reached 0.310.");
    }

    #[test]
    fn a_run_not_above_raw_pixels_is_told_what_lifts_it() {
        let mut s = PageState::new(false);
        let mut m = metrics(&[0.27, 0.28], 0.29);
        m.epoch = 36;
        s.curve = RunCurve {
            label: "PCL".into(),
            metrics: vec![m],
        };
        let c = guide(&s).pop().unwrap();
        assert!(
            c.text[2].starts_with("Not above raw pixels yet, after 36 epochs"),
            "{}",
            c.text[2]
        );
        assert!(
            c.text[3].starts_with("Run the InfoNCE-only preset"),
            "{}",
            c.text[3]
        );
    }
}
