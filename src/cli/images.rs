//! Reading an image folder natively: every file under it (recursively), decoded with the
//! `image` crate, resized by the same rule as the browser (`engine::data::resize_rgba_square`).
//! Folder names give the labels and limits are checked before decoding, by the rules the
//! browser shares ([`crate::intake`]). Bad files are skipped with a reason.

use std::path::{Path, PathBuf};

use image::ImageDecoder;

use crate::engine::data::{Dataset, resize_rgba_square};
use crate::intake::{Label, check_header, check_size};
pub use crate::intake::{MAX_FILE_BYTES, MAX_IMAGES, MAX_PIXELS, Skipped};

/// Most entries a folder walk lists: more than enough for [`MAX_IMAGES`] images among other
/// files, and a bound on the memory a huge tree can take.
const MAX_ENTRIES: usize = 4 * MAX_IMAGES;

/// Every file under `dir`, sorted per folder. Symbolic links are not followed (a link to a
/// parent would loop) and unreadable folders are skipped; both are listed with the reason.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
    let listed = std::fs::read_dir(dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
    let mut entries = match listed {
        Ok(entries) => entries,
        Err(e) => {
            skipped.push(Skipped {
                file: display_name(root, dir),
                reason: format!("folder could not be read: {e}"),
            });
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= MAX_ENTRIES {
            skipped.push(Skipped {
                file: display_name(root, &e.path()),
                reason: format!("the folder holds more than {MAX_ENTRIES} files; the rest is left"),
            });
            return;
        }
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_symlink() => skipped.push(Skipped {
                file: display_name(root, &p),
                reason: "symbolic link (not followed)".into(),
            }),
            Ok(t) if t.is_dir() => walk(root, &p, out, skipped),
            Ok(_) => out.push(p),
            Err(err) => skipped.push(Skipped {
                file: display_name(root, &p),
                reason: err.to_string(),
            }),
        }
    }
}

/// A path under `root` as the page writes it: `/`-separated, and bytes that are not UTF-8
/// written as `%XX`, so two such names never collapse into one.
pub fn display_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| escaped(c.as_os_str()))
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(unix)]
fn escaped(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(not(unix))]
fn escaped(name: &std::ffi::OsStr) -> String {
    name.to_string_lossy().into_owned()
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
        return Err("not an image this build can read (PNG, JPEG, GIF, WebP, BMP)".into());
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
    let mut skipped = Vec::new();
    walk(root, root, &mut files, &mut skipped);
    let mut data = Dataset::new(side);
    let total = files.len();
    for (i, f) in files.iter().enumerate() {
        let name = display_name(root, f);
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
