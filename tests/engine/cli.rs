//! The `pcl` binary on a real folder: output files, bad files skipped, clear errors.

use std::process::Command;

use crate::Scratch;

use pcl_studio::engine::data::planted_groups;

fn write_folder(root: &std::path::Path) -> usize {
    // 20 x 20 RGB images saved as PNG in one folder per class, plus files that must be skipped.
    let data = planted_groups(2, 2, 6, 20, 5);
    for i in 0..data.len() {
        let path = root.join(&data.names[i]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_raw(20, 20, data.image(i).to_vec())
            .unwrap()
            .save(&path)
            .unwrap();
    }
    std::fs::write(root.join("c0_f0/notes.png"), b"this is text, not a PNG").unwrap();
    std::fs::write(root.join("empty.jpg"), b"").unwrap();
    data.len()
}

/// `pcl train` on a folder of [`write_folder`] in a scratch folder with tiny settings
/// (`width`, `feature_dim`): (images, run folder, the command's output, images in the folder).
fn tiny_run(
    name: &str,
    (width, feature_dim): (usize, usize),
    args: &[&str],
    env: &[(&str, &str)],
) -> (Scratch, Scratch, std::process::Output, usize) {
    let root = Scratch::new(&format!("{name}-images"));
    let n = write_folder(&root);
    let out = Scratch::new(&format!("{name}-out"));
    let config = out.join("tiny.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"width": {width}, "feature_dim": {feature_dim}, "batch_size": 8,
                "warmup_epochs": 1, "num_clusters": [2, 4], "kmeans_restarts": 1}}"#
        ),
    )
    .unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--images"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .args(args)
        .arg("--config")
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (root, out, result, n)
}

