//! Reading an image folder natively: every file under it (recursively), decoded with the
//! `image` crate, resized by the same rule as the browser (`engine::data::resize_rgba_square`).
//! The first folder level under the root names the label. Bad files are skipped with a reason.

use std::path::{Path, PathBuf};

use crate::engine::data::{Dataset, resize_rgba_square};

/// Largest image accepted, in pixels (checked from the header, before decoding).
pub const MAX_PIXELS: u64 = 100_000_000;
/// Largest file accepted.
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

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
    if len == 0 {
        return Err("empty file".into());
    }
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "{len} bytes is over the {MAX_FILE_BYTES}-byte limit"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    decode_bytes(&bytes, side)
}

/// Decodes image bytes (format sniffed from the content, not the name) to `side` x `side` RGB.
pub fn decode_bytes(bytes: &[u8], side: usize) -> Result<Vec<u8>, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image this build can read (PNG, JPEG, GIF)".into());
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("unreadable header: {e}"))?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!(
            "{w}x{h} pixels is over the {MAX_PIXELS}-pixel limit"
        ));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| format!("cannot decode: {e}"))?;
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
        let name = rel.to_string_lossy().to_string();
        let class = (rel.components().count() > 1)
            .then(|| rel.components().next())
            .flatten()
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        match decode_file(f, side) {
            Ok(rgb) => data
                .push(name, &rgb, class.as_deref())
                .map_err(|e| e.to_string())?,
            Err(reason) => skipped.push(Skipped { file: name, reason }),
        }
        progress(i + 1, total);
    }
    Ok((data, skipped))
}
