//! Herding exemplar selection (iCaRL; docs/design.md §3 "Exemplars") on L2-normalised features.
//!
//! μ = mean of the features; w ← μ; repeat: pick i* = argmax ⟨w, d_i⟩ among the not yet picked,
//! w ← w + μ − d_{i*}. With unit-norm d this is the greedy choice that keeps the mean of the
//! picked features closest to μ, which [`herding_ref`] computes directly.

use crate::Features;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mean(f: &Features) -> Vec<f32> {
    let mut mu = vec![0f32; f.dim];
    for i in 0..f.rows() {
        for (m, v) in mu.iter_mut().zip(f.row(i)) {
            *m += v;
        }
    }
    let n = f.rows().max(1) as f32;
    mu.iter_mut().for_each(|m| *m /= n);
    mu
}

/// Picks `m` rows of `feats` (L2-normalised) by herding; returns their row indices in pick
/// order (all rows when there are at most `m`).
pub fn herding(feats: &Features, m: usize) -> Vec<usize> {
    let n = feats.rows();
    let mu = mean(feats);
    let mut w = mu.clone();
    let mut picked = vec![false; n];
    let mut order = Vec::with_capacity(m.min(n));
    while order.len() < m.min(n) {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for i in (0..n).filter(|i| !picked[*i]) {
            let s = dot(&w, feats.row(i));
            if s > best.0 || best.1 == usize::MAX {
                best = (s, i);
            }
        }
        let i = best.1;
        picked[i] = true;
        order.push(i);
        for ((wv, mv), dv) in w.iter_mut().zip(&mu).zip(feats.row(i)) {
            *wv += mv - dv;
        }
    }
    order
}

/// Brute-force reference: at step k, picks the row whose addition makes the mean of the picked
/// rows closest (in L2) to μ, computing that mean explicitly for every candidate.
pub fn herding_ref(feats: &Features, m: usize) -> Vec<usize> {
    let n = feats.rows();
    let mu = mean(feats);
    let mut sum = vec![0f64; feats.dim];
    let mut picked = vec![false; n];
    let mut order = Vec::new();
    while order.len() < m.min(n) {
        let k = order.len() as f64 + 1.0;
        let mut best = (f64::INFINITY, usize::MAX);
        for i in (0..n).filter(|i| !picked[*i]) {
            let dist: f64 = (0..feats.dim)
                .map(|j| {
                    let e = mu[j] as f64 - (sum[j] + feats.row(i)[j] as f64) / k;
                    e * e
                })
                .sum();
            if dist < best.0 {
                best = (dist, i);
            }
        }
        let i = best.1;
        picked[i] = true;
        order.push(i);
        for (s, v) in sum.iter_mut().zip(feats.row(i)) {
            *s += *v as f64;
        }
    }
    order
}
