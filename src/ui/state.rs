//! Page state and its transitions, free of any DOM or Leptos type (tested natively). Image
//! pixels are not in here: the view keeps them in a plain store beside it (see `view.rs`).
//! (Over 500 lines: one type, `PageState`, and its transitions, with their tests inside.)

use crate::backend::{BackendInfo, BackendKind};
use crate::engine::PclConfig;
use crate::engine::records::{ExploreReport, LevelSummary, Metrics, StepRecord, thin_history};
use crate::intake::Skipped;
use crate::protocol::{
    FromWorker, ImagesAdded, Phase, RunState, RunStatus, TRAIN_SIZE, ToWorker, ViewPairs,
};
use crate::ui::charts::format_duration;

/// Images known to the page (the worker holds the same, decoded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImagesInfo {
    pub count: usize,
    pub side: usize,
    /// `(done, total, eta_s)` while decoding.
    pub loading: Option<(usize, usize, Option<f64>)>,
    pub skipped: Vec<Skipped>,
    pub memory_bytes: usize,
    /// Images per second of the last load.
    pub rate: Option<f64>,
    /// Loads finished since the page opened (a lesson's session waits for its images).
    pub loads: usize,
}

/// A fingerprint of a set of stored images (side, names, label folders, pixels; FNV-1a over
/// 8-byte words), as hex: an autosaved session is matched to the images stored beside it by
/// this, never by their count, so another tab's images can never pass for the run's.
pub fn images_fingerprint(
    side: usize,
    names: &[String],
    folders: &[String],
    pixels: &[u8],
) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            h = (h ^ b as u64).wrapping_mul(PRIME);
        }
        // The length ends each part: ["ab", "c"] and ["a", "bc"] differ.
        h = (h ^ bytes.len() as u64).wrapping_mul(PRIME);
    };
    eat(&(side as u64).to_le_bytes());
    for s in names.iter().chain(folders) {
        eat(s.as_bytes());
    }
    eat(&(names.len() as u64).to_le_bytes());
    eat(pixels);
    format!("{h:016x}")
}

/// Skipped files listed by name; past these, a count (a folder of thousands of unreadable files
/// must not freeze the page).
pub const SKIPPED_SHOWN: usize = 100;

impl ImagesInfo {
    /// The skipped files the page lists, and how many more there are.
    pub fn skipped_shown(&self) -> (&[Skipped], usize) {
        let shown = self.skipped.len().min(SKIPPED_SHOWN);
        (&self.skipped[..shown], self.skipped.len() - shown)
    }

    /// Images the worker added (the last message of a load ends the loading state).
    fn add(&mut self, added: ImagesAdded) {
        let im = self;
        if added.last {
            im.loading = None;
            im.loads += 1;
        }
        im.side = added.side;
        im.rate = Some((added.names.len() + added.skipped.len()) as f64 / added.seconds.max(1e-3));
        im.skipped.extend(added.skipped);
        im.count = added.total;
        im.memory_bytes = added.memory_bytes;
    }
}

