//! LUCIR's two head losses (docs/design.md §3 "Losses") on the CPU or a CUDA device, forward
//! and backward, and the iCaRL-style baseline's distillation: feature distillation (the
//! less-forget constraint)
//! `L = λ·mean_b(1 − ⟨F̄_b, F̄*_b⟩)` and margin ranking on old-class rows
//! `L = Σ_b Σ_k max(0, m − cos[b, y_b] + cos[b, top_k]) / (rows·K)` over the K hardest new
//! classes; knowledge distillation `L = τ²·(1/B) Σ_b KL(softmax(t_b/τ) ‖ softmax(z_b/τ))`.
//! The device arms are `kernels/{feature_distill,margin_rank,kd}.cu`; the losses stay on the
//! device as one-element tensors.

use crate::device::{common, Device};
use crate::{cuda_ops, l2_normalize_rows, l2_normalize_rows_bwd, log_softmax_rows, topk_rows};
use crate::{Error, Float};
use crate::{Result, Tensor};

/// The feature-distillation loss of features `f` against the previous model's `f_star`
/// (B×D each) with weight `lambda`.
pub fn feature_distill<T: Float>(
    f: &Tensor<T>,
    f_star: &Tensor<T>,
    lambda: T,
) -> Result<Tensor<T>> {
    let [b, d] = f.dims2("feature_distill")?;
    f_star.expect_shape("feature_distill", &[b, d])?;
    if common("feature_distill", &[f, f_star])? != Device::Cpu {
        return cuda_ops::feature_distill(f, f_star, lambda, [b, d]);
    }
    let (f_bar, _) = l2_normalize_rows(f)?;
    let (star_bar, _) = l2_normalize_rows(f_star)?;
    let total: T = if d == 0 {
        T::of_usize(b)
    } else {
        f_bar
            .as_slice()
            .chunks(d)
            .zip(star_bar.as_slice().chunks(d))
            .map(|(x, y)| T::one() - x.iter().zip(y).map(|(p, q)| *p * *q).sum::<T>())
            .sum()
    };
    Ok(Tensor::scalar(if b == 0 {
        T::zero()
    } else {
        lambda * total / T::of_usize(b)
    }))
}

/// `∂L/∂F` of [`feature_distill`] times the upstream gradient `g` (one element).
pub fn feature_distill_bwd<T: Float>(
    f: &Tensor<T>,
    f_star: &Tensor<T>,
    lambda: T,
    g: &Tensor<T>,
) -> Result<Tensor<T>> {
    let [b, d] = f.dims2("feature_distill_bwd")?;
    f_star.expect_shape("feature_distill_bwd", &[b, d])?;
    if common("feature_distill_bwd", &[f, f_star, g])? != Device::Cpu {
        return cuda_ops::feature_distill_bwd(f, f_star, lambda, g, [b, d]);
    }
    let (f_bar, f_norm) = l2_normalize_rows(f)?;
    let (star_bar, _) = l2_normalize_rows(f_star)?;
    let k = -lambda * g.item()? / T::of_usize(b.max(1));
    let g_bar = star_bar.map(|v| v * k);
    l2_normalize_rows_bwd(&f_bar, &f_norm, &g_bar)
}

/// What the backward pass of [`margin_rank`] needs besides the cosines and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct MarginRankPairs {
    /// Old classes (the first columns).
    pub n_old: usize,
    /// Negatives per row, clamped to the new classes.
    pub k: usize,
    /// The margin m.
    pub margin: f64,
    /// Old-class rows times K: the loss's divisor.
    pub pairs: usize,
    /// On the CPU, the (positive, negative) element indices of the pairs inside the margin
    /// (empty on a device, whose backward finds them again).
    pub active: Vec<(usize, usize)>,
}

