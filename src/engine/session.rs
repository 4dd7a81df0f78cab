//! (Over 500 lines: one type, `Session`, its options and updates.)
//!
//! One run, one place: the order of work of a training run for every front end. A `Session`
//! owns the trainer and its images; each `tick` does one unit of work (an SGD step, or an
//! E-step and the explorer after it) and emits what happened as [`Update`]s: steps, E-steps,
//! epoch summaries, explorer reports, checkpoints, rates and ETA, errors. Commands (pause,
//! resume, stop) queue up and apply between units. The Web Worker and the CLI only feed
//! commands in and show updates; neither holds a training loop of its own.

use std::collections::VecDeque;
use std::rc::Rc;

use super::data::Dataset;
use super::error::EngineError;
use super::explore::{LevelScores, explore};
use super::records::{
    EpochRecord, ExploreReport, KernelCounts, LevelSummary, Phase, RunState, RunStatus, StepRecord,
};
use super::trainer::{Event, Trainer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Stop,
}

/// Why a run stopped by itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The loss or the weights became non-finite; that update was undone.
    Diverged(String),
    /// The device stopped answering (a lost GPU): the front end may start over elsewhere.
    DeviceLost(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // `m` says what became non-finite and what to change.
            Failure::Diverged(m) => {
                write!(f, "training stopped: {m}. The last good state is kept.")
            }
            Failure::DeviceLost(m) => write!(f, "the GPU stopped answering ({m})"),
            Failure::Other(m) => f.write_str(m),
        }
    }
}

/// What a session reports, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Progress: after steps (at most every `report_every_s`), during E-steps, on every change
    /// of state.
    Status(RunStatus),
    /// Steps since the last such update.
    Steps(Vec<StepRecord>),
    EStep {
        epoch: usize,
        levels: Vec<LevelSummary>,
        /// Wall time of the E-step: embedding every image and k-means at every level.
        seconds: f64,
    },
    /// An epoch ended (after its `Steps`).
    Epoch(EpochRecord),
    /// A time budget re-planned the run.
    Replanned {
        epochs: usize,
        warmup_epochs: usize,
        seconds_used: f64,
    },
    Explored(Box<ExploreReport>),
    /// The whole run as session bytes (`Trainer::save`), to keep.
    Checkpoint {
        epoch: usize,
        bytes: Vec<u8>,
    },
    /// The run stopped by itself; a final `Status` follows.
    Failed(Failure),
    /// Something went wrong that does not stop training (an autosave, the explorer).
    Warning(String),
    /// The GPU's kernels were built before the first step (`Options::prepare_kernels`):
    /// `kernels` built (None where they are not counted) in `seconds`.
    Prepared {
        kernels: Option<u64>,
        seconds: f64,
    },
}

/// What a front end wants of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Checkpoints follow epochs (and a pause, and the end) but come at most this often.
    pub checkpoint_every_s: f64,
    /// `Steps` and `Status` after steps at most this often (0: after every step).
    pub report_every_s: f64,
    /// Run the explorer after E-steps and at the end.
    pub explore: bool,
    /// The most of the run's time the explorer may take after E-steps: it runs after an
    /// E-step while its passes so far took at most this share of the time worked (the first
    /// always; the final view at the end always, exact).
    pub explore_share: f64,
    /// Label metrics (kNN, AMI, linear probe) every this many epochs and at the end, where
    /// the images have labels; `None`: never.
    pub eval_every: Option<usize>,
    /// Before the first step, run every kind of the run's work once so that a GPU builds its
    /// kernels then, not in the middle of epochs (`Trainer::prepare_kernels`); the front end
    /// sets it where the device is a GPU.
    pub prepare_kernels: bool,
}

impl Options {
    /// The page: autosave at most every 2 s, ten reports a second, the explorer after each
    /// E-step (it carries the label metrics).
    pub fn page() -> Self {
        Self {
            checkpoint_every_s: 2.0,
            report_every_s: 0.1,
            explore: true,
            explore_share: 0.05,
            eval_every: None,
            prepare_kernels: false,
        }
    }

