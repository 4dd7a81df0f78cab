//! InfoNCE and the prototype term of ProtoNCE, written as cross-entropy over logits as in the
//! official code (builder.py): the positive in column 0 for InfoNCE, on the diagonal (sampled
//! mode) or at the sample's cluster (full mode) for prototypes.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::config::ProtoMode;
use super::model::{BatchStats, Encoder};

/// Mean cross-entropy of `logits` [n, c] against class indices `labels` [n].
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    let logp = log_softmax(logits, 1); // logp: [n, c]
    logp.gather(1, labels.reshape([n, 1])).mean().neg() // [1]
}

/// InfoNCE (MoCo): queries `q` [n, d], keys `k` [n, d], queue [r, d], all unit rows; `masked`
/// [n, r] marks queue rows that are no negative of a query (older keys of its own image).
/// Returns the loss and the logits [n, 1 + r] (for the instance accuracy).
pub fn info_nce(
    q: Tensor<2>,
    k: Tensor<2>,
    queue: Tensor<2>,
    tau: f64,
    masked: Option<Tensor<2, Bool>>,
) -> (Tensor<1>, Tensor<2>) {
    let device = q.device();
    let n = q.dims()[0];
    let l_pos = (q.clone() * k).sum_dim(1); // l_pos: [n, 1]
    let mut l_neg = q.matmul(queue.transpose()); // l_neg: [n, r]
    if let Some(m) = masked {
        l_neg = l_neg.mask_fill(m, -1e9); // exp(-1e9 / tau) = 0: out of the softmax
    }
    let logits = Tensor::cat(vec![l_pos, l_neg], 1).div_scalar(tau); // logits: [n, 1 + r]
    let labels = Tensor::<1, Int>::zeros([n], &device); // positive in column 0
    (cross_entropy(logits.clone(), labels), logits)
}

/// Prototype term, `full` mode: softmax over all K prototypes of a level, column j divided by
/// its concentration phi_j. `centroids` [K, d] unit rows, `phi` [K], `assign` [n] cluster ids.
pub fn proto_full(
    q: Tensor<2>,
    centroids: Tensor<2>,
    phi: Tensor<1>,
    assign: Tensor<1, Int>,
) -> Tensor<1> {
    let k = phi.dims()[0];
    let logits = q.matmul(centroids.transpose()) / phi.reshape([1, k]); // logits: [n, K]
    cross_entropy(logits, assign)
}

/// Prototype term, `sampled` mode (official): column i is the positive prototype of sample i,
/// then the given negative prototypes; labels are the diagonal. `neg` [r] cluster ids.
pub fn proto_sampled(
    q: Tensor<2>,
    centroids: Tensor<2>,
    phi: Tensor<1>,
    assign: Tensor<1, Int>,
    neg: Option<Tensor<1, Int>>,
) -> Tensor<1> {
    proto_sampled_rows(q, centroids, phi, assign, neg, 0)
}

/// [`proto_sampled`] for the rows `first..first + n` of a batch: `q` [n, d] holds those rows,
/// `assign` [b] the whole batch's clusters (every row's positive is a column of every row's
/// softmax), so the parts of a batch give the whole batch's terms (see `parallel`).
pub fn proto_sampled_rows(
    q: Tensor<2>,
    centroids: Tensor<2>,
    phi: Tensor<1>,
    assign: Tensor<1, Int>,
    neg: Option<Tensor<1, Int>>,
    first: usize,
) -> Tensor<1> {
    let device = q.device();
    let n = q.dims()[0];
    let ids = match neg {
        Some(neg) => Tensor::cat(vec![assign, neg], 0), // ids: [b + r]
        None => assign,
    };
    let m = ids.dims()[0];
    let protos = centroids.select(0, ids.clone()); // protos: [b + r, d]
    let temps = phi.select(0, ids).reshape([1, m]); // temps: [1, b + r]
    let logits = q.matmul(protos.transpose()) / temps; // logits: [n, b + r]
    let labels = Tensor::<1, Int>::arange(first as i64..(first + n) as i64, &device);
    cross_entropy(logits, labels)
}