#[test]
fn train_writes_every_output_and_skips_bad_files() {
    let (_root, out, result, n) = tiny_run("cli", (8, 16), &["--epochs", "2"], &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "pcl train failed:\n{stderr}");
    assert!(stderr.contains("skipped 2 files"), "{stderr}");
    assert!(stderr.contains("notes.png"), "{stderr}");
    for f in [
        "config.json",
        "model",
        "metrics.json",
        "clusters.json",
        "embeddings.csv",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let epochs = metrics.as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for e in epochs {
        assert!(e["loss"].as_f64().unwrap().is_finite());
        assert!((0.0..=1.0).contains(&e["knn_accuracy"].as_f64().unwrap()));
        assert!(e["ami"].as_f64().is_some() && e["nmi"].as_f64().is_some());
        assert!(e["linear_accuracy"].as_f64().is_some());
        assert!(
            e["pixels_ami"].as_f64().is_some(),
            "raw pixels' AMI beside every epoch"
        );
    }
    // The E-step's clusters of every level, scored against the labels once they exist.
    assert!(
        epochs[0].get("level_ami").is_none(),
        "no clusters before the first E-step"
    );
    let level_ami = epochs[1]["level_ami"]
        .as_array()
        .expect("level AMI after the E-step");
    assert_eq!(level_ami.len(), 2);
    assert!(level_ami.iter().all(|a| a.as_f64().unwrap().is_finite()));
    let clusters: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("clusters.json")).unwrap()).unwrap();
    let levels = clusters["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[1]["k"], 4);
    assert_eq!(levels[1]["assignment"].as_array().unwrap().len(), n);
    assert_eq!(clusters["files"].as_array().unwrap().len(), n);
    let csv = std::fs::read_to_string(out.join("embeddings.csv")).unwrap();
    assert_eq!(csv.lines().count(), n + 1);
    assert_eq!(csv.lines().nth(1).unwrap().split(',').count(), 2 + 16);

    // --resume continues the same run for more epochs.
    let resumed = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--resume"])
        .arg(&out)
        .args(["--epochs", "3"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics.as_array().unwrap().len(), 3);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let empty = Scratch::new("cli-empty");
    let out = Scratch::new("cli-out-empty");
    let r = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--images"])
        .arg(&empty)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let r = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--images", "/no/such/dir", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&r.stderr).contains("is not a folder"));
}

#[test]
fn same_pixels_from_a_png_and_from_its_rgba() {
    // The CLI decodes with the image crate, then the same resize as the browser path.
    let img = image::RgbaImage::from_fn(7, 5, |x, y| {
        image::Rgba([x as u8 * 30, y as u8 * 40, 90, 200])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let via_file = pcl_studio::cli::images::decode_bytes(&png, 4).unwrap();
    let direct = pcl_studio::engine::data::resize_rgba_square(img.as_raw(), 7, 5, 4);
    assert_eq!(via_file, direct);
    // A PNG named .jpg is sniffed by content.
    assert!(pcl_studio::cli::images::decode_bytes(b"GIF89a garbage", 4).is_err());
}

/// The epoch a session file was saved at, after checking that it opens.
fn saved_epoch(file: &std::path::Path) -> usize {
    let bytes = std::fs::read(file).unwrap();
    let (header, _) = pcl_studio::engine::trainer::read_checkpoint(&bytes).expect("it opens");
    header.epoch
}

#[test]
fn a_weight_broken_at_an_epochs_end_never_replaces_the_saved_model() {
    // The update ending epoch 1 (0-based) leaves a non-finite weight behind a finite loss.
    let (root, out, r, _) = tiny_run(
        "cli-diverge",
        (4, 8),
        &["--epochs", "4", "--eval-every", "0"],
        &[("PCL_TEST_DIVERGE_AFTER_EPOCH", "1")],
    );
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("training stopped"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // OUT/model is the end of epoch 0 (saved as epoch 1), and it resumes.
    assert_eq!(saved_epoch(&out.join("model")), 1);
    let resumed = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--resume"])
        .arg(&*out)
        .args(["--images"])
        .arg(&*root)
        .args(["--epochs", "2"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(saved_epoch(&out.join("model")), 2);
}

#[test]
fn a_write_killed_midway_leaves_the_old_model_loadable() {
    let (root, out, r, _) = tiny_run(
        "cli-killed",
        (4, 8),
        &["--epochs", "1", "--eval-every", "0"],
        &[],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let model = out.join("model");
    let before = std::fs::read(&model).unwrap();
    let size = before.len();
    assert!(
        size > 8 * 1024,
        "the model ({size} bytes) must outgrow the limit below"
    );
    // The resumed run may write files of at most 4 KiB: writing the model kills it
    // (SIGXFSZ), as a full disk or Ctrl-C would, in the middle of the write.
    let killed = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -f 4; exec "$0" train --resume "$1" --images "$2" --epochs 3"#)
        .arg(env!("CARGO_BIN_EXE_pcl"))
        .arg(&*out)
        .arg(&*root)
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the write limit stopped the run");
    assert_eq!(
        std::fs::read(&model).unwrap(),
        before,
        "the old model is untouched"
    );
    assert_eq!(saved_epoch(&model), 1);
}

#[test]
fn a_session_with_impossible_settings_is_refused_before_its_images_are_read() {
    // image_size 100000 would size every stored image at 112,500 px square (38 GB reserved
    // for the first); the session's settings are checked first.
    let (root, out, r, _) = tiny_run(
        "cli-badsize",
        (4, 8),
        &["--epochs", "1", "--eval-every", "0"],
        &[],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let bytes = std::fs::read(out.join("model")).unwrap();
    let (mut header, tensors) = crate::session_files::split(&bytes);
    header["config"]["image_size"] = serde_json::json!(100000);
    let bad = crate::session_files::join(&header, tensors);
    let session = out.join("bad.pclstudio");
    std::fs::write(&session, bad).unwrap();
    for command in ["export", "layout"] {
        let mut args = vec![
            command,
            "--from",
            session.to_str().unwrap(),
            "--images",
            root.to_str().unwrap(),
        ];
        if command == "export" {
            args.extend(["--safetensors", "x.safetensors"]);
        }
        let r = Command::new(env!("CARGO_BIN_EXE_pcl"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("image_size"), "{command}: {stderr}");
    }
}

#[test]
fn every_command_prints_its_usage_for_help() {
    for command in [
        "train", "probe", "pixels", "synth", "sample", "export", "layout", "decode", "views",
    ] {
        for flag in ["--help", "-h"] {
            let r = Command::new(env!("CARGO_BIN_EXE_pcl"))
                .args([command, flag])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&r.stdout);
            assert!(
                r.status.success(),
                "{command} {flag}: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            assert!(stdout.contains("USAGE"), "{command} {flag}: {stdout}");
        }
    }
}

#[test]
fn augmentation_settings_are_taken_by_config_and_bad_ones_refused() {
    let root = Scratch::new("cli-aug-images");
    write_folder(&root);
    let out = Scratch::new("cli-aug-out");
    let views = |config: &str, png: &str| {
        let file = out.join(format!("{png}.json"));
        std::fs::write(&file, config).unwrap();
        Command::new(env!("CARGO_BIN_EXE_pcl"))
            .args(["views", "--images"])
            .arg(&root)
            .arg("--config")
            .arg(&file)
            .arg("--out")
            .arg(out.join(format!("{png}.png")))
            .args(["--count", "4", "--seed", "3"])
            .output()
            .unwrap()
    };
    // Grey views, no flips, no crops: the PNG's view tiles have R = G = B.
    let r = views(
        r#"{"augmentation": "v1", "grayscale_prob": 1, "flip": false, "crop_min_scale": 1}"#,
        "grey",
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        stdout.contains(r#""grayscale_prob":1.0"#) && stdout.contains(r#""hue":0.4"#),
        "the v1 recipe fills in what the file leaves out: {stdout}"
    );
    let png = image::open(out.join("grey.png")).unwrap().to_rgb8();
    // A row: the stored image (36 px), a 4-px gap, the first view (the quick demo's 24 px), a
    // gap, the second.
    assert_eq!(
        png.width(),
        36 + 2 * (24 + 4),
        "the quick demo's views of 24 px"
    );
    let grey_tile = (36 + 4..36 + 4 + 24)
        .flat_map(|x| (0..24).map(move |y| (x, y)))
        .all(|(x, y)| {
            let p = png.get_pixel(x, y).0;
            p[0].abs_diff(p[1]) <= 1 && p[1].abs_diff(p[2]) <= 1
        });
    assert!(grey_tile, "the first view is grey");
    // Other training views: the stored image, then two views of 16 px.
    let r = views(r#"{"view_size": 16}"#, "small");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let png = image::open(out.join("small.png")).unwrap();
    assert_eq!(png.width(), 36 + 2 * (16 + 4), "views of 16 px");
    for (config, message) in [
        (r#"{"hue": 2}"#, "hue is 2; allowed: from 0 up to 0.5"),
        (
            r#"{"crop_min_scale": 0}"#,
            "crop_min_scale is 0; allowed: above 0",
        ),
        (
            r#"{"crop_min_scale": 0.9, "crop_max_scale": 0.5}"#,
            "above crop_max_scale",
        ),
        (r#"{"flip": "sometimes"}"#, "not valid settings"),
        (r#"{"blur_probs": 0.5}"#, "did you mean 'blur_prob'"),
        (
            r#"{"view_size": 12}"#,
            "view_size is 12; allowed: from 16 up to image_size (32)",
        ),
        (
            r#"{"view_size": 40}"#,
            "view_size is 40; allowed: from 16 up to image_size (32)",
        ),
    ] {
        let r = views(config, "bad");
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{config}: {stderr}");
        assert!(stderr.contains(message), "{config}: {stderr}");
    }
    // `pcl train --config` reads them the same way and refuses the same values.
    let bad = out.join("bad-train.json");
    std::fs::write(&bad, r#"{"jitter_prob": -0.1}"#).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--images"])
        .arg(&root)
        .arg("--out")
        .arg(out.join("run"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("jitter_prob is -0.1"), "{stderr}");
}

#[test]
fn backend_auto_times_both_devices_and_says_which_trains() {
    let r = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["probe", "--backend", "auto"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    // With a GPU adapter (lavapipe here): both rates and the choice; without: the CPU.
    assert!(
        stderr.contains("auto: no usable GPU adapter; training on the CPU")
            || (stderr.contains("images/s, the CPU") && stderr.contains("training on the")),
        "{stderr}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["probe", "--backend", "fastest"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cpu, wgpu or auto"));
}
