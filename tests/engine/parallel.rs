//! Data-parallel steps (engine::parallel): a run whose batch parts go to helpers trains the
//! same weights as the run that does the whole batch itself, a failing helper's part is done
//! by the trainer, and helper messages that do not add up are refused with a message.

use std::cell::Cell;
use std::rc::Rc;

use burn::prelude::*;
use futures_lite::future::block_on;
use pcl_studio::engine::data::planted_groups;
use pcl_studio::engine::parallel::{
    EmbedJob, EmbedReply, EmbedResult, HelperModels, Helpers, KeysResult, SliceJob, SliceResult,
    Submitted, run_embed, run_keys, run_part, split_rows,
};
use pcl_studio::engine::{Dataset, Event, NormKind, PclConfig, ProtoMode, Trainer};

use crate::golden::assert_close;
use crate::training::tiny;

/// Helpers in this process: a job's keys are computed when awaited, its part when its result
/// is awaited (after `send_keys`). `fail_from`: jobs from this one on fail (in the key pass
/// when `in_keys`, else in the part).
struct Local {
    count: usize,
    calls: Rc<Cell<usize>>,
    fail_from: usize,
    in_keys: bool,
    rows: Rc<std::cell::RefCell<Vec<Option<Vec<f32>>>>>,
    /// Embedding jobs asked of these helpers, and whether they fail.
    embeds: Rc<Cell<usize>>,
    embed_fails: bool,
}

impl Local {
    fn new(count: usize, calls: Rc<Cell<usize>>, fail_from: usize, in_keys: bool) -> Self {
        Self {
            count,
            calls,
            fail_from,
            in_keys,
            rows: Default::default(),
            embeds: Default::default(),
            embed_fails: false,
        }
    }
}

