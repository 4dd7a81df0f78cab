//! One file, over 500 lines: the two export formats share the writers of one byte layout each,
//! tested together.
//!
//! Results in the formats other tools read: the encoder as `safetensors` with PyTorch's names
//! and layouts (a `torch.nn.Sequential` of the same layers loads it with `load_state_dict`),
//! and the TensorFlow Embedding Projector's bundle (tensors, metadata, sprite, config).
//!
//! PyTorch module the names follow (README, "Exports"):
//! `backbone = Sequential(Conv2d(3, w, 3, 1, 1, bias=False), BatchNorm2d(w), ReLU(),
//!  Conv2d(w, 2w, 3, 2, 1, bias=False), BatchNorm2d(2w), ReLU(), ... 8w ..., AdaptiveAvgPool2d(1),
//!  Flatten())`, `head = Sequential(Linear(8w, 8w), ReLU(), Linear(8w, feature_dim))`, the
//! embedding `normalize(head(backbone(x)))`; GroupNorm runs have `GroupNorm` where BatchNorm is.

use std::collections::BTreeMap;

use burn::prelude::*;
use serde_json::{Value, json};

use super::config::{NormKind, PclConfig};
use super::data::Dataset;
use super::error::EngineError;
use super::model::{Encoder, EncoderConfig};
use super::params::{flat_params, load_params, read_all};
use super::trainer::Clustering;

/// One tensor of the export: its PyTorch name and shape, and where it sits in the encoder's
/// flat parameters (`None`: BatchNorm's `num_batches_tracked`, which burn does not keep).
struct Entry {
    name: String,
    shape: Vec<usize>,
    param: Option<usize>,
    /// A burn `[in, out]` linear weight, written as PyTorch's `[out, in]`.
    transpose: bool,
    /// GroupNorm's unused running statistics are not in the file; on import they are this.
    absent: Option<f32>,
}

/// The export's tensors in the encoder's visiting order: per block the convolution's weight,
/// the normalisation's gamma, beta, running mean and variance; then each linear's weight and
/// bias.
fn entries(config: &EncoderConfig) -> Vec<Entry> {
    let w = config.width;
    let mut out = Vec::new();
    let mut param = 0;
    let mut next = || {
        param += 1;
        Some(param - 1)
    };
    let channels = [(3, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)];
    for (b, &(cin, cout)) in channels.iter().enumerate() {
        let (conv, norm) = (3 * b, 3 * b + 1);
        let e = |name: String, shape: Vec<usize>, param| Entry {
            name,
            shape,
            param,
            transpose: false,
            absent: None,
        };
        out.push(e(
            format!("backbone.{conv}.weight"),
            vec![cout, cin, 3, 3],
            next(),
        ));
        out.push(e(format!("backbone.{norm}.weight"), vec![cout], next()));
        out.push(e(format!("backbone.{norm}.bias"), vec![cout], next()));
        let batch = config.norm == NormKind::Batch;
        for (stat, fill) in [("running_mean", 0.0), ("running_var", 1.0)] {
            out.push(Entry {
                absent: (!batch).then_some(fill),
                ..e(format!("backbone.{norm}.{stat}"), vec![cout], next())
            });
        }
        if batch {
            out.push(e(
                format!("backbone.{norm}.num_batches_tracked"),
                vec![],
                None,
            ));
        }
    }
    let d = config.backbone_dim();
    for (layer, (din, dout)) in [(0, (d, d)), (2, (d, config.feature_dim))] {
        out.push(Entry {
            name: format!("head.{layer}.weight"),
            shape: vec![dout, din],
            param: next(),
            transpose: true,
            absent: None,
        });
        out.push(Entry {
            name: format!("head.{layer}.bias"),
            shape: vec![dout],
            param: next(),
            transpose: false,
            absent: None,
        });
    }
    out
}

