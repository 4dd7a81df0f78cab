//! The explore card: cluster galleries per level, the hierarchy, the map, neighbours and how
//! good the representation is.

use leptos::prelude::*;
use web_sys::HtmlCanvasElement;

use super::charts::{ami_chart, knn_chart, level_histograms};
use crate::engine::records::ExploreReport;
use crate::protocol::ToWorker;
use crate::ui::charts::{finite_range, level_heading};
use crate::ui::link::send;
use crate::ui::state::PageState;
use crate::ui::tiles::{PALETTE, Tiles, context_2d};

#[component]
pub fn ExploreCard(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let explore = Memo::new(move |_| state.with(|s| s.explore.clone()));
    let open = RwSignal::new(None::<(usize, usize)>);
    // The cluster under the pointer (or keyboard focus) in a gallery: the map shows its images.
    let hovered = RwSignal::new(None::<(usize, usize)>);
    view! {
        <section class="card explore" class:hidden=move || explore.with(|e| e.is_none())>
            <h2>"4. Explore"</h2>
            // Side by side where the screen allows: the clusters, the hierarchy, the map.
            <div class="explore-grid">
                <div>
                    <Galleries explore open hovered version />
                    <Members explore open version />
                </div>
                <div><Hierarchy state explore version /></div>
                <div>
                    <EmbeddingMap state explore hovered version />
                    <Neighbours state version />
                </div>
            </div>
            <Metrics state />
        </section>
    }
}

#[component]
fn Galleries(
    explore: Memo<Option<ExploreReport>>,
    open: RwSignal<Option<(usize, usize)>>,
    hovered: RwSignal<Option<(usize, usize)>>,
    version: RwSignal<usize>,
) -> impl IntoView {
    move || {
        explore.with(|ex| {
            let ex = ex.as_ref()?;
            Some(view! {
                <p class="hint">
                    "Each box is a cluster of an E-step's k-means, largest first; its first images "
                    "are those nearest its prototype. Coarse levels group broadly, fine ones "
                    "narrowly. Hover a box to find its images on the map; click it for all of them."
                </p>
                <div data-testid="cluster-gallery">
                    {ex.levels.iter().enumerate().map(|(m, l)| view! {
                        <h3>{level_heading(m, l.k, l.inertia, ex.metrics.as_ref())}</h3>
                        {level_histograms(l)}
                        <div class="clusters">
                            {l.clusters.iter().take(24).enumerate().map(|(c, card)| {
                                let top: Vec<usize> = card.members.iter().take(6).map(|&i| i as usize).collect();
                                view! {
                                    <button class="cluster" data-testid="cluster" data-level=m.to_string()
                                        data-size=card.size.to_string() on:click=move |_| open.set(Some((m, c)))
                                        on:mouseenter=move |_| hovered.set(Some((m, c))) on:mouseleave=move |_| hovered.set(None)
                                        on:focus=move |_| hovered.set(Some((m, c))) on:blur=move |_| hovered.set(None)>
                                        <Tiles indices=top cols=6 version />
                                        <span>{format!("{} images, φ {:.3}", card.size, card.phi)}</span>
                                    </button>
                                }
                            }).collect_view()}
                            {(l.clusters.len() > 24).then(|| view! { <p class="hint">{format!("… and {} smaller clusters", l.clusters.len() - 24)}</p> })}
                        </div>
                    }).collect_view()}
                </div>
            })
        })
    }
}

#[component]
fn Members(
    explore: Memo<Option<ExploreReport>>,
    open: RwSignal<Option<(usize, usize)>>,
    version: RwSignal<usize>,
) -> impl IntoView {
    move || {
        let (m, c) = open.get()?;
        explore.with(|ex| {
            let card = ex.as_ref()?.levels.get(m)?.clusters.get(c)?;
            let all: Vec<usize> = card.members.iter().take(400).map(|&i| i as usize).collect();
            Some(view! {
                <div class="members" data-testid="cluster-members">
                    <h3>{format!("Level {}, cluster {}: {} images, the most typical first (click one for its nearest neighbours)", m + 1, c + 1, card.size)}</h3>
                    <Tiles indices=all cols=20 version
                        pick=Callback::new(|i| send(ToWorker::Neighbours { index: i })) />
                </div>
            })
        })
    }
}

