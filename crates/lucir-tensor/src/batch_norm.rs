//! Batch normalisation over N, H, W per channel: `y = γ·(x − μ)/√(σ² + ε) + β`.
//!
//! Shapes: `x`, `y` N×C×H×W; `γ`, `β`, statistics C. Training mode uses the batch's mean and
//! biased variance; evaluation mode uses running statistics. Running-statistics updates are the
//! caller's (the layer's) business: [`BatchNormStats`] hands back what they need.

use rayon::prelude::*;

use crate::simd::{
    affine, axpbypc, masked_sum_and_dot, scale_masked, sum, sum_and_dot, sum_sq_dev,
};
use crate::{Error, Float, Result, Tensor};

/// Per-channel statistics of one training-mode forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormStats<T> {
    /// Batch mean per channel.
    pub mean: Vec<T>,
    /// Biased batch variance per channel (divided by N·H·W).
    pub var: Vec<T>,
    /// `1/√(var + ε)` per channel.
    pub inv_std: Vec<T>,
    /// Elements per channel, N·H·W.
    pub count: usize,
}

fn check<T: Float>(op: &'static str, x: &Tensor<T>, params: &[&[T]]) -> Result<[usize; 4]> {
    let d = x.dims4(op)?;
    for p in params {
        if p.len() != d[1] {
            return Err(Error::shape(
                op,
                format!(
                    "{} channels in x {:?} but a per-channel vector has {}",
                    d[1],
                    x.shape(),
                    p.len()
                ),
            ));
        }
    }
    Ok(d)
}

/// Applies `y = x·scale[c] + shift[c]` (then `max(y, 0)` when `relu`) plane by plane, in
/// parallel over planes.
fn affine_planes<T: Float>(
    x: &[T],
    y: &mut [T],
    (c, hw): (usize, usize),
    scale: &[T],
    shift: &[T],
    relu: bool,
) {
    if hw == 0 {
        return;
    }
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let ch = p % c;
            affine(xp, yp, scale[ch], shift[ch], relu);
        });
}

/// Per-channel `(Σ g, Σ g·b)` over the N planes of each channel, in parallel over channels;
/// `g` is `a` masked by `mask > 0` when a mask is given. All arrays are N×C×H×W.
fn channel_sums<T: Float>(d: [usize; 4], a: &[T], mask: Option<&[T]>, b: &[T]) -> Vec<(T, T)> {
    let [n, c, h, w] = d;
    let hw = h * w;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s0, mut s1) = (T::zero(), T::zero());
            for img in 0..n {
                let r = (img * c + ch) * hw..(img * c + ch + 1) * hw;
                let (x, y) = match mask {
                    Some(m) => masked_sum_and_dot(&a[r.clone()], &m[r.clone()], &b[r]),
                    None => sum_and_dot(&a[r.clone()], &b[r]),
                };
                s0 += x;
                s1 += y;
            }
            (s0, s1)
        })
        .collect()
}

/// Per-channel mean and biased variance (two passes: mean, then Σ(x − μ)²).
fn channel_moments<T: Float>(d: [usize; 4], x: &[T]) -> (Vec<T>, Vec<T>) {
    let [n, c, h, w] = d;
    let hw = h * w;
    let cnt = T::of_usize(n * hw);
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let plane = |img: usize| &x[(img * c + ch) * hw..(img * c + ch + 1) * hw];
            let mut s = T::zero();
            for img in 0..n {
                s += sum(plane(img));
            }
            let mean = s / cnt;
            let mut v = T::zero();
            for img in 0..n {
                v += sum_sq_dev(plane(img), mean);
            }
            (mean, v / cnt)
        })
        .unzip()
}

/// The ReLU output of a fused BN+ReLU as a mask over `dy`, after checking its shape.
fn relu_mask<'a, T: Float>(
    op: &'static str,
    dy: &Tensor<T>,
    relu_out: Option<&'a Tensor<T>>,
) -> Result<Option<&'a [T]>> {
    relu_out
        .map(|y| {
            y.expect_shape(op, dy.shape())?;
            Ok(y.as_slice())
        })
        .transpose()
}

/// Training-mode forward: normalises with batch statistics and returns them. With `relu` the
/// output is `max(BN(x), 0)` (the fused BN+ReLU of a residual block).
pub fn batch_norm_train<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    beta: &[T],
    eps: T,
    relu: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    let d = check("batch_norm_train", x, &[gamma, beta])?;
    let [n, c, h, w] = d;
    let count = n * h * w;
    if count == 0 {
        return Err(Error::shape(
            "batch_norm_train",
            format!("no elements per channel in {:?}", x.shape()),
        ));
    }
    let xv = x.as_slice();
    let (means, var) = channel_moments(d, xv);
    let inv_std: Vec<T> = var.iter().map(|v| T::one() / (*v + eps).sqrt()).collect();
    let scale: Vec<T> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
    let shift: Vec<T> = (0..c).map(|ch| beta[ch] - means[ch] * scale[ch]).collect();
    let mut y = Tensor::zeros(x.shape());
    affine_planes(xv, y.as_slice_mut(), (c, h * w), &scale, &shift, relu);
    Ok((
        y,
        BatchNormStats {
            mean: means,
            var,
            inv_std,
            count,
        },
    ))
}