/// Metrics over epochs of one finished or running training run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunCurve {
    pub label: String,
    pub metrics: Vec<Metrics>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageState {
    pub backend: Option<BackendInfo>,
    /// Loss of the probe training step and its wall time in ms.
    pub probe: Option<(f32, f64)>,
    pub error: Option<String>,
    /// Ask the worker for the CPU backend even where WebGPU exists (`?cpu` in the URL).
    pub force_cpu: bool,
    /// Workers to train with on the CPU fallback (`?workers=N`; None: the worker decides).
    pub workers: Option<usize>,
    /// Train on WebGPU where it initialises, without timing it against the CPU
    /// (`?backend=webgpu`).
    pub force_webgpu: bool,
    /// The device this browser measured before (`localStorage`), used without measuring again.
    pub remembered: Option<crate::backend::Remembered>,
    pub images: ImagesInfo,
    pub run: RunStatus,
    pub steps: Vec<StepRecord>,
    /// Per E-step: the epoch before which it ran, its levels and its wall time in seconds.
    pub esteps: Vec<(usize, Vec<LevelSummary>, f64)>,
    pub explore: Option<ExploreReport>,
    /// The current run's metrics and earlier runs' (for side-by-side curves).
    pub curve: RunCurve,
    pub earlier: Vec<RunCurve>,
    pub neighbours: Option<(usize, Vec<(usize, f32)>)>,
    /// t-SNE progress (iterations done, of all) and the map once it is done; a new explorer
    /// report (new embeddings) clears it.
    pub tsne_progress: Option<(usize, usize)>,
    pub tsne: Option<Vec<[f32; 2]>>,
    /// Settings the user edits; empty derived fields are filled by the worker.
    pub settings: PclConfig,
    /// Epoch of the last autosave since the page was opened.
    pub autosaved: Option<usize>,
    /// Size of that autosave in bytes.
    pub autosaved_bytes: Option<usize>,
    /// An earlier session's autosave found at start-up (its epoch and image count), offered
    /// to resume.
    pub autosave_offer: Option<(usize, usize)>,
    pub settings_error: Option<String>,
    /// Why autosave is off in this tab (storage full or refused, another tab owns it); the
    /// worker's autosave bytes are then not stored.
    pub autosave_off: Option<String>,
    /// This tab holds the autosave lock: it alone writes and discards the stored run.
    pub owns_autosave: bool,
    /// Worker crashes in this page so far (each restart backs off; see [`Recovery`]).
    pub crashes: u32,
    /// What the view should do about the last crash (it takes it).
    pub recovery: Option<Recovery>,
    /// The page stopped restarting workers (until a reload).
    pub gave_up: bool,
    /// What a lesson link is opening, until its session goes to the worker.
    pub lesson: Option<String>,
    /// Stop was pressed and the run has not ended yet (the worker stops after its current unit
    /// of work, which on an emulated GPU takes many seconds).
    pub stopping: bool,
    /// The augmentation panel's pairs of views, as the worker drew them.
    pub views: Option<ViewPairs>,
    /// "New views" presses: the panel draws with the settings' seed plus this.
    pub views_draw: u64,
    /// The last run's final explorer view and its label, kept when a new run starts (to set
    /// PCL and the InfoNCE-only baseline side by side).
    pub previous: Option<(String, ExploreReport)>,
}

/// Two finished runs side by side: PCL's and the InfoNCE-only baseline's explorer views.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub pcl: ExploreReport,
    pub baseline: ExploreReport,
}

/// What the page does after its worker crashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Start a new worker after `delay_ms` (on the CPU if `force_cpu`) and resume the last
    /// autosave.
    Restart { force_cpu: bool, delay_ms: u32 },
    /// Stop trying: the run shows as stopped and the last good autosave stays.
    GiveUp,
}

/// Crashes after which the page stops restarting its worker.
pub const MAX_CRASHES: u32 = 3;

/// The presets of the settings panel (shared with `pcl train --preset`).
pub use crate::engine::config::Preset;

impl PageState {
    pub fn new(force_cpu: bool) -> Self {
        Self {
            force_cpu,
            settings: Preset::Quick.config(),
            ..Default::default()
        }
    }

    /// What the augmentation panel asks the worker for, once the device and images are there:
    /// `count` images' views with the current settings at the page's training size.
    pub fn views_request(&self, count: usize) -> Option<ToWorker> {
        if self.probe.is_none() || self.images.count == 0 || self.images.loading.is_some() {
            return None;
        }
        let mut config = self.settings.clone();
        config.image_size = TRAIN_SIZE;
        config.seed = config.seed.wrapping_add(self.views_draw);
        config.check().ok()?;
        Some(ToWorker::Views { config, count })
    }

