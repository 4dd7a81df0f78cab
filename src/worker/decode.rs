//! Decoding in the worker with the browser's own decoders (`createImageBitmap`, EXIF
//! orientation applied, no colour-space conversion, like the CLI), read back through an
//! `OffscreenCanvas`, then resized by the rule the CLI shares
//! ([`crate::engine::data::resize_rgba_square`]).

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, ColorSpaceConversion, ImageBitmap, ImageBitmapOptions, ImageOrientation, OffscreenCanvas,
    OffscreenCanvasRenderingContext2d, PremultiplyAlpha,
};

use super::batch::Batch;
use super::{now_ms, scope};
use crate::engine::data::{SampleIndex, resize_rgba_square};
use crate::intake::Label;
use crate::intake::{HEAD_BYTES, check_header, check_size, header_bytes_needed, header_pixels};

/// Above this many pixels the browser first draws the image down to a few times the stored
/// size, so a 50-megapixel photo never needs 200 MB of wasm memory. Such images then differ
/// slightly from the CLI's (a different downscaling filter), which is stated in the README.
const PRESCALE_PIXELS: u64 = 16_000_000;

async fn bytes_of(blob: &Blob) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(blob.array_buffer())
        .await
        .map_err(|_| "the file could not be read".to_string())?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

fn context(canvas: &OffscreenCanvas) -> Result<OffscreenCanvasRenderingContext2d, String> {
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"willReadFrequently".into(), &true.into());
    canvas
        .get_context_with_context_options("2d", &options)
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into().ok())
        .ok_or_else(|| "this browser has no 2-D OffscreenCanvas in workers".to_string())
}

/// RGBA pixels of a decoded bitmap, drawn at `w` x `h`.
fn rgba_of(bitmap: &ImageBitmap, w: u32, h: u32) -> Result<Vec<u8>, String> {
    let canvas = OffscreenCanvas::new(w, h).map_err(|e| format!("{e:?}"))?;
    let ctx = context(&canvas)?;
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(bitmap, 0.0, 0.0, w as f64, h as f64)
        .map_err(|e| format!("{e:?}"))?;
    let data = ctx
        .get_image_data(0.0, 0.0, w as f64, h as f64)
        .map_err(|e| format!("{e:?}"))?;
    Ok(data.data().0)
}

fn bitmap_promise(blob: &Blob) -> Result<js_sys::Promise, JsValue> {
    let options = ImageBitmapOptions::new();
    options.set_image_orientation(ImageOrientation::FromImage);
    options.set_premultiply_alpha(PremultiplyAlpha::None);
    options.set_color_space_conversion(ColorSpaceConversion::None);
    scope().create_image_bitmap_with_blob_and_image_bitmap_options(blob, &options)
}

async fn bitmap_of(blob: &Blob) -> Result<ImageBitmap, JsValue> {
    Ok(JsFuture::from(bitmap_promise(blob)?)
        .await?
        .unchecked_into())
}

/// The checks from the file's size and header; the pixels its header promises
/// ([`crate::intake::header_pixels`]).
pub async fn check_file(blob: &Blob) -> Result<u64, String> {
    let len = blob.size() as u64;
    check_size(len)?;
    // The first 256 KiB, and further where the header walk needs it (metadata before a
    // JPEG's frame marker), at least doubling each time and never past the file.
    let mut want = HEAD_BYTES as u64;
    let head = loop {
        let end = want.min(len);
        let head = blob
            .slice_with_f64_and_f64(0.0, end as f64)
            .map_err(|e| format!("{e:?}"))?;
        let head = bytes_of(&head).await?;
        match header_bytes_needed(&head) {
            Some(more) if end < len => want = (more as u64).max(2 * end),
            _ => break head,
        }
    };
    let (_, dims) = check_header(len, &head)?;
    Ok(header_pixels(dims))
}

/// The browser's decoder started but not awaited: it decodes several files at once on its own
/// threads.
pub fn start_decode(blob: &Blob) -> Result<JsFuture, String> {
    bitmap_promise(blob)
        .map(JsFuture::from)
        .map_err(|_| "the browser cannot decode this file".to_string())
}

/// A started decode to `side` x `side` RGB, or the reason it failed.
pub async fn finish_decode(pending: JsFuture, side: usize) -> Result<Vec<u8>, String> {
    let bitmap: ImageBitmap = pending
        .await
        .map_err(|_| "the browser cannot decode this file (broken or truncated?)".to_string())?
        .unchecked_into();
    let (w, h) = (bitmap.width(), bitmap.height());
    let (dw, dh) = if w as u64 * h as u64 > PRESCALE_PIXELS {
        // Only ever shrinks (a long thin image's short side may already be small).
        let scale = ((4 * side) as f64 / w.min(h) as f64).min(1.0);
        (
            ((w as f64 * scale).ceil() as u32).max(1),
            ((h as f64 * scale).ceil() as u32).max(1),
        )
    } else {
        (w, h)
    };
    let rgba = rgba_of(&bitmap, dw, dh);
    bitmap.close();
    Ok(resize_rgba_square(&rgba?, dw as usize, dh as usize, side))
}

async fn fetch(url: &str) -> Result<web_sys::Response, String> {
    let response: web_sys::Response = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| format!("fetching {url}: {e:?}"))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("fetching {url}: HTTP {}", response.status()));
    }
    Ok(response)
}

/// The built-in sample set (www/sample, made by scripts/make-sample-set.py): one PNG atlas of
/// emoji tiles and its index. `limit` picks that many images spread evenly over the set.
pub async fn load_sample(
    limit: Option<usize>,
    side: usize,
    batch: &mut Batch,
) -> Result<(), String> {
    let t0 = now_ms();
    let index_text = JsFuture::from(
        fetch("./sample/emoji.json")
            .await?
            .text()
            .map_err(|e| format!("{e:?}"))?,
    )
    .await
    .map_err(|e| format!("{e:?}"))?
    .as_string()
    .unwrap_or_default();
    let index: SampleIndex =
        serde_json::from_str(&index_text).map_err(|e| format!("sample index: {e}"))?;
    let blob: Blob = JsFuture::from(
        fetch("./sample/emoji.png")
            .await?
            .blob()
            .map_err(|e| format!("{e:?}"))?,
    )
    .await
    .map_err(|e| format!("{e:?}"))?
    .unchecked_into();
    let bitmap = bitmap_of(&blob)
        .await
        .map_err(|e| format!("sample atlas: {e:?}"))?;
    let (w, h) = (bitmap.width() as usize, bitmap.height() as usize);
    let atlas = rgba_of(&bitmap, w as u32, h as u32)?;
    bitmap.close();
    let tiles = index.tiles(w, h, limit)?;
    let (s, take) = (index.side, tiles.len());
    for t in tiles {
        let mut tile = Vec::with_capacity(s * s * 4);
        for y in 0..s {
            let start = ((t.y + y) * w + t.x) * 4;
            tile.extend_from_slice(&atlas[start..start + s * 4]);
        }
        let rgb = resize_rgba_square(&tile, s, s, side);
        let label = Label::of_path(&t.path);
        batch.add(t.path, label, rgb);
    }
    web_sys::console::log_1(
        &format!("sample set: {take} images in {:.0} ms", now_ms() - t0).into(),
    );
    Ok(())
}
