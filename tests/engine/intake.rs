//! The CLI's loader on the committed fixture folder (tests/fixtures/make_images.py): every odd
//! but valid file loads, every broken or hostile one is skipped with a reason, and the pixels
//! are right where a decoder could get them wrong (orientation, CMYK, animation, alpha).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Scratch;

use pcl_studio::cli::images::load_folder;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn expected() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(fixtures().with_extension("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

const SIDE: usize = 36;

fn pixel(img: &[u8], y: usize, x: usize) -> [u8; 3] {
    let i = (y * SIDE + x) * 3;
    [img[i], img[i + 1], img[i + 2]]
}

fn close(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(b)
        .all(|(&p, q)| (p as i32 - q as i32).abs() <= tol)
}

#[test]
fn odd_files_load_and_bad_files_are_skipped_with_reasons() {
    let (data, skipped) = load_folder(&fixtures(), SIDE, &mut |_, _| {}).unwrap();
    let skipped: BTreeMap<_, _> = skipped.into_iter().map(|s| (s.file, s.reason)).collect();
    for (file, verdict) in expected() {
        let loaded = data.names.contains(&file);
        match verdict.split_once(':') {
            None if verdict == "load" => assert!(loaded, "{file} should load: {skipped:?}"),
            None => assert!(loaded || skipped.contains_key(&file), "{file} vanished"),
            Some((_, why)) => {
                let reason = skipped
                    .get(&file)
                    .unwrap_or_else(|| panic!("{file} loaded"));
                assert!(reason.contains(why), "{file}: '{reason}' lacks '{why}'");
            }
        }
    }
    let img = |name: &str| data.image(data.names.iter().position(|n| n == name).unwrap());
    // Stored red over blue, EXIF orientation 6: displayed blue left, red right.
    let exif = img("odd/exif-rotated.jpg");
    assert!(
        close(pixel(exif, 18, 2), [20, 20, 230], 12),
        "{:?}",
        pixel(exif, 18, 2)
    );
    assert!(
        close(pixel(exif, 18, 33), [230, 20, 20], 12),
        "{:?}",
        pixel(exif, 18, 33)
    );
    // CMYK (0, 200, 200, 0) is red; an animated GIF shows its first (yellow) frame.
    let cmyk = pixel(img("odd/cmyk.jpg"), 18, 18);
    assert!(cmyk[0] > 200 && cmyk[1] < 90 && cmyk[2] < 90, "{cmyk:?}");
    assert!(close(
        pixel(img("odd/animated.gif"), 5, 5),
        [250, 200, 0],
        2
    ));
    // Grey with alpha: opaque dark on the left, mostly white (composited) on the right.
    let la = img("odd/gray-alpha.png");
    assert!(pixel(la, 5, 2)[0] < 40 && pixel(la, 5, 33)[0] > 200);
    assert_eq!(img("odd/duplicate-a.png"), img("odd/duplicate-b.png"));
    assert!(data.names.iter().any(|n| n == "odd/café-日本.png"));
    // Labels come from the first folder level.
    assert_eq!(data.eval_labels().map(|l| l.len()), Some(data.len()));
    assert!(data.class_names.contains(&"red".to_string()));
}

#[test]
fn one_image_and_empty_folders_are_clear_errors() {
    let root = Scratch::new("intake");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("one")).unwrap();
    std::fs::copy(fixtures().join("red/r0.png"), root.join("one/r0.png")).unwrap();
    for (dir, words) in [("empty", "no images"), ("one", "1 image")] {
        let r = std::process::Command::new(env!("CARGO_BIN_EXE_pcl"))
            .args(["train", "--images"])
            .arg(root.join(dir))
            .arg("--out")
            .arg(root.join("out"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(words) && stderr.contains("at least 16"),
            "{stderr}"
        );
    }
}

fn png(path: &Path, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(40, 40, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[cfg(unix)]
#[test]
fn folder_walks_skip_links_and_unreadable_folders_and_keep_odd_names_apart() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new("walk");
    let root = &s.0;
    png(&root.join("a/one.png"), [200, 0, 0]);
    // Two links back up the tree: followed, they would never end.
    std::os::unix::fs::symlink(".", root.join("a/loop")).unwrap();
    std::os::unix::fs::symlink("..", root.join("a/up")).unwrap();
    // Two names that are not UTF-8 and would both read "b/�.png" if decoded lossily.
    for byte in [0xFFu8, 0xFE] {
        let bytes = [byte, b'.', b'p', b'n', b'g'];
        png(
            &root.join("b").join(std::ffi::OsStr::from_bytes(&bytes)),
            [0, 200, 0],
        );
    }
    // A BMP and a WebP: the CLI reads what the page reads.
    std::fs::create_dir_all(root.join("c")).unwrap();
    let img = image::RgbImage::from_pixel(40, 40, image::Rgb([0, 0, 200]));
    img.save_with_format(root.join("c/blue.bmp"), image::ImageFormat::Bmp)
        .unwrap();
    let rgba = image::DynamicImage::ImageRgb8(img).to_rgba8();
    rgba.save_with_format(root.join("c/blue.webp"), image::ImageFormat::WebP)
        .unwrap();
    // A folder that cannot be read (skipped when running as root, who reads everything).
    let locked = root.join("d");
    png(&locked.join("hidden.png"), [9, 9, 9]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::read_dir(&locked).is_ok();

    let (data, skipped) = load_folder(root, SIDE, &mut |_, _| {}).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let reasons: BTreeMap<_, _> = skipped
        .iter()
        .map(|s| (s.file.as_str(), &s.reason))
        .collect();
    assert!(reasons["a/loop"].contains("symbolic link"), "{reasons:?}");
    assert!(reasons["a/up"].contains("symbolic link"), "{reasons:?}");
    let mut names = data.names.clone();
    names.sort();
    let mut want = vec![
        "a/one.png",
        "b/%FE.png",
        "b/%FF.png",
        "c/blue.bmp",
        "c/blue.webp",
    ];
    if readable {
        want.push("d/hidden.png");
    } else {
        assert!(reasons["d"].contains("could not be read"), "{reasons:?}");
    }
    assert_eq!(names, want);
}
