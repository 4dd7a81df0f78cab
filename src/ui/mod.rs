//! The page. `state`, `settings` and `charts` are plain Rust (tested natively): what the page
//! knows and how each worker message changes it, the settings panel's rules, the charts' maths
//! and axes.
//! `view` (wasm32 only) is the shell that owns the Web Worker; `cards` wire the state to the
//! DOM with Leptos, one card a file. None of it touches a tensor.

pub mod axes;
#[cfg(target_arch = "wasm32")]
mod cards;
pub mod charts;
pub mod guide;
#[cfg(target_arch = "wasm32")]
mod js;
pub mod lesson;
pub mod settings;
pub mod state;
#[cfg(target_arch = "wasm32")]
mod storage;
#[cfg(target_arch = "wasm32")]
mod tiles;
#[cfg(target_arch = "wasm32")]
pub mod view;
