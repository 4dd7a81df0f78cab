//! Integration tests of the engine and the CLI, one binary (link time is the scarce resource).

mod cli;
mod export;
mod golden;
mod gpu;
mod intake;
mod parallel;
mod session;
mod session_files;
mod tile_gemm;
mod training;

use std::path::{Path, PathBuf};

/// A scratch folder under the system's temporary directory, removed when dropped (also when
/// the test fails), so test runs leave nothing behind.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pcl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
