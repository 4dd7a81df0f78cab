//! The augmentation panel: for a few of the user's own images, the two views a training step
//! would give each (drawn by the worker with the very code the step uses), redrawn whenever an
//! augmentation setting changes; the settings beside them.

use leptos::prelude::*;

use super::train::setting_row;
use crate::protocol::ViewPairs;
use crate::ui::images;
use crate::ui::link::send;
use crate::ui::settings::{AUG_SETTINGS, recipe_text};
use crate::ui::state::PageState;
use crate::ui::tiles::put_rgba;

/// Images the panel shows.
pub const VIEW_IMAGES: usize = 6;
/// Pairs per row of the panel's canvas.
const PER_ROW: usize = 3;
/// Gap between tiles, and between pairs, in stored pixels.
const GAP: usize = 2;
const PAIR_GAP: usize = 10;

#[component]
pub fn ViewsCard(state: RwSignal<PageState>) -> impl IntoView {
    // A memo: the request changes with the settings, the images and "new views", not with
    // every training step's update of the page's state.
    let request = Memo::new(move |_| state.with(|s| s.views_request(VIEW_IMAGES)));
    Effect::new(move |_| {
        if let Some(r) = request.get() {
            send(r);
        }
    });
    let node = NodeRef::<leptos::html::Canvas>::new();
    let views = Memo::new(move |_| state.with(|s| s.views.clone()));
    Effect::new(move |_| {
        if let (Some(v), Some(c)) = (views.get(), node.get()) {
            draw(&c, &v);
        }
    });
    let seed = move || views.with(|v| v.as_ref().map(|v| v.seed.to_string()));
    let shown = move || views.with(|v| v.as_ref().map_or(0, |v| v.indices.len()).to_string());
    let new_views = move |_| state.update(|s| s.views_draw = s.views_draw.wrapping_add(1));
    let rows = AUG_SETTINGS
        .iter()
        .map(|d| {
            let placeholder = move || state.with(|s| recipe_text(&s.settings, d.key));
            setting_row(state, d, Some(Signal::derive(placeholder)))
        })
        .collect_view();
    view! {
        <section class="card" data-testid="views-card">
            <h2>"Two views of each image"</h2>
            <p>
                "Each training step shows the encoder two random views of every image: a crop, "
                "perhaps mirrored, with its colours changed. It learns to give the two views of "
                "one image the same embedding and other images' views different ones, so "
                "whatever the views may differ in (place, size, colour) is what it learns to "
                "ignore. Left: the image; right: its two views, drawn by the training code."
            </p>
            <p>
                <canvas class="views" node_ref=node data-testid="views" data-seed=seed
                    data-count=shown aria-label="pairs of augmented views of six images"></canvas>
            </p>
            <p>
                <button data-testid="new-views" on:click=new_views>"Draw new views"</button>
            </p>
            <details>
                <summary>"Augmentation settings (empty: the recipe's value, shown grey)"</summary>
                <table class="settings">{rows}</table>
            </details>
        </section>
    }
}

/// Draws each image of `v` (from the store) beside its two views, `PER_ROW` of them a row.
fn draw(canvas: &web_sys::HtmlCanvasElement, v: &ViewPairs) {
    images::with(|store| {
        let (side, size, n) = (store.side, v.size, v.indices.len());
        let count = store.count();
        if n == 0 || side == 0 || v.pixels.len() != n * 2 * size * size * 3 {
            canvas.set_width(0);
            return;
        }
        let tile = side.max(size);
        let pair_w = 3 * tile + 2 * GAP;
        let cols = PER_ROW.min(n);
        let rows = n.div_ceil(cols);
        let (w, h) = (
            cols * pair_w + (cols - 1) * PAIR_GAP,
            rows * (tile + GAP) - GAP,
        );
        let mut rgba = vec![255u8; w * h * 4];
        let mut blit = |px: &[u8], s: usize, ox: usize, oy: usize| {
            for (p, c) in px.chunks_exact(3).enumerate() {
                let dst = ((oy + p / s) * w + ox + p % s) * 4;
                rgba[dst..dst + 3].copy_from_slice(c);
            }
        };
        for (k, &i) in v.indices.iter().enumerate() {
            let (ox, oy) = ((k % cols) * (pair_w + PAIR_GAP), (k / cols) * (tile + GAP));
            if i < count {
                let plane = side * side * 3;
                blit(&store.pixels[i * plane..(i + 1) * plane], side, ox, oy);
            }
            let view = size * size * 3;
            for j in 0..2 {
                let at = (2 * k + j) * view;
                let x = ox + (1 + j) * (tile + GAP);
                blit(&v.pixels[at..at + view], size, x, oy);
            }
        }
        put_rgba(canvas, &rgba, w, h);
    });
}
