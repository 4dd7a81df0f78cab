//! The page. `state` is plain Rust (tested natively): what the page knows and how each worker
//! message changes it. `view` (wasm32 only) wires that state to the DOM with Leptos and owns the
//! Web Worker; it never touches a tensor.

#[cfg(target_arch = "wasm32")]
mod cards;
#[cfg(target_arch = "wasm32")]
mod js;
pub mod state;
#[cfg(target_arch = "wasm32")]
mod tiles;
#[cfg(target_arch = "wasm32")]
pub mod view;
