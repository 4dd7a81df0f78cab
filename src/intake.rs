//! Rules for taking files in, shared by the browser worker and the CLI so both accept, refuse
//! and label the same files the same way: size limits, format sniffing from the content (never
//! the name), image dimensions read from the header before decoding (the decompression-bomb
//! guard), and labels from folder names. No decoder lives here: the browser uses its own,
//! the CLI the `image` crate; both then call [`crate::engine::data::resize_rgba_square`].

use serde::{Deserialize, Serialize};

/// Largest image accepted, in pixels, checked from the header before any decoding.
pub const MAX_PIXELS: u64 = 100_000_000;
/// Largest file accepted.
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Most images one data set holds (at 32 px training, 36x36 RGB stored: 194 MB).
pub const MAX_IMAGES: usize = 50_000;
/// Largest session file opened (an import, a lesson, the CLI's `--resume` and `--from`): a
/// width-128 run with a 65,536-row queue of 1,024-d features is about 0.3 GB.
pub const MAX_SESSION_BYTES: u64 = 1 << 30;
/// How much of a file's start is read first for [`check_header`]; where the size lies further
/// in (JPEG metadata, GIF extensions), [`header_bytes_needed`] says how far to read.
pub const HEAD_BYTES: usize = 256 * 1024;

/// A file that was not loaded, and why, in words for the user.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Gif,
    Webp,
    Bmp,
}

/// The format of a file from its first bytes.
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if head.starts_with(b"BM") && head.len() >= 26 {
        Some(Format::Bmp)
    } else {
        None
    }
}

fn be16(b: &[u8], i: usize) -> Option<u32> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32)
}
fn le16(b: &[u8], i: usize) -> Option<u32> {
    Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32)
}
fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn le32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Where a header walk stands: the size, or how many bytes from the start it needs to go on.
enum Walk {
    Size(u32, u32),
    Need(usize),
}

/// A JPEG's size from its first start-of-frame marker, walking the segments before it.
fn jpeg_walk(head: &[u8]) -> Walk {
    let need = |i: usize| Walk::Need(i.saturating_add(10));
    let mut i = 2;
    loop {
        while i < head.len() && head[i] != 0xFF {
            i += 1;
        }
        while i < head.len() && head[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = head.get(i) else {
            return need(i);
        };
        i += 1;
        if matches!(marker, 0xD0..=0xD9 | 0x01) {
            continue; // no length field
        }
        let Some(len) = be16(head, i) else {
            return need(i);
        };
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return match (be16(head, i + 5), be16(head, i + 3)) {
                (Some(w), Some(h)) => Walk::Size(w, h),
                _ => need(i),
            };
        }
        i += len as usize;
    }
}

/// A GIF's size: its logical screen, or its first frame where that reaches further (a 1x1
/// screen can hold a frame of any size, and decoders allocate the frame).
fn gif_walk(head: &[u8]) -> Walk {
    let (Some(sw), Some(sh), Some(&flags)) = (le16(head, 6), le16(head, 8), head.get(10)) else {
        return Walk::Need(13);
    };
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 7) + 1); // global colour table
    }
    loop {
        match head.get(i) {
            None => return Walk::Need(i + 10),
            Some(0x2C) => {
                let frame = |o: usize| le16(head, i + o);
                return match (frame(1), frame(3), frame(5), frame(7)) {
                    (Some(left), Some(top), Some(w), Some(h)) => {
                        Walk::Size(sw.max(left + w), sh.max(top + h))
                    }
                    _ => Walk::Need(i + 10),
                };
            }
            Some(0x21) => {
                // Extension: label, then sub-blocks until a zero length.
                i += 2;
                loop {
                    match head.get(i) {
                        None => return Walk::Need(i + 10),
                        Some(0) => {
                            i += 1;
                            break;
                        }
                        Some(&n) => i += n as usize + 1,
                    }
                }
            }
            // A trailer or garbage before any frame: the decoder will refuse it; the screen
            // is what there is.
            Some(_) => return Walk::Size(sw, sh),
        }
    }
}

/// How much of the file's start [`check_header`] needs to find the image size, where the
/// given `head` is not enough (a JPEG whose frame marker comes after large metadata, a GIF
/// after long extensions); `None` when `head` suffices.
pub fn header_bytes_needed(head: &[u8]) -> Option<usize> {
    let walk = match sniff(head)? {
        Format::Jpeg => jpeg_walk(head),
        Format::Gif => gif_walk(head),
        _ => return None,
    };
    match walk {
        Walk::Need(n) if n > head.len() => Some(n),
        _ => None,
    }
}