/// Training-mode backward: returns `(dx, dγ, dβ)`. For a fused BN+ReLU pass its output as
/// `relu_out`: `dy` is then masked by `relu_out > 0` first.
///
/// With x̂ = (x − μ)·r and M = N·H·W:
/// `dx = γ·r/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
pub fn batch_norm_train_bwd<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    stats: &BatchNormStats<T>,
    dy: &Tensor<T>,
    relu_out: Option<&Tensor<T>>,
) -> Result<(Tensor<T>, Vec<T>, Vec<T>)> {
    let d = check(
        "batch_norm_train_bwd",
        x,
        &[gamma, &stats.mean, &stats.inv_std],
    )?;
    dy.expect_shape("batch_norm_train_bwd", x.shape())?;
    let [_, c, h, w] = d;
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    let mask = relu_mask("batch_norm_train_bwd", dy, relu_out)?;
    let (mean, r) = (&stats.mean, &stats.inv_std);
    // Σ g·x̂ = r·(Σ g·x − μ·Σ g).
    let sums: Vec<(T, T)> = channel_sums(d, dyv, mask, xv)
        .into_iter()
        .enumerate()
        .map(|(ch, (sg, sgx))| (sg, r[ch] * (sgx - mean[ch] * sg)))
        .collect();
    let dbeta: Vec<T> = sums.iter().map(|s| s.0).collect();
    let dgamma: Vec<T> = sums.iter().map(|s| s.1).collect();
    let m = T::of_usize(stats.count);
    // dx = k·(M·g − Σg − (x − μ)·r·Σ(g·x̂)) = A·g + B·x + C per channel, k = γ·r/M.
    let coef: Vec<[T; 3]> = (0..c)
        .map(|ch| {
            let k = gamma[ch] * r[ch] / m;
            let b = -k * r[ch] * dgamma[ch];
            [k * m, b, -k * dbeta[ch] - b * mean[ch]]
        })
        .collect();
    let mut dx = Tensor::zeros(x.shape());
    let hw = h * w;
    if hw > 0 {
        dx.as_slice_mut()
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(p, dxp)| {
                let span = p * hw..(p + 1) * hw;
                let mk = mask.map(|m| &m[span.clone()]);
                axpbypc(dxp, &dyv[span.clone()], mk, &xv[span], coef[p % c]);
            });
    }
    Ok((dx, dgamma, dbeta))
}

/// Evaluation-mode forward with running statistics (then `max(·, 0)` when `relu`).
pub fn batch_norm_eval<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    beta: &[T],
    running_mean: &[T],
    running_var: &[T],
    eps: T,
    relu: bool,
) -> Result<Tensor<T>> {
    let d = check(
        "batch_norm_eval",
        x,
        &[gamma, beta, running_mean, running_var],
    )?;
    let c = d[1];
    let scale: Vec<T> = (0..c)
        .map(|ch| gamma[ch] / (running_var[ch] + eps).sqrt())
        .collect();
    let shift: Vec<T> = (0..c)
        .map(|ch| beta[ch] - running_mean[ch] * scale[ch])
        .collect();
    let mut y = Tensor::zeros(x.shape());
    affine_planes(
        x.as_slice(),
        y.as_slice_mut(),
        (c, d[2] * d[3]),
        &scale,
        &shift,
        relu,
    );
    Ok(y)
}

/// Evaluation-mode backward: returns `(dx, dγ, dβ)` with `dx = dy·γ/√(v + ε)` (`dy` masked
/// by `relu_out > 0` for a fused BN+ReLU).
pub fn batch_norm_eval_bwd<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    running_mean: &[T],
    running_var: &[T],
    eps: T,
    dy: &Tensor<T>,
    relu_out: Option<&Tensor<T>>,
) -> Result<(Tensor<T>, Vec<T>, Vec<T>)> {
    let d = check(
        "batch_norm_eval_bwd",
        x,
        &[gamma, running_mean, running_var],
    )?;
    dy.expect_shape("batch_norm_eval_bwd", x.shape())?;
    let c = d[1];
    let inv: Vec<T> = running_var
        .iter()
        .map(|v| T::one() / (*v + eps).sqrt())
        .collect();
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    let mask = relu_mask("batch_norm_eval_bwd", dy, relu_out)?;
    let sums: Vec<(T, T)> = channel_sums(d, dyv, mask, xv)
        .into_iter()
        .enumerate()
        .map(|(ch, (sg, sgx))| (sg, inv[ch] * (sgx - running_mean[ch] * sg)))
        .collect();
    let hw = d[2] * d[3];
    let mut dx = Tensor::zeros(x.shape());
    if hw > 0 {
        dx.as_slice_mut()
            .par_chunks_mut(hw)
            .enumerate()
            .for_each(|(p, dxp)| {
                let k = gamma[p % c] * inv[p % c];
                let span = p * hw..(p + 1) * hw;
                let mk = mask.map(|m| &m[span.clone()]);
                scale_masked(dxp, &dyv[span], mk, k);
            });
    }
    Ok((
        dx,
        sums.iter().map(|s| s.1).collect(),
        sums.iter().map(|s| s.0).collect(),
    ))
}

/// Naive training- or evaluation-mode forward; the reference for both fast paths.
/// With `running = None` it uses batch statistics.
pub fn batch_norm_ref<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    beta: &[T],
    running: Option<(&[T], &[T])>,
    eps: T,
) -> Result<Tensor<T>> {
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