    /// The CLI: a checkpoint and a report every epoch and step, evaluation as asked.
    pub fn cli(eval_every: Option<usize>) -> Self {
        Self {
            checkpoint_every_s: 0.0,
            report_every_s: 0.0,
            explore: false,
            explore_share: 0.0,
            eval_every,
            prepare_kernels: false,
        }
    }
}

/// A monotonic clock in seconds (the browser's `performance.now`, `Instant` natively, a fake
/// one in tests).
pub type Clock = Box<dyn Fn() -> f64>;

pub struct Session {
    trainer: Trainer,
    data: Rc<Dataset>,
    options: Options,
    clock: Clock,
    state: RunState,
    phase: Phase,
    commands: VecDeque<Command>,
    /// Whether a tick has worked yet.
    started: bool,
    rate: Rate,
    unsent: Vec<StepRecord>,
    epoch_steps: Vec<StepRecord>,
    epoch_start: f64,
    last_report: f64,
    last_checkpoint: f64,
    /// Trained since the last checkpoint: an opened session is not saved back before it has
    /// trained a step (so a session failing at once cannot replace the last good autosave).
    dirty: bool,
    /// Seconds of work in this session (pauses excluded), of which E-steps and the explorer's
    /// passes after them, and those passes alone; epochs timed: what a time budget plans from.
    active_secs: f64,
    estep_secs: f64,
    explore_secs: f64,
    epochs_timed: usize,
    embeddings: Option<(Vec<f32>, usize)>,
    pixels_ami: Option<(Option<f64>, Option<f64>)>,
    /// After the preparation (GPU only): the kernels built, and the count when the epoch began.
    kernels: Option<KernelCounts>,
    kernels_mark: u64,
    /// A preparation a command interrupted: the count before it began, and its seconds so far
    /// (the next one goes on from there, and the two are reported as one).
    prepare_begun: Option<(Option<u64>, f64)>,
}

impl Session {
    /// A session that trains from its first tick (`paused`: waits for `Resume`).
    pub fn new(
        trainer: Trainer,
        data: Rc<Dataset>,
        options: Options,
        clock: Clock,
        paused: bool,
    ) -> Self {
        let now = clock();
        let (state, phase) = if paused {
            (RunState::Paused, Phase::Paused)
        } else {
            (RunState::Training, Phase::Waiting)
        };
        Self {
            trainer,
            data,
            options,
            clock,
            state,
            phase,
            commands: VecDeque::new(),
            started: false,
            rate: Rate::default(),
            unsent: Vec::new(),
            epoch_steps: Vec::new(),
            epoch_start: now,
            last_report: f64::NEG_INFINITY,
            last_checkpoint: now,
            dirty: false,
            active_secs: 0.0,
            estep_secs: 0.0,
            explore_secs: 0.0,
            epochs_timed: 0,
            embeddings: None,
            pixels_ami: None,
            kernels: None,
            kernels_mark: 0,
            prepare_begun: None,
        }
    }

    /// Raw pixels' AMI (labels, fine labels) known from earlier, so it is not computed again.
    pub fn with_pixels_ami(mut self, scores: (Option<f64>, Option<f64>)) -> Self {
        self.pixels_ami = Some(scores);
        self
    }

