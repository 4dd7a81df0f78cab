//! The live run: a driver task owns the engine session, passes it the page's requests between
//! units of work and posts what it reports.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::{PixelsAmi, STATE, busy_training, device, error, now_ms, post, post_bytes, sleep_ms};
use crate::engine::config::too_few_images;
use crate::engine::eval::pca_2d;
use crate::engine::parallel::Helpers;
use crate::engine::session::{Command, Failure, Options, Session, Update};
use crate::engine::tsne::Tsne;
use crate::engine::{Dataset, EngineError, PclConfig, Trainer};
use crate::engine::{explore, export};
use crate::protocol::{ExportKind, FromWorker, Phase, RunStatus};

/// What the page asks of the live run; the run's driver takes these between units of work.
pub(super) enum Request {
    Run(Command),
    Export(ExportKind),
    Neighbours(usize),
    Tsne,
}

thread_local! {
    static REQUESTS: RefCell<VecDeque<Request>> = const { RefCell::new(VecDeque::new()) };
}

/// Hands a request to the live run, or says why there is none.
pub(super) fn request(r: Request) {
    if STATE.with_borrow(|s| s.run.is_none()) {
        match r {
            Request::Run(_) => {}
            Request::Export(_) => error("nothing to export yet: train first"),
            Request::Neighbours(_) | Request::Tsne => {
                error("no embedding yet: train for an epoch first")
            }
        }
        return;
    }
    REQUESTS.with_borrow_mut(|q| q.push_back(r));
}

pub(super) async fn train(config: PclConfig) {
    if busy_training() {
        return error("a run is already going; stop it first");
    }
    let Some(device) = device() else {
        return error("the compute device is not ready yet");
    };
    let data = STATE.with_borrow(|s| s.data.clone());
    if data.len() < crate::engine::config::MIN_IMAGES {
        return error(too_few_images(data.len()));
    }
    let mut config = config;
    config.image_size = crate::protocol::TRAIN_SIZE;
    match Trainer::new(&config, &data, &device) {
        Ok(t) => start_run(t, false, None),
        Err(e) => error(e.to_string()),
    }
}

pub(super) async fn import(bytes: Vec<u8>, autosave: bool) {
    if busy_training() {
        return error("stop the current run before opening a session");
    }
    let Some(device) = device() else {
        return error("the compute device is not ready yet");
    };
    let data = STATE.with_borrow(|s| s.data.clone());
    match Trainer::load(&bytes, &data, &device) {
        Ok(t) => {
            post(FromWorker::History(t.history.clone()));
            // A finished run goes straight to its final view; any other waits for Resume.
            let paused = !t.is_done();
            start_run(t, paused, Some(Phase::Resumed { autosave }));
        }
        Err(e) => error(format!("cannot open this session: {e}")),
    }
}

/// Starts the driver of a new run (any earlier run's driver ends at its next turn).
fn start_run(mut trainer: Trainer, paused: bool, phase: Option<Phase>) {
    let (data, helpers, diverge, gpu) = STATE.with_borrow(|s| {
        (
            s.data.clone(),
            s.helpers.clone(),
            s.diverge_after_epoch,
            s.gpu,
        )
    });
    trainer.set_helpers(helpers.map(|h| h as Rc<dyn Helpers>));
    trainer.diverge_after_epoch = diverge;
    // Pause and Stop during an E-step: the worker hears its messages between the E-step's
    // pieces of work (a turn of the event loop), and the E-step gives way to them.
    trainer.set_interrupt(Some(Rc::new(|| {
        Box::pin(async {
            sleep_ms(0).await;
            REQUESTS.with_borrow(|q| {
                q.iter()
                    .any(|r| matches!(r, Request::Run(Command::Pause | Command::Stop)))
            })
        })
    })));
    let mut session = Session::new(
        trainer,
        data.clone(),
        Options {
            prepare_kernels: gpu,
            ..Options::page()
        },
        Box::new(|| now_ms() / 1000.0),
        paused,
    );
    if let Some(p) = STATE.with_borrow(|s| s.pixels_ami)
        && p.data == data_id(&data)
    {
        session = session.with_pixels_ami(p.scores);
    }
    if let Some(phase) = phase {
        post(FromWorker::Status(RunStatus {
            phase,
            ..session.status()
        }));
    }
    let generation = STATE.with_borrow_mut(|s| {
        s.generation += 1;
        s.run = Some(session.state());
        s.generation
    });
    REQUESTS.with_borrow_mut(VecDeque::clear);
    wasm_bindgen_futures::spawn_local(drive(session, generation));
}

fn data_id(data: &Rc<Dataset>) -> (usize, usize) {
    (Rc::as_ptr(data) as usize, data.len())
}

