//! The run's order of work (`engine::session`), driven as the worker and the CLI drive it:
//! pause, resume, stop, the autosave cadence, an opened session that is not saved back before it
//! trains, and the undo of a diverging step. A fake clock makes the cadence deterministic.

use std::cell::Cell;
use std::rc::Rc;

use burn::prelude::*;
use futures_lite::future::block_on;
use pcl_studio::engine::data::planted_groups;
use pcl_studio::engine::session::{Clock, Command, Failure, Options, Session, Update};
use pcl_studio::engine::{Dataset, PclConfig, Phase, RunState, Trainer};

/// The training tests' tiny settings, with two levels and a short warm-up.
fn tiny(epochs: usize) -> PclConfig {
    PclConfig {
        warmup_epochs: 1,
        num_clusters: vec![3, 6],
        kmeans_restarts: 1,
        ..crate::training::tiny(epochs)
    }
}

/// 64 images in 4 planted groups.
fn data() -> Rc<Dataset> {
    Rc::new(planted_groups(2, 2, 16, 36, 3))
}

/// A clock that moves `step` seconds every time it is read.
fn fake_clock(step: f64) -> Clock {
    let t = Rc::new(Cell::new(0.0));
    Box::new(move || {
        t.set(t.get() + step);
        t.get()
    })
}

fn session(config: &PclConfig, options: Options, clock: Clock, paused: bool) -> Session {
    let data = data();
    let t = Trainer::new(config, &data, &Device::flex()).expect("trainer");
    Session::new(t, data, options, clock, paused)
}

/// Ticks until the run is over or `max` ticks passed; every update in order.
fn ticks(s: &mut Session, max: usize) -> Vec<Update> {
    let mut updates = Vec::new();
    for _ in 0..max {
        if s.ended() {
            break;
        }
        block_on(s.tick(&mut |u| updates.push(u)));
    }
    updates
}

