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

#[test]
fn train_writes_every_output_and_skips_bad_files() {
    let root = Scratch::new("cli-images");
    let n = write_folder(&root);
    let out = Scratch::new("cli-out");
    let config = out.join("tiny.json");
    std::fs::write(
        &config,
        r#"{"width": 8, "feature_dim": 16, "batch_size": 8, "warmup_epochs": 1,
            "num_clusters": [2, 4], "kmeans_restarts": 1}"#,
    )
    .unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_pcl"))
        .args(["train", "--images"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .args(["--epochs", "2", "--config"])
        .arg(&config)
        .output()
        .unwrap();
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
    assert_eq!(levels[1]["assignment"].as_object().unwrap().len(), n);
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
