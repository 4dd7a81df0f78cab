//! Messages between the page (UI thread) and the Web Worker, sent as JSON strings. The UI never
//! sees a tensor: only these plain values.

use serde::{Deserialize, Serialize};

use crate::compute::BackendInfo;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// Pick a compute backend (WebGPU unless `force_cpu`) and run one probe training step.
    Start { force_cpu: bool },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum FromWorker {
    /// The worker's wasm is loaded and it listens; messages sent before this would be lost.
    Ready,
    /// The backend the worker got.
    Backend(BackendInfo),
    /// One forward + backward + optimizer step of the encoder ran; its loss, read back
    /// asynchronously, and the wall time of the step.
    ProbeStep {
        loss: f32,
        millis: f64,
    },
    Error(String),
}

impl ToWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }
}

impl FromWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, String> {
        serde_json::from_str(s).map_err(|e| format!("bad message from worker: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let m = FromWorker::ProbeStep {
            loss: 1.5,
            millis: 20.0,
        };
        assert_eq!(FromWorker::from_json(&m.to_json()).unwrap(), m);
        let s = ToWorker::Start { force_cpu: true }.to_json();
        assert_eq!(
            serde_json::from_str::<ToWorker>(&s).unwrap(),
            ToWorker::Start { force_cpu: true }
        );
        assert!(FromWorker::from_json("{").is_err());
    }
}
