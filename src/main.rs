//! `pcl`: the native command-line trainer (empty on wasm32, where the app and worker run).

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    pcl_studio::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(pcl_studio::cli::main_with_args(args));
}

#[cfg(target_arch = "wasm32")]
fn main() {}
