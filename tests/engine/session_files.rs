//! Session files are untrusted input. A real session is truncated, bit-flipped and has its
//! header fields replaced by hostile values; the loader must answer every one with an error or
//! a consistent run (which then trains a step), never a panic, an abort or a hang.
//! Seeded and bounded here; `PCL_FUZZ_SECONDS=600` turns it into a soak
//! (`scripts/fuzz-sessions.sh`).

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::prelude::*;
use futures_lite::future::block_on;
use pcl_studio::engine::data::planted_groups;
use pcl_studio::engine::rng::Rng;
use pcl_studio::engine::{Dataset, Event, PclConfig, Trainer};
use serde_json::{Value, json};

/// A session in the middle of an epoch after its first E-step (every part of the format
/// present: velocities, a full queue with image ids, a clustering, history).
fn real_session(data: &Dataset) -> Vec<u8> {
    let config = PclConfig {
        width: 4,
        feature_dim: 8,
        batch_size: 16,
        epochs: 4,
        warmup_epochs: 1,
        num_clusters: vec![2, 4],
        kmeans_restarts: 1,
        kmeans_iters: 3,
        seed: 9,
        ..PclConfig::default()
    };
    let mut t = Trainer::new(&config, data, &Device::flex()).unwrap();
    while t.epoch < 1 || t.step < 1 {
        block_on(t.advance(data, &mut |_| {})).unwrap();
    }
    assert!(t.clustering.is_some());
    block_on(t.save()).unwrap()
}

/// Loads `bytes`; on success the run must take a step. Err(message) if anything panicked.
fn try_load(bytes: &[u8], data: &Dataset, step: bool) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| {
        match Trainer::load(bytes, data, &Device::flex()) {
            Ok(mut t) => {
                if step {
                    match block_on(t.advance(data, &mut |_| {})) {
                        Ok(Event::Step(_) | Event::EStep { .. } | Event::Done) | Err(_) => {}
                    }
                }
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        }
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// A session's header and its tensor bytes.
pub(crate) fn split(bytes: &[u8]) -> (Value, &[u8]) {
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[16..16 + len]).unwrap(),
        &bytes[16 + len..],
    )
}

/// A session of `header` and `tensors` (the inverse of [`split`]).
pub(crate) fn join(header: &Value, tensors: &[u8]) -> Vec<u8> {
    frame(&serde_json::to_vec(header).unwrap(), tensors)
}

/// A session of header text `json` (any bytes) and `tensors`.
fn frame(json: &[u8], tensors: &[u8]) -> Vec<u8> {
    let mut out = b"PCLSTUD1".to_vec();
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(tensors);
    out
}

/// Every leaf of the header, as a JSON pointer (long arrays: their first two entries).
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                leaves(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate().take(2) {
                leaves(x, format!("{at}/{i}"), out);
            }
            out.push(at);
        }
        _ => out.push(at),
    }
}

fn hostile() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(7),
        json!(4294967295u64),
        json!(u64::MAX),
        json!(1e300),
        json!(-0.5),
        json!(null),
        json!("NaN"),
        json!([]),
        json!([u64::MAX]),
        json!({}),
    ]
}