    /// Applies a worker message; returns the reply to send, if any.
    pub fn apply(&mut self, msg: FromWorker) -> Option<ToWorker> {
        match msg {
            FromWorker::Ready { build } if build != crate::protocol::BUILD_ID => {
                self.error = Some(
                    "this page and its compute worker come from two different builds of \
                     pcl-studio (the site was updated while the page was open): reload the page"
                        .into(),
                );
                self.gave_up = true;
            }
            FromWorker::Ready { .. } => {
                return Some(ToWorker::Start {
                    force_cpu: self.force_cpu,
                    workers: self.workers,
                    force_webgpu: self.force_webgpu && !self.force_cpu,
                });
            }
            FromWorker::Backend(mut info) => {
                if let Some(r) = self.remembered {
                    info.choice = Some(crate::backend::Choice {
                        how: crate::backend::ChoiceKind::Remembered,
                        ..r.choice
                    });
                }
                self.backend = Some(info)
            }
            FromWorker::ProbeStep { loss, millis } => self.probe = Some((loss, millis)),
            FromWorker::Loading { done, total, eta_s } => {
                self.images.loading = Some((done, total, eta_s))
            }
            FromWorker::Images(added) => self.images.add(added),
            FromWorker::ImagesCleared => {
                self.images = ImagesInfo::default();
                self.explore = None;
                self.neighbours = None;
            }
            FromWorker::Status(status) => {
                if self.run.state != RunState::Training
                    && self.run.state != RunState::Paused
                    && status.state == RunState::Training
                    && status.step == 0
                    && status.epoch == 0
                {
                    self.start_new_curve(&status);
                }
                if !matches!(status.state, RunState::Training | RunState::Paused) {
                    self.stopping = false;
                }
                self.run = status;
            }
            FromWorker::Steps(records) => {
                for r in records {
                    thin_history(&mut self.steps);
                    self.steps.push(r);
                }
            }
            FromWorker::History(records) => {
                self.steps = records;
                self.esteps.clear();
                self.error = None;
            }
            FromWorker::EStepDone {
                epoch,
                levels,
                seconds,
            } => self.esteps.push((epoch, levels, seconds)),
            FromWorker::Explore(report) => {
                if let Some(m) = &report.metrics {
                    self.curve.metrics.retain(|x| x.epoch != m.epoch);
                    self.curve.metrics.push(m.clone());
                }
                if self.explore.as_ref().map(|e| e.epoch) != Some(report.epoch) {
                    self.tsne = None;
                    self.tsne_progress = None;
                }
                self.explore = Some(*report);
            }
            FromWorker::File { .. } => {}
            // Recorded by the view once the bytes are stored.
            FromWorker::Autosave { .. } => {}
            FromWorker::Neighbours { index, neighbours } => {
                self.neighbours = Some((index, neighbours))
            }
            FromWorker::Tsne {
                done,
                total,
                points,
            } => {
                self.tsne_progress = Some((done, total));
                if points.is_some() {
                    self.tsne = points;
                }
            }
            FromWorker::Views(v) => self.views = Some(v),
            FromWorker::Error(e) => self.error = Some(e),
            FromWorker::Crashed(why) => self.recovery = Some(self.crashed(&why)),
        }
        None
    }

    /// The worker crashed (or died without a word): the run stops, and the page decides how
    /// to go on. Restarts back off; after two crashes on the GPU the next worker trains on the
    /// CPU; after [`MAX_CRASHES`] the page stops trying, keeping the last good autosave.
    ///
    /// A worker that crashes while starting (before its probe step) would crash again: on the
    /// GPU the next one starts on the CPU, and on the CPU the page stops at once with one
    /// message.
    pub fn crashed(&mut self, why: &str) -> Recovery {
        // The last worker's late report (its error event after its crash message) is the same
        // crash: it neither counts again nor replaces the message.
        if self.gave_up {
            return Recovery::GiveUp;
        }
        self.crashes += 1;
        self.run.state = RunState::Error;
        // Whatever the dead worker was doing (its final view too) is over.
        self.run.phase = Phase::Failed;
        self.stopping = false;
        let starting = self.probe.is_none();
        self.probe = None;
        let on_gpu = self
            .backend
            .as_ref()
            .is_some_and(|b| b.kind != BackendKind::Cpu);
        self.backend = None;
        if starting && self.force_cpu {
            self.error = Some(format!(
                "{why}. The compute worker failed while starting, so the page did not restart \
                 it; any autosave is kept. Reload the page to try again."
            ));
            self.gave_up = true;
            return Recovery::GiveUp;
        }
        if starting {
            self.force_cpu = true;
            self.error = Some(format!(
                "{why}. The compute worker failed while starting; starting one on the CPU…"
            ));
            return Recovery::Restart {
                force_cpu: true,
                delay_ms: 500,
            };
        }
        if self.crashes >= MAX_CRASHES {
            self.error = Some(format!(
                "{why}. The compute worker crashed {} times, so the page stopped restarting \
                 it; the last autosave is kept. Reload the page to try again.",
                self.crashes
            ));
            self.gave_up = true;
            return Recovery::GiveUp;
        }
        let force_cpu = self.force_cpu || (on_gpu && self.crashes >= 2);
        let how = if force_cpu && !self.force_cpu {
            " on the CPU this time"
        } else {
            ""
        };
        self.force_cpu = force_cpu;
        self.error = Some(format!(
            "{why}. Starting a new compute worker{how} and resuming from the last autosave…"
        ));
        Recovery::Restart {
            force_cpu,
            delay_ms: 500 * 4u32.pow(self.crashes - 1),
        }
    }

