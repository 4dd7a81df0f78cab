//! PCL beside the InfoNCE-only baseline: after the one-click baseline, both runs' coarsest
//! clusters (k-means at the same K on the baseline's embedding) and maps next to each other
//! with their AMI, so what the prototypes changed shows in images.

use leptos::prelude::*;

use super::explore::{draw_map, prototype_images};
use crate::engine::records::ExploreReport;
use crate::ui::state::PageState;
use crate::ui::tiles::Tiles;

#[component]
pub fn CompareCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let pair = Memo::new(move |_| state.with(|s| s.comparison()));
    move || {
        pair.get().map(|c| {
            view! {
                <section class="card compare" data-testid="compare">
                    <h2>"PCL against InfoNCE alone"</h2>
                    <p class="hint">
                        "The same images, the same time. Left: PCL, whose prototypes pull each "
                        "image towards its cluster; right: InfoNCE only, clustered afterwards by "
                        "k-means at the same K. Look for clusters that hold one kind of image, "
                        "and for separate islands on the map."
                    </p>
                    <div class="pair">
                        {side("PCL", c.pcl, version)}
                        {side("InfoNCE only", c.baseline, version)}
                    </div>
                </section>
            }
        })
    }
}

/// One run: its AMI, the coarsest level's largest clusters and its map coloured by them.
fn side(name: &'static str, ex: ExploreReport, version: RwSignal<usize>) -> impl IntoView {
    let ami = ex
        .metrics
        .as_ref()
        .map(|m| {
            let level = m
                .level_ami
                .first()
                .map_or(String::new(), |a| format!(", level 1 {a:.3}"));
            format!(
                " — AMI {:.3}{level}, kNN {:.3}",
                m.report.ami, m.report.knn_accuracy
            )
        })
        .unwrap_or_default();
    let level = ex.levels.first().cloned();
    let k = level.as_ref().map_or(0, |l| l.k);
    let node = NodeRef::<leptos::html::Canvas>::new();
    let (map, assignments) = (
        ex.map.clone(),
        level.as_ref().map(|l| l.assignments.clone()),
    );
    let marks = level.as_ref().map(prototype_images).unwrap_or_default();
    Effect::new(move |_| {
        if let Some(c) = node.get() {
            draw_map(&c, &map, assignments.as_deref(), &marks, None);
        }
    });
    let clusters = level.map_or(Vec::new(), |l| l.clusters);
    view! {
        <div class="side" data-run=name>
            <h3>{format!("{name}{ami}")}</h3>
            <p class="hint">{format!("Level 1, K = {k}: the largest clusters, most typical images first")}</p>
            <div class="clusters">
                {clusters.into_iter().take(8).map(|card| {
                    let top: Vec<usize> = card.members.iter().take(5).map(|&i| i as usize).collect();
                    view! {
                        <div class="cluster">
                            <Tiles indices=top cols=5 version />
                            <span>{format!("{} images", card.size)}</span>
                        </div>
                    }
                }).collect_view()}
            </div>
            <canvas class="small-map" node_ref=node width="400" height="400" role="img"
                aria-label=format!("{name}: the map coloured by level 1 clusters")></canvas>
        </div>
    }
}
