//! The CLI's smaller commands: probe, pixels, decode, views, sample, synth, export, layout.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use super::progress::Bar;
use super::train::{read_session, run_images, write};
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

/// A PNG file, written as every file of the CLI is ([`write`]).
fn write_png(path: &Path, image: &image::RgbImage) -> Result<(), String> {
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    write(path, &png.into_inner())
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

/// Pairs of training views of a few images (the page's augmentation panel): a PNG of rows
/// "image, view 1, view 2" and, with `--dump`, the views' pixels as JSON (to compare with the
/// browser's).
pub(super) fn views(args: &[String]) -> Result<(), String> {
    let f = flags(
        args,
        &[
            "--images", "--config", "--seed", "--count", "--out", "--dump",
        ],
    )?;
    let images = f.get("--images").ok_or("views needs --images")?;
    // The page's settings until the user changes them: the quick demo's.
    let base = engine::config::Preset::Quick.config();
    let mut config = match f.get("--config") {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{file}: not valid JSON: {e}"))?;
            PclConfig::from_json(&base, &json).map_err(|e| format!("{file}: {e}"))?
        }
        None => base,
    };
    if let Some(seed) = f.get("--seed") {
        config.seed = seed.parse().map_err(|_| "--seed: a whole number")?;
    }
    let count: usize = f
        .get("--count")
        .map_or(Ok(6), |c| c.parse().map_err(|_| "--count: a whole number"))?;
    if !(1..=64).contains(&count) {
        return Err(format!("--count is {count}; allowed: 1 to 64"));
    }
    let side = PclConfig::stored_size(config.image_size);
    let (data, _) = images::load_folder(Path::new(images), side, &mut |_, _| {})?;
    let picked = data.preview_indices(count);
    let pixels: Vec<&[u8]> = picked.iter().map(|&i| data.image(i)).collect();
    let size = config.view_side();
    let pairs = futures_lite::future::block_on(engine::augment::view_pairs(
        &pixels,
        side,
        &config.aug(),
        config.seed,
        size,
        &Device::flex(),
    ))
    .map_err(|e| e.to_string())?;
    println!(
        "{} images, seed {}, augmentation {}",
        pairs.len(),
        config.seed,
        serde_json::to_string(&config.aug()).expect("json")
    );
    if let Some(out) = f.get("--out") {
        let mut grid = image::RgbImage::from_pixel(
            (side + 2 * (size + 4)) as u32,
            (pairs.len() * (side + 4)) as u32,
            image::Rgb([255, 255, 255]),
        );
        for (row, (pair, rgb)) in pairs.iter().zip(&pixels).enumerate() {
            let top = row * (side + 4);
            let tiles = [
                (0, side, *rgb),
                (side + 4, size, &pair[0][..]),
                (side + size + 8, size, &pair[1][..]),
            ];
            for (left, s, px) in tiles {
                for (p, c) in px.chunks_exact(3).enumerate() {
                    let (x, y) = ((left + p % s) as u32, (top + p / s) as u32);
                    grid.put_pixel(x, y, image::Rgb([c[0], c[1], c[2]]));
                }
            }
        }
        write_png(Path::new(out), &grid)?;
    }
    if let Some(dump) = f.get("--dump") {
        let names: Vec<&str> = picked.iter().map(|&i| data.names[i].as_str()).collect();
        let json = serde_json::json!({
            "seed": config.seed, "size": size, "names": names, "views": pairs,
        });
        write(Path::new(dump), json.to_string().as_bytes())?;
    }
    Ok(())
}

/// The sample set as files, picked as the page picks them (`limit` spread over the set).
pub(super) fn sample(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--out", "--limit"])?;
    let out = PathBuf::from(f.get("--out").ok_or("sample needs --out")?);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/sample");
    let index: engine::data::SampleIndex = serde_json::from_slice(
        &std::fs::read(dir.join("emoji.json")).map_err(|e| format!("sample index: {e}"))?,
    )
    .map_err(|e| format!("sample index: {e}"))?;
    let atlas = image::open(dir.join("emoji.png"))
        .map_err(|e| format!("sample atlas: {e}"))?
        .to_rgb8();
    let limit = match f.get("--limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| "--limit: a number")?),
        None => None,
    };
    let (w, h) = (atlas.width() as usize, atlas.height() as usize);
    let tiles = index.tiles(w, h, limit)?;
    let (side, take) = (index.side as u32, tiles.len());
    for t in tiles {
        let path = out.join(&t.path);
        std::fs::create_dir_all(path.parent().expect("has a folder")).map_err(|e| e.to_string())?;
        let tile = image::imageops::crop_imm(&atlas, t.x as u32, t.y as u32, side, side);
        write_png(&path, &tile.to_image())?;
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
        let image = image::RgbImage::from_raw(side as u32, side as u32, data.image(i).to_vec())
            .expect("sizes match");
        write_png(&path, &image)?;
    }
    println!(
        "wrote {} images in {} classes to {}",
        data.len(),
        data.class_names.len(),
        out.display()
    );
    Ok(())
}