    /// A new run begins: keep the last run's curve for comparison and clear the charts.
    fn start_new_curve(&mut self, status: &RunStatus) {
        if let Some(ex) = self.explore.take() {
            self.previous = Some((self.curve.label.clone(), ex));
        }
        if !self.curve.metrics.is_empty() {
            self.earlier.push(std::mem::take(&mut self.curve));
        }
        let proto = status.config.as_ref().is_none_or(|c| c.proto_weight > 0.0);
        self.curve = RunCurve {
            label: if proto { "PCL" } else { "InfoNCE only" }.into(),
            metrics: Vec::new(),
        };
        self.steps.clear();
        self.esteps.clear();
        self.explore = None;
        self.neighbours = None;
        self.error = None;
    }

    /// PCL beside the InfoNCE-only baseline, once the later of the two has finished: the
    /// last two runs, one of each kind, both with their final views.
    pub fn comparison(&self) -> Option<Comparison> {
        if self.busy() || self.run.state == RunState::Idle {
            return None;
        }
        let (label, before) = self.previous.as_ref()?;
        let now = self.explore.as_ref()?;
        match (label.as_str(), self.curve.label.as_str()) {
            ("PCL", "InfoNCE only") => Some(Comparison {
                pcl: before.clone(),
                baseline: now.clone(),
            }),
            ("InfoNCE only", "PCL") => Some(Comparison {
                pcl: now.clone(),
                baseline: before.clone(),
            }),
            _ => None,
        }
    }

    /// `data-backend` of the backend badge.
    pub fn backend_attr(&self) -> &'static str {
        match self.backend.as_ref().map(|b| b.kind) {
            Some(BackendKind::Webgpu | BackendKind::Wgpu) => "webgpu",
            Some(BackendKind::Cpu) => "cpu",
            None => "pending",
        }
    }

    /// `data-state` of the status element: loading while images decode, "ending" while an
    /// ended run computes its final clusters view, else the run's state.
    pub fn state_attr(&self) -> &'static str {
        if self.images.loading.is_some() && self.run.state != RunState::Training {
            "loading"
        } else if self.ending() {
            "ending"
        } else {
            self.run.state.as_str()
        }
    }

    /// The run is over but its final clusters view and save are still being computed.
    pub fn ending(&self) -> bool {
        matches!(self.run.state, RunState::Done | RunState::Error)
            && matches!(self.run.phase, Phase::Exploring { .. })
    }

    /// Training, paused or ending: the worker cannot start another run yet.
    pub fn busy(&self) -> bool {
        matches!(self.run.state, RunState::Training | RunState::Paused) || self.ending()
    }

    /// Pause and Stop apply: a run trains or is paused and Stop was not pressed yet.
    pub fn can_stop(&self) -> bool {
        matches!(self.run.state, RunState::Training | RunState::Paused) && !self.stopping
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

    /// The run's progress in words.
    pub fn progress_line(&self) -> String {
        let r = &self.run;
        match r.state {
            RunState::Idle => "Not started.".into(),
            RunState::Error => "Stopped by an error; the last good state is kept.".into(),
            _ => {
                let eta = r
                    .eta_s
                    .map(|s| format!(", about {} left", format_duration(s)))
                    .unwrap_or_default();
                format!(
                    "Epoch {} of {}, step {} of {} — {} — {:.0} images/s{eta}",
                    (r.epoch + 1).min(r.epochs.max(1)),
                    r.epochs,
                    r.step,
                    r.steps_per_epoch,
                    if self.stopping {
                        "stopping after the current step".into()
                    } else {
                        phase_words(r)
                    },
                    r.images_per_s
                )
            }
        }
    }

    /// The t-SNE map's progress in words.
    pub fn tsne_words(&self) -> String {
        match (self.tsne_progress, &self.tsne) {
            (Some((done, total)), None) => format!("t-SNE: iteration {done} of {total}…"),
            (Some(_), Some(_)) => "t-SNE ready.".to_string(),
            _ => String::new(),
        }
    }

    /// For each coarse cluster (level 0, largest first), the finer clusters of `level` its
    /// members fall in, as (fine cluster, count), most members first.
    pub fn hierarchy(&self, level: usize) -> Vec<Vec<(usize, usize)>> {
        let Some(ex) = &self.explore else {
            return Vec::new();
        };
        let (Some(coarse), Some(fine)) = (ex.levels.first(), ex.levels.get(level)) else {
            return Vec::new();
        };
        let mut counts = vec![std::collections::BTreeMap::<usize, usize>::new(); coarse.k];
        for (&c, &f) in coarse.assignments.iter().zip(&fine.assignments) {
            *counts[c as usize].entry(f as usize).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|m| {
                let mut v: Vec<(usize, usize)> = m.into_iter().collect();
                v.sort_by_key(|&(f, n)| (std::cmp::Reverse(n), f));
                v
            })
            .collect()
    }
}

