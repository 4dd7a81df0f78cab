//! The native command-line trainer: `pcl train --images DIR --out OUT ...`.

pub mod images;
pub mod progress;

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::compute::{BackendKind, init_or_cpu, probe_step};
use crate::engine::session::{Options, Session, Update};
use crate::engine::{self, PclConfig, Phase, Trainer, explore};
use progress::{Bar, format_secs};

pub const USAGE: &str = "\
pcl-studio command-line trainer

USAGE:
  pcl train --images DIR --out OUT [--preset quick|thorough|infonce] [--minutes M]
            [--epochs N] [--backend cpu|wgpu] [--config FILE] [--seed S] [--eval-every N]
            [--info-nce-only]
  pcl train --resume OUT [--images DIR] [--epochs N] [--backend cpu|wgpu]
  pcl train --resume SESSION_FILE --images DIR --out OUT [--epochs N]   (a page's session)
  pcl probe [--backend cpu|wgpu]
  pcl pixels --images DIR [--size 32]       metrics of raw pixels: the floor to beat
  pcl synth --out DIR [--per-group N]       write a labelled synthetic folder (2 x 3 groups)
  pcl sample --out DIR [--limit N]          write the built-in sample set (www/sample) as a
                                            folder: group/subgroup/name.png
  pcl decode --images DIR [--size 32] [--dump FILE]
                                            load a folder as training would: counts, skipped
                                            files and why, decode speed; --dump writes the
                                            stored pixels as JSON (to compare with the browser)

  --images DIR   image folder; files in its first-level subfolders get that folder as label,
                 a second level a fine label (labels are only used to evaluate, never to train);
                 PNG, JPEG, GIF; at most 50,000 images, 100 MB and 100 megapixels per file
  --out OUT      writes config.json, model, metrics.json, clusters.json, embeddings.csv
  --preset P     the page's presets: quick (2 minutes), thorough (10 minutes), infonce (the
                 quick demo without prototypes); --config and the flags below override it
  --minutes M    time budget: the run plans its epochs from its measured speed so that the
                 learning-rate schedule ends at M minutes (--epochs alone turns a preset's
                 budget off)
  --config FILE  JSON with any PclConfig fields (see config.json of a run)
  --resume OUT   continue the run saved in OUT (its model file)";

#[derive(Debug, Default, PartialEq)]
pub struct TrainArgs {
    pub images: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub backend: Option<String>,
    pub config: Option<PathBuf>,
    pub seed: Option<u64>,
    /// Evaluate every N epochs (0: never); by default every epoch, or only at the end of a
    /// run with a time budget (evaluation time would come out of the budget).
    pub eval_every: Option<usize>,
    pub info_nce_only: bool,
    pub preset: Option<engine::config::Preset>,
    pub minutes: Option<f64>,
}

pub fn parse_train(args: &[String]) -> Result<TrainArgs, String> {
    let mut a = TrainArgs::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |s: String, name: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{name} wants a whole number, got '{s}'"))
        };
        match flag.as_str() {
            "--images" => a.images = Some(value("--images")?.into()),
            "--out" => a.out = Some(value("--out")?.into()),
            "--resume" => a.resume = Some(value("--resume")?.into()),
            "--config" => a.config = Some(value("--config")?.into()),
            "--backend" => a.backend = Some(value("--backend")?),
            "--epochs" => a.epochs = Some(num(value("--epochs")?, "--epochs")? as usize),
            "--seed" => a.seed = Some(num(value("--seed")?, "--seed")?),
            "--eval-every" => {
                a.eval_every = Some(num(value("--eval-every")?, "--eval-every")? as usize)
            }
            "--info-nce-only" => a.info_nce_only = true,
            "--preset" => a.preset = Some(engine::config::Preset::from_key(&value("--preset")?)?),
            "--minutes" => {
                let v = value("--minutes")?;
                let m = v
                    .parse::<f64>()
                    .ok()
                    .filter(|m| *m > 0.0 && *m <= 1440.0)
                    .ok_or_else(|| {
                        format!("--minutes wants a number of minutes in (0, 1440], got '{v}'")
                    })?;
                a.minutes = Some(m);
            }
            other => return Err(format!("unknown option '{other}'\n\n{USAGE}")),
        }
    }
    if a.resume.is_none() && (a.images.is_none() || a.out.is_none()) {
        return Err(format!(
            "train needs --images and --out (or --resume)\n\n{USAGE}"
        ));
    }
    Ok(a)
}

