//! The native command-line trainer: `pcl train --images DIR --out OUT ...`.

pub mod images;
pub mod progress;
mod tools;
mod train;

use tools::{decode, export, layout, pixels, probe, sample, synth, views};
pub use train::train;

use std::path::PathBuf;

use burn::prelude::*;

use crate::compute::{BackendKind, init_or_cpu};
use crate::engine::{self};

pub const USAGE: &str = "\
pcl-studio command-line trainer

USAGE:
  pcl train --images DIR --out OUT [--preset quick|thorough|infonce] [--minutes M]
            [--epochs N] [--backend cpu|wgpu|auto] [--config FILE] [--seed S] [--eval-every N]
            [--info-nce-only]
  pcl train --resume OUT [--images DIR] [--epochs N] [--backend cpu|wgpu]
  pcl train --resume SESSION_FILE --images DIR --out OUT [--epochs N]   (a page's session)
  pcl probe [--backend cpu|wgpu|auto]      (auto: the faster of the two, timed)
  pcl pixels --images DIR [--size 32]       metrics of raw pixels: the floor to beat
  pcl synth --out DIR [--per-group N]       write a labelled synthetic folder (2 x 3 groups)
  pcl sample --out DIR [--limit N]          write the built-in sample set (www/sample) as a
                                            folder: group/subgroup/name.png
  pcl export --from RUN_DIR_OR_SESSION_FILE [--images DIR] [--projector OUT]
             [--safetensors FILE]      the encoder as safetensors (PyTorch names) and the
                                            Embedding Projector's bundle (tensors.tsv,
                                            metadata.tsv, sprite.png, projector_config.json)
  pcl layout --from RUN_DIR [--images DIR]  kNN of the labels on the 2-D maps, PCA and t-SNE
  pcl decode --images DIR [--size 32] [--dump FILE]
                                            load a folder as training would: counts, skipped
                                            files and why, decode speed; --dump writes the
                                            stored pixels as JSON (to compare with the browser)
  pcl views --images DIR [--config FILE] [--seed S] [--count N] [--out FILE.png] [--dump FILE]
                                            the two training views of N images (default 6)
                                            that the settings' augmentation (the quick demo's,
                                            as the page's, where --config says nothing) draws
                                            for seed S:
                                            a PNG of rows image | view 1 | view 2; --dump
                                            writes their pixels as JSON

  --images DIR   image folder; files in its first-level subfolders get that folder as label,
                 a second level a fine label (labels are only used to evaluate, never to train);
                 PNG, JPEG, GIF, WebP, BMP; at most 50,000 images, 100 MB and 100 megapixels per file
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
        "auto" => Ok(futures_lite::future::block_on(auto_device())),
        other => Err(format!("--backend is cpu, wgpu or auto, not '{other}'")),
    }
}

/// `--backend auto`: the GPU where one initialises and trains faster than the CPU, timed as
/// the page times them (a few steps of the quick demo's training on each); else the CPU.
async fn auto_device() -> (Device, crate::compute::BackendInfo) {
    use crate::backend::{Choice, ChoiceKind};
    let (gpu, mut info) = init_or_cpu(true, BackendKind::Wgpu).await;
    if info.kind == BackendKind::Cpu {
        eprintln!("auto: no usable GPU adapter; training on the CPU");
        info.choice = Some(Choice {
            how: ChoiceKind::Only,
            webgpu_img_s: None,
            cpu_img_s: None,
        });
        return (gpu, info);
    }
    let start = std::time::Instant::now();
    let now = move || start.elapsed().as_secs_f64() * 1000.0;
    let on_gpu = crate::compute::step_rate(&gpu, 32, 2, &now).await.ok();
    let on_cpu = crate::compute::step_rate(&Device::flex(), 32, 2, &now)
        .await
        .ok();
    let choice = Choice {
        how: ChoiceKind::Measured,
        webgpu_img_s: on_gpu,
        cpu_img_s: on_cpu,
    };
    let rate = |r: Option<f64>| r.map_or("failed".into(), |r| format!("{r:.0} images/s"));
    let cpu_wins = Choice::cpu_is_faster(on_gpu, on_cpu);
    eprintln!(
        "auto: wgpu on {} {}, the CPU {}: training on {}",
        info.adapter,
        rate(on_gpu),
        rate(on_cpu),
        if cpu_wins { "the CPU" } else { "the GPU" }
    );
    if cpu_wins {
        let mut cpu = crate::compute::BackendInfo::cpu(None);
        cpu.choice = Some(choice);
        return (Device::flex(), cpu);
    }
    info.choice = Some(choice);
    (gpu, info)
}

/// Entry point of the binary: returns the process exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    // `pcl COMMAND --help` (or -h) anywhere: the usage, for every command.
    let help = args.iter().skip(1).any(|a| a == "--help" || a == "-h");
    let result = match args.first().map(String::as_str) {
        Some(_) if help => {
            println!("{USAGE}");
            Ok(())
        }
        Some("train") => parse_train(&args[1..]).and_then(|a| train(&a)),
        Some("probe") => probe(&args[1..]),
        Some("pixels") => pixels(&args[1..]),
        Some("synth") => synth(&args[1..]),
        Some("decode") => decode(&args[1..]),
        Some("views") => views(&args[1..]),
        Some("sample") => sample(&args[1..]),
        Some("export") => export(&args[1..]),
        Some("layout") => layout(&args[1..]),
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