/// Message plumbing around the run: requests in, updates out, until another run replaces it
/// or its images are removed. It outlives the end of training, for exports and neighbours.
async fn drive(mut session: Session, generation: u64) {
    let mut tsne: Option<Tsne> = None;
    loop {
        if STATE.with_borrow(|s| s.generation) != generation {
            return;
        }
        for r in REQUESTS.with_borrow_mut(std::mem::take) {
            match r {
                Request::Run(c) => session.command(c),
                Request::Export(kind) => export(&session, kind).await,
                Request::Neighbours(index) => neighbours(&session, index),
                Request::Tsne => tsne = start_tsne(&session),
            }
        }
        // The map advances in slices between units of training, so both go on.
        if let Some(t) = tsne.as_mut() {
            let t0 = now_ms();
            while !t.done() && now_ms() - t0 < 100.0 {
                t.run(1);
            }
            post(FromWorker::Tsne {
                done: t.iteration,
                total: t.iterations,
                points: t.done().then(|| t.layout()),
            });
            if t.done() {
                tsne = None;
            }
        }
        let worked = session.tick(&mut post_update).await;
        let state = session.state();
        let pixels = session.pixels_ami().map(|scores| PixelsAmi {
            data: data_id(session.data()),
            scores,
        });
        STATE.with_borrow_mut(|s| {
            if s.generation == generation {
                s.run = Some(state);
                s.pixels_ami = pixels.or(s.pixels_ami);
            }
        });
        sleep_ms(if worked { 0 } else { 40 }).await;
    }
}

/// The worker's wasm linear memory (64 KiB pages; it grows and never shrinks).
fn wasm_memory_bytes() -> u64 {
    core::arch::wasm32::memory_size::<0>() as u64 * 65_536
}

fn post_update(update: Update) {
    match update {
        Update::Status(s) => post(FromWorker::Status(RunStatus {
            memory_bytes: Some(wasm_memory_bytes()),
            ..s
        })),
        Update::Steps(records) => post(FromWorker::Steps(records)),
        Update::EStep {
            epoch,
            levels,
            seconds,
        } => post(FromWorker::EStepDone {
            epoch,
            levels,
            seconds,
        }),
        Update::Explored(report) => post(FromWorker::Explore(report)),
        Update::Checkpoint { epoch, bytes } => post_bytes(FromWorker::Autosave { epoch }, &bytes),
        Update::Failed(f @ Failure::DeviceLost(_)) => post(FromWorker::Crashed(f.to_string())),
        Update::Failed(f) => error(f.to_string()),
        Update::Warning(w) => error(w),
        // The page shows epochs and the kernels built through the status and the explorer's
        // metrics.
        Update::Epoch(_) | Update::Replanned { .. } | Update::Prepared { .. } => {}
    }
}

/// A t-SNE of the last explorer pass's embeddings, started from its PCA map.
fn start_tsne(session: &Session) -> Option<Tsne> {
    let Some((emb, d)) = session.embeddings() else {
        error("no embedding yet: train for an epoch first");
        return None;
    };
    match Tsne::new(emb, d, &pca_2d(emb, d), 30.0) {
        Ok(t) => Some(t),
        Err(e) => {
            error(e);
            None
        }
    }
}

fn neighbours(session: &Session, index: usize) {
    let found = session
        .embeddings()
        .filter(|(e, d)| index < e.len() / d)
        .map(|(e, d)| explore::neighbours(e, d, index, 12));
    match found {
        Some(neighbours) => post(FromWorker::Neighbours { index, neighbours }),
        None => error("no embedding yet: train for an epoch first"),
    }
}

async fn export(session: &Session, kind: ExportKind) {
    let t = session.trainer();
    let result = match kind {
        ExportKind::Session => t.save().await.map(|b| (b, "pcl-session.pclstudio")),
        ExportKind::Model => t.save_model().await.map(|b| (b, "pcl-encoder.bin")),
        ExportKind::Clusters => Ok((
            explore::clusters_json(t, session.data()).into_bytes(),
            "pcl-clusters.json",
        )),
        ExportKind::Safetensors => {
            export::safetensors(&t.encoder(), &t.config.encoder(), t.config.image_size)
                .await
                .map(|b| (b, "pcl-encoder.safetensors"))
        }
        ExportKind::Projector => match session.embeddings() {
            Some((emb, d)) => {
                let bundle = export::projector(session.data(), emb, d, t.clustering.as_ref());
                Ok((bundle.zip(), "pcl-projector.zip"))
            }
            None => Err(EngineError::Config("no embeddings yet".into())),
        },
        ExportKind::Embeddings => match session.embeddings() {
            Some((emb, d)) => Ok((
                explore::embeddings_csv(session.data(), emb, d).into_bytes(),
                "pcl-embeddings.csv",
            )),
            None => Err(EngineError::Config("no embeddings yet".into())),
        },
    };
    match result {
        Ok((bytes, name)) => post_bytes(
            FromWorker::File {
                kind,
                name: name.into(),
            },
            &bytes,
        ),
        Err(e) => error(format!("export failed: {e}")),
    }
}