/// What the run is doing, in words (the phase's, with the epoch a run resumed at).
pub fn phase_words(r: &RunStatus) -> String {
    match &r.phase {
        Phase::Resumed { .. } => format!("{} at epoch {}", r.phase, r.epoch),
        phase => phase.to_string(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::records::{ClusterCard, LevelView};
    use crate::intake::Label;
    use crate::protocol::ImagesAdded;

    #[test]
    fn ready_starts_the_worker_and_results_are_kept() {
        let mut s = PageState::new(true);
        assert_eq!(s.backend_attr(), "pending");
        let other = FromWorker::Ready {
            build: "0123456789abcdef".into(),
        };
        assert_eq!(PageState::new(true).apply(other.clone()), None);
        let mut stale = PageState::new(true);
        stale.apply(other);
        assert!(stale.error.as_deref().unwrap().contains("reload the page"));
        assert_eq!(
            s.apply(FromWorker::Ready {
                build: crate::protocol::BUILD_ID.into()
            }),
            Some(ToWorker::Start {
                force_cpu: true,
                workers: None,
                force_webgpu: false,
            })
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
        // A crash: the run stops and the page says it restarts from the autosave.
        s.apply(FromWorker::Crashed("the compute worker crashed".into()));
        assert_eq!(s.state_attr(), "error");
        assert!(
            s.error
                .as_deref()
                .unwrap()
                .contains("resuming from the last autosave")
        );
        assert_eq!(s.probe, None, "the new worker checks its device again");
        s.apply(FromWorker::History(vec![]));
        assert_eq!(s.error, None, "a resumed run clears the message");
    }

    #[test]
    fn the_augmentation_panel_asks_once_images_and_device_are_ready_with_its_seed() {
        let mut s = PageState::new(true);
        assert_eq!(s.views_request(6), None, "no device yet");
        s.apply(FromWorker::ProbeStep {
            loss: 2.0,
            millis: 1.0,
        });
        assert_eq!(s.views_request(6), None, "no images yet");
        s.images.count = 20;
        s.settings.seed = 5;
        s.views_draw = 2;
        s.settings.image_size = 64;
        let Some(ToWorker::Views { config, count }) = s.views_request(6) else {
            panic!("a request once ready")
        };
        assert_eq!((config.seed, config.image_size, count), (7, TRAIN_SIZE, 6));
        s.settings.hue = Some(3.0);
        assert_eq!(
            s.views_request(6),
            None,
            "settings out of bounds are not sent"
        );
        let v = ViewPairs {
            indices: vec![0],
            seed: 7,
            size: 32,
            config,
            pixels: vec![1; 32 * 32 * 6],
        };
        s.apply(FromWorker::Views(v.clone()));
        assert_eq!(s.views, Some(v));
    }

    #[test]
    fn a_remembered_device_is_shown_with_the_rates_it_was_chosen_by() {
        use crate::backend::{Choice, ChoiceKind, Remembered};
        let measured = Choice {
            how: ChoiceKind::Measured,
            webgpu_img_s: Some(9.0),
            cpu_img_s: Some(350.0),
        };
        let mut s = PageState::new(true);
        s.remembered = Some(Remembered {
            cpu: true,
            choice: measured,
        });
        let mut info = BackendInfo::cpu(None);
        info.choice = Some(Choice {
            how: ChoiceKind::Forced,
            webgpu_img_s: None,
            cpu_img_s: None,
        });
        s.apply(FromWorker::Backend(info));
        let c = s.backend.as_ref().unwrap().choice.unwrap();
        assert_eq!(
            (c.how, c.webgpu_img_s, c.cpu_img_s),
            (ChoiceKind::Remembered, Some(9.0), Some(350.0))
        );
        assert!(
            c.words(2, true)
                .starts_with("Measured earlier in this browser: WebGPU 9.0 images/s")
        );
        assert!(Choice::cpu_is_faster(Some(9.0), Some(350.0)));
        assert!(!Choice::cpu_is_faster(Some(900.0), Some(350.0)));
        assert!(
            !Choice::cpu_is_faster(Some(9.0), None),
            "a failed CPU measurement keeps WebGPU"
        );
    }

    #[test]
    fn tsne_progress_and_map_stay_until_new_embeddings() {
        let mut s = PageState::new(false);
        s.apply(FromWorker::Tsne {
            done: 100,
            total: 1000,
            points: None,
        });
        assert_eq!(s.tsne_words(), "t-SNE: iteration 100 of 1000…");
        s.apply(FromWorker::Tsne {
            done: 1000,
            total: 1000,
            points: Some(vec![[0.0, 1.0]]),
        });
        assert_eq!(s.tsne_words(), "t-SNE ready.");
        s.apply(FromWorker::Explore(Box::new(ExploreReport {
            epoch: 3,
            levels: Vec::new(),
            map: Vec::new(),
            metrics: None,
        })));
        assert_eq!(s.tsne, None, "new embeddings: the old map goes");
        assert_eq!(s.tsne_words(), "");
    }

    #[test]
    fn a_crash_while_starting_tries_the_cpu_once_then_stops() {
        let mut s = PageState::new(false);
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(
            s.recovery,
            Some(Recovery::Restart {
                force_cpu: true,
                delay_ms: 500
            })
        );
        assert!(s.error.as_deref().unwrap().contains("on the CPU"));
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(s.recovery, Some(Recovery::GiveUp));
        assert!(
            s.error
                .as_deref()
                .unwrap()
                .contains("failed while starting")
        );
        // On the CPU from the start: one message, no restart at all.
        let mut cpu = PageState::new(true);
        cpu.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(cpu.recovery, Some(Recovery::GiveUp));
        assert_eq!(cpu.crashes, 1);
    }

    #[test]
    fn crashes_back_off_fall_back_to_the_cpu_and_then_stop() {
        let mut s = PageState::new(false);
        let probed = || FromWorker::ProbeStep {
            loss: 1.0,
            millis: 1.0,
        };
        let gpu = || BackendInfo {
            kind: BackendKind::Webgpu,
            ..BackendInfo::cpu(None)
        };
        s.apply(FromWorker::Backend(gpu()));
        s.apply(probed());
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(
            s.recovery.take(),
            Some(Recovery::Restart {
                force_cpu: false,
                delay_ms: 500
            })
        );
        s.apply(FromWorker::Backend(gpu()));
        s.apply(probed());
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(
            s.recovery.take(),
            Some(Recovery::Restart {
                force_cpu: true,
                delay_ms: 2000
            })
        );
        assert!(s.error.as_deref().unwrap().contains("on the CPU this time"));
        s.apply(FromWorker::Backend(BackendInfo::cpu(None)));
        s.apply(probed());
        s.apply(FromWorker::Crashed("boom".into()));
        assert_eq!(s.recovery.take(), Some(Recovery::GiveUp));
        assert_eq!(s.state_attr(), "error");
        assert!(s.error.as_deref().unwrap().contains("stopped restarting"));
        // The dead worker's error event comes after its crash message: nothing changes.
        let (crashes, error) = (s.crashes, s.error.clone());
        assert_eq!(s.crashed("stopped without a message"), Recovery::GiveUp);
        assert_eq!((s.crashes, &s.error), (crashes, &error));
    }

    #[test]
    fn images_accumulate_and_loading_shows_in_the_state() {
        let mut s = PageState::new(false);
        s.apply(FromWorker::Loading {
            done: 1,
            total: 4,
            eta_s: Some(3.0),
        });
        assert_eq!(s.state_attr(), "loading");
        let added = |names: &[&str], total| {
            FromWorker::Images(ImagesAdded {
                side: 36,
                names: names.iter().map(|n| n.to_string()).collect(),
                labels: vec![Label::default(); names.len()],
                skipped: vec![Skipped {
                    file: "x.txt".into(),
                    reason: "not an image".into(),
                }],
                total,
                memory_bytes: total * 36 * 36 * 3,
                seconds: 0.5,
                last: true,
            })
        };
        s.apply(added(&["a.png", "b.png"], 2));
        s.apply(added(&["c.png"], 3));
        assert_eq!(s.state_attr(), "idle");
        assert_eq!(s.images.count, 3);
        assert_eq!(
            s.images.skipped.len(),
            2,
            "skipped files of both loads are listed"
        );
        s.apply(FromWorker::ImagesCleared);
        assert_eq!(s.images.count, 0);
    }

    #[test]
    fn a_new_run_keeps_the_last_curve_for_comparison() {
        let mut s = PageState::new(false);
        let training = |proto_weight| RunStatus {
            state: RunState::Training,
            epochs: 4,
            steps_per_epoch: 2,
            config: Some(PclConfig {
                proto_weight,
                ..PclConfig::default()
            }),
            ..Default::default()
        };
        s.apply(FromWorker::Status(training(1.0)));
        assert_eq!(s.curve.label, "PCL");
        s.curve.metrics.push(Metrics {
            epoch: 1,
            report: Default::default(),
            ..Default::default()
        });
        s.apply(FromWorker::Status(RunStatus {
            state: RunState::Done,
            ..Default::default()
        }));
        let view = |epoch| ExploreReport {
            epoch,
            levels: Vec::new(),
            map: Vec::new(),
            metrics: None,
        };
        s.apply(FromWorker::Explore(Box::new(view(4))));
        assert_eq!(s.comparison(), None, "one run: nothing to compare");
        s.apply(FromWorker::Status(training(0.0)));
        assert_eq!(s.earlier.len(), 1);
        assert_eq!(s.earlier[0].label, "PCL");
        assert_eq!(s.curve.label, "InfoNCE only");
        assert!(s.progress_line().starts_with("Epoch 1 of 4, step 0 of 2"));
        assert_eq!(s.previous.as_ref().map(|p| p.0.as_str()), Some("PCL"));
        s.apply(FromWorker::Explore(Box::new(view(7))));
        assert_eq!(s.comparison(), None, "the baseline is still training");
        s.apply(FromWorker::Status(RunStatus {
            state: RunState::Done,
            ..Default::default()
        }));
        let c = s
            .comparison()
            .expect("PCL beside the baseline once it is done");
        assert_eq!((c.pcl.epoch, c.baseline.epoch), (4, 7));
        // A third run, PCL again: the pair is the baseline and the new run.
        s.apply(FromWorker::Status(training(1.0)));
        s.apply(FromWorker::Explore(Box::new(view(9))));
        s.apply(FromWorker::Status(RunStatus {
            state: RunState::Done,
            ..Default::default()
        }));
        let c = s.comparison().expect("the baseline beside the new PCL run");
        assert_eq!((c.pcl.epoch, c.baseline.epoch), (9, 7));
    }

    #[test]
    fn stop_is_acknowledged_at_once_and_the_ending_view_keeps_the_run_busy() {
        let mut s = PageState::new(false);
        let status = |state, phase| {
            FromWorker::Status(RunStatus {
                state,
                phase,
                epochs: 4,
                steps_per_epoch: 2,
                ..Default::default()
            })
        };
        s.apply(status(RunState::Training, Phase::Training));
        assert!(s.can_stop() && s.busy());
        // What the Stop button does: the worker finishes its step first.
        s.stopping = true;
        assert!(!s.can_stop(), "Stop and Pause are pressed once");
        assert!(
            s.progress_line()
                .contains("stopping after the current step")
        );
        s.apply(status(RunState::Training, Phase::Training));
        assert!(
            s.stopping,
            "a step that ends after the press does not clear it"
        );
        assert_eq!(s.state_attr(), "training");
        // The run ended; its last clusters view is still being computed.
        s.apply(status(
            RunState::Done,
            Phase::Exploring {
                done: 256,
                total: 500,
            },
        ));
        assert!(!s.stopping && !s.can_stop());
        assert!(s.busy(), "no new run until the worker is free");
        assert_eq!(s.state_attr(), "ending");
        assert!(
            s.progress_line()
                .contains("computing the clusters view: embedding images 256/500")
        );
        s.apply(status(RunState::Done, Phase::Stopped));
        assert!(!s.busy());
        assert_eq!(s.state_attr(), "done");
        assert!(s.progress_line().contains("stopped"));
        // A crash while stopping: the resumed run can be stopped again.
        s.apply(status(RunState::Training, Phase::Training));
        s.stopping = true;
        s.apply(FromWorker::Crashed("boom".into()));
        assert!(!s.stopping);
        // A crash while ending: the page is not left waiting for a view that will not come.
        s.apply(status(
            RunState::Done,
            Phase::Exploring {
                done: 0,
                total: 500,
            },
        ));
        s.apply(FromWorker::Crashed("boom".into()));
        assert!(!s.busy());
        assert_eq!(s.state_attr(), "error");
    }

    #[test]
    fn hierarchy_counts_fine_clusters_inside_coarse_ones() {
        let level = |k, assignments: Vec<u32>| LevelView {
            k,
            inertia: 0.0,
            clusters: vec![
                ClusterCard {
                    size: 0,
                    phi: 0.1,
                    members: vec![]
                };
                k
            ],
            assignments,
        };
        let mut s = PageState::new(false);
        s.explore = Some(ExploreReport {
            epoch: 3,
            levels: vec![level(2, vec![0, 0, 0, 1]), level(3, vec![2, 1, 2, 0])],
            map: vec![[0.0, 0.0]; 4],
            metrics: None,
        });
        assert_eq!(s.hierarchy(1), vec![vec![(2, 2), (1, 1)], vec![(0, 1)]]);
        assert!(s.hierarchy(5).is_empty());
    }

    #[test]
    fn thousands_of_skipped_files_list_the_first_hundred_and_a_count() {
        let mut im = ImagesInfo {
            skipped: (0..5000)
                .map(|i| Skipped {
                    file: format!("{i}.txt"),
                    reason: "not an image".into(),
                })
                .collect(),
            ..ImagesInfo::default()
        };
        let (shown, more) = im.skipped_shown();
        assert_eq!((shown.len(), more), (SKIPPED_SHOWN, 4900));
        assert_eq!(shown[0].file, "0.txt");
        im.skipped.truncate(3);
        let (shown, more) = im.skipped_shown();
        assert_eq!((shown.len(), more), (3, 0));
    }

    #[test]
    fn the_images_fingerprint_tells_apart_what_a_count_cannot() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let fp =
            |n: &[&str], f: &[&str], px: &[u8]| images_fingerprint(36, &names(n), &names(f), px);
        let base = fp(
            &["a.png", "b.png"],
            &["x", "y"],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
        );
        assert_eq!(
            base,
            fp(
                &["a.png", "b.png"],
                &["x", "y"],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9]
            )
        );
        assert_eq!(base.len(), 16);
        // Same count, other names, labels, pixels or order: another fingerprint.
        for other in [
            fp(
                &["a.png", "c.png"],
                &["x", "y"],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            ),
            fp(
                &["a.png", "b.png"],
                &["x", "z"],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            ),
            fp(
                &["a.png", "b.png"],
                &["x", "y"],
                &[1, 2, 3, 4, 5, 6, 7, 8, 0],
            ),
            fp(
                &["b.png", "a.png"],
                &["y", "x"],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            ),
            fp(
                &["a.pngb", ".png"],
                &["x", "y"],
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            ),
            images_fingerprint(
                72,
                &names(&["a.png", "b.png"]),
                &names(&["x", "y"]),
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
