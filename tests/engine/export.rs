//! Exports other tools read. The encoder's safetensors: the file an independent numpy script
//! wrote (tests/reference/safetensors_reference.py, PyTorch's names and layouts) loads into the
//! engine, reproduces that script's forward pass within 1e-4 and exports back tensor for
//! tensor. The Embedding Projector bundle: the CLI writes files that parse and agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use futures_lite::future::block_on;
use pcl_studio::engine::export::{PROJECTOR_FILES, load_safetensors, safetensors};

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference")
}

/// Every tensor of a safetensors file: name -> (dtype, shape, raw bytes).
fn parse(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let data = &bytes[8 + len..];
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| {
            let [a, b]: [usize; 2] = serde_json::from_value(v["data_offsets"].clone()).unwrap();
            let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
            let dtype = v["dtype"].as_str().unwrap().to_string();
            (k, (dtype, shape, data[a..b].to_vec()))
        })
        .collect()
}

#[test]
fn safetensors_match_an_independent_numpy_forward_pass_and_round_trip() {
    let bytes = std::fs::read(reference().join("encoder.safetensors")).unwrap();
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference().join("encoder_forward.json")).unwrap())
            .unwrap();
    let device = Device::flex();
    let (encoder, config) = load_safetensors(&bytes, &device).unwrap();
    assert_eq!((config.width, config.feature_dim), (4, 8));
    let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
    let images: Vec<f32> = serde_json::from_value(want["images"].clone()).unwrap();
    let expected: Vec<f32> = serde_json::from_value(want["embeddings"].clone()).unwrap();
    let x = Tensor::<4>::from_data(
        TensorData::new(images, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let got = encoder
        .forward(x)
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    assert_eq!(got.len(), expected.len());
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-4,
        "embeddings differ from numpy's by up to {worst}"
    );

    // Exported again: the same tensors under the same names, shapes and bytes.
    let again = block_on(safetensors(&encoder, &config, 32)).unwrap();
    assert_eq!(parse(&again), parse(&bytes));
    // Its metadata says how to feed an image in: strings only, as the format requires.
    let len = u64::from_le_bytes(again[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&again[8..8 + len]).unwrap();
    let meta = header["__metadata__"].as_object().unwrap();
    assert!(meta.values().all(|v| v.is_string()), "{meta:?}");
    let numbers =
        |k: &str| -> Vec<f32> { serde_json::from_str(meta[k].as_str().unwrap()).unwrap() };
    assert_eq!(numbers("mean"), [0.485, 0.456, 0.406]);
    assert_eq!(numbers("std"), [0.229, 0.224, 0.225]);
    assert_eq!(
        (meta["stored_size"].as_str(), meta["crop_size"].as_str()),
        (Some("36"), Some("32"))
    );
    assert!(meta["input"].as_str().unwrap().contains("(x - mean) / std"));

    // Damaged files are errors, never panics.
    for cut in [0, 4, 8, 9, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            load_safetensors(&bytes[..cut], &device).is_err(),
            "cut at {cut}"
        );
    }
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_safetensors(&huge, &device).is_err());
}