/// The seed's Figure 6 on the user's images: each coarse cluster as a box of its most typical
/// images, holding the finer clusters its images fall in, each as its own typical images.
#[component]
fn Hierarchy(
    state: RwSignal<PageState>,
    explore: Memo<Option<ExploreReport>>,
    version: RwSignal<usize>,
) -> impl IntoView {
    move || {
        explore.with(|_| ());
        state.with_untracked(|s| {
            let ex = s.explore.as_ref()?;
            let fine = ex.levels.len().checked_sub(1).filter(|&f| f > 0)?;
            let rows = s.hierarchy(fine);
            let typical = |level: usize, c: usize, n: usize| -> Vec<usize> {
                ex.levels[level].clusters.get(c).map_or(Vec::new(), |card| {
                    card.members.iter().take(n).map(|&i| i as usize).collect()
                })
            };
            let shown = rows.len().min(12);
            Some(view! {
                <div data-testid="hierarchy" class="hierarchy">
                    <h3>{format!(
                        "Hierarchy: each level 1 cluster holds the level {} clusters its images fall in",
                        fine + 1
                    )}</h3>
                    <div class="nest">
                        {rows.into_iter().enumerate().take(shown).map(|(c, fines)| {
                            let size = ex.levels[0].clusters.get(c).map_or(0, |k| k.size);
                            let more = fines.len().saturating_sub(6);
                            view! {
                                <div class="coarse" data-testid="coarse-cluster">
                                    <div class="coarse-head">
                                        <Tiles indices=typical(0, c, 4) cols=4 version />
                                        <span>{format!("cluster {}: {size} images", c + 1)}</span>
                                    </div>
                                    <div class="fines">
                                        {fines.into_iter().take(6).map(|(f, n)| view! {
                                            <div class="fine">
                                                <Tiles indices=typical(fine, f, 3) cols=3 version />
                                                <span>{format!("{n} of its images")}</span>
                                            </div>
                                        }).collect_view()}
                                        {(more > 0).then(|| view! { <span class="hint">{format!("+ {more} more")}</span> })}
                                    </div>
                                </div>
                            }
                        }).collect_view()}
                    </div>
                </div>
            })
        })
    }
}

