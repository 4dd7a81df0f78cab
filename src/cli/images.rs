//! Reading an image folder natively: every file under it (recursively), decoded with the
//! `image` crate, resized by the same rule as the browser (`engine::data::resize_rgba_square`).
//! Folder names give the labels and limits are checked before decoding, by the rules the
//! browser shares ([`crate::intake`]). Bad files are skipped with a reason.

use std::path::{Path, PathBuf};

use image::ImageDecoder;

use crate::engine::data::{Dataset, resize_rgba_square};
use crate::intake::{Label, check_header, check_size};
pub use crate::intake::{MAX_FILE_BYTES, MAX_IMAGES, MAX_PIXELS, Skipped};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Decodes one file to `side` x `side` RGB.
pub fn decode_file(path: &Path, side: usize) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    check_size(len)?; // before reading it whole
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    decode_bytes(&bytes, side)
}

/// Decodes image bytes (format sniffed from the content, not the name; EXIF orientation
/// applied; refused from the header when over the pixel limit) to `side` x `side` RGB.
pub fn decode_bytes(bytes: &[u8], side: usize) -> Result<Vec<u8>, String> {
    check_header(bytes.len() as u64, bytes)?;
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image this build can read (PNG, JPEG, GIF)".into());
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("cannot decode: {e}"))?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!(
            "{w}x{h} pixels is over the {MAX_PIXELS}-pixel limit"
        ));
    }
    let orientation = decoder.orientation().ok();
    let mut img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode: {e}"))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgba = img.to_rgba8();
    Ok(resize_rgba_square(
        rgba.as_raw(),
        rgba.width() as usize,
        rgba.height() as usize,
        side,
    ))
}

/// Loads every readable image under `root`.
pub fn load_folder(
    root: &Path,
    side: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Dataset, Vec<Skipped>), String> {
    if !root.is_dir() {
        return Err(format!("{} is not a folder", root.display()));
    }
    let mut files = Vec::new();
    walk(root, &mut files).map_err(|e| format!("reading {}: {e}", root.display()))?;
    let mut data = Dataset::new(side);
    let mut skipped = Vec::new();
    let total = files.len();
    for (i, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(root).unwrap_or(f);
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if data.len() >= MAX_IMAGES {
            skipped.push(Skipped {
                file: name,
                reason: format!("over the limit of {MAX_IMAGES} images"),
            });
            continue;
        }
        let label = Label::of_path(&name);
        match decode_file(f, side) {
            Ok(rgb) => data
                .push_labelled(name, &rgb, label.coarse.as_deref(), label.fine.as_deref())
                .map_err(|e| e.to_string())?,
            Err(reason) => skipped.push(Skipped { file: name, reason }),
        }
        progress(i + 1, total);
    }
    Ok((data, skipped))
}
