//! The naive batch-norm forward and backward, written from the definition: the references of
//! the fast paths in `batch_norm` (tests compare every fast op with them).

use super::check;
use crate::{Float, Result, Tensor};

/// Naive training- or evaluation-mode forward; the reference for both fast paths.
/// With `running = None` it uses batch statistics.
pub fn batch_norm_ref<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    beta: &[T],
    running: Option<(&[T], &[T])>,
    eps: T,
) -> Result<Tensor<T>> {
    crate::device::on_cpu("batch_norm_ref", &[x])?;
    let [n, c, h, w] = check("batch_norm_ref", x, &[gamma, beta])?;
    let xv = x.as_slice();
    let mut y = Tensor::zeros(x.shape());
    let yv = y.as_slice_mut();
    let idx = |i: usize, ch: usize, p: usize| (i * c + ch) * h * w + p;
    for ch in 0..c {
        let (mean, var) = match running {
            Some((m, v)) => (m[ch], v[ch]),
            None => {
                let cnt = T::of_usize(n * h * w);
                let mut s = T::zero();
                for i in 0..n {
                    for p in 0..h * w {
                        s += xv[idx(i, ch, p)];
                    }
                }
                let mean = s / cnt;
                let mut v = T::zero();
                for i in 0..n {
                    for p in 0..h * w {
                        let e = xv[idx(i, ch, p)] - mean;
                        v += e * e;
                    }
                }
                (mean, v / cnt)
            }
        };
        for i in 0..n {
            for p in 0..h * w {
                let k = idx(i, ch, p);
                yv[k] = gamma[ch] * (xv[k] - mean) / (var + eps).sqrt() + beta[ch];
            }
        }
    }
    Ok(y)
}

/// Naive training- or evaluation-mode backward (without ReLU), the reference for
/// [`batch_norm_train_bwd`](super::batch_norm_train_bwd) and
/// [`batch_norm_eval_bwd`](super::batch_norm_eval_bwd): returns `(dx, dγ, dβ)` from the
/// textbook formulas. With `running = None` (batch statistics, biased variance v, x̂ the
/// normalised input): `dx = γ/√(v + ε)·(dy − mean(dy) − x̂·mean(dy·x̂))`; with running
/// statistics: `dx = γ·dy/√(v + ε)`. In both, `dγ = Σ dy·x̂` and `dβ = Σ dy`.
pub fn batch_norm_bwd_ref<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    running: Option<(&[T], &[T])>,
    eps: T,
    dy: &Tensor<T>,
) -> Result<(Tensor<T>, Vec<T>, Vec<T>)> {
    crate::device::on_cpu("batch_norm_bwd_ref", &[x, dy])?;
    let [n, c, h, w] = check("batch_norm_bwd_ref", x, &[gamma])?;
    dy.expect_shape("batch_norm_bwd_ref", x.shape())?;
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    let mut dx = Tensor::zeros(x.shape());
    let dxv = dx.as_slice_mut();
    let (mut dgamma, mut dbeta) = (vec![T::zero(); c], vec![T::zero(); c]);
    let at =
        |ch: usize| (0..n).flat_map(move |i| (0..h * w).map(move |p| (i * c + ch) * h * w + p));
    let cnt = T::of_usize(n * h * w);
    for ch in 0..c {
        let (mean, var) = match running {
            Some((m, v)) => (m[ch], v[ch]),
            None => {
                let mean = at(ch).map(|k| xv[k]).sum::<T>() / cnt;
                let var = at(ch).map(|k| (xv[k] - mean) * (xv[k] - mean)).sum::<T>() / cnt;
                (mean, var)
            }
        };
        let sd = (var + eps).sqrt();
        let xhat = |k: usize| (xv[k] - mean) / sd;
        dbeta[ch] = at(ch).map(|k| dyv[k]).sum();
        dgamma[ch] = at(ch).map(|k| dyv[k] * xhat(k)).sum();
        for k in at(ch) {
            dxv[k] = match running {
                Some(_) => gamma[ch] * dyv[k] / sd,
                None => gamma[ch] / sd * (dyv[k] - dbeta[ch] / cnt - xhat(k) * dgamma[ch] / cnt),
            };
        }
    }
    Ok((dx, dgamma, dbeta))
}
