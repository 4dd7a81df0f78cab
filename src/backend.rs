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
    /// How the device was chosen, and the training rates measured to choose it.
    #[serde(default)]
    pub choice: Option<Choice>,
}

/// How the page's device was chosen.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChoiceKind {
    /// A few training steps timed on both, the faster taken.
    Measured,
    /// The user's (`?cpu`, `?backend=webgpu|cpu`).
    Forced,
    /// The only one there is (no WebGPU).
    Only,
    /// An earlier measurement in this browser, remembered until the user measures again.
    Remembered,
}

/// The device choice: how, and the rates of the quick demo's training step on each device
/// (images per second; the CPU's with its helper workers, estimated from one).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    pub how: ChoiceKind,
    pub webgpu_img_s: Option<f64>,
    pub cpu_img_s: Option<f64>,
}

/// What a browser remembers of a measured choice: the device and the rates.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Remembered {
    pub cpu: bool,
    pub choice: Choice,
}

impl Choice {
    /// Whether the measured CPU rate beats the WebGPU one (WebGPU wins ties and unknowns).
    pub fn cpu_is_faster(webgpu_img_s: Option<f64>, cpu_img_s: Option<f64>) -> bool {
        match (webgpu_img_s, cpu_img_s) {
            (Some(g), Some(c)) => c > g,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// The choice in a sentence: "WebGPU 3.4 images/s, the CPU with 2 workers about 230:
    /// training on the CPU".
    pub fn words(&self, workers: usize, on_cpu: bool) -> String {
        let rate = |r: Option<f64>| r.map_or("failed".to_string(), |r| format!("{r:.1} images/s"));
        let on = if on_cpu { "the CPU" } else { "WebGPU" };
        match self.how {
            ChoiceKind::Measured => format!(
                "Measured: WebGPU {}, the CPU with {workers} worker{} about {}: training on {on}.",
                rate(self.webgpu_img_s),
                if workers == 1 { "" } else { "s" },
                rate(self.cpu_img_s)
            ),
            ChoiceKind::Remembered => format!(
                "Measured earlier in this browser: WebGPU {}, the CPU about {}: training on {on} \
                 (choose \"the faster, measured\" below to measure again).",
                rate(self.webgpu_img_s),
                rate(self.cpu_img_s)
            ),
            ChoiceKind::Forced => format!("Training on {on}, as the address asks."),
            ChoiceKind::Only => format!("Training on {on}: no WebGPU here."),
        }
    }
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
            choice: None,
        }
    }
}