/// Which queue rows hold a key of each batch image: `[n, r]` as a device mask, and how many
/// of the `n` queries have at least one (`queue_ids[j]` is the image of queue row j, if known).
pub fn self_negatives(
    batch: &[usize],
    queue_ids: &[Option<u32>],
    images: usize,
    device: &Device,
) -> (Option<Tensor<2, Bool>>, usize) {
    let mut in_queue = vec![false; images];
    for &id in queue_ids.iter().flatten() {
        if let Some(slot) = in_queue.get_mut(id as usize) {
            *slot = true;
        }
    }
    let hits = batch
        .iter()
        .filter(|&&i| in_queue.get(i) == Some(&true))
        .count();
    if hits == 0 {
        return (None, 0);
    }
    let (n, r) = (batch.len(), queue_ids.len());
    let b: Vec<i32> = batch.iter().map(|&i| i as i32).collect();
    let q: Vec<i32> = queue_ids
        .iter()
        .map(|id| id.map_or(-1, |i| i as i32))
        .collect();
    let b = Tensor::<1, Int>::from_data(TensorData::new(b, [n]), device).reshape([n, 1]); // [n, 1]
    let q = Tensor::<1, Int>::from_data(TensorData::new(q, [r]), device).reshape([1, r]); // [1, r]
    let mask = b.expand([n, r]).equal(q.expand([n, r])); // mask: [n, r]
    (Some(mask), hits)
}

