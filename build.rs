//! The build's id: a hash of the sources, the same in the page and its worker when trunk builds
//! them together and different after any change. The worker says it first (`FromWorker::Ready`),
//! so a page of one build never drives a worker of another (a site updated while a page was
//! open, its service worker serving the new files).

use std::path::Path;

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            visit(&p, files);
        } else {
            files.push(p);
        }
    }
}

fn main() {
    let mut files = Vec::new();
    for root in ["src", "crates/tile-gemm/src"] {
        visit(Path::new(root), &mut files);
        println!("cargo:rerun-if-changed={root}");
    }
    for f in ["Cargo.toml", "Cargo.lock"] {
        files.push(f.into());
        println!("cargo:rerun-if-changed={f}");
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        for b in f
            .to_string_lossy()
            .bytes()
            .chain(std::fs::read(f).unwrap_or_default())
        {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=PCL_BUILD_ID={h:016x}");
}
