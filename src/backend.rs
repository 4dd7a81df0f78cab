//! What compute backend the worker got, in plain values the page can show (no burn type).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// wgpu on the browser's WebGPU.
    Webgpu,
    /// wgpu natively (Vulkan, Metal, DX12, GL).
    Wgpu,
    /// burn's pure-Rust CPU backend.
    Cpu,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendInfo {
    pub kind: BackendKind,
    /// Adapter name (e.g. "SwiftShader Device"), or "CPU" for the fallback.
    pub adapter: String,
    /// The graphics API under wgpu, when on a GPU.
    pub api: String,
    /// Key device limits, name and value.
    pub limits: Vec<(String, u64)>,
    /// Why the GPU is not used, when it is not, in plain words.
    pub notice: Option<String>,
    /// The underlying error, for the curious (shown folded).
    #[serde(default)]
    pub detail: Option<String>,
    /// Workers that train (the CPU fallback shares each step with helper workers).
    #[serde(default = "one")]
    pub workers: usize,
}

fn one() -> usize {
    1
}

impl BackendInfo {
    pub fn cpu(notice: Option<String>) -> Self {
        Self {
            kind: BackendKind::Cpu,
            adapter: "CPU (burn flex)".into(),
            api: String::new(),
            limits: Vec::new(),
            notice,
            detail: None,
            workers: 1,
        }
    }
}
