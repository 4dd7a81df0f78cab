//! Browser entry point of the compute Web Worker (trunk `data-type="worker"`).

#[cfg(target_arch = "wasm32")]
fn main() {
    pcl_studio::run_static_constructors();
    pcl_studio::worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the worker runs in the browser: `trunk serve` (see README.md)");
}