    pub fn command(&mut self, command: Command) {
        self.commands.push_back(command);
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub fn into_trainer(self) -> Trainer {
        self.trainer
    }

    pub fn data(&self) -> &Rc<Dataset> {
        &self.data
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    /// Whether the run is over (finished, stopped or failed): ticks do nothing more.
    pub fn ended(&self) -> bool {
        matches!(self.state, RunState::Done | RunState::Error)
    }

    /// Host embeddings [n, d] of the last explorer pass, for neighbours and exports.
    pub fn embeddings(&self) -> Option<(&[f32], usize)> {
        self.embeddings.as_ref().map(|(e, d)| (&e[..], *d))
    }

    pub fn pixels_ami(&self) -> Option<(Option<f64>, Option<f64>)> {
        self.pixels_ami
    }

    /// Where the run stands now.
    pub fn status(&self) -> RunStatus {
        self.status_with(self.phase.clone())
    }

    fn status_with(&self, phase: Phase) -> RunStatus {
        let t = &self.trainer;
        let spe = t.steps_per_epoch(self.data.len());
        let left_steps = (t.config.epochs.saturating_sub(t.epoch) * spe).saturating_sub(t.step);
        RunStatus {
            state: self.state,
            epoch: t.epoch,
            epochs: t.config.epochs,
            step: t.step,
            steps_per_epoch: spe,
            phase,
            images_per_s: self.rate.images_per_s(),
            eta_s: self.rate.step_s().map(|s| s * left_steps as f64),
            config: Some(t.config.clone()),
            memory_bytes: None,
            kernels: self.kernels,
        }
    }

    /// Applies the queued commands, then does one unit of work unless paused or over.
    /// Returns whether it worked (false: the front end may wait before the next tick).
    pub async fn tick(&mut self, emit: &mut dyn FnMut(Update)) -> bool {
        while let Some(command) = self.commands.pop_front() {
            self.apply(command, emit).await;
        }
        if self.state != RunState::Training {
            return false;
        }
        if !self.started {
            // A run that starts says so before its first unit of work (which may be long).
            self.started = true;
            emit(Update::Status(self.status()));
        }
        if self.options.prepare_kernels && self.kernels.is_none() {
            self.prepare(emit).await;
            return true;
        }
        let t0 = (self.clock)();
        let mut live = LiveStatus {
            clock: &self.clock,
            last: self.last_report,
            snapshot: self.status_with(Phase::Training),
        };
        let event = self
            .trainer
            .advance(&self.data, &mut |p: Phase| {
                if p != Phase::Training {
                    live.report(p, emit);
                }
            })
            .await;
        self.last_report = live.last;
        let seconds = (self.clock)() - t0;
        match event {
            Ok(Event::Step(record)) => {
                self.active_secs += seconds;
                self.dirty = true;
                self.phase = Phase::Training;
                self.rate.push(seconds, self.trainer.config.batch_size);
                if let Some(k) = self
                    .kernels
                    .as_mut()
                    .filter(|k| k.first_step_seconds == 0.0)
                {
                    k.first_step_seconds = seconds;
                }
                let epoch_done = record.epoch_done;
                self.epoch_steps.push(record.clone());
                self.unsent.push(record);
                if epoch_done || (self.clock)() - self.last_report >= self.options.report_every_s {
                    self.report(emit);
                }
                if epoch_done {
                    self.end_epoch(emit).await;
                }
            }
            Ok(Event::EStep { epoch, levels }) => {
                emit(Update::EStep {
                    epoch,
                    levels,
                    seconds,
                });
                // The explorer's view after an E-step is for the eye, not for training: on a time
                // budget of its own, so that the run's minutes go to training.
                if self.options.explore
                    && self.explore_secs <= self.options.explore_share * self.active_secs
                {
                    let t = (self.clock)();
                    self.explore(emit, true).await;
                    self.explore_secs += (self.clock)() - t;
                }
                // The explorer's pass is part of each E-step's cost in a time budget.
                let seconds = (self.clock)() - t0;
                self.active_secs += seconds;
                self.estep_secs += seconds;
            }
            Ok(Event::Done) => self.end(Phase::Finished, emit).await,
            // A command came during an E-step: the next tick applies it; nothing was done.
            Err(EngineError::Interrupted) => {}
            Err(e) => self.fail(e, emit).await,
        }
        true
    }

    /// The GPU's kernels built before the first step (see `Options::prepare_kernels`); not
    /// part of the run's time, as a compile cache would make it free. A failure here is only a
    /// warning: the run then builds kernels as it meets them.
    async fn prepare(&mut self, emit: &mut dyn FnMut(Update)) {
        let (before, earlier_secs) = match self.prepare_begun {
            Some(begun) => begun,
            None => (super::pipelines::settled(self.trainer.device()).await, 0.0),
        };
        let t0 = (self.clock)();
        let total = self.trainer.preparation_stages(self.options.explore);
        let mut live = self.live(Phase::Preparing { done: 0, total }, emit);
        let prepared = self
            .trainer
            .prepare_kernels(&self.data, self.options.explore, &mut |done, total| {
                live.report(Phase::Preparing { done, total }, emit)
            })
            .await;
        match prepared {
            // A command came: the next tick applies it, and prepares again before a step.
            Err(EngineError::Interrupted) => {
                self.prepare_begun = Some((before, earlier_secs + (self.clock)() - t0));
                return;
            }
            Err(e) => emit(Update::Warning(format!(
                "preparing the GPU's kernels failed; the run builds them as it meets them: {e}"
            ))),
            Ok(()) => {}
        }
        let now = super::pipelines::settled(self.trainer.device()).await;
        let seconds = earlier_secs + (self.clock)() - t0;
        let kernels = now.zip(before).map(|(now, before)| now - before);
        self.prepare_begun = None;
        self.kernels = Some(KernelCounts {
            counted: kernels.is_some(),
            prepared: kernels.unwrap_or(0),
            prepare_seconds: seconds,
            ..KernelCounts::default()
        });
        self.kernels_mark = now.unwrap_or(0);
        self.epoch_start = (self.clock)();
        emit(Update::Prepared { kernels, seconds });
        emit(Update::Status(self.status()));
    }

    async fn apply(&mut self, command: Command, emit: &mut dyn FnMut(Update)) {
        match (command, self.state) {
            (Command::Pause, RunState::Training) => {
                self.state = RunState::Paused;
                self.phase = Phase::Paused;
                self.flush_steps(emit);
                emit(Update::Status(self.status()));
                if let Err(diverged) = self.checkpoint(emit).await {
                    self.fail(diverged, emit).await;
                }
            }
            (Command::Resume, RunState::Paused) => {
                self.state = RunState::Training;
                self.phase = Phase::Waiting;
                emit(Update::Status(self.status()));
            }
            (Command::Stop, RunState::Training | RunState::Paused) => {
                let phase = if self.trainer.is_done() {
                    Phase::Finished
                } else {
                    Phase::Stopped
                };
                self.end(phase, emit).await;
            }
            // Pausing a paused run, resuming a running one, anything after the end.
            _ => {}
        }
    }

    fn flush_steps(&mut self, emit: &mut dyn FnMut(Update)) {
        if !self.unsent.is_empty() {
            emit(Update::Steps(std::mem::take(&mut self.unsent)));
        }
    }

    fn report(&mut self, emit: &mut dyn FnMut(Update)) {
        self.last_report = (self.clock)();
        self.flush_steps(emit);
        emit(Update::Status(self.status()));
    }

    /// The epoch's summary, a time budget's new plan, evaluation where due, a checkpoint.
    async fn end_epoch(&mut self, emit: &mut dyn FnMut(Update)) {
        let now = (self.clock)();
        let mut record = EpochRecord::from_steps(&self.epoch_steps, now - self.epoch_start);
        self.epoch_steps.clear();
        self.epochs_timed += 1;
        let t = &mut self.trainer;
        if t.fit_to_budget(self.active_secs, self.estep_secs, self.epochs_timed) {
            emit(Update::Replanned {
                epochs: t.config.epochs,
                warmup_epochs: t.config.warmup_epochs,
                seconds_used: t.seconds,
            });
        }
        record.epochs_planned = self.trainer.config.epochs;
        let data = self.data.clone();
        if let Some(labels) = data.eval_labels() {
            (record.pixels_ami, record.pixels_ami_fine) = self.pixels_baseline().await;
            if let Some(c) = &self.trainer.clustering {
                let levels: Vec<&[u32]> = c.levels.iter().map(|l| &l.assignments[..]).collect();
                let s = LevelScores::new(&levels, labels, data.eval_fine_labels());
                (record.level_ami, record.level_nmi) = (s.ami, s.nmi);
                (record.level_ami_fine, record.level_nmi_fine) = (s.ami_fine, s.nmi_fine);
            }
            let due = self.options.eval_every.is_some_and(|every| {
                every > 0 && (self.trainer.epoch.is_multiple_of(every) || self.trainer.is_done())
            });
            if due {
                match super::evaluate(&self.trainer, &data, labels).await {
                    Ok(r) => {
                        record.knn_accuracy = Some(r.knn_accuracy);
                        record.ami = Some(r.ami);
                        record.nmi = Some(r.nmi);
                        record.linear_accuracy = Some(r.linear_accuracy);
                    }
                    Err(e) => emit(Update::Warning(format!("evaluation failed: {e}"))),
                }
            }
        }
        self.count_kernels(&mut record).await;
        emit(Update::Epoch(record));
        if (self.clock)() - self.last_checkpoint >= self.options.checkpoint_every_s
            && let Err(diverged) = self.checkpoint(emit).await
        {
            return self.fail(diverged, emit).await;
        }
        self.epoch_start = (self.clock)();
    }

    /// The run stops by itself: it diverged, or anything else went wrong.
    async fn fail(&mut self, error: EngineError, emit: &mut dyn FnMut(Update)) {
        emit(Update::Failed(match error {
            EngineError::NonFinite(m) => Failure::Diverged(m),
            EngineError::Device(m) => Failure::DeviceLost(m),
            other => Failure::Other(other.to_string()),
        }));
        self.end(Phase::Failed, emit).await;
    }

    /// The run is over: the last steps, the explorer's final view, the final status, and a
    /// checkpoint of what trained since the last one (not after a failure: the last good
    /// checkpoint stays the one to resume).
    async fn end(&mut self, phase: Phase, emit: &mut dyn FnMut(Update)) {
        self.state = if phase == Phase::Failed {
            RunState::Error
        } else {
            RunState::Done
        };
        self.flush_steps(emit);
        if self.options.explore {
            // After a failure the run's own message says what went wrong; the clusters view of
            // the same state failing too would only replace that message in the page.
            self.explore(emit, phase != Phase::Failed).await;
        }
        self.phase = phase;
        emit(Update::Status(self.status()));
        if self.state == RunState::Done
            && let Err(EngineError::NonFinite(m)) = self.checkpoint(emit).await
        {
            // The last update diverged after its loss was read: it was undone, and the run
            // ends as a failure.
            emit(Update::Failed(Failure::Diverged(m)));
            self.state = RunState::Error;
            self.phase = Phase::Failed;
            emit(Update::Status(self.status()));
        }
    }

    /// Saves the run when it trained since the last checkpoint. A state that is not finite is
    /// never saved (it would replace the last good checkpoint with one that cannot open): its
    /// update is undone and the error returned, for the caller to stop the run.
    async fn checkpoint(&mut self, emit: &mut dyn FnMut(Update)) -> Result<(), EngineError> {
        if !self.dirty {
            return Ok(());
        }
        match self.trainer.save_checked().await {
            Ok(bytes) => {
                self.dirty = false;
                self.last_checkpoint = (self.clock)();
                emit(Update::Checkpoint {
                    epoch: self.trainer.epoch,
                    bytes,
                });
            }
            Err(e @ EngineError::NonFinite(_)) => return Err(e),
            Err(e) => emit(Update::Warning(format!(
                "saving the run failed (training goes on): {e}"
            ))),
        }
        Ok(())
    }

    /// Clusters, map and metrics of the current encoder; `warn`: say so when they cannot be
    /// computed.
    pub async fn explore(&mut self, emit: &mut dyn FnMut(Update), warn: bool) {
        // On an emulated or slow GPU this pass can take minutes: the page says so at once and
        // counts the images embedded.
        let total = self.data.len();
        let mut live = self.live(Phase::Exploring { done: 0, total }, emit);
        let progress = &mut |p: Phase| {
            if let Phase::Embedding { done, total } = p {
                live.report(Phase::Exploring { done, total }, emit);
            }
        };
        match explore(&self.trainer, &self.data, progress).await {
            Ok((mut report, host)) => {
                if let Some(m) = report.metrics.as_mut() {
                    (m.pixels_ami, m.pixels_ami_fine) = self.pixels_baseline().await;
                }
                self.embeddings = Some((host, self.trainer.config.feature_dim));
                emit(Update::Explored(Box::new(report)));
            }
            Err(e) if warn => emit(Update::Warning(format!(
                "could not compute the clusters view: {e}"
            ))),
            Err(_) => {}
        }
    }

    /// A long unit of work's progress reporter, its first status (`phase`) out at once.
    fn live(&self, phase: Phase, emit: &mut dyn FnMut(Update)) -> LiveStatus<'_> {
        let snapshot = self.status_with(phase);
        emit(Update::Status(snapshot.clone()));
        LiveStatus {
            clock: &self.clock,
            last: (self.clock)(),
            snapshot,
        }
    }

    /// The kernels built during the epoch that just ended (after a preparation only).
    async fn count_kernels(&mut self, record: &mut EpochRecord) {
        let Some(mut counts) = self.kernels.filter(|k| k.counted) else {
            return;
        };
        let now = super::pipelines::settled(self.trainer.device()).await;
        let now = now.unwrap_or(self.kernels_mark);
        let new = now.saturating_sub(self.kernels_mark);
        self.kernels_mark = now;
        record.kernels_built = Some(new);
        // The preparation came before any epoch of this session: its first ended just now.
        if self.epochs_timed == 1 {
            counts.first_epoch += new;
        } else {
            counts.later += new;
        }
        self.kernels = Some(counts);
    }

    /// Raw pixels' AMI against the labels and fine labels (computed once per session).
    async fn pixels_baseline(&mut self) -> (Option<f64>, Option<f64>) {
        if let Some(scores) = self.pixels_ami {
            return scores;
        }
        let (size, seed) = (self.trainer.config.image_size, self.trainer.config.seed);
        let scores = super::pixels_ami(&self.data, size, seed, self.trainer.device())
            .await
            .unwrap_or((None, None));
        self.pixels_ami = Some(scores);
        scores
    }
}

/// Progress inside one long unit of work (an E-step, the explorer's pass), reported a few times
/// a second as the status before it with another phase.
struct LiveStatus<'a> {
    clock: &'a Clock,
    /// When the last status went out.
    last: f64,
    snapshot: RunStatus,
}

