//! InfoNCE and the prototype term of ProtoNCE, written as cross-entropy over logits as in the
//! official code (builder.py): the positive in column 0 for InfoNCE, on the diagonal (sampled
//! mode) or at the sample's cluster (full mode) for prototypes.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` [n, c] against class indices `labels` [n].
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    let logp = log_softmax(logits, 1); // logp: [n, c]
    logp.gather(1, labels.reshape([n, 1])).mean().neg() // [1]
}

/// InfoNCE (MoCo): queries `q` [n, d], keys `k` [n, d], queue [r, d], all unit rows.
/// Returns the loss and the logits [n, 1 + r] (for the instance accuracy).
pub fn info_nce(q: Tensor<2>, k: Tensor<2>, queue: Tensor<2>, tau: f64) -> (Tensor<1>, Tensor<2>) {
    let device = q.device();
    let n = q.dims()[0];
    let l_pos = (q.clone() * k).sum_dim(1); // l_pos: [n, 1]
    let l_neg = q.matmul(queue.transpose()); // l_neg: [n, r]
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
    let device = q.device();
    let n = q.dims()[0];
    let ids = match neg {
        Some(neg) => Tensor::cat(vec![assign, neg], 0), // ids: [n + r]
        None => assign,
    };
    let m = ids.dims()[0];
    let protos = centroids.select(0, ids.clone()); // protos: [n + r, d]
    let temps = phi.select(0, ids).reshape([1, m]); // temps: [1, n + r]
    let logits = q.matmul(protos.transpose()) / temps; // logits: [n, n + r]
    let labels = Tensor::<1, Int>::arange(0..n as i64, &device);
    cross_entropy(logits, labels)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;

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