fn device_for(backend: Option<&str>) -> Result<(Device, crate::compute::BackendInfo), String> {
    match backend.unwrap_or("cpu") {
        "cpu" => Ok(futures_lite::future::block_on(init_or_cpu(
            false,
            BackendKind::Wgpu,
        ))),
        "wgpu" => {
            let (d, info) = futures_lite::future::block_on(init_or_cpu(true, BackendKind::Wgpu));
            if let Some(n) = &info.notice {
                eprintln!("note: {n}");
            }
            Ok((d, info))
        }
        other => Err(format!("--backend is cpu or wgpu, not '{other}'")),
    }
}

/// Entry point of the binary: returns the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let result = match args.first().map(String::as_str) {
        Some("train") => parse_train(&args[1..]).and_then(|a| train(&a)),
        Some("probe") => probe(&args[1..]),
        Some("pixels") => pixels(&args[1..]),
        Some("synth") => synth(&args[1..]),
        Some("decode") => decode(&args[1..]),
        Some("sample") => sample(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n\n{USAGE}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn probe(args: &[String]) -> Result<(), String> {
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

fn pixels(args: &[String]) -> Result<(), String> {
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

fn decode(args: &[String]) -> Result<(), String> {
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
fn sample(args: &[String]) -> Result<(), String> {
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

fn synth(args: &[String]) -> Result<(), String> {
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

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

pub fn train(a: &TrainArgs) -> Result<(), String> {
    // --resume takes a run folder (its `model`) or a session file exported by the page.
    let session_file = a.resume.as_ref().filter(|p| p.is_file());
    if session_file.is_some() && (a.out.is_none() || a.images.is_none()) {
        return Err("resuming a session file needs --images (the same images) and --out".into());
    }
    let out = a
        .out
        .clone()
        .or_else(|| a.resume.clone())
        .expect("checked in parse");
    let resume_bytes = match &a.resume {
        Some(path) => {
            let file = session_file.cloned().unwrap_or_else(|| path.join("model"));
            Some(std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?)
        }
        None => None,
    };
    let base = a.preset.map(|p| p.config()).unwrap_or_default();
    let mut config = match (&a.config, &resume_bytes) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let file: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a valid config: {e}", f.display()))?;
            // The file's fields over the preset's (or the defaults).
            let mut merged = serde_json::to_value(&base).expect("json");
            if let (Some(m), Some(f)) = (merged.as_object_mut(), file.as_object()) {
                m.extend(f.clone());
            }
            serde_json::from_value::<PclConfig>(merged)
                .map_err(|e| format!("{}: not a valid config: {e}", f.display()))?
        }
        (None, Some(bytes)) => {
            engine::trainer::read_checkpoint(bytes)
                .map_err(|e| e.to_string())?
                .0
                .config
        }
        (None, None) => base,
    };
    if let Some(e) = a.epochs {
        config.epochs = e;
        config.minutes = None;
    }
    if let Some(m) = a.minutes {
        config.minutes = Some(m);
    }
    if let Some(s) = a.seed {
        config.seed = s;
    }
    if a.info_nce_only {
        config = config.info_nce_only();
    }
    let images = match (&a.images, &a.resume) {
        (Some(i), _) => i.clone(),
        (None, Some(dir)) => {
            let saved: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("config.json")).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            saved["images"]
                .as_str()
                .map(PathBuf::from)
                .ok_or("config.json of the run names no images folder; pass --images")?
        }
        _ => unreachable!("checked in parse"),
    };
    let side = PclConfig::stored_size(config.image_size);
    let mut bar = Bar::new();
    let (data, skipped) =
        images::load_folder(&images, side, &mut |i, n| bar.draw(i, n, "decoding images"))?;
    let rate = data.len() as f64 / bar.elapsed().max(1e-9);
    eprintln!("loaded {} images ({rate:.0} images/s)", data.len());
    if !skipped.is_empty() {
        eprintln!("skipped {} files:", skipped.len());
        for s in &skipped {
            eprintln!("  {}: {}", s.file, s.reason);
        }
    }
    let (device, info) = device_for(a.backend.as_deref())?;
    eprintln!("device: {} ({:?})", info.adapter, info.kind);

    let trainer = match &resume_bytes {
        Some(bytes) => {
            let mut t = Trainer::load(bytes, &data, &device).map_err(|e| e.to_string())?;
            if a.epochs.is_some() || a.minutes.is_some() {
                t.config.epochs = config.epochs;
                t.config.minutes = config.minutes;
            }
            t
        }
        None => Trainer::new(&config, &data, &device).map_err(|e| e.to_string())?,
    };
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut saved_config = serde_json::to_value(&trainer.config).map_err(|e| e.to_string())?;
    saved_config["images"] = serde_json::Value::String(images.to_string_lossy().into());
    write(
        &out.join("config.json"),
        serde_json::to_string_pretty(&saved_config)
            .expect("json")
            .as_bytes(),
    )?;

    // On resume, metrics.json keeps the epochs already written.
    let mut metrics: Vec<serde_json::Value> = match &resume_bytes {
        Some(_) => std::fs::read_to_string(out.join("metrics.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let eval_every = a.eval_every.unwrap_or(match trainer.config.minutes {
        Some(_) => usize::MAX,
        None => 1,
    });
    let start = std::time::Instant::now();
    let mut session = Session::new(
        trainer,
        std::rc::Rc::new(data),
        Options::cli((eval_every > 0).then_some(eval_every)),
        Box::new(move || start.elapsed().as_secs_f64()),
        false,
    );
    let mut bar = Bar::new();
    let mut trouble: Option<String> = None;
    while !session.ended() {
        futures_lite::future::block_on(session.tick(&mut |update| {
            if let Err(e) = show(update, &mut bar, &mut metrics, &out) {
                trouble.get_or_insert(e);
            }
        }));
        if let Some(e) = trouble.take() {
            return Err(e);
        }
    }
    if session.state() == engine::RunState::Error {
        return Err(format!(
            "the run stopped; the last saved state is in {}",
            out.join("model").display()
        ));
    }
    let data = session.data().clone();
    let trainer = session.into_trainer();
    eprintln!("training took {}", format_secs(bar.elapsed()));
    write_outputs(&trainer, &data, &out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// Prints one update of the run (the progress bar, E-steps, epoch figures) and writes what
/// it carries: a row of metrics.json per epoch, the model at every checkpoint.
fn show(
    update: Update,
    bar: &mut Bar,
    metrics: &mut Vec<serde_json::Value>,
    out: &Path,
) -> Result<(), String> {
    match update {
        Update::Status(s) => match s.phase {
            Phase::KMeans { level, levels, k } => {
                eprint!(
                    "\rE-step: k-means level {}/{levels} (K={k})\x1b[K",
                    level + 1
                )
            }
            Phase::Embedding { done, total } => {
                eprint!("\rE-step: embedding {done}/{total}\x1b[K")
            }
            Phase::Training => bar.draw(
                s.epoch * s.steps_per_epoch + s.step,
                s.epochs * s.steps_per_epoch,
                &format!(
                    "epoch {} step {}/{} {:.0} img/s",
                    (s.epoch + 1).min(s.epochs),
                    s.step,
                    s.steps_per_epoch,
                    s.images_per_s
                ),
            ),
            _ => {}
        },
        Update::Steps(records) => {
            if let Some(r) = records.last() {
                let protos: Vec<String> = r.proto.iter().map(|p| format!("{p:.3}")).collect();
                bar.note(&format!(
                    "loss {:.3} (infonce {:.3} proto [{}])",
                    r.loss,
                    r.info_nce,
                    protos.join(" ")
                ));
            }
        }
        Update::EStep { epoch, levels } => {
            let ks: Vec<String> = levels
                .iter()
                .map(|l| format!("K={} inertia={:.1}", l.k, l.inertia))
                .collect();
            eprintln!("\rE-step before epoch {epoch}: {}\x1b[K", ks.join(", "));
        }
        Update::Epoch(m) => {
            let show = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            if !m.level_ami.is_empty() {
                eprintln!(
                    "\repoch {}: E-step clusters per level: AMI [{}] fine [{}] (raw pixels {})\x1b[K",
                    m.epoch,
                    show(&m.level_ami),
                    show(&m.level_ami_fine),
                    m.pixels_ami.map_or("-".into(), |p| format!("{p:.3}"))
                );
            }
            if let (Some(knn), Some(ami), Some(nmi), Some(lin)) =
                (m.knn_accuracy, m.ami, m.nmi, m.linear_accuracy)
            {
                eprintln!(
                    "\repoch {}: kNN {knn:.3}  AMI {ami:.3}  NMI {nmi:.3}  linear {lin:.3}\x1b[K",
                    m.epoch
                );
            }
            metrics.push(serde_json::to_value(&m).expect("json"));
        }
        Update::Replanned {
            epochs,
            warmup_epochs,
            seconds_used,
        } => eprintln!(
            "\rtime budget: {epochs} epochs in all (warm-up {warmup_epochs}), {} used\x1b[K",
            format_secs(seconds_used)
        ),
        // After every epoch, so an interrupted run loses at most one.
        Update::Checkpoint { bytes, .. } => {
            write(&out.join("model"), &bytes)?;
            write(
                &out.join("metrics.json"),
                serde_json::to_string_pretty(metrics)
                    .expect("json")
                    .as_bytes(),
            )?;
        }
        Update::Failed(f) => eprintln!("\rerror: {f}\x1b[K"),
        Update::Warning(w) => eprintln!("\rwarning: {w}\x1b[K"),
        Update::Explored(_) => {}
    }
    Ok(())
}

/// Embeddings and clusters of the final model (the checkpoint was written after the last epoch).
fn write_outputs(trainer: &Trainer, data: &engine::Dataset, out: &Path) -> Result<(), String> {
    let encoder = trainer.encoder();
    let emb = futures_lite::future::block_on(trainer.embed_all(&encoder, data, false, &mut |_| {}))
        .map_err(|e| e.to_string())?
        .head
        .1;
    let d = trainer.config.feature_dim;
    write(
        &out.join("embeddings.csv"),
        explore::embeddings_csv(data, &emb, d).as_bytes(),
    )?;
    write(
        &out.join("clusters.json"),
        explore::clusters_json(trainer, data).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_train_flags_and_rejects_bad_ones() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = parse_train(&s(&["--images", "d", "--out", "o", "--epochs", "3"])).unwrap();
        assert_eq!(a.epochs, Some(3));
        assert_eq!(a.images, Some("d".into()));
        assert!(
            parse_train(&s(&["--images", "d"]))
                .unwrap_err()
                .contains("--out")
        );
        assert!(
            parse_train(&s(&["--epochs", "x", "--out", "o"]))
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            parse_train(&s(&["--bogus"]))
                .unwrap_err()
                .contains("unknown option")
        );
        let a = parse_train(&s(&[
            "--images",
            "d",
            "--out",
            "o",
            "--preset",
            "thorough",
            "--minutes",
            "1.5",
        ]))
        .unwrap();
        assert_eq!(a.preset, Some(engine::config::Preset::Thorough));
        assert_eq!(a.minutes, Some(1.5));
        let bad = |v: &[&str]| parse_train(&s(v)).unwrap_err();
        assert!(bad(&["--preset", "fast"]).contains("quick, thorough or infonce"));
        assert!(bad(&["--minutes", "-2"]).contains("(0, 1440]"));
        assert!(bad(&["--minutes", "NaN"]).contains("(0, 1440]"));
    }
}