impl LiveStatus<'_> {
    fn report(&mut self, phase: Phase, emit: &mut dyn FnMut(Update)) {
        let now = (self.clock)();
        if now - self.last > 0.2 {
            self.last = now;
            emit(Update::Status(RunStatus {
                phase,
                ..self.snapshot.clone()
            }));
        }
    }
}

/// Recent step times, for images/s and the ETA.
#[derive(Default)]
struct Rate {
    recent: VecDeque<(f64, usize)>,
}

impl Rate {
    fn push(&mut self, seconds: f64, images: usize) {
        self.recent.push_back((seconds, images));
        if self.recent.len() > 20 {
            self.recent.pop_front();
        }
    }

    fn step_s(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().map(|r| r.0).sum::<f64>() / self.recent.len() as f64)
    }

    fn images_per_s(&self) -> f64 {
        let s: f64 = self.recent.iter().map(|r| r.0).sum();
        let n: usize = self.recent.iter().map(|r| r.1).sum();
        if s > 0.0 { n as f64 / s } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;

    #[test]
    fn a_divergence_is_told_once_in_the_engine_words() {
        for m in [
            "loss became NaN at epoch 0 step 2; lower the learning rate or check the images",
            "the embeddings became non-finite before epoch 2: the last update diverged and was \
             undone; lower the learning rate",
        ] {
            let text = Failure::Diverged(m.into()).to_string();
            assert!(
                text.starts_with("training stopped: ") && text.contains(m),
                "{text}"
            );
            assert_eq!(text.matches("became").count(), 1, "{text}");
            assert_eq!(text.matches("learning rate").count(), 1, "{text}");
        }
    }
}
