//! Image tiles drawn from the thumbnail store (the very pixels the worker trains on).

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::HtmlCanvasElement;

use crate::ui::images;

pub(crate) const PALETTE: [&str; 12] = [
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#469990", "#9a6324", "#800000", "#000075",
];

pub(crate) fn context_2d(canvas: &HtmlCanvasElement) -> Option<web_sys::CanvasRenderingContext2d> {
    canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into().ok())
}

/// Draws images `indices` of the store as a grid of `cols` columns on `canvas`.
pub(crate) fn draw_tiles(canvas: &HtmlCanvasElement, indices: &[usize], cols: usize) {
    images::with(|store| {
        let s = store.side;
        let count = store.count();
        if s == 0 || indices.is_empty() {
            canvas.set_width(0);
            return;
        }
        let cols = cols.min(indices.len()).max(1);
        let rows = indices.len().div_ceil(cols);
        let (w, h) = (cols * s, rows * s);
        let mut rgba = vec![255u8; w * h * 4];
        for (t, &i) in indices.iter().enumerate().filter(|(_, i)| **i < count) {
            let (ox, oy) = ((t % cols) * s, (t / cols) * s);
            for y in 0..s {
                for x in 0..s {
                    let src = ((i * s + y) * s + x) * 3;
                    let dst = ((oy + y) * w + ox + x) * 4;
                    rgba[dst..dst + 3].copy_from_slice(&store.pixels[src..src + 3]);
                }
            }
        }
        put_rgba(canvas, &rgba, w, h);
        // One CSS pixel per stored pixel, whatever the number of tiles.
        let _ = canvas.set_attribute("style", &format!("width: {w}px"));
    });
}

/// Sizes `canvas` to `w` x `h` and draws the RGBA pixels `rgba` on it.
pub(crate) fn put_rgba(canvas: &HtmlCanvasElement, rgba: &[u8], w: usize, h: usize) {
    canvas.set_width(w as u32);
    canvas.set_height(h as u32);
    if let (Some(ctx), Ok(img)) = (
        context_2d(canvas),
        web_sys::ImageData::new_with_u8_clamped_array_and_sh(
            wasm_bindgen::Clamped(rgba),
            w as u32,
            h as u32,
        ),
    ) {
        let _ = ctx.put_image_data(&img, 0.0, 0.0);
    }
}

/// A canvas showing `indices` as thumbnails; `pick` gets the image index of a clicked tile. A
/// pickable canvas takes the keyboard too: arrow keys move a frame over the tiles, Enter or
/// Space picks the framed one.
#[component]
pub(crate) fn Tiles(
    indices: Vec<usize>,
    cols: usize,
    version: RwSignal<usize>,
    #[prop(optional)] testid: &'static str,
    #[prop(optional)] pick: Option<Callback<usize>>,
) -> impl IntoView {
    let node = NodeRef::<leptos::html::Canvas>::new();
    let cursor = RwSignal::new(None::<usize>);
    let shown = indices.clone();
    let n = indices.len();
    let cols = cols.min(n).max(1);
    Effect::new(move |_| {
        version.track();
        let at = cursor.get();
        if let Some(c) = node.get() {
            draw_tiles(&c, &shown, cols);
            if let (Some(at), Some(ctx)) = (at, context_2d(&c)) {
                let side = c.height() as f64 / n.div_ceil(cols).max(1) as f64;
                ctx.set_stroke_style_str("#000");
                ctx.set_line_width(2.0);
                let (x, y) = ((at % cols) as f64 * side, (at / cols) as f64 * side);
                ctx.stroke_rect(x + 1.0, y + 1.0, side - 2.0, side - 2.0);
            }
        }
    });
    let chosen = indices.clone();
    let on_click = move |ev: web_sys::MouseEvent| {
        let (Some(pick), Some(c)) = (pick, node.get_untracked()) else {
            return;
        };
        let rows = n.div_ceil(cols);
        let rect = c.get_bounding_client_rect();
        let col = ((ev.client_x() as f64 - rect.left()) / rect.width() * cols as f64) as usize;
        let row = ((ev.client_y() as f64 - rect.top()) / rect.height() * rows as f64) as usize;
        if let Some(&i) = chosen.get(row * cols + col.min(cols - 1)) {
            pick.run(i);
        }
    };
    let on_key = move |ev: web_sys::KeyboardEvent| {
        let Some(pick) = pick else { return };
        let at = cursor.get_untracked();
        let moved = match ev.key().as_str() {
            "ArrowRight" => Some(at.map_or(0, |a| (a + 1).min(n - 1))),
            "ArrowLeft" => Some(at.map_or(0, |a| a.saturating_sub(1))),
            "ArrowDown" => Some(at.map_or(0, |a| if a + cols < n { a + cols } else { a })),
            "ArrowUp" => Some(at.map_or(0, |a| a.saturating_sub(cols))),
            "Enter" | " " => {
                if let Some(&i) = indices.get(at.unwrap_or(0)) {
                    pick.run(i);
                }
                None
            }
            _ => return,
        };
        ev.prevent_default();
        if moved.is_some() {
            cursor.set(moved);
        }
    };
    let label = pick
        .map(|_| format!("{n} images: arrow keys choose one, Enter shows its nearest neighbours"));
    view! {
        <canvas class="tiles" node_ref=node data-testid=testid on:click=on_click on:keydown=on_key
            on:blur=move |_| cursor.set(None) tabindex=pick.map(|_| "0") aria-label=label
            role=pick.map(|_| "button")></canvas>
    }
}