/// Negative prototypes for `sampled` mode: up to `r` distinct clusters that are no sample's
/// positive, drawn without replacement from all K (the official code drew from
/// range(max id), which never picked the last cluster).
pub fn sample_negatives(
    positives: &[u32],
    k: usize,
    r: usize,
    rng: &mut super::rng::Rng,
) -> Vec<u32> {
    let mut is_pos = vec![false; k];
    for &p in positives {
        is_pos[p as usize] = true;
    }
    let mut pool: Vec<u32> = (0..k as u32).filter(|&j| !is_pos[j as usize]).collect();
    let take = r.min(pool.len());
    for i in 0..take {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    pool.truncate(take);
    pool
}

/// One prototype level in the loss of a batch (or of a part of one), on the device.
pub struct ProtoLevel {
    pub centroids: Tensor<2>, // [K, d]
    pub phi: Tensor<1>,       // [K]
    /// The whole batch's clusters, [b].
    pub assign: Tensor<1, Int>,
    /// Sampled mode's negative prototypes [r'], shared by the batch.
    pub neg: Option<Tensor<1, Int>>,
}

/// What the loss of a batch, or of one part of it (a helper's), needs beyond the query
/// encoder, on the device.
pub struct LossInputs {
    pub keys: Tensor<2>,                 // [n, d]
    pub queue: Tensor<2>,                // [r, d]
    pub masked: Option<Tensor<2, Bool>>, // [n, r]
    pub levels: Vec<ProtoLevel>,
    pub chunks: usize,
    pub tau: f64,
    pub proto_weight: f64,
    pub mode: ProtoMode,
    /// This part's rows over the batch's: its share of every mean.
    pub share: f64,
    /// The part's first row in the batch.
    pub first: usize,
}

/// The loss: `total` tracked for the backward pass; `values` (total, InfoNCE, instance
/// accuracy, one prototype term per level) detached; both already scaled by the part's share.
pub struct PclLoss {
    pub total: Tensor<1>,
    pub values: Vec<Tensor<1>>,
    pub stats: BatchStats,
}

/// The queries q = f_q(views) of a part in training mode, tracked for the backward pass, with
/// their batch statistics: the half of the loss that needs no keys, so that a worker can run it
/// while keys are on their way.
pub struct Queries {
    q: Tensor<2>, // [n, d]
    stats: BatchStats,
}

/// The queries of `views` ([n, 3, s, s]) in `chunks` BatchNorm chunks.
pub fn queries(model: &Encoder, views: Tensor<4>, chunks: usize) -> Queries {
    let (q, stats) = model.forward_train(views.autodiff(), chunks); // q: [n, d], tracked
    Queries { q, stats }
}

/// PCL's loss (eq. 11 of the paper) in training mode: the queries q = f_q(views), InfoNCE
/// against their keys and the queue, plus `proto_weight` times the mean of the levels'
/// ProtoNCE terms; of one part of a batch (the whole batch when `share` is 1).
pub fn pcl_loss(model: &Encoder, views: Tensor<4>, p: LossInputs) -> PclLoss {
    pcl_loss_of(queries(model, views, p.chunks), p)
}

/// [`pcl_loss`] of queries already made.
pub fn pcl_loss_of(queries: Queries, p: LossInputs) -> PclLoss {
    let Queries { q, stats } = queries;
    let n = q.dims()[0];
    let (info, logits) = info_nce(
        q.clone(),
        p.keys,
        p.queue,
        p.tau,
        p.masked.map(|m| m.autodiff()),
    );
    let protos: Vec<Tensor<1>> = p
        .levels
        .into_iter()
        .map(|l| {
            let (cent, phi) = (l.centroids.autodiff(), l.phi.autodiff());
            match p.mode {
                ProtoMode::Full => {
                    let assign = l.assign.narrow(0, p.first, n).autodiff(); // [n]
                    proto_full(q.clone(), cent, phi, assign)
                }
                ProtoMode::Sampled => {
                    let neg = l.neg.map(|t| t.autodiff());
                    proto_sampled_rows(q.clone(), cent, phi, l.assign.autodiff(), neg, p.first)
                }
            }
        })
        .collect();
    let mut total = info.clone();
    if !protos.is_empty() {
        let m = protos.len() as f64;
        let sum = protos
            .iter()
            .cloned()
            .reduce(|a, b| a + b)
            .expect("non-empty");
        total = total + sum.mul_scalar(p.proto_weight / m);
    }
    // instance accuracy: positive (column 0) scored highest
    let acc = logits
        .without_autodiff()
        .argmax(1)
        .equal_elem(0)
        .float()
        .mean(); // acc: [1]
    let mut values = vec![
        total.clone().without_autodiff(),
        info.without_autodiff(),
        acc,
    ];
    values.extend(protos.iter().map(|t| t.clone().without_autodiff()));
    if p.share != 1.0 {
        total = total.mul_scalar(p.share);
        values = values.into_iter().map(|v| v.mul_scalar(p.share)).collect();
    }
    PclLoss {
        total,
        values,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;

    #[test]
    fn own_keys_in_the_queue_are_masked_out_of_the_negatives() {
        let device = Device::flex();
        // Queue rows hold keys of images 5, 1, (unknown), 5; the batch is images 5, 2.
        let ids = [Some(5), Some(1), None, Some(5)];
        let (mask, hits) = self_negatives(&[5, 2], &ids, 8, &device);
        assert_eq!(hits, 1);
        let mask: Vec<bool> = mask.unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(
            mask,
            vec![true, false, false, true, false, false, false, false]
        );
        assert!(self_negatives(&[0, 2], &ids, 8, &device).0.is_none());
        // A masked row changes nothing but its own softmax column: the loss equals InfoNCE
        // against the queue without that row.
        let t = |v: Vec<f32>, s: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, s), &device);
        let q = t(vec![0.6, 0.8, 1.0, 0.0], [2, 2]);
        let k = t(vec![0.8, 0.6, 0.0, 1.0], [2, 2]);
        let queue = t(vec![0.6, 0.8, 0.0, 1.0, 1.0, 0.0], [3, 2]);
        let m = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![true, false, false, false, false, false], [2, 3]),
            &device,
        );
        let (masked, _) = info_nce(q.clone(), k.clone(), queue.clone(), 0.2, Some(m));
        let first = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap()[0];
        let row = |i: usize| q.clone().narrow(0, i, 1);
        let krow = |i: usize| k.clone().narrow(0, i, 1);
        let (a, _) = info_nce(row(0), krow(0), queue.clone().narrow(0, 1, 2), 0.2, None);
        let (b, _) = info_nce(row(1), krow(1), queue, 0.2, None);
        let (got, want) = (first(masked), (first(a) + first(b)) / 2.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn negatives_exclude_positives_and_reach_the_last_cluster() {
        let mut rng = Rng::new(0);
        let mut seen_last = false;
        for _ in 0..50 {
            let neg = sample_negatives(&[0, 2, 2], 6, 3, &mut rng);
            assert_eq!(neg.len(), 3);
            assert!(neg.iter().all(|&j| j != 0 && j != 2 && j < 6));
            let mut u = neg.clone();
            u.sort();
            u.dedup();
            assert_eq!(u.len(), 3);
            seen_last |= neg.contains(&5);
        }
        assert!(seen_last);
        assert_eq!(sample_negatives(&[0, 1], 2, 5, &mut rng), Vec::<u32>::new());
    }
}
