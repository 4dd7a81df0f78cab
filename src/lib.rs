//! pcl-studio: Prototypical Contrastive Learning in the browser and on the command line.
//!
//! - [`engine`]: the algorithm on any burn device (no browser types).
//! - [`compute`]: picking a device (WebGPU / wgpu / CPU fallback); [`backend`] describes it.
//!
//! The `engine` feature (default) brings burn. The page is built without it, so its wasm holds
//! no tensor code: only the plain types it shows (`engine::config`, `engine::records`,
//! `backend`, `protocol`, `intake`).
//! - [`intake`]: the rules for taking files in (limits, sniffing, labels), shared by the
//!   browser and the CLI.
//! - [`protocol`]: the serde messages between the page and its Web Worker.
//! - `worker` and `ui` (wasm32 only): the Web Worker that owns every tensor, and the Leptos page
//!   that only shows what the worker reports.
//! - `cli` (native only): the command-line trainer; `alloc` (native only): its allocator.

#[cfg(not(target_arch = "wasm32"))]
pub mod alloc;
pub mod backend;
#[cfg(feature = "engine")]
pub mod compute;
pub mod engine;
pub mod intake;
pub mod protocol;

#[cfg(all(not(target_arch = "wasm32"), feature = "engine"))]
pub mod cli;
pub mod ui;
#[cfg(all(target_arch = "wasm32", feature = "engine"))]
pub mod worker;

/// Runs the static constructors of the wasm module once (some dependencies register items
/// through them: cubecl's IR via `inventory`). Referencing `__wasm_call_ctors` explicitly also
/// tells wasm-ld not to wrap every export of a bin in a call to it, which otherwise re-ran all
/// constructors on every call from JavaScript (every event, message and promise callback):
/// seconds of main-thread time per minute of training, measured.
#[cfg(target_arch = "wasm32")]
pub fn run_static_constructors() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: called once, first thing in `main`, before any code relies on the registrations.
    unsafe { __wasm_call_ctors() }
}
