//! `pcl train`: load the folder, open or start the run, drive its engine session to the end
//! with a progress bar, write the outputs.

use std::path::{Path, PathBuf};

use super::progress::{Bar, format_secs};
use super::{TrainArgs, device_for, images};
use crate::engine::session::{Options, Session, Update};
use crate::engine::{self, PclConfig, Phase, Trainer, explore};

/// The images folder a run folder's config.json names (written by `train`).
pub(super) fn run_images(run: &Path) -> Result<PathBuf, String> {
    let file = run.join("config.json");
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    saved["images"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "config.json of the run names no images folder; pass --images".into())
}

/// Writes `bytes` so that `path` never holds half a file: into a temporary file in the same
/// folder, flushed to the disk, then renamed over the old one. Ctrl-C, a kill or a full disk
/// mid-write leave the old file as it was (a later command reads these files: `--resume`).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let name = path
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", path.display()));
    }
    // The rename itself reaches the disk with the folder's entry.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// A session file (a run's `model`, a page's export), refused above
/// [`crate::intake::MAX_SESSION_BYTES`] before it is read.
pub(super) fn read_session(path: &Path) -> Result<Vec<u8>, String> {
    let max = crate::intake::MAX_SESSION_BYTES;
    let size = std::fs::metadata(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .len();
    if size > max {
        return Err(format!(
            "{} is {size} bytes; a session file has at most {max}",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
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
            Some(read_session(&file)?)
        }
        None => None,
    };
    let base = a.preset.map(|p| p.config()).unwrap_or_default();
    let mut config = match (&a.config, &resume_bytes) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let file: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not valid JSON: {e}", f.display()))?;
            // The file's fields over the preset's (or the defaults).
            PclConfig::from_json(&base, &file).map_err(|e| format!("{}: {e}", f.display()))?
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
    config.check().map_err(|e| e.to_string())?;
    let images = match (&a.images, &a.resume) {
        (Some(i), _) => i.clone(),
        (None, Some(dir)) => run_images(dir)?,
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

    let mut trainer = match &resume_bytes {
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
    // Test hook (tests/engine/cli.rs): the update that ends this epoch breaks the weights.
    trainer.diverge_after_epoch = std::env::var("PCL_TEST_DIVERGE_AFTER_EPOCH")
        .ok()
        .and_then(|e| e.parse().ok());
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
        Options {
            prepare_kernels: info.kind != crate::compute::BackendKind::Cpu,
            ..Options::cli((eval_every > 0).then_some(eval_every))
        },
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
    let status = session.status();
    if let Some(k) = status.kernels.filter(|_| status.images_per_s > 0.0) {
        eprintln!(
            "GPU steps: the first after the preparation {:.3} s, steady {:.3} s",
            k.first_step_seconds,
            status.config.as_ref().map_or(0, |c| c.batch_size) as f64 / status.images_per_s
        );
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
            Phase::KMeans { .. } | Phase::Embedding { .. } | Phase::Preparing { .. } => {
                eprint!("\r{}\x1b[K", s.phase)
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
        Update::EStep {
            epoch,
            levels,
            seconds,
        } => {
            let ks: Vec<String> = levels
                .iter()
                .map(|l| format!("K={} inertia={:.1}", l.k, l.inertia))
                .collect();
            eprintln!(
                "\rE-step before epoch {epoch} ({seconds:.1} s): {}\x1b[K",
                ks.join(", ")
            );
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
        Update::Prepared { kernels, seconds } => eprintln!(
            "\rGPU ready: {} kernels built before the first step ({seconds:.1} s)\x1b[K",
            kernels.map_or("its".into(), |k| k.to_string())
        ),
        Update::Explored(_) => {}
    }
    Ok(())
}

/// Embeddings and clusters of the final model (the checkpoint was written after the last epoch).
fn write_outputs(trainer: &Trainer, data: &engine::Dataset, out: &Path) -> Result<(), String> {
    let encoder = trainer.encoder();
    let emb = futures_lite::future::block_on(trainer.embed_all(&encoder, data, false, &mut |_| {}))
        .map_err(|e| e.to_string())?
        .head;
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