#[component]
fn EmbeddingMap(
    state: RwSignal<PageState>,
    explore: Memo<Option<ExploreReport>>,
    hovered: RwSignal<Option<(usize, usize)>>,
    version: RwSignal<usize>,
) -> impl IntoView {
    let level = RwSignal::new(0usize);
    // Which layout is drawn: the explorer's PCA, or t-SNE once computed.
    let use_tsne = RwSignal::new(false);
    // A memo: the map is redrawn when its points change, not on every message.
    let shown = Memo::new(move |_| {
        let tsne = use_tsne.get();
        state.with(|s| match (&s.tsne, tsne) {
            (Some(t), true) => Some(t.clone()),
            _ => s.explore.as_ref().map(|e| e.map.clone()),
        })
    });
    let map = NodeRef::<leptos::html::Canvas>::new();
    Effect::new(move |_| {
        // A hovered gallery cluster colours the map by its level and fades the other images.
        let (lv, focus) = match hovered.get() {
            Some((m, c)) => (m, Some(c as u32)),
            None => (level.get(), None),
        };
        let Some(canvas) = map.get() else { return };
        shown.with(|points| {
            explore.with(|ex| {
                let (Some(ex), Some(points)) = (ex, points) else {
                    return;
                };
                let lvl = ex.levels.get(lv);
                draw_map(
                    &canvas,
                    points,
                    lvl.map(|l| &l.assignments[..]),
                    &lvl.map(prototype_images).unwrap_or_default(),
                    focus,
                );
                let _ = canvas.set_attribute(
                    "data-focus",
                    &focus.map_or(String::new(), |c| c.to_string()),
                );
            })
        });
    });
    let hover = RwSignal::new(None::<usize>);
    let nearest_point = move |ev: &web_sys::MouseEvent| -> Option<usize> {
        let canvas = map.get_untracked()?;
        let rect = canvas.get_bounding_client_rect();
        let (x, y) = (
            (ev.client_x() as f64 - rect.left()) / rect.width() * 400.0,
            (ev.client_y() as f64 - rect.top()) / rect.height() * 400.0,
        );
        let pts = shown.with_untracked(|p| p.as_deref().map(map_points))?;
        pts.iter()
            .enumerate()
            .map(|(i, p)| (i, (p.0 - x).powi(2) + (p.1 - y).powi(2)))
            .filter(|&(_, d)| d < 100.0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    };
    let on_move = move |ev: web_sys::MouseEvent| hover.set(nearest_point(&ev));
    let on_click = move |ev: web_sys::MouseEvent| {
        if let Some(i) = nearest_point(&ev) {
            send(ToWorker::Neighbours { index: i });
        }
    };
    let layout = move |ev: web_sys::Event| {
        let tsne = event_target_value(&ev) == "tsne";
        use_tsne.set(tsne);
        if tsne && state.with_untracked(|s| s.tsne.is_none() && s.tsne_progress.is_none()) {
            send(ToWorker::Tsne);
        }
    };
    let progress = move || state.with(|s| s.tsne_words());
    let kind = move || {
        let tsne = use_tsne.get() && state.with(|s| s.tsne.is_some());
        if tsne { "tsne" } else { "pca" }
    };
    view! {
        <h3>"Embedding map"</h3>
        <p>
            <label>"Layout " <select data-testid="map-layout" on:change=layout>
                <option value="pca">"PCA"</option>
                <option value="tsne">"t-SNE"</option>
            </select></label>
            " · " <label>"colour by " <select on:change=move |ev| level.set(event_target_value(&ev).parse().unwrap_or(0))><LevelOptions explore /></select></label>
            " — one point per image, near where its embedding is near; rings mark each cluster's "
            "most typical image. Hover a point to see it, click it for its nearest neighbours. "
            <span data-testid="tsne-progress">{progress}</span>
        </p>
        <div class="map">
            <canvas data-testid="map" data-kind=kind node_ref=map width="400" height="400" on:mousemove=on_move on:click=on_click
                role="img" aria-label="Embedding map: one point per image, coloured by cluster (the cluster images above reach the same neighbours from the keyboard)"></canvas>
            {move || hover.get().map(|i| view! { <Tiles indices=vec![i] cols=1 version testid="map-hover" /> })}
        </div>
    }
}

#[component]
fn Neighbours(state: RwSignal<PageState>, version: RwSignal<usize>) -> impl IntoView {
    let found = Memo::new(move |_| state.with(|s| s.neighbours.clone()));
    move || {
        let (i, list) = found.get()?;
        let mut shown = vec![i];
        shown.extend(list.iter().map(|&(j, _)| j));
        let name = crate::ui::images::name(i).unwrap_or_default();
        Some(view! {
            <div data-testid="neighbours">
                <p>{format!("{name} (first) and its nearest neighbours:")}</p>
                <Tiles indices=shown cols=13 version />
            </div>
        })
    }
}

#[component]
fn Metrics(state: RwSignal<PageState>) -> impl IntoView {
    let scores = Memo::new(move |_| {
        state.with(|s| {
            let m = s.explore.as_ref().and_then(|e| e.metrics.clone());
            let mut curves = s.earlier.clone();
            curves.push(s.curve.clone());
            (m, curves)
        })
    });
    move || {
        scores.with(|(m, curves)| {
            let m = m.clone()?;
            let pixels_ami = m.pixels_ami.map(|a| a.to_string()).unwrap_or_default();
            let level_ami: Vec<String> = m.level_ami.iter().map(|a| a.to_string()).collect();
            let level_ami = level_ami.join(",");
            Some(view! {
                <div data-testid="metrics" data-knn=m.report.knn_accuracy.to_string()
                    data-ami=m.report.ami.to_string() data-nmi=m.report.nmi.to_string()
                    data-pixels-ami=pixels_ami data-level-ami=level_ami
                    data-epochs=m.epoch.to_string()>
                    <h3>"How good is the representation? (labels from folders)"</h3>
                    <p>{format!(
                        "kNN accuracy {:.3} · k-means AMI {:.3} / NMI {:.3} · linear probe {:.3}",
                        m.report.knn_accuracy, m.report.ami, m.report.nmi, m.report.linear_accuracy
                    )}</p>
                    <p>{m.level_ami.iter().zip(&m.level_nmi).enumerate().map(|(l, (a, n))| format!(
                        "level {}: AMI {a:.3} NMI {n:.3}; ", l + 1)).collect::<String>()}</p>
                    {knn_chart(curves)}
                    <p class="legend">"kNN accuracy per E-step: "
                        {curves.iter().enumerate().map(|(c, run)| view! {
                            <span><span style=format!("color:{}", PALETTE[c % 12]) aria-hidden="true">"■"</span>{format!(" {} ", run.label)}</span>
                        }).collect_view()}
                    </p>
                    {ami_chart(curves.last().map(|c| &c.metrics[..]).unwrap_or(&[]))}
                </div>
            })
        })
    }
}

/// One option per clustering level, to colour the map by.
#[component]
fn LevelOptions(explore: Memo<Option<ExploreReport>>) -> impl IntoView {
    move || {
        explore.with(|ex| {
            ex.as_ref().map(|ex| {
                ex.levels
                    .iter()
                    .enumerate()
                    .map(|(m, l)| view! { <option value=m.to_string()>{format!("level {} (K = {})", m + 1, l.k)}</option> })
                    .collect_view()
            })
        })
    }
}

/// Map points scaled into a 400 x 400 canvas with a margin.
fn map_points(map: &[[f32; 2]]) -> Vec<(f64, f64)> {
    let xs: Vec<f64> = map.iter().map(|p| p[0] as f64).collect();
    let ys: Vec<f64> = map.iter().map(|p| p[1] as f64).collect();
    let (x0, x1) = finite_range(&xs);
    let (y0, y1) = finite_range(&ys);
    map.iter()
        .map(|p| {
            (
                10.0 + (p[0] as f64 - x0) / (x1 - x0) * 380.0,
                390.0 - (p[1] as f64 - y0) / (y1 - y0) * 380.0,
            )
        })
        .collect()
}

pub(super) fn draw_map(
    canvas: &HtmlCanvasElement,
    map: &[[f32; 2]],
    clusters: Option<&[u32]>,
    prototypes: &[usize],
    focus: Option<u32>,
) {
    let Some(ctx) = context_2d(canvas) else {
        return;
    };
    ctx.clear_rect(0.0, 0.0, 400.0, 400.0);
    let points = map_points(map);
    let cluster = |i: usize| clusters.and_then(|a| a.get(i)).copied().unwrap_or(0);
    for (i, &(x, y)) in points.iter().enumerate() {
        let c = cluster(i);
        let faded = focus.is_some_and(|f| f != c);
        ctx.set_global_alpha(if faded { 0.12 } else { 1.0 });
        ctx.set_fill_style_str(PALETTE[c as usize % PALETTE.len()]);
        ctx.fill_rect(x - 2.0, y - 2.0, 4.0, 4.0);
    }
    // Each cluster's most typical image, ringed: where its prototype sits.
    ctx.set_global_alpha(1.0);
    ctx.set_stroke_style_str("#1d2330");
    ctx.set_line_width(1.5);
    for &i in prototypes {
        if let Some(&(x, y)) = points.get(i)
            && focus.is_none_or(|f| f == cluster(i))
        {
            ctx.begin_path();
            let _ = ctx.arc(x, y, 6.0, 0.0, std::f64::consts::TAU);
            ctx.stroke();
        }
    }
}

/// The most typical image of each cluster of a level (its first member): the prototype's place
/// on a map.
pub(super) fn prototype_images(level: &crate::engine::records::LevelView) -> Vec<usize> {
    level
        .clusters
        .iter()
        .filter_map(|c| c.members.first().map(|&i| i as usize))
        .collect()
}