impl Helpers for Local {
    fn ready(&self) -> usize {
        self.count
    }
    fn submit(&self, index: usize, job: SliceJob) -> Submitted {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let fail = call >= self.fail_from;
        let (fail_keys, fail_part) = (fail && self.in_keys, fail && !self.in_keys);
        // Through the message format, as a worker gets it.
        let (json, floats) = job.to_parts();
        let job = Rc::new(SliceJob::from_parts(&json, floats.to_vec()).map_err(|e| e.to_string()));
        let rows = self.rows.clone();
        {
            let mut r = rows.borrow_mut();
            if r.len() <= index {
                r.resize(index + 1, None);
            }
            r[index] = None;
        }
        let key_job = job.clone();
        Submitted {
            keys: Box::pin(async move {
                if fail_keys {
                    return Err("helper stopped".to_string());
                }
                let job = key_job.as_ref().as_ref().map_err(|e| e.clone())?;
                let out = run_keys(job, &Device::flex(), &mut HelperModels::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let (json, floats) = out.to_parts();
                KeysResult::from_parts(&json, floats.to_vec()).map_err(|e| e.to_string())
            }),
            result: Box::pin(async move {
                if fail_part {
                    return Err("helper stopped".to_string());
                }
                let job = job.as_ref().as_ref().map_err(|e| e.clone())?;
                let keys = rows.borrow_mut()[index].take().ok_or("no keys were sent")?;
                let out = run_part(job, keys, &Device::flex(), &mut HelperModels::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let (json, floats) = out.to_parts();
                SliceResult::from_parts(&json, floats.to_vec()).map_err(|e| e.to_string())
            }),
        }
    }
    fn send_keys(&self, index: usize, keys: Vec<f32>) {
        self.rows.borrow_mut()[index] = Some(keys);
    }
    fn embed(&self, _index: usize, job: EmbedJob) -> EmbedReply {
        self.embeds.set(self.embeds.get() + 1);
        let fails = self.embed_fails;
        // Through the message format, both ways.
        let (json, floats) = job.to_parts();
        let job = EmbedJob::from_parts(&json, floats.to_vec());
        Box::pin(async move {
            if fails {
                return Err("helper stopped".to_string());
            }
            let job = job.map_err(|e| e.to_string())?;
            let asked = (job.header.rows, job.header.encoder.feature_dim, 0);
            let asked = if job.header.with_backbone {
                (asked.0, asked.1, job.header.encoder.backbone_dim())
            } else {
                asked
            };
            let out = run_embed(&job, &Device::flex(), &mut HelperModels::default())
                .await
                .map_err(|e| e.to_string())?;
            let (json, floats) = out.to_parts();
            EmbedResult::from_parts(&json, floats.to_vec(), asked).map_err(|e| e.to_string())
        })
    }
}

/// A run past its warm-up (prototype terms on), saved: every comparison starts from here.
fn trained(config: &PclConfig, data: &Dataset) -> Vec<u8> {
    let mut t = Trainer::new(config, data, &Device::flex()).expect("trainer");
    while t.clustering.is_none() || t.step < 1 {
        block_on(t.advance(data, &mut |_| {})).expect("step");
    }
    block_on(t.save()).expect("save")
}

/// `steps` SGD steps from `saved`, with `helpers` or alone: each step's loss values and the
/// query encoder's parameters after each step.
fn steps(
    saved: &[u8],
    data: &Dataset,
    helpers: Option<Rc<dyn Helpers>>,
    steps: usize,
) -> (Trainer, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut t = Trainer::load(saved, data, &Device::flex()).expect("load");
    t.set_helpers(helpers);
    let (mut losses, mut params) = (Vec::new(), Vec::new());
    while losses.len() < steps {
        if let Event::Step(r) = block_on(t.advance(data, &mut |_| {})).expect("step") {
            let mut v = vec![r.loss, r.info_nce, r.instance_acc];
            v.extend(&r.proto);
            losses.push(v);
            params.push(
                pcl_studio::engine::params::flat_params(&t.encoder())
                    .into_iter()
                    .flat_map(|p| p.into_data().try_to_vec::<f32>().unwrap())
                    .collect(),
            );
        }
    }
    (t, losses, params)
}

/// Each step from the same state: the same losses and the same parameters after it (sums in
/// another order: 1e-5), first with `helpers` helpers then alone.
fn same_with_helpers(config: PclConfig, helpers: usize) {
    let data = planted_groups(2, 2, 16, 36, 2);
    let saved = trained(&config, &data);
    let calls = Rc::new(Cell::new(0));
    let local = Local::new(helpers, calls.clone(), usize::MAX, false);
    let (t, shared, p_shared) = steps(&saved, &data, Some(Rc::new(local)), 1);
    let (_, alone, p_alone) = steps(&saved, &data, None, 1);
    assert_eq!(calls.get(), helpers, "one job a helper a step");
    assert_eq!(t.helper_failure, None);
    assert_eq!(
        shared[0].len(),
        3 + config.num_clusters.len(),
        "prototype terms on"
    );
    assert_close(&alone[0], &shared[0], 1e-5, "losses");
    assert_close(&p_alone[0], &p_shared[0], 1e-5, "parameters");
    assert!(
        p_alone[0] != pcl_params(&saved, &data),
        "the step changed the weights"
    );
}

fn pcl_params(saved: &[u8], data: &Dataset) -> Vec<f32> {
    let t = Trainer::load(saved, data, &Device::flex()).expect("load");
    pcl_studio::engine::params::flat_params(&t.encoder())
        .into_iter()
        .flat_map(|p| p.into_data().try_to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn helpers_train_the_same_weights_batch_norm_sampled_prototypes() {
    // batch 32 in 4 chunks of 8: parts of 8, 16 and 8 rows with two helpers
    let config = PclConfig {
        proto_mode: ProtoMode::Sampled,
        ..tiny(4)
    };
    same_with_helpers(config, 2);
}

#[test]
fn helpers_train_the_same_weights_group_norm_full_prototypes() {
    let config = PclConfig {
        norm: NormKind::Group,
        proto_mode: ProtoMode::Full,
        ..tiny(4)
    };
    same_with_helpers(config, 1);
}

fn failing_helper(in_keys: bool) {
    let data = planted_groups(2, 2, 16, 36, 2);
    let config = tiny(4);
    let saved = trained(&config, &data);
    let calls = Rc::new(Cell::new(0));
    let local = Local::new(1, calls.clone(), 0, in_keys);
    let (t, shared, p_shared) = steps(&saved, &data, Some(Rc::new(local)), 2);
    let (_, alone, p_alone) = steps(&saved, &data, None, 2);
    assert_eq!(calls.get(), 1, "asked once, failed, then never again");
    assert!(
        t.helper_failure
            .as_deref()
            .unwrap()
            .contains("helper stopped")
    );
    for s in 0..2 {
        assert_close(&alone[s], &shared[s], 1e-5, "losses");
        assert_close(&p_alone[s], &p_shared[s], 1e-5, "parameters");
    }
}

#[test]
fn a_helper_failing_in_its_part_is_let_go_and_the_trainer_does_the_part() {
    failing_helper(false);
}

#[test]
fn a_helper_failing_in_the_key_pass_is_let_go_and_the_trainer_does_the_step() {
    failing_helper(true);
}

#[test]
fn helpers_embed_their_share_of_the_images_as_the_trainer_would() {
    // 50 images: the trainer embeds 17, each helper 17 and 16 (a part that is not a multiple
    // of anything); the explorer's pass with backbone features, the E-step's without.
    let data = planted_groups(2, 5, 5, 36, 2);
    assert_eq!(data.len(), 50);
    let config = tiny(4);
    let saved = trained(&config, &data);
    let alone = Trainer::load(&saved, &data, &Device::flex()).expect("load");
    let encoder = alone.encoder();
    for backbone in [true, false] {
        let solo = block_on(alone.embed_all(&encoder, &data, backbone, &mut |_| {})).unwrap();
        let local = Rc::new(Local::new(2, Rc::new(Cell::new(0)), usize::MAX, false));
        let mut shared = Trainer::load(&saved, &data, &Device::flex()).expect("load");
        shared.set_helpers(Some(local.clone()));
        let both = block_on(shared.embed_all(&encoder, &data, backbone, &mut |_| {})).unwrap();
        assert_eq!(local.embeds.get(), 2, "one job a helper");
        assert_eq!(both.head.len(), 50 * config.feature_dim);
        assert_close(&solo.head, &both.head, 1e-5, "head embeddings");
        match (&solo.backbone, &both.backbone) {
            (Some(a), Some(b)) => assert_close(a, b, 1e-5, "backbone features"),
            (None, None) => assert!(!backbone),
            _ => panic!("backbone asked: {backbone}"),
        }
        // A helper that fails: its images are embedded here instead.
        let failing = Rc::new(Local {
            embed_fails: true,
            ..Local::new(2, Rc::new(Cell::new(0)), usize::MAX, false)
        });
        shared.set_helpers(Some(failing.clone()));
        let again = block_on(shared.embed_all(&encoder, &data, backbone, &mut |_| {})).unwrap();
        assert_eq!(failing.embeds.get(), 2);
        assert_close(&solo.head, &again.head, 1e-5, "head embeddings");
    }
}

#[test]
fn embedding_messages_that_do_not_add_up_are_refused() {
    let encoder = tiny(4).encoder();
    let params = vec![vec![0.5f32; 3]; 2];
    let pixels = vec![7u8; 36 * 36 * 3];
    let job = EmbedJob::new(encoder, &params, &[&pixels, &pixels], 36, 32, false);
    let (json, floats) = job.to_parts();
    assert!(EmbedJob::from_parts(&json, floats.to_vec()).is_ok());
    let e = EmbedJob::from_parts(&json, floats[1..].to_vec()).unwrap_err();
    assert!(e.to_string().contains("needs"), "{e}");
    let cropped = json.replace("\"image_size\":32", "\"image_size\":64");
    let e = EmbedJob::from_parts(&cropped, floats.to_vec()).unwrap_err();
    assert!(e.to_string().contains("cropped to 64 px"), "{e}");
    let answer = r#"{"rows": 2, "dim": 8, "backbone": 0}"#;
    assert!(EmbedResult::from_parts(answer, vec![0.0; 16], (2, 8, 0)).is_ok());
    let e = EmbedResult::from_parts(answer, vec![0.0; 16], (3, 8, 0)).unwrap_err();
    assert!(e.to_string().contains("asked for 3"), "{e}");
    let e = EmbedResult::from_parts(answer, vec![0.0; 15], (2, 8, 0)).unwrap_err();
    assert!(e.to_string().contains("need 16 values, 15 came"), "{e}");
}

#[test]
fn parts_hold_whole_chunks_and_the_trainer_no_more_than_a_helper() {
    for (b, chunks, parts) in [
        (64, 4, 2),
        (64, 4, 3),
        (64, 4, 8),
        (232, 4, 2),
        (30, 4, 2),
        (32, 1, 2),
    ] {
        let p = split_rows(b, chunks, parts);
        assert_eq!(p.first().unwrap().start, 0);
        assert_eq!(p.last().unwrap().end, b);
        assert!(p.windows(2).all(|w| w[0].end == w[1].start));
        let chunk = p.iter().map(|r| r.len()).min().unwrap();
        assert!(p.iter().all(|r| !r.is_empty()), "{p:?}");
        assert!(p.iter().skip(1).all(|r| r.len() >= p[0].len()), "{p:?}");
        // every part a whole number of chunks of b / chunks_for(b, chunks) rows
        let per = b / (1..=chunks.min(b)).rev().find(|c| b % c == 0).unwrap();
        assert!(p.iter().all(|r| r.len() % per == 0), "{p:?}");
        assert!(chunk >= per);
    }
    assert_eq!(split_rows(64, 4, 2), vec![0..32, 32..64]);
    assert_eq!(split_rows(64, 4, 3), vec![0..16, 16..48, 48..64]);
    assert_eq!(split_rows(64, 4, 8).len(), 4);
    // 30 rows do not split in 4: 3 chunks of 10
    assert_eq!(split_rows(30, 4, 2), vec![0..10, 10..30]);
}

/// A helper that keeps the jobs it gets and answers nothing useful.
struct Recorder(std::cell::RefCell<Vec<SliceJob>>);

impl Helpers for Recorder {
    fn ready(&self) -> usize {
        1
    }
    fn submit(&self, _index: usize, job: SliceJob) -> Submitted {
        self.0.borrow_mut().push(job);
        Submitted {
            keys: Box::pin(async { Err("recording only".to_string()) }),
            result: Box::pin(async { Err("recording only".to_string()) }),
        }
    }
    fn send_keys(&self, _index: usize, _keys: Vec<f32>) {}
}

#[test]
fn helper_messages_that_do_not_add_up_are_refused() {
    let data = planted_groups(2, 2, 16, 36, 2);
    let config = tiny(4);
    let recorder = Rc::new(Recorder(Default::default()));
    let mut t = Trainer::new(&config, &data, &Device::flex()).unwrap();
    // Past the warm-up, so the job carries prototype levels; the recorder fails each job, so
    // the trainer lets it go, and it is set again before the step whose job is kept.
    while t.epoch < 3 {
        block_on(t.advance(&data, &mut |_| {})).unwrap();
    }
    t.set_helpers(Some(recorder.clone()));
    while !matches!(
        block_on(t.advance(&data, &mut |_| {})).unwrap(),
        Event::Step(_)
    ) {}
    let job = recorder.0.borrow()[0].clone();
    assert_eq!(job.header.levels.len(), 3);
    let (json, floats) = job.to_parts();
    assert_eq!(SliceJob::from_parts(&json, floats.to_vec()).unwrap(), job);
    // The real job runs.
    let mut models = HelperModels::default();
    let keys = block_on(run_keys(&job, &Device::flex(), &mut models)).unwrap();
    assert_eq!(
        (keys.header.rows, keys.header.dim),
        (job.header.rows, job.header.dim)
    );
    let (json, floats) = keys.to_parts();
    assert_eq!(
        KeysResult::from_parts(&json, floats.to_vec()).unwrap(),
        keys
    );
    assert!(KeysResult::from_parts(&json, floats[1..].to_vec()).is_err());
    let rows = keys.floats[..job.header.rows * job.header.dim].to_vec();
    let out = block_on(run_part(&job, rows.clone(), &Device::flex(), &mut models)).unwrap();
    assert!(out.header.values.iter().all(|v| v.is_finite()));
    // Keys of the wrong size: a message, no panic.
    assert!(
        block_on(run_part(
            &job,
            rows[1..].to_vec(),
            &Device::flex(),
            &mut models
        ))
        .is_err()
    );

    let refused = |job: &SliceJob, what: &str| {
        let (json, floats) = job.to_parts();
        let err = SliceJob::from_parts(&json, floats.to_vec())
            .expect_err(what)
            .to_string();
        assert!(err.contains("helper message"), "{what}: {err}");
        // the helper checks the same, also for a job that never went through from_parts
        assert!(
            block_on(run_keys(job, &Device::flex(), &mut HelperModels::default())).is_err(),
            "{what}"
        );
    };
    let mut short = job.clone();
    short.floats.pop();
    refused(&short, "one value short");
    type Edit = Box<dyn Fn(&mut SliceJob)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("no rows", Box::new(|j| j.header.rows = 0)),
        (
            "rows past the batch",
            Box::new(|j| j.header.first = j.header.batch),
        ),
        ("huge rows", Box::new(|j| j.header.rows = usize::MAX / 2)),
        ("huge side", Box::new(|j| j.header.side = usize::MAX)),
        (
            "huge stored side",
            Box::new(|j| j.header.stored = usize::MAX),
        ),
        ("no stored side", Box::new(|j| j.header.stored = 0)),
        ("views too large", Box::new(|j| j.header.side = 4096)),
        (
            "huge parameter",
            Box::new(|j| j.header.params[0] = usize::MAX),
        ),
        (
            "chunks not dividing",
            Box::new(|j| j.header.chunks = j.header.rows + 1),
        ),
        ("zero chunks", Box::new(|j| j.header.chunks = 0)),
        (
            "mask outside",
            Box::new(|j| j.header.masked.push((0, j.header.queue_rows as u32))),
        ),
        (
            "cluster id outside",
            Box::new(|j| j.header.levels[0].assign[0] = 1_000_000),
        ),
        (
            "negative outside",
            Box::new(|j| j.header.levels[1].neg.push(1_000_000)),
        ),
        (
            "assignments short",
            Box::new(|j| {
                j.header.levels[2].assign.pop();
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut j = job.clone();
        edit(&mut j);
        refused(&j, what);
    }
    // Sizes that add up but do not fit the encoder: a clear error from loading the parameters.
    let mut wrong = job.clone();
    let extra = wrong.header.params.pop().unwrap();
    wrong.header.params[0] += extra;
    let err = block_on(run_keys(
        &wrong,
        &Device::flex(),
        &mut HelperModels::default(),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("parameter"), "{err}");
    // Header text that is not a job, and random bytes as floats.
    let mut seed = 1u64;
    for len in [0usize, 1, 7, 100] {
        let noise: String = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b' ' + (seed >> 57) as u8)
            })
            .collect();
        assert!(SliceJob::from_parts(&noise, vec![0.0; len]).is_err());
        assert!(SliceResult::from_parts(&noise, vec![0.0; len]).is_err());
    }
    // A result whose sizes do not add up, or do not fit the model.
    let (json, floats) = out.to_parts();
    assert!(SliceResult::from_parts(&json, floats[1..].to_vec()).is_err());
    let ok = SliceResult::from_parts(&json, floats.to_vec()).unwrap();
    let sizes: Vec<usize> = job.header.params.clone();
    assert!(ok.tensors(&sizes[1..], &[], &Device::flex()).is_err());
}