/// A saved run (a run folder, or a session file with `--images`) and its images.
fn open_run(
    from: &Path,
    images: Option<&String>,
) -> Result<(engine::Trainer, engine::Dataset), String> {
    let (session, images) = if from.is_dir() {
        let images = match images {
            Some(i) => PathBuf::from(i),
            None => run_images(from)?,
        };
        (from.join("model"), images)
    } else {
        let images = images.ok_or("a session file needs --images (the same images)")?;
        (from.to_path_buf(), PathBuf::from(images))
    };
    let bytes = read_session(&session)?;
    // Checks the settings too, before `image_size` sizes the images.
    let (header, _) = engine::trainer::read_checkpoint(&bytes).map_err(|e| e.to_string())?;
    let side = PclConfig::stored_size(header.config.image_size);
    let (data, _) = images::load_folder(&images, side, &mut |_, _| {})?;
    let trainer =
        engine::Trainer::load(&bytes, &data, &Device::flex()).map_err(|e| e.to_string())?;
    Ok((trainer, data))
}

/// `pcl layout --from RUN [--images DIR]`: how well each 2-D map keeps the label classes apart
/// (leave-one-out kNN, k = 10, on the layout), PCA against t-SNE. A benchmark: it prints.
pub(super) fn layout(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--from", "--images"])?;
    let from = PathBuf::from(f.get("--from").ok_or("layout needs --from RUN_DIR")?);
    let (trainer, data) = open_run(&from, f.get("--images"))?;
    let labels = data
        .eval_labels()
        .ok_or("layout needs labelled images (two or more folders)")?;
    let d = trainer.config.feature_dim;
    let emb = futures_lite::future::block_on(trainer.embed_all(
        &trainer.encoder(),
        &data,
        false,
        &mut |_| {},
    ))
    .map_err(|e| e.to_string())?
    .head;
    let pca = engine::eval::pca_2d(&emb, d);
    let t0 = std::time::Instant::now();
    let mut tsne = engine::tsne::Tsne::new(&emb, d, &pca, 30.0)?;
    let mut bar = Bar::new();
    while !tsne.done() {
        tsne.run(10);
        bar.draw(tsne.iteration, tsne.iterations, "t-SNE");
    }
    let seconds = t0.elapsed().as_secs_f64();
    let knn = |p: &[[f32; 2]]| engine::tsne::knn_2d(p, labels, 10);
    println!(
        "{} images, {} classes: kNN (k = 10) on the 2-D layout: PCA {:.3}, t-SNE {:.3} \
         (t-SNE {seconds:.1} s, 1,000 iterations)",
        data.len(),
        data.class_names.len(),
        knn(&pca),
        knn(&tsne.layout())
    );
    Ok(())
}

/// `pcl export --from RUN_DIR_OR_SESSION_FILE [--images DIR] [--projector OUT]
/// [--safetensors FILE]`: the encoder as safetensors (PyTorch's names) and the Embedding
/// Projector's bundle of a saved run.
pub(super) fn export(args: &[String]) -> Result<(), String> {
    let f = flags(
        args,
        &["--from", "--images", "--projector", "--safetensors"],
    )?;
    let from = PathBuf::from(
        f.get("--from")
            .ok_or("export needs --from RUN_DIR or SESSION_FILE")?,
    );
    if !f.contains_key("--projector") && !f.contains_key("--safetensors") {
        return Err("export needs --projector OUT and/or --safetensors FILE".into());
    }
    let (trainer, data) = open_run(&from, f.get("--images"))?;
    let c = &trainer.config;
    let encoder = trainer.encoder();
    if let Some(out) = f.get("--safetensors") {
        let st = futures_lite::future::block_on(engine::export::safetensors(
            &encoder,
            &c.encoder(),
            c.image_size,
        ))
        .map_err(|e| e.to_string())?;
        write(Path::new(out), &st)?;
        println!("wrote {out} ({} bytes)", st.len());
    }
    if let Some(dir) = f.get("--projector") {
        let dir = PathBuf::from(dir);
        let emb =
            futures_lite::future::block_on(trainer.embed_all(&encoder, &data, false, &mut |_| {}))
                .map_err(|e| e.to_string())?
                .head;
        let p = engine::export::projector(&data, &emb, c.feature_dim, trainer.clustering.as_ref());
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for (name, bytes) in p.files() {
            write(&dir.join(name), &bytes)?;
        }
        println!(
            "wrote the Embedding Projector bundle of {} images to {} (load projector_config.json \
             at projector.tensorflow.org)",
            data.len(),
            dir.display()
        );
    }
    Ok(())
}
