//! The GPU's kernels built before a run's first timed step. A GPU compiles a pipeline the first
//! time a kernel meets its shapes; left to the run, that happens in the middle of its first
//! steps, its first E-step (k-means) and its first step with prototypes, and those steps stall.
//! Here every kind of work the run will do runs once, at the run's own shapes, on a copy of its
//! state that is then dropped.

use super::Trainer;
use crate::engine::data::Dataset;
use crate::engine::error::EngineError;
use crate::engine::records::Phase;

impl Trainer {
    /// A copy of this run to try work on: tensors are immutable and shared, so it costs no
    /// device memory until the copy's work makes new ones; no helpers, no interrupt.
    fn scratch(&self) -> Trainer {
        Trainer {
            config: self.config.clone(),
            device: self.device.clone(),
            model: self.model.clone(),
            key: self.key.clone(),
            sgd: self.sgd.clone(),
            queue: self.queue.clone(),
            queue_ptr: self.queue_ptr,
            queue_ids: self.queue_ids.clone(),
            rng: self.rng.clone(),
            epoch: self.epoch,
            step: self.step,
            order: self.order.clone(),
            estep_done: self.estep_done,
            clustering: self.clustering.clone(),
            history: Vec::new(),
            last_good: None,
            warmup_share: self.warmup_share,
            seconds_before: self.seconds_before,
            seconds: self.seconds,
            helpers: None,
            helper_failure: None,
            diverge_after_epoch: None,
            interrupt: None,
        }
    }

    /// The stages [`Trainer::prepare_kernels`] runs for this run: steps as in warm-up, without
    /// and with a query's own older key in the queue; where the run has E-steps ahead, the
    /// E-step and a step with prototypes; with `explore`, the explorer's pass; a checkpoint.
    pub fn preparation_stages(&self, explore: bool) -> usize {
        3 + 2 * usize::from(self.has_esteps_ahead()) + usize::from(explore)
    }

    /// Puts the next batch's first image in the queue, so that the next step masks a query's
    /// own older key (a path the run takes once its queue holds keys of its images).
    fn queue_own_key(&mut self, n: usize) {
        self.step = 0;
        let first = self.rng.clone().permutation(n)[0];
        self.queue_ids[0] = Some(first as u32);
    }

    fn has_esteps_ahead(&self) -> bool {
        (self.epoch..self.config.epochs).any(|e| self.config.estep_before(e))
    }

    /// Runs every kind of work the run will do once, on a copy of the run, so that the device
    /// builds its kernels now (see the module's note). The run is untouched: its weights,
    /// queue, random streams and history are the copy's originals. `progress(done, total)`
    /// after each stage; between stages a command may stop it (`Interrupted`: the front end's
    /// pause or stop comes first, and the preparation runs again before the next step).
    pub async fn prepare_kernels(
        &self,
        data: &Dataset,
        explore: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), EngineError> {
        let total = self.preparation_stages(explore);
        let mut done = 0;
        let mut stage = async || {
            done += 1;
            progress(done, total);
            self.interrupted().await
        };
        let mut scratch = self.scratch();
        // The warm-up's steps (no prototypes), as at the start and once the queue holds keys
        // of the images.
        let n = data.len();
        scratch.clustering = None;
        scratch.queue_ids.fill(None);
        scratch.train_step(data).await?;
        stage().await?;
        scratch.queue_own_key(n);
        scratch.train_step(data).await?;
        stage().await?;
        if self.has_esteps_ahead() {
            scratch.e_step(data, &mut |_: Phase| {}).await?;
            stage().await?;
            scratch.queue_own_key(n);
            scratch.train_step(data).await?;
            stage().await?;
        }
        if explore {
            crate::engine::explore::explore(&scratch, data, &mut |_: Phase| {}).await?;
            stage().await?;
        }
        scratch.save().await?;
        stage().await?;
        Ok(())
    }
}