/// Flat parameters the encoder of `config` has (running statistics included).
fn param_count(config: &EncoderConfig) -> usize {
    entries(config).iter().filter_map(|e| e.param).count()
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// How the engine turns an image into the encoder's input, as the safetensors metadata says it
/// (the README's PyTorch snippet follows it step by step).
pub const INPUT_RECIPE: &str = "RGB, 0-1, NCHW, resize to stored_size (area filter, long side \
    centre-cropped), centre crop crop_size, then (x - mean) / std";

/// `encoder` (evaluation weights and running statistics) as safetensors bytes; its metadata
/// holds the settings and the input's preprocessing for a run that trains at `image_size`.
pub async fn safetensors(
    encoder: &Encoder,
    config: &EncoderConfig,
    image_size: usize,
) -> Result<Vec<u8>, EngineError> {
    let values = read_all(flat_params(encoder)).await?;
    if values.len() != param_count(config) {
        return Err(EngineError::Shape(format!(
            "the encoder has {} parameter tensors, the export expects {}",
            values.len(),
            param_count(config)
        )));
    }
    let norm = match config.norm {
        NormKind::Batch => "batch",
        NormKind::Group => "group",
    };
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        json!({
            "format": "pt",
            "producer": "pcl-studio",
            "width": config.width.to_string(),
            "feature_dim": config.feature_dim.to_string(),
            "norm": norm,
            "mean": json!(super::augment::MEAN).to_string(),
            "std": json!(super::augment::STD).to_string(),
            "stored_size": PclConfig::stored_size(image_size).to_string(),
            "crop_size": image_size.to_string(),
            "input": INPUT_RECIPE,
        }),
    );
    let mut data: Vec<u8> = Vec::new();
    for e in entries(config).into_iter().filter(|e| e.absent.is_none()) {
        let start = data.len();
        match e.param {
            Some(i) => {
                let v = &values[i];
                let want: usize = e.shape.iter().product();
                if v.len() != want {
                    return Err(EngineError::Shape(format!(
                        "{}: {} values, shape {:?} holds {want}",
                        e.name,
                        v.len(),
                        e.shape
                    )));
                }
                let v = if e.transpose {
                    // burn [in, out] -> PyTorch [out, in]
                    transpose(v, e.shape[1], e.shape[0])
                } else {
                    v.clone()
                };
                for x in v {
                    data.extend_from_slice(&x.to_le_bytes());
                }
                header.insert(
                    e.name,
                    json!({ "dtype": "F32", "shape": e.shape, "data_offsets": [start, data.len()] }),
                );
            }
            None => {
                data.extend_from_slice(&0i64.to_le_bytes());
                header.insert(
                    e.name,
                    json!({ "dtype": "I64", "shape": e.shape, "data_offsets": [start, data.len()] }),
                );
            }
        }
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).expect("plain data");
    // The data starts 8-byte aligned (the format allows trailing spaces in the header).
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    Ok(out)
}

/// An encoder from safetensors bytes in the layout [`safetensors`] writes (width, feature size
/// and normalisation read from the shapes). The bytes are untrusted: every offset and shape is
/// checked.
pub fn load_safetensors(bytes: &[u8], device: &Device) -> Result<(Encoder, EncoderConfig), String> {
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("not a safetensors file (shorter than its header length)")?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or("the safetensors header runs past the file")?;
    let header: BTreeMap<String, Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| format!("safetensors header: {e}"))?;
    let data = &bytes[end..];
    // Every tensor must lie inside the file, used here or not (a cut file is refused whole).
    for (name, h) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let inside = serde_json::from_value::<[usize; 2]>(h["data_offsets"].clone())
            .is_ok_and(|[a, b]| a <= b && b <= data.len());
        if !inside {
            return Err(format!("{name}: its data lies outside the file"));
        }
    }
    let tensor = |name: &str| -> Result<(Vec<usize>, Vec<f32>), String> {
        let h = header.get(name).ok_or(format!("no tensor '{name}'"))?;
        let shape: Vec<usize> = serde_json::from_value(h["shape"].clone())
            .map_err(|e| format!("{name}: shape: {e}"))?;
        let [a, b]: [usize; 2] = serde_json::from_value(h["data_offsets"].clone())
            .map_err(|e| format!("{name}: offsets: {e}"))?;
        if h["dtype"] != "F32" || a > b || b > data.len() || (b - a) % 4 != 0 {
            return Err(format!("{name}: not F32 data inside the file"));
        }
        let values: Vec<f32> = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if shape.iter().try_fold(1usize, |p, &s| p.checked_mul(s)) != Some(values.len()) {
            return Err(format!(
                "{name}: shape {shape:?} does not hold {} values",
                values.len()
            ));
        }
        Ok((shape, values))
    };
    let (stem, _) = tensor("backbone.0.weight")?;
    let (out, _) = tensor("head.2.weight")?;
    let norm = if header.contains_key("backbone.1.running_mean") {
        NormKind::Batch
    } else {
        NormKind::Group
    };
    let width = *stem.first().ok_or("backbone.0.weight has no shape")?;
    let feature_dim = *out.first().ok_or("head.2.weight has no shape")?;
    if !(1..=128).contains(&width) || !(1..=1024).contains(&feature_dim) {
        return Err(format!(
            "width {width} or feature size {feature_dim} out of range"
        ));
    }
    let config = EncoderConfig::new(width, feature_dim).with_norm(norm);
    let mut values = vec![Vec::new(); param_count(&config)];
    for e in entries(&config) {
        let Some(i) = e.param else { continue };
        if let Some(fill) = e.absent {
            values[i] = vec![fill; e.shape[0]];
            continue;
        }
        let (shape, v) = tensor(&e.name)?;
        if shape != e.shape {
            return Err(format!(
                "{}: shape {shape:?}, expected {:?}",
                e.name, e.shape
            ));
        }
        values[i] = if e.transpose {
            transpose(&v, e.shape[0], e.shape[1])
        } else {
            v
        };
    }
    let encoder = load_params(config.init(device), &values, device).map_err(|e| e.to_string())?;
    Ok((encoder, config))
}