#[test]
fn the_cli_exports_a_projector_bundle_and_safetensors_that_parse() {
    let dir = crate::Scratch::new("export");
    let images = dir.join("images");
    let run = dir.join("run");
    let bin = env!("CARGO_BIN_EXE_pcl");
    let ok = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&[
        "synth",
        "--out",
        images.to_str().unwrap(),
        "--per-group",
        "8",
    ]);
    let config = dir.join("tiny.json");
    std::fs::write(
        &config,
        r#"{"width": 4, "feature_dim": 8, "epochs": 2, "warmup_epochs": 1, "num_clusters": [3, 6], "kmeans_restarts": 1}"#,
    )
    .unwrap();
    ok(&[
        "train",
        "--images",
        images.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let bundle = dir.join("projector");
    let weights = dir.join("encoder.safetensors");
    ok(&[
        "export",
        "--from",
        run.to_str().unwrap(),
        "--projector",
        bundle.to_str().unwrap(),
        "--safetensors",
        weights.to_str().unwrap(),
    ]);
    for f in PROJECTOR_FILES {
        assert!(bundle.join(f).is_file(), "{f} missing");
    }
    let tensors = std::fs::read_to_string(bundle.join("tensors.tsv")).unwrap();
    let meta = std::fs::read_to_string(bundle.join("metadata.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = tensors.lines().map(|l| l.split('\t').collect()).collect();
    let meta_rows: Vec<Vec<&str>> = meta.lines().map(|l| l.split('\t').collect()).collect();
    let n = 2 * 3 * 8;
    assert_eq!(rows.len(), n);
    assert!(
        rows.iter().all(|r| r.len() == 8),
        "every embedding has 8 values"
    );
    assert_eq!(meta_rows.len(), n + 1, "a header and a row per image");
    let header = &meta_rows[0];
    assert_eq!(header[..3], ["file", "label", "fine label"]);
    assert!(meta_rows.iter().all(|r| r.len() == header.len()));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join(PROJECTOR_FILES[3])).unwrap())
            .unwrap();
    let e = &config["embeddings"][0];
    assert_eq!(e["tensorShape"], serde_json::json!([n, 8]));
    for key in ["tensorPath", "metadataPath"] {
        assert!(bundle.join(e[key].as_str().unwrap()).is_file(), "{key}");
    }
    let sprite = image::open(bundle.join(e["sprite"]["imagePath"].as_str().unwrap())).unwrap();
    let single = e["sprite"]["singleImageDim"][0].as_u64().unwrap() as u32;
    let grid = (n as f64).sqrt().ceil() as u32;
    assert_eq!(
        (sprite.width(), sprite.height()),
        (grid * single, grid * single)
    );
    let (_, config) = load_safetensors(&std::fs::read(&weights).unwrap(), &Device::flex()).unwrap();
    assert_eq!((config.width, config.feature_dim), (4, 8));
}

#[test]
fn the_pages_png_writer_is_read_by_a_standard_decoder() {
    use pcl_studio::engine::export::png_rgb;
    for (w, h) in [(5, 3), (300, 300)] {
        // 300 x 300 spans several stored deflate blocks.
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let img = image::load_from_memory(&png_rgb(w, h, &rgb))
            .unwrap()
            .to_rgb8();
        assert_eq!((img.width() as usize, img.height() as usize), (w, h));
        assert_eq!(img.as_raw(), &rgb);
    }
}

#[test]
fn the_projector_bundle_is_formula_safe_and_its_sprite_within_the_projectors_limit() {
    use pcl_studio::engine::Dataset;
    use pcl_studio::engine::export::{MAX_SPRITE_SIDE, projector};
    // 6,000 images stored at 108 px (96-px training): at full size the sprite's grid of 78
    // would be 8,424 px wide.
    let side = 108;
    let n = 6000;
    let mut data = Dataset::new(side);
    let img = vec![200u8; side * side * 3];
    for i in 0..n {
        let name = if i == 0 {
            "=HYPERLINK(\"x\").png".to_string()
        } else {
            format!("{i}.png")
        };
        let folder = if i % 2 == 0 { "+cats" } else { "@dogs" };
        data.push(format!("{folder}/{name}"), &img, Some(folder))
            .unwrap();
    }
    data.names[1] = "-1.png".into();
    let d = 2;
    let emb = vec![0.5f32; n * d];
    let p = projector(&data, &emb, d, None);
    assert!(p.sprite_side <= MAX_SPRITE_SIDE, "{}", p.sprite_side);
    let grid = (n as f64).sqrt().ceil() as usize;
    assert_eq!(p.sprite_side % grid, 0);
    assert_eq!(p.sprite_rgb.len(), p.sprite_side * p.sprite_side * 3);
    // A shrunk uniform thumbnail keeps its colour.
    assert_eq!(&p.sprite_rgb[..3], &[200, 200, 200]);
    let config: serde_json::Value = serde_json::from_str(&p.config_json).unwrap();
    let single = config["embeddings"][0]["sprite"]["singleImageDim"][0]
        .as_u64()
        .unwrap();
    assert_eq!(single as usize * grid, p.sprite_side);
    // No field of metadata.tsv starts a spreadsheet formula.
    for row in p.metadata_tsv.lines().skip(1) {
        for field in row.split('\t') {
            assert!(!field.starts_with(['=', '+', '-', '@']), "{row}");
        }
    }
    assert!(
        p.metadata_tsv.contains("'+cats/=HYPERLINK"),
        "the text stays, as text"
    );
}
