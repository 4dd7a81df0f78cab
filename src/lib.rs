//! pcl-studio: Prototypical Contrastive Learning in the browser and on the command line.
//!
//! - [`engine`]: the algorithm on any burn device (no browser types).
//! - [`compute`]: picking and describing a device (WebGPU / wgpu / CPU fallback).
//! - [`intake`]: the rules for taking files in (limits, sniffing, labels), shared by the
//!   browser and the CLI.
//! - [`protocol`]: the serde messages between the page and its Web Worker.
//! - `worker` and `ui` (wasm32 only): the Web Worker that owns every tensor, and the Leptos page
//!   that only shows what the worker reports.
//! - `cli` (native only): the command-line trainer.

pub mod compute;
pub mod engine;
pub mod intake;
pub mod protocol;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod ui;
#[cfg(target_arch = "wasm32")]
pub mod worker;
