//! Page state and its transitions, free of any DOM or Leptos type.

use crate::compute::{BackendInfo, BackendKind};
use crate::protocol::{FromWorker, ToWorker};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageState {
    pub backend: Option<BackendInfo>,
    /// Loss of the probe training step and its wall time in ms.
    pub probe: Option<(f32, f64)>,
    pub error: Option<String>,
    /// Ask the worker for the CPU backend even where WebGPU exists (`?cpu` in the URL).
    pub force_cpu: bool,
}

impl PageState {
    pub fn new(force_cpu: bool) -> Self {
        Self {
            force_cpu,
            ..Default::default()
        }
    }

    /// Applies a worker message; returns the reply to send, if any.
    pub fn apply(&mut self, msg: FromWorker) -> Option<ToWorker> {
        match msg {
            FromWorker::Ready => {
                return Some(ToWorker::Start {
                    force_cpu: self.force_cpu,
                });
            }
            FromWorker::Backend(info) => self.backend = Some(info),
            FromWorker::ProbeStep { loss, millis } => self.probe = Some((loss, millis)),
            FromWorker::Error(e) => self.error = Some(e),
        }
        None
    }

    /// `data-backend` of the backend badge.
    pub fn backend_attr(&self) -> &'static str {
        match self.backend.as_ref().map(|b| b.kind) {
            Some(BackendKind::Webgpu | BackendKind::Wgpu) => "webgpu",
            Some(BackendKind::Cpu) => "cpu",
            None => "pending",
        }
    }

    pub fn status_line(&self) -> String {
        match (&self.error, &self.backend, &self.probe) {
            (Some(e), _, _) => format!("Error: {e}"),
            (None, None, _) => "Starting the compute worker…".into(),
            (None, Some(_), None) => "Running one training step to check the device…".into(),
            (None, Some(_), Some((loss, ms))) => {
                format!("One training step ran: loss {loss:.4} in {ms:.0} ms.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_starts_the_worker_and_results_are_kept() {
        let mut s = PageState::new(true);
        assert_eq!(s.backend_attr(), "pending");
        assert_eq!(
            s.apply(FromWorker::Ready),
            Some(ToWorker::Start { force_cpu: true })
        );
        assert!(
            s.apply(FromWorker::Backend(BackendInfo::cpu(Some("no GPU".into()))))
                .is_none()
        );
        assert_eq!(s.backend_attr(), "cpu");
        assert!(s.status_line().contains("Running one training step"));
        s.apply(FromWorker::ProbeStep {
            loss: 2.5,
            millis: 12.0,
        });
        assert!(s.status_line().contains("loss 2.5000"));
        s.apply(FromWorker::Error("lost device".into()));
        assert!(s.status_line().starts_with("Error: lost device"));
        assert_eq!(s.probe, Some((2.5, 12.0)), "an error keeps what was known");
    }
}