/// The margin-ranking loss of cosines `cos` (B×C) with `labels` (B, each below C; the caller
/// checks), `n_old` ≤ C old classes, K hard negatives and margin `m`.
pub fn margin_rank<T: Float>(
    cos: &Tensor<T>,
    labels: &[usize],
    (n_old, k, m): (usize, usize, T),
) -> Result<(Tensor<T>, MarginRankPairs)> {
    let [b, c] = cos.dims2("margin_rank")?;
    if n_old > c || labels.len() != b {
        return Err(Error::shape(
            "margin_rank",
            format!(
                "{n_old} old classes, {} labels for a {b}×{c} matrix",
                labels.len()
            ),
        ));
    }
    let k = k.min(c - n_old);
    let old_rows: Vec<usize> = (0..b).filter(|&r| labels[r] < n_old).collect();
    let pairs = old_rows.len() * k;
    let mut state = MarginRankPairs {
        n_old,
        k,
        margin: m.as_f64(),
        pairs,
        active: Vec::new(),
    };
    if !cos.is_cpu() {
        let loss = cuda_ops::margin_rank(cos, labels, &state, [b, c])?;
        return Ok((loss, state));
    }
    let mut total = T::zero();
    if pairs > 0 {
        let cv = cos.as_slice();
        let new_cols: Vec<T> = old_rows
            .iter()
            .flat_map(|&r| cv[r * c + n_old..(r + 1) * c].iter().copied())
            .collect();
        let new_cols = Tensor::from_vec(&[old_rows.len(), c - n_old], new_cols)?;
        let top = topk_rows(&new_cols, k)?;
        for (i, &r) in old_rows.iter().enumerate() {
            let pos = r * c + labels[r];
            for &j in &top[i * k..(i + 1) * k] {
                let neg = r * c + n_old + j;
                let term = m - cv[pos] + cv[neg];
                if term > T::zero() {
                    total += term;
                    state.active.push((pos, neg));
                }
            }
        }
    }
    let loss = Tensor::scalar(if pairs == 0 {
        T::zero()
    } else {
        total / T::of_usize(pairs)
    });
    Ok((loss, state))
}

/// `∂L/∂cos` of [`margin_rank`] times the upstream gradient `g` (one element).
pub fn margin_rank_bwd<T: Float>(
    cos: &Tensor<T>,
    labels: &[usize],
    state: &MarginRankPairs,
    g: &Tensor<T>,
) -> Result<Tensor<T>> {
    let [b, c] = cos.dims2("margin_rank_bwd")?;
    if common("margin_rank_bwd", &[cos, g])? != Device::Cpu {
        return cuda_ops::margin_rank_bwd(cos, labels, state, g, [b, c]);
    }
    let mut d = Tensor::zeros(&[b, c]);
    if state.active.is_empty() {
        return Ok(d);
    }
    let w = g.item()? / T::of_usize(state.pairs);
    let dv = d.as_slice_mut();
    for &(pos, neg) in &state.active {
        dv[pos] -= w;
        dv[neg] += w;
    }
    Ok(d)
}

/// Knowledge distillation of logits `z` towards constant target logits `targets` (B×C each)
/// at temperature `tau` (> 0, the caller checks): the loss and the log-probabilities
/// `(log q, log p)` its backward pass needs.
pub fn kd<T: Float>(
    z: &Tensor<T>,
    targets: &Tensor<T>,
    tau: T,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let [b, c] = z.dims2("kd")?;
    targets.expect_shape("kd", &[b, c])?;
    if common("kd", &[z, targets])? != Device::Cpu {
        return cuda_ops::kd(z, targets, tau, [b, c]);
    }
    let log_q = log_softmax_rows(&z.map(|v| v / tau))?;
    let log_p = log_softmax_rows(&targets.map(|v| v / tau))?;
    let kl: T = log_p
        .as_slice()
        .iter()
        .zip(log_q.as_slice())
        .map(|(lp, lq)| lp.exp() * (*lp - *lq))
        .sum();
    let loss = Tensor::scalar(if b == 0 {
        T::zero()
    } else {
        tau * tau * kl / T::of_usize(b)
    });
    Ok((loss, log_q, log_p))
}

/// `∂L/∂z = τ·(q − p)/B` of [`kd`] times the upstream gradient `g` (one element).
pub fn kd_bwd<T: Float>(
    log_q: &Tensor<T>,
    log_p: &Tensor<T>,
    tau: T,
    g: &Tensor<T>,
) -> Result<Tensor<T>> {
    let [b, c] = log_q.dims2("kd_bwd")?;
    log_p.expect_shape("kd_bwd", &[b, c])?;
    if common("kd_bwd", &[log_q, log_p, g])? != Device::Cpu {
        return cuda_ops::kd_bwd(log_q, log_p, tau, g, [b, c]);
    }
    let k = g.item()? * tau / T::of_usize(b.max(1));
    let data = log_q
        .as_slice()
        .iter()
        .zip(log_p.as_slice())
        .map(|(lq, lp)| (lq.exp() - lp.exp()) * k)
        .collect();
    Tensor::from_vec(&[b, c], data)
}