fn seconds_budget() -> Option<f64> {
    std::env::var("PCL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
}

#[test]
fn hostile_session_files_give_errors_never_panics() {
    let data = planted_groups(2, 2, 16, 36, 4);
    let good = real_session(&data);
    assert_eq!(
        try_load(&good, &data, true),
        Ok(true),
        "the real session loads"
    );
    let mut panics = Vec::new();
    let mut check = |what: String, bytes: &[u8], step: bool| -> bool {
        match try_load(bytes, &data, step) {
            Ok(loaded) => loaded,
            Err(p) => {
                panics.push(format!("{what}: {p}"));
                false
            }
        }
    };

    // Truncations: every one an error.
    let n = good.len();
    let mut cuts: Vec<usize> = (0..64.min(n)).collect();
    cuts.extend((0..n).step_by((n / 300).max(1)));
    cuts.push(n - 1);
    for cut in cuts {
        assert!(
            !check(format!("cut at {cut}"), &good[..cut], false),
            "a session cut at byte {cut} of {n} loaded"
        );
    }
    // The length field: huge, wrapping, one off.
    for len in [u64::MAX, u64::MAX - 15, 1 << 40, 0, 1] {
        let mut b = good.clone();
        b[8..16].copy_from_slice(&len.to_le_bytes());
        assert!(!check(format!("header length {len}"), &b, false));
    }

    // Header fields replaced by hostile values: errors, or a run that trains a step.
    let (header, tensors) = split(&good);
    let mut paths = Vec::new();
    leaves(&header, String::new(), &mut paths);
    assert!(paths.len() > 60, "{} header fields", paths.len());
    let mut loaded_mutants = 0;
    for path in &paths {
        for value in hostile() {
            let mut h = header.clone();
            *h.pointer_mut(path).unwrap() = value.clone();
            if check(format!("{path} = {value}"), &join(&h, tensors), true) {
                loaded_mutants += 1;
            }
        }
    }
    // Values that must each be refused (the inconsistent files that once loaded).
    let nan_weight = {
        let mut b = good.clone();
        let at = n - tensors.len() + 8;
        b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        b
    };
    assert!(!check("a NaN weight".into(), &nan_weight, false));
    let mut h = header.clone();
    *h.pointer_mut("/clustering/1/0/assignments/0").unwrap() = json!(2);
    assert!(!check(
        "an assignment past K".into(),
        &join(&h, tensors),
        false
    ));

    // Bit flips anywhere (seeded); the header's bytes get most of them.
    let mut rng = Rng::new(17);
    let header_end = n - tensors.len();
    let start = std::time::Instant::now();
    let budget = seconds_budget();
    let mut flips = 0;
    loop {
        match budget {
            Some(s) if start.elapsed().as_secs_f64() > s => break,
            None if flips >= 1500 => break,
            _ => {}
        }
        let mut b = good.clone();
        let at = if rng.next_u64().is_multiple_of(4) {
            rng.below(n)
        } else {
            rng.below(header_end)
        };
        b[at] ^= 1 << rng.below(8);
        check(format!("bit flip at {at}"), &b, flips < 200);
        flips += 1;
    }
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
    eprintln!(
        "{} header mutations ({loaded_mutants} still consistent), {flips} bit flips, no panic",
        paths.len() * hostile().len()
    );
}

#[test]
fn lengths_and_counts_past_what_a_run_can_have_are_refused_as_they_are_read() {
    let data = planted_groups(2, 2, 16, 36, 4);
    let good = real_session(&data);
    let (header, tensors) = split(&good);
    let zeros = |n: usize| Value::Array(vec![json!(0); n]);
    let first_record = header["history"][0].clone();
    let mutants: Vec<(&str, Value)> = vec![
        ("/tensor_lens", zeros(1025)),
        ("/order", zeros(50_001)),
        ("/queue_ids", Value::Array(vec![Value::Null; 65_537])),
        ("/history", Value::Array(vec![first_record; 4097])),
        ("/clustering/1/0/assignments", zeros(50_001)),
        ("/clustering/1/0/sizes", zeros(50_001)),
        ("/config/num_clusters", zeros(65)),
        ("/tensor_counts", json!([1_000_000_000, 0, 0])),
        ("/tensor_counts", json!([u64::MAX, u64::MAX, u64::MAX])),
        ("/seconds", json!(-1e300)),
        ("/seconds", json!(1e300)),
        ("/warmup_share", json!(2.0)),
    ];
    for (path, value) in mutants {
        let mut h = header.clone();
        *h.pointer_mut(path).unwrap() = value;
        let bytes = join(&h, tensors);
        let e = Trainer::load(&bytes, &data, &Device::flex()).err();
        assert!(e.is_some(), "{path}: a session past the bounds loaded");
    }
    // Consistency of an opened session: phi > 0, cluster sizes those of the assignments, each
    // level's K its setting's, the clustering not after the current epoch.
    let epoch = header["epoch"].as_u64().unwrap();
    let k1 = header["clustering"][1][1]["k"].as_u64().unwrap();
    let inconsistent: Vec<(&str, Value)> = vec![
        ("/clustering/1/0/phi/0", json!(0.0)),
        ("/clustering/1/0/phi/1", json!(-0.1)),
        ("/clustering/1/1/sizes/0", json!(0)),
        ("/clustering/0", json!(epoch + 1)),
        ("/config/num_clusters", json!([2, k1 + 1])),
    ];
    for (path, value) in inconsistent {
        let mut h = header.clone();
        *h.pointer_mut(path).unwrap() = value.clone();
        let e = Trainer::load(&join(&h, tensors), &data, &Device::flex()).err();
        assert!(
            e.is_some(),
            "{path} = {value}: an inconsistent session loaded"
        );
    }
    // A running variance of zero (BatchNorm would divide by its square root).
    let var = pcl_studio::engine::model::EncoderConfig::new(4, 8)
        .init(&Device::flex())
        .running_var_positions()[0];
    let lens: Vec<usize> = header["tensor_lens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let at = 4 * lens[..var].iter().sum::<usize>();
    let mut zero_var = tensors.to_vec();
    zero_var[at..at + 4].copy_from_slice(&0f32.to_le_bytes());
    let e = Trainer::load(&join(&header, &zero_var), &data, &Device::flex()).err();
    assert!(e.unwrap().to_string().contains("running variance"));

    // A tensor length one off, with the bytes to match: the header's count and the file's
    // bytes agree, the tensor does not fit its parameter.
    let mut h = header.clone();
    let len0 = h["tensor_lens"][0].as_u64().unwrap();
    h["tensor_lens"][0] = json!(len0 + 1);
    let mut t = tensors.to_vec();
    t.splice(0..0, [0u8; 4]);
    assert!(Trainer::load(&join(&h, &t), &data, &Device::flex()).is_err());
}

#[test]
fn a_session_of_hundreds_of_megabytes_of_zeros_is_refused_within_a_memory_limit() {
    // The header's `tensor_lens` is 100 million `0,`s (200 MB): read entry by entry into a
    // list of tensors, it took over 3 GB and aborted the browser's 4 GiB worker. The CLI opens
    // it under a 1 GiB address-space limit and must answer with a message.
    let dir = crate::Scratch::new("zeros-session");
    let data = planted_groups(2, 2, 16, 36, 4);
    let good = real_session(&data);
    let (header, _) = split(&good);
    let mut json = serde_json::to_vec(&header).unwrap();
    let at = {
        let text = String::from_utf8_lossy(&json).to_string();
        text.find("\"tensor_lens\":[").unwrap() + "\"tensor_lens\":[".len()
    };
    let zeros = b"0,".repeat(100_000_000);
    json.splice(at..at, zeros);
    let bytes = frame(&json, &[]);
    let session = dir.join("zeros.pclstudio");
    std::fs::write(&session, &bytes).unwrap();
    drop(bytes);
    // The file is refused before any image is read: any folder does.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let r = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -v 1048576; exec "$0" export --from "$1" --images "$2" --safetensors "$3""#)
        .arg(env!("CARGO_BIN_EXE_pcl"))
        .arg(&session)
        .arg(&images)
        .arg(dir.join("x.safetensors"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1024 entries"), "{stderr}");
}