/// The Embedding Projector's files: one embedding per row, metadata with a header, a sprite of
/// the thumbnails (row-major square grid), and the config tying them together.
pub struct Projector {
    pub tensors_tsv: String,
    pub metadata_tsv: String,
    /// Sprite side in pixels (`grid` x the thumbnail side) and its RGB bytes.
    pub sprite_side: usize,
    pub sprite_rgb: Vec<u8>,
    pub config_json: String,
}

/// File names inside the bundle.
pub const PROJECTOR_FILES: [&str; 4] = [
    "tensors.tsv",
    "metadata.tsv",
    "sprite.png",
    "projector_config.json",
];

/// A TSV field: tabs and line breaks would split rows and columns, and a spreadsheet must not
/// read it as a formula.
fn tsv(s: &str) -> String {
    super::explore::not_a_formula(&s.replace(['\t', '\n', '\r'], " "))
}

/// The Embedding Projector's largest sprite side.
pub const MAX_SPRITE_SIDE: usize = 8192;

/// The bundle of `data` with its unit embeddings `emb` [n, d] and the clustering's levels.
pub fn projector(
    data: &Dataset,
    emb: &[f32],
    d: usize,
    clustering: Option<&Clustering>,
) -> Projector {
    let n = data.len().min(emb.len() / d.max(1));
    let mut tensors = String::new();
    for row in emb.chunks(d.max(1)).take(n) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        tensors.push_str(&cells.join("\t"));
        tensors.push('\n');
    }
    let levels = clustering.map_or(&[][..], |c| &c.levels[..]);
    let mut head = vec!["file".to_string(), "label".into(), "fine label".into()];
    for m in 0..levels.len() {
        head.push(format!("level {} cluster", m + 1));
        head.push(format!("level {} phi", m + 1));
    }
    let mut meta = head.join("\t") + "\n";
    let name_of = |names: &[String], l: &Option<Vec<u32>>, i: usize| -> String {
        l.as_ref()
            .and_then(|l| names.get(l[i] as usize))
            .cloned()
            .unwrap_or_default()
    };
    for i in 0..n {
        let mut row = vec![
            tsv(&data.names[i]),
            tsv(&name_of(&data.class_names, &data.labels, i)),
            tsv(&name_of(&data.fine_class_names, &data.fine_labels, i)),
        ];
        for l in levels {
            let a = l.assignments.get(i).copied().unwrap_or(0) as usize;
            row.push(a.to_string());
            row.push(format!("{}", l.phi.get(a).copied().unwrap_or(f32::NAN)));
        }
        meta.push_str(&row.join("\t"));
        meta.push('\n');
    }
    // Thumbnails shrink (box filter) where the grid at full size would pass the Projector's
    // sprite limit (many images stored at 72 or 108 px).
    let grid = (n as f64).sqrt().ceil().max(1.0) as usize;
    let s = data.side.min(MAX_SPRITE_SIDE / grid).max(1);
    let side = grid * s;
    let mut sprite = vec![255u8; side * side * 3];
    for i in 0..n {
        let (gx, gy) = ((i % grid) * s, (i / grid) * s);
        let img = shrink_rgb(data.image(i), data.side, s);
        for y in 0..s {
            let dst = ((gy + y) * side + gx) * 3;
            sprite[dst..dst + s * 3].copy_from_slice(&img[y * s * 3..(y + 1) * s * 3]);
        }
    }
    let config = json!({
        "embeddings": [{
            "tensorName": "pcl-studio",
            "tensorShape": [n, d],
            "tensorPath": PROJECTOR_FILES[0],
            "metadataPath": PROJECTOR_FILES[1],
            "sprite": { "imagePath": PROJECTOR_FILES[2], "singleImageDim": [s, s] },
        }]
    });
    Projector {
        tensors_tsv: tensors,
        metadata_tsv: meta,
        sprite_side: side,
        sprite_rgb: sprite,
        config_json: serde_json::to_string_pretty(&config).expect("plain data"),
    }
}