/// Width and height from the header, where the format and the first bytes tell them.
pub fn dimensions(format: Format, head: &[u8]) -> Option<(u32, u32)> {
    let size = |walk| match walk {
        Walk::Size(w, h) => Some((w, h)),
        Walk::Need(_) => None,
    };
    match format {
        Format::Png => {
            (&head.get(12..16)? == b"IHDR").then_some((be32(head, 16)?, be32(head, 20)?))
        }
        Format::Gif => size(gif_walk(head)),
        // OS/2 bitmaps (a 12-byte core header) keep 16-bit sizes.
        Format::Bmp if le32(head, 14)? == 12 => Some((le16(head, 18)?, le16(head, 20)?)),
        Format::Bmp => Some((le32(head, 18)?, (le32(head, 22)? as i32).unsigned_abs())),
        Format::Webp => match head.get(12..16)? {
            b"VP8 " => Some((le16(head, 26)? & 0x3FFF, le16(head, 28)? & 0x3FFF)),
            b"VP8L" => {
                let b = le32(head, 21)?;
                Some(((b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1))
            }
            b"VP8X" => {
                let w = le32(head, 24)? & 0xFF_FFFF;
                let h = le32(head, 27)? & 0xFF_FFFF;
                Some((w + 1, h + 1))
            }
            _ => None,
        },
        Format::Jpeg => size(jpeg_walk(head)),
    }
}

/// Accepts or refuses a file before decoding: `len` is its size, `head` its first bytes (at
/// least [`HEAD_BYTES`] or the whole file). Returns the format and the header's dimensions.
pub fn check_header(len: u64, head: &[u8]) -> Result<(Format, Option<(u32, u32)>), String> {
    check_size(len)?;
    let format = sniff(head).ok_or_else(|| {
        "not an image: the content is not PNG, JPEG, GIF, WebP or BMP (whatever the name says)"
            .to_string()
    })?;
    let dims = dimensions(format, head);
    if dims.is_none() && (head.len() as u64) < len {
        // What cannot be sized is not decoded: the limit could not be checked.
        return Err(format!(
            "the image size is not in the first {} KiB of the file; refused before decoding",
            head.len() / 1024
        ));
    }
    if let Some((w, h)) = dims {
        if w == 0 || h == 0 {
            return Err(format!("broken header: {w}x{h} pixels"));
        }
        let pixels = w as u64 * h as u64;
        if pixels > MAX_PIXELS {
            return Err(format!(
                "{w}x{h} is {:.0} megapixels, over the {} megapixel limit (refused before decoding)",
                pixels as f64 / 1e6,
                MAX_PIXELS / 1_000_000
            ));
        }
    }
    Ok((format, dims))
}

/// Most files the browser decodes at once, and most of their pixels (a decoded bitmap holds 4
/// bytes a pixel outside the wasm memory: 8 files of 100 megapixels would be 3.2 GB).
pub const DECODING_FILES: usize = 8;
pub const DECODING_PIXELS: u64 = 64_000_000;

/// Whether a file of `pixels` (from its header) may start decoding while `files` of `in_flight`
/// pixels are decoding. A file alone always may: the per-file limit already bounds it.
pub fn may_start_decoding(files: usize, in_flight: u64, pixels: u64) -> bool {
    files == 0 || (files < DECODING_FILES && in_flight.saturating_add(pixels) <= DECODING_PIXELS)
}

/// The pixels a checked header promises ([`check_header`]); where it gave no size (a whole
/// small file read), the most a file may have, so that it decodes alone.
pub fn header_pixels(dims: Option<(u32, u32)>) -> u64 {
    dims.map_or(MAX_PIXELS, |(w, h)| w as u64 * h as u64)
}

/// Refuses empty and oversized files from their size alone.
pub fn check_size(len: u64) -> Result<(), String> {
    if len == 0 {
        return Err("empty file (0 bytes)".into());
    }
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "file of {:.0} MB is over the {} MB limit",
            len as f64 / 1048576.0,
            MAX_FILE_BYTES / 1048576
        ));
    }
    Ok(())
}

/// The labels of an image, from the folders it lies in: the first folder (`coarse`) and the
/// first two (`fine`, written "coarse/fine" so equal subfolder names under different groups
/// stay apart). Only used to measure, never to train.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub coarse: Option<String>,
    pub fine: Option<String>,
}

impl Label {
    /// The labels of a file at `relative` ("group/subgroup/name.png").
    pub fn of_path(relative: &str) -> Self {
        let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
        let dirs = &parts[..parts.len().saturating_sub(1)];
        Self {
            coarse: dirs.first().map(|s| s.to_string()),
            fine: (dirs.len() >= 2).then(|| format!("{}/{}", dirs[0], dirs[1])),
        }
    }

    /// As one folder path: "coarse/fine", "coarse", or "" without labels (how the page keeps
    /// them in its storage; `from_folder` reads it back).
    pub fn folder(&self) -> String {
        self.fine
            .clone()
            .or_else(|| self.coarse.clone())
            .unwrap_or_default()
    }

    pub fn from_folder(folder: &str) -> Self {
        if folder.is_empty() {
            return Self::default();
        }
        Self {
            coarse: Some(folder.split('/').next().unwrap_or(folder).to_string()),
            fine: folder.contains('/').then(|| folder.to_string()),
        }
    }
}

