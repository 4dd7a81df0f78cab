//! The page. `state`, `settings` and `charts` are plain Rust (tested natively): what the page
//! knows and how each worker message changes it, the settings panel's rules, the charts' maths
//! and axes.
//! The shell (wasm32 only): `link` to the Web Worker, `routing` of its messages, the `images`
//! store, `storage` (the autosave), `lessons` opened from the address, development `hooks`, and
//! `view`, the App; `cards` wire the state to the DOM with Leptos, one card a file. None of it
//! touches a tensor.

pub mod axes;
#[cfg(target_arch = "wasm32")]
mod cards;
pub mod charts;
pub mod guide;
#[cfg(all(target_arch = "wasm32", debug_assertions))]
mod hooks;
#[cfg(target_arch = "wasm32")]
mod images;
#[cfg(target_arch = "wasm32")]
mod js;
pub mod lesson;
#[cfg(target_arch = "wasm32")]
mod lessons;
#[cfg(target_arch = "wasm32")]
mod link;
#[cfg(target_arch = "wasm32")]
mod routing;
pub mod settings;
pub mod state;
#[cfg(target_arch = "wasm32")]
mod storage;
#[cfg(target_arch = "wasm32")]
mod tiles;
#[cfg(target_arch = "wasm32")]
pub mod view;