/// A square RGB image of side `from` at side `to` <= `from`, each pixel the mean of its block.
fn shrink_rgb(img: &[u8], from: usize, to: usize) -> std::borrow::Cow<'_, [u8]> {
    if to >= from {
        return img.into();
    }
    let mut out = Vec::with_capacity(to * to * 3);
    let span = |i: usize| (i * from / to)..((i + 1) * from / to).max(i * from / to + 1);
    for y in 0..to {
        for x in 0..to {
            let mut sum = [0u32; 3];
            let (ys, xs) = (span(y), span(x));
            let count = (ys.len() * xs.len()) as u32;
            for sy in ys {
                for sx in xs.clone() {
                    let p = (sy * from + sx) * 3;
                    for (acc, &v) in sum.iter_mut().zip(&img[p..p + 3]) {
                        *acc += v as u32;
                    }
                }
            }
            out.extend(sum.map(|v| ((v + count / 2) / count) as u8));
        }
    }
    out.into()
}

impl Projector {
    /// The bundle's files by name, as the CLI writes them into a folder and the page zips them.
    pub fn files(&self) -> [(&'static str, Vec<u8>); 4] {
        let sprite = png_rgb(self.sprite_side, self.sprite_side, &self.sprite_rgb);
        let [tensors, metadata, sprite_png, config] = PROJECTOR_FILES;
        [
            (tensors, self.tensors_tsv.as_bytes().to_vec()),
            (metadata, self.metadata_tsv.as_bytes().to_vec()),
            (sprite_png, sprite),
            (config, self.config_json.as_bytes().to_vec()),
        ]
    }

    /// The bundle as one zip (the page's download).
    pub fn zip(&self) -> Vec<u8> {
        let files = self.files();
        let named: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
        zip_stored(&named)
    }
}

/// CRC-32 (IEEE), as PNG chunks and zip entries use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// An RGB PNG with its image data in stored (uncompressed) deflate blocks: no compression
/// library in the page's worker, and any PNG reader takes it.
pub fn png_rgb(w: usize, h: usize, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(h * (1 + 3 * w));
    for row in rgb.chunks(3 * w).take(h) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    out
}

/// A zip archive of `files`, stored without compression.
pub fn zip_stored(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let (crc, size, offset) = (crc32(data), data.len() as u32, out.len() as u32);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]); // version, flags, stored, time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&[0, 0]); // extra
        };
        out.extend_from_slice(b"PK\x03\x04");
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00");
        common(&mut central);
        central.extend_from_slice(&[0; 8]); // comment, disk, attributes
        central.extend_from_slice(&[0; 2]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (at, len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_the_standard_check_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let png = png_rgb(2, 1, &[255, 0, 0, 0, 0, 255]);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let zip = zip_stored(&[("a.txt", b"hi"), ("b.txt", b"")]);
        assert!(zip.starts_with(b"PK\x03\x04") && zip.ends_with(&[0, 0]));
    }
}
