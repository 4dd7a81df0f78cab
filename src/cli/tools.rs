//! The CLI's smaller commands: probe, pixels, decode, sample, synth.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::progress::Bar;
use super::train::write;
use super::{USAGE, device_for, images};
use crate::compute::probe_step;
use crate::engine::{self, PclConfig};

pub(super) fn probe(args: &[String]) -> Result<(), String> {
    let backend = match args {
        [] => None,
        [f, v] if f == "--backend" => Some(v.as_str()),
        _ => return Err(format!("probe takes only --backend\n\n{USAGE}")),
    };
    let (device, info) = device_for(backend)?;
    println!(
        "backend: {:?} adapter: {} api: {}",
        info.kind, info.adapter, info.api
    );
    let loss = futures_lite::future::block_on(probe_step(&device)).map_err(|e| e.to_string())?;
    println!("probe step loss: {loss:.4}");
    Ok(())
}

/// `--name value` pairs of a simple command.
fn flags(
    args: &[String],
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, String> {
    if !args.len().is_multiple_of(2) {
        return Err(format!("options come in --name value pairs\n\n{USAGE}"));
    }
    args.chunks(2)
        .map(|p| {
            if allowed.contains(&p[0].as_str()) {
                Ok((p[0].clone(), p[1].clone()))
            } else {
                Err(format!("unknown option '{}'\n\n{USAGE}", p[0]))
            }
        })
        .collect()
}

pub(super) fn pixels(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--images", "--size"])?;
    let get = |n: &str| f.get(n).cloned();
    let images = get("--images").ok_or("pixels needs --images")?;
    let size: usize =
        get("--size").map_or(Ok(32), |s| s.parse().map_err(|_| "--size: a number"))?;
    let (data, _) = images::load_folder(
        Path::new(&images),
        PclConfig::stored_size(size),
        &mut |_, _| {},
    )?;
    let labels = data
        .eval_labels()
        .ok_or("pixels needs labelled subfolders (two or more)")?;
    let rep = futures_lite::future::block_on(engine::evaluate_pixels(
        &data,
        labels,
        size,
        &Device::flex(),
    ))
    .map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&rep).expect("json"));
    Ok(())
}

pub(super) fn decode(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--images", "--size", "--dump"])?;
    let images = f.get("--images").ok_or("decode needs --images")?;
    let size: usize = f
        .get("--size")
        .map_or(Ok(32), |s| s.parse().map_err(|_| "--size: a number"))?;
    let side = PclConfig::stored_size(size);
    let mut bar = Bar::new();
    let t0 = std::time::Instant::now();
    let (data, skipped) = images::load_folder(Path::new(images), side, &mut |i, n| {
        bar.draw(i, n, "decoding")
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let tried = data.len() + skipped.len();
    println!(
        "{} images loaded at {side}x{side} ({:.1} MB), {} skipped; {:.0} files/s",
        data.len(),
        data.memory_bytes() as f64 / 1e6,
        skipped.len(),
        tried as f64 / seconds.max(1e-9)
    );
    if data.eval_labels().is_some() {
        println!("labels: {}", data.class_names.join(", "));
    }
    for s in &skipped {
        println!("skipped {}: {}", s.file, s.reason);
    }
    if let Some(dump) = f.get("--dump") {
        let images: serde_json::Map<String, serde_json::Value> = (0..data.len())
            .map(|i| (data.names[i].clone(), serde_json::json!(data.image(i))))
            .collect();
        let json = serde_json::json!({ "side": side, "images": images, "skipped": skipped });
        write(Path::new(dump), json.to_string().as_bytes())?;
    }
    Ok(())
}

/// The sample set as files, picked as the page picks them (`limit` spread over the set).
pub(super) fn sample(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--out", "--limit"])?;
    let out = PathBuf::from(f.get("--out").ok_or("sample needs --out")?);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/sample");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("emoji.json")).map_err(|e| format!("sample index: {e}"))?,
    )
    .map_err(|e| format!("sample index: {e}"))?;
    let atlas = image::open(dir.join("emoji.png"))
        .map_err(|e| format!("sample atlas: {e}"))?
        .to_rgb8();
    let side = index["side"].as_u64().unwrap_or(36) as u32;
    let cols = index["cols"].as_u64().unwrap_or(64) as usize;
    let items = index["items"]
        .as_array()
        .ok_or("sample index has no items")?;
    let n = items.len();
    let take = match f.get("--limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| "--limit: a number")?
            .clamp(1, n),
        None => n,
    };
    for i in engine::data::spread(n, take) {
        let part = |k: usize| items[i][k].as_str().unwrap_or("").replace('/', "-");
        let path = out
            .join(part(0))
            .join(part(1))
            .join(format!("{}.png", part(2)));
        std::fs::create_dir_all(path.parent().expect("has a folder")).map_err(|e| e.to_string())?;
        let (x, y) = ((i % cols) as u32 * side, (i / cols) as u32 * side);
        image::imageops::crop_imm(&atlas, x, y, side, side)
            .to_image()
            .save(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!("wrote {take} sample images to {}", out.display());
    Ok(())
}

pub(super) fn synth(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--out", "--per-group"])?;
    let get = |n: &str| f.get(n).cloned();
    let out = PathBuf::from(get("--out").ok_or("synth needs --out")?);
    let per: usize =
        get("--per-group").map_or(Ok(60), |s| s.parse().map_err(|_| "--per-group: a number"))?;
    let side = 40;
    let data = engine::data::planted_groups(2, 3, per, side, 11);
    for i in 0..data.len() {
        let path = out.join(&data.names[i]);
        std::fs::create_dir_all(path.parent().expect("has a folder")).map_err(|e| e.to_string())?;
        image::RgbImage::from_raw(side as u32, side as u32, data.image(i).to_vec())
            .expect("sizes match")
            .save(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!(
        "wrote {} images in {} classes to {}",
        data.len(),
        data.class_names.len(),
        out.display()
    );
    Ok(())
}