fn checkpoints(updates: &[Update]) -> Vec<usize> {
    updates
        .iter()
        .filter_map(|u| match u {
            Update::Checkpoint { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

fn last_status(updates: &[Update]) -> pcl_studio::engine::RunStatus {
    updates
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Status(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a status")
}

#[test]
fn a_run_goes_to_the_end_with_one_checkpoint_and_record_per_epoch() {
    let mut s = session(&tiny(3), Options::cli(Some(1)), fake_clock(0.01), false);
    let updates = ticks(&mut s, 100);
    assert!(s.ended());
    assert_eq!(s.state(), RunState::Done);
    assert_eq!(last_status(&updates).phase, Phase::Finished);
    // Epochs 1..=3 checkpointed as they ended; nothing new to save at the end.
    assert_eq!(checkpoints(&updates), vec![1, 2, 3]);
    let epochs: Vec<_> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Epoch(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Labelled images: evaluation every epoch, and the E-step clusters scored per level
    // once there is a clustering (after the warm-up epoch).
    assert!(epochs.iter().all(|r| r.knn_accuracy.is_some()));
    assert!(epochs[0].level_ami.is_empty());
    assert_eq!(epochs[2].level_ami.len(), 2);
    let steps: usize = updates
        .iter()
        .map(|u| match u {
            Update::Steps(r) => r.len(),
            _ => 0,
        })
        .sum();
    let per_epoch = s.trainer().steps_per_epoch(s.data().len());
    assert_eq!(steps, 3 * per_epoch, "every step reported once");
    // Ticks after the end do nothing.
    assert!(!block_on(
        s.tick(&mut |_| panic!("no update after the end"))
    ));
}

#[test]
fn pause_stops_work_saves_once_and_resume_goes_on() {
    let mut s = session(&tiny(4), Options::page(), fake_clock(0.001), false);
    let mut updates = ticks(&mut s, 1); // one step
    assert_eq!(s.trainer().step, 1);
    s.command(Command::Pause);
    block_on(s.tick(&mut |u| updates.push(u)));
    assert_eq!(s.state(), RunState::Paused);
    assert_eq!(last_status(&updates).phase, Phase::Paused);
    assert_eq!(
        checkpoints(&updates),
        vec![0],
        "the pause saved the step it took"
    );
    // Paused: ticks neither train nor save again; a second pause changes nothing.
    s.command(Command::Pause);
    for _ in 0..5 {
        assert!(!block_on(s.tick(&mut |u| updates.push(u))));
    }
    assert_eq!(s.trainer().step, 1);
    assert_eq!(checkpoints(&updates).len(), 1);
    s.command(Command::Resume);
    updates.extend(ticks(&mut s, 100));
    assert_eq!(s.state(), RunState::Done);
    assert_eq!(s.trainer().epoch, 4);
    assert_eq!(last_status(&updates).phase, Phase::Finished);
}

#[test]
fn stop_ends_the_run_early_and_saves_it() {
    let mut s = session(&tiny(10), Options::page(), fake_clock(0.001), false);
    let mut updates = ticks(&mut s, 3);
    s.command(Command::Stop);
    block_on(s.tick(&mut |u| updates.push(u)));
    assert!(s.ended());
    assert_eq!(s.state(), RunState::Done);
    assert!(s.trainer().epoch < 10);
    assert_eq!(last_status(&updates).phase, Phase::Stopped);
    assert_eq!(checkpoints(&updates).len(), 1, "the stop saved the run");
    // The page's options: the explorer ran at the end, so neighbours have embeddings.
    assert!(s.embeddings().is_some());
    // The stop is told before that last pass (minutes on an emulated GPU): a status of the ended
    // run computing its view comes first, the explorer's report next, the final status last.
    let at = |want: &dyn Fn(&Update) -> bool| updates.iter().rposition(want);
    let ending = at(&|u| {
        matches!(u, Update::Status(r) if r.state == RunState::Done
            && r.phase == Phase::Exploring { done: 0, total: 64 })
    })
    .expect("a status of the ending run");
    let explored = at(&|u| matches!(u, Update::Explored(_))).expect("the explorer's report");
    let stopped = at(&|u| matches!(u, Update::Status(r) if r.phase == Phase::Stopped)).unwrap();
    assert!(
        ending < explored && explored < stopped,
        "{ending} {explored} {stopped}"
    );
    // Commands after the end change nothing.
    s.command(Command::Resume);
    assert!(!block_on(s.tick(&mut |_| {})));
    assert_eq!(s.state(), RunState::Done);
}

#[test]
fn autosaves_follow_epochs_but_not_more_often_than_asked() {
    // Every clock read moves 0.3 s: an epoch takes well under 10 s of it, so with a 10 s
    // minimum most epoch ends are skipped; without one every epoch saves.
    let every = |seconds: f64| {
        let options = Options {
            checkpoint_every_s: seconds,
            ..Options::page()
        };
        let mut s = session(&tiny(8), options, fake_clock(0.3), false);
        let updates = ticks(&mut s, 200);
        assert_eq!(s.state(), RunState::Done);
        checkpoints(&updates)
    };
    assert_eq!(every(0.0), (1..=8).collect::<Vec<_>>());
    let sparse = every(10.0);
    assert!(sparse.len() < 8 && sparse.len() >= 2, "{sparse:?}");
    assert_eq!(sparse.last(), Some(&8), "the end is always saved");
}

#[test]
fn an_opened_session_is_not_saved_back_before_it_trains() {
    // The worker opens a session paused; pausing, resuming into a stop before any step must
    // not replace the last good autosave with it.
    let mut s = session(&tiny(4), Options::page(), fake_clock(0.001), true);
    let mut updates = Vec::new();
    s.command(Command::Pause);
    s.command(Command::Resume);
    s.command(Command::Pause);
    block_on(s.tick(&mut |u| updates.push(u)));
    assert!(checkpoints(&updates).is_empty(), "saved before training");
    s.command(Command::Stop);
    block_on(s.tick(&mut |u| updates.push(u)));
    assert!(s.ended());
    assert!(checkpoints(&updates).is_empty(), "saved before training");
}

#[test]
fn a_diverging_step_fails_the_run_and_keeps_the_last_good_state() {
    let config = PclConfig {
        lr: 1e9,
        ..tiny(50)
    };
    let mut s = session(&config, Options::cli(None), fake_clock(0.001), false);
    let updates = ticks(&mut s, 500);
    assert_eq!(s.state(), RunState::Error);
    assert_eq!(last_status(&updates).phase, Phase::Failed);
    let failure = updates.iter().find_map(|u| match u {
        Update::Failed(f) => Some(f.clone()),
        _ => None,
    });
    assert!(matches!(failure, Some(Failure::Diverged(_))), "{failure:?}");
    // No checkpoint after the failure, and the state kept is finite.
    let failed_at = updates
        .iter()
        .position(|u| matches!(u, Update::Failed(_)))
        .unwrap();
    assert!(checkpoints(&updates[failed_at..]).is_empty());
    let t = s.into_trainer();
    assert!(t.history.iter().all(|r| r.loss.is_finite()));
    let bytes = block_on(t.save()).unwrap();
    let (_, tensors) = pcl_studio::engine::trainer::read_checkpoint(&bytes).unwrap();
    assert!(tensors.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn a_diverged_run_in_the_page_says_so_once() {
    // The page's options also compute the clusters view at the end; after a divergence that
    // view of the last good state can fail too (at 1e6 and 1e7 here: weights that still gave a
    // finite loss in training mode overflow in evaluation mode), and its warning must not
    // follow (and replace in the page) the run's own message.
    for lr in [1e6, 1e7, 1e8] {
        let config = PclConfig { lr, ..tiny(50) };
        let mut s = session(&config, Options::page(), fake_clock(0.001), false);
        let updates = ticks(&mut s, 500);
        assert_eq!(s.state(), RunState::Error, "lr {lr}");
        let failed_at = updates
            .iter()
            .position(|u| matches!(u, Update::Failed(Failure::Diverged(_))))
            .expect("the run diverges");
        let after = updates[failed_at + 1..]
            .iter()
            .filter(|u| matches!(u, Update::Warning(_) | Update::Failed(_)))
            .count();
        assert_eq!(after, 0, "lr {lr}: messages after the failure");
    }
}

#[test]
fn a_time_budget_replans_and_ends_the_run() {
    // 0.05 s per clock read against a 1-minute budget: the session plans the epochs from
    // what it measured and the run ends by itself.
    let config = PclConfig {
        minutes: Some(1.0),
        ..tiny(1000)
    };
    let mut s = session(&config, Options::cli(None), fake_clock(0.05), false);
    let updates = ticks(&mut s, 5000);
    assert_eq!(s.state(), RunState::Done);
    assert!(
        updates
            .iter()
            .any(|u| matches!(u, Update::Replanned { .. }))
    );
    let epochs = s.trainer().config.epochs;
    assert!(epochs < 1000, "planned {epochs} epochs");
}

#[test]
fn an_update_that_breaks_the_weights_at_an_epoch_end_is_never_saved() {
    // The last step of epoch 1 leaves a non-finite weight behind a finite loss: the epoch's
    // checkpoint must not replace the last good one (epoch 1's end) with a file that cannot
    // open; the run stops as diverged, at the state before that update.
    let page = Options {
        checkpoint_every_s: 0.0,
        ..Options::page()
    };
    for options in [Options::cli(None), page] {
        let data = data();
        let mut t = Trainer::new(&tiny(5), &data, &Device::flex()).expect("trainer");
        t.diverge_after_epoch = Some(1);
        let mut s = Session::new(t, data.clone(), options, fake_clock(0.01), false);
        let updates = ticks(&mut s, 500);
        assert_eq!(s.state(), RunState::Error);
        assert_eq!(last_status(&updates).phase, Phase::Failed);
        assert!(
            updates
                .iter()
                .any(|u| matches!(u, Update::Failed(Failure::Diverged(_)))),
            "the run says it diverged"
        );
        let saved: Vec<&Vec<u8>> = updates
            .iter()
            .filter_map(|u| match u {
                Update::Checkpoint { bytes, .. } => Some(bytes),
                _ => None,
            })
            .collect();
        assert!(!saved.is_empty(), "epoch 0's end was saved");
        for bytes in &saved {
            Trainer::load(bytes, &data, &Device::flex()).expect("every saved file opens");
        }
        assert!(
            checkpoints(&updates).iter().all(|&e| e <= 1),
            "{:?}",
            checkpoints(&updates)
        );
        // What the run kept is the state before the update that broke it: finite.
        let mut t = s.into_trainer();
        assert_eq!((t.epoch, t.step), (1, t.steps_per_epoch(data.len()) - 1));
        let bytes = block_on(t.save_checked()).expect("the kept state saves");
        Trainer::load(&bytes, &data, &Device::flex()).expect("and opens");
    }
}

/// The 3-epoch tiny run, never paused: the steps a paused or prepared one must equal.
fn straight_run() -> Vec<pcl_studio::engine::StepRecord> {
    let mut s = session(&tiny(3), Options::cli(None), fake_clock(0.01), false);
    ticks(&mut s, 500);
    s.into_trainer().history
}

/// The same run as a front end that takes commands drives it: its long work asks between
/// pieces whether a command came (`asked`), and counts the asking (`heard`).
fn interruptible(options: Options, asked: &Rc<Cell<bool>>, heard: &Rc<Cell<usize>>) -> Session {
    let data = data();
    let mut t = Trainer::new(&tiny(3), &data, &Device::flex()).expect("trainer");
    let (asked, heard) = (asked.clone(), heard.clone());
    t.set_interrupt(Some(Rc::new(move || {
        heard.set(heard.get() + 1);
        let now = asked.get();
        Box::pin(async move { now })
    })));
    Session::new(t, data, options, fake_clock(0.01), false)
}

/// The CLI's options with the GPU's preparation (run here on the CPU, where it does the same
/// work).
fn with_preparation() -> Options {
    Options {
        prepare_kernels: true,
        ..Options::cli(None)
    }
}

#[test]
fn pause_during_an_e_step_acts_before_the_e_step_ends_and_the_run_goes_on_the_same() {
    // A front end that hears a pause during the E-step (after its first piece of work): the
    // E-step gives way at once, the pause applies on the next tick, and after resuming the
    // E-step runs again from the start and the run equals one that was never paused.
    let straight = straight_run();
    let (asked, heard) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(0usize)));
    let mut s = interruptible(Options::cli(None), &asked, &heard);
    // Train up to the first E-step (after the one warm-up epoch).
    let mut updates = Vec::new();
    while s.trainer().epoch < 1 {
        block_on(s.tick(&mut |u| updates.push(u)));
    }
    assert!(s.trainer().clustering.is_none());
    asked.set(true);
    let mut during = Vec::new();
    block_on(s.tick(&mut |u| during.push(u)));
    assert_eq!(
        heard.get(),
        1,
        "asked after the first piece of the E-step, then given way"
    );
    assert!(
        !during.iter().any(|u| matches!(u, Update::EStep { .. })),
        "{during:?}"
    );
    assert!(
        s.trainer().clustering.is_none(),
        "the dropped E-step left nothing behind"
    );
    s.command(Command::Pause);
    asked.set(false);
    block_on(s.tick(&mut |u| during.push(u)));
    assert_eq!(s.state(), RunState::Paused);
    s.command(Command::Resume);
    ticks(&mut s, 500);
    assert_eq!(s.state(), RunState::Done);
    let paused = s.into_trainer().history;
    assert_eq!(paused, straight, "the same run, pause or not");
}

#[test]
fn a_pause_during_the_gpu_preparation_acts_at_once_and_the_run_is_the_run_without_it() {
    // The preparation (run here on the CPU, where it does the same work) on a copy of the run:
    // a pause heard after its first stage stops it; after resuming it runs again, whole, once;
    // and the run's steps equal those of a run that never prepared.
    let straight = straight_run();
    let asked = Rc::new(Cell::new(true));
    let mut s = interruptible(with_preparation(), &asked, &Rc::new(Cell::new(0)));
    let mut first = Vec::new();
    block_on(s.tick(&mut |u| first.push(u)));
    assert!(s.status().kernels.is_none(), "interrupted: not prepared");
    assert!(
        !first
            .iter()
            .any(|u| matches!(u, Update::Prepared { .. } | Update::Steps(_))),
        "{first:?}"
    );
    assert!(first.iter().any(|u| matches!(
        u,
        Update::Status(st) if matches!(st.phase, Phase::Preparing { done: 0, .. })
    )));
    s.command(Command::Pause);
    asked.set(false);
    block_on(s.tick(&mut |_| {}));
    assert_eq!(s.state(), RunState::Paused);
    s.command(Command::Resume);
    let updates = ticks(&mut s, 500);
    assert_eq!(s.state(), RunState::Done);
    let prepared = updates
        .iter()
        .filter(|u| matches!(u, Update::Prepared { .. }))
        .count();
    assert_eq!(prepared, 1, "prepared once, after the resume");
    let counts = s.status().kernels.expect("counts after the preparation");
    let whole = {
        let mut s = session(&tiny(3), with_preparation(), fake_clock(0.01), false);
        block_on(s.tick(&mut |_| {}));
        s.status().kernels.expect("prepared").prepare_seconds
    };
    assert!(
        counts.prepare_seconds > whole,
        "both attempts' time, {counts:?}, against one whole preparation's {whole}"
    );
    assert!(counts.first_step_seconds > 0.0);
    assert_eq!(
        s.into_trainer().history,
        straight,
        "the same run, prepared or not"
    );
}

#[test]
fn the_explorer_after_e_steps_keeps_to_its_share_of_the_run_and_the_final_view_always_comes() {
    // tiny(6): warm-up 1, so E-steps before epochs 1..5. A share of 0: only the first E-step's
    // view (none has taken time yet) and the final one; a share of 1: after every E-step.
    let explored = |share: f64| {
        let options = Options {
            explore_share: share,
            ..Options::page()
        };
        let mut s = session(&tiny(6), options, fake_clock(0.01), false);
        let updates = ticks(&mut s, 500);
        assert_eq!(s.state(), RunState::Done);
        let esteps = updates
            .iter()
            .filter(|u| matches!(u, Update::EStep { .. }))
            .count();
        let views = updates
            .iter()
            .filter(|u| matches!(u, Update::Explored(_)))
            .count();
        let last_is_view = updates
            .iter()
            .rev()
            .find(|u| matches!(u, Update::Explored(_) | Update::EStep { .. }))
            .is_some_and(|u| matches!(u, Update::Explored(r) if r.epoch == 6));
        (esteps, views, last_is_view)
    };
    assert_eq!(explored(0.0), (5, 2, true));
    assert_eq!(explored(1.0), (5, 6, true));
}