/// Rough seconds left, from the rate so far.
pub fn eta_seconds(done: usize, total: usize, elapsed_s: f64) -> Option<f64> {
    (done > 0 && total >= done).then(|| elapsed_s / done as f64 * (total - done) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_content_and_reads_header_sizes() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&20000u32.to_be_bytes());
        png.extend_from_slice(&20000u32.to_be_bytes());
        assert_eq!(sniff(&png), Some(Format::Png));
        let e = check_header(5000, &png).unwrap_err();
        assert!(e.contains("20000x20000 is 400 megapixels"), "{e}");
        // A JPEG: SOI, an APP0 segment, then SOF0 with height 10, width 4000.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 10, 0x0F, 0xA0, 3,
        ];
        assert_eq!(
            check_header(18, &jpeg).unwrap(),
            (Format::Jpeg, Some((4000, 10)))
        );
        // A GIF: 2x3 screen, no colour table, then its first frame at (0, 0), 2x3.
        let gif = b"GIF89a\x02\x00\x03\x00\x00\x00\x00\x2C\0\0\0\0\x02\x00\x03\x00\x00";
        assert_eq!(dimensions(Format::Gif, gif), Some((2, 3)));
        assert!(check_header(0, b"").unwrap_err().contains("empty"));
        assert!(
            check_header(9, b"hello png")
                .unwrap_err()
                .contains("not an image")
        );
        assert!(
            check_header(MAX_FILE_BYTES + 1, &png)
                .unwrap_err()
                .contains("MB limit")
        );
    }

    #[test]
    fn gif_frames_bmp_core_headers_and_late_jpeg_markers_are_sized() {
        // A 1x1 screen, a comment extension, then an 11000x11000 frame: refused by the frame.
        let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
        gif.extend_from_slice(&[0; 6]); // global colour table of 2 entries
        gif.extend_from_slice(b"\x21\xFE\x03abc\x00");
        gif.extend_from_slice(b"\x2C\0\0\0\0");
        gif.extend_from_slice(&11000u16.to_le_bytes());
        gif.extend_from_slice(&11000u16.to_le_bytes());
        gif.push(0);
        let e = check_header(gif.len() as u64, &gif).unwrap_err();
        assert!(e.contains("11000x11000"), "{e}");
        // The frame descriptor not yet read: how far to read is said.
        assert_eq!(header_bytes_needed(&gif[..20]), Some(31));
        assert_eq!(header_bytes_needed(&gif), None);
        // An OS/2 bitmap: 12-byte core header with 16-bit sizes.
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&[0; 12]);
        bmp.extend_from_slice(&12u32.to_le_bytes());
        bmp.extend_from_slice(&640u16.to_le_bytes());
        bmp.extend_from_slice(&480u16.to_le_bytes());
        bmp.extend_from_slice(&[1, 0, 24, 0, 0, 0]);
        assert_eq!(
            check_header(5000, &bmp).unwrap(),
            (Format::Bmp, Some((640, 480)))
        );
        // A JPEG whose frame marker lies past the first bytes read: more is asked for, and
        // a guard that cannot read further refuses instead of letting it through unsized.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF];
        jpeg.extend(std::iter::repeat_n(0, 0xFFFF - 2));
        jpeg.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0x9C, 0x40, 0x9C, 0x40, 3]);
        let head = &jpeg[..1000];
        assert_eq!(header_bytes_needed(head), Some(jpeg.len()));
        let e = check_header(jpeg.len() as u64, head).unwrap_err();
        assert!(e.contains("not in the first"), "{e}");
        let e = check_header(jpeg.len() as u64, &jpeg).unwrap_err();
        assert!(e.contains("40000x40000"), "{e}");
    }

    #[test]
    fn labels_come_from_folders() {
        let label = |c: Option<&str>, f: Option<&str>| Label {
            coarse: c.map(str::to_string),
            fine: f.map(str::to_string),
        };
        assert_eq!(Label::of_path("a.png"), Label::default());
        assert_eq!(Label::of_path("cat/a.png"), label(Some("cat"), None));
        let bird = Label::of_path("Animals/bird/x/a.png");
        assert_eq!(bird, label(Some("Animals"), Some("Animals/bird")));
        for l in [Label::default(), label(Some("cat"), None), bird] {
            assert_eq!(Label::from_folder(&l.folder()), l, "{l:?}");
        }
        assert_eq!(eta_seconds(10, 30, 5.0), Some(10.0));
        assert_eq!(eta_seconds(0, 30, 5.0), None);
    }

    #[test]
    fn decoding_is_bounded_by_pixels_not_only_by_files() {
        // Small files: eight at a time.
        let mut in_flight = Vec::new();
        for _ in 0..20 {
            let total: u64 = in_flight.iter().sum();
            if !may_start_decoding(in_flight.len(), total, 1_000_000) {
                break;
            }
            in_flight.push(1_000_000);
        }
        assert_eq!(in_flight.len(), DECODING_FILES);
        // 100-megapixel files: one at a time, never none.
        assert!(may_start_decoding(0, 0, 100_000_000));
        assert!(!may_start_decoding(1, 100_000_000, 100_000_000));
        assert!(!may_start_decoding(1, 40_000_000, 30_000_000));
        assert!(may_start_decoding(1, 30_000_000, 30_000_000));
        assert_eq!(header_pixels(None), MAX_PIXELS);
        assert_eq!(header_pixels(Some((4000, 3000))), 12_000_000);
    }
}
