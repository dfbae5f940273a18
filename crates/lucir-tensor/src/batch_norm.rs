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

/// Sizes of an N×C×H×W batch as the per-channel loops see it: N planes of `hw` elements per
/// channel, plane `img·C + ch` for image `img` and channel `ch`.
#[derive(Clone, Copy)]
struct Planes {
    n: usize,
    c: usize,
    hw: usize,
}

impl Planes {
    fn of([n, c, h, w]: [usize; 4]) -> Self {
        Self { n, c, hw: h * w }
    }

    /// Plane `(img, ch)` of `a`.
    fn get<T>(self, a: &[T], img: usize, ch: usize) -> &[T] {
        &a[(img * self.c + ch) * self.hw..][..self.hw]
    }

    /// Runs `f(ch, planes)` for every channel in parallel, `planes` being the N planes of
    /// channel `ch` in `out`, and collects the results in channel order. One parallel region
    /// per op, and each channel's inputs are read again while they are still in cache.
    fn per_channel<T: Float, R: Send>(
        self,
        out: &mut [T],
        f: impl Fn(usize, &mut [&mut [T]]) -> R + Sync,
    ) -> Vec<R> {
        let mut by_channel: Vec<Vec<&mut [T]>> = (0..self.c).map(|_| Vec::new()).collect();
        if self.hw > 0 {
            for (p, plane) in out.chunks_mut(self.hw).enumerate() {
                by_channel[p % self.c].push(plane);
            }
        }
        by_channel
            .into_par_iter()
            .enumerate()
            .map(|(ch, mut planes)| f(ch, &mut planes))
            .collect()
    }

    /// `(Σ g, Σ g·x)` over channel `ch`, `g` being `dy` masked by `mask > 0` when a mask is
    /// given.
    fn grad_sums<T: Float>(self, dy: &[T], mask: Option<&[T]>, x: &[T], ch: usize) -> (T, T) {
        let (mut sg, mut sgx) = (T::zero(), T::zero());
        for img in 0..self.n {
            let (g, x) = (self.get(dy, img, ch), self.get(x, img, ch));
            let (a, b) = match mask {
                Some(m) => masked_sum_and_dot(g, self.get(m, img, ch), x),
                None => sum_and_dot(g, x),
            };
            sg += a;
            sgx += b;
        }
        (sg, sgx)
    }
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
///
/// Per channel, in parallel over channels: the mean, then `Σ(x − μ)²`, then the output planes.
pub fn batch_norm_train<T: Float>(
    x: &Tensor<T>,
    gamma: &[T],
    beta: &[T],
    eps: T,
    relu: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    let d = check("batch_norm_train", x, &[gamma, beta])?;
    let pl = Planes::of(d);
    let count = pl.n * pl.hw;
    if count == 0 {
        return Err(Error::shape(
            "batch_norm_train",
            format!("no elements per channel in {:?}", x.shape()),
        ));
    }
    let xv = x.as_slice();
    let cnt = T::of_usize(count);
    let mut y = Tensor::zeros(x.shape());
    let moments = pl.per_channel(y.as_slice_mut(), |ch, ys| {
        let mut s = T::zero();
        for img in 0..pl.n {
            s += sum(pl.get(xv, img, ch));
        }
        let mean = s / cnt;
        let mut v = T::zero();
        for img in 0..pl.n {
            v += sum_sq_dev(pl.get(xv, img, ch), mean);
        }
        let var = v / cnt;
        let inv_std = T::one() / (var + eps).sqrt();
        let scale = gamma[ch] * inv_std;
        let shift = beta[ch] - mean * scale;
        for (img, yp) in ys.iter_mut().enumerate() {
            affine(pl.get(xv, img, ch), yp, scale, shift, relu);
        }
        (mean, var, inv_std)
    });
    Ok((
        y,
        BatchNormStats {
            mean: moments.iter().map(|m| m.0).collect(),
            var: moments.iter().map(|m| m.1).collect(),
            inv_std: moments.iter().map(|m| m.2).collect(),
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
    let pl = Planes::of(d);
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    let mask = relu_mask("batch_norm_train_bwd", dy, relu_out)?;
    let m = T::of_usize(stats.count);
    let mut dx = Tensor::zeros(x.shape());
    let grads = pl.per_channel(dx.as_slice_mut(), |ch, dxs| {
        let (mu, r) = (stats.mean[ch], stats.inv_std[ch]);
        let (sg, sgx) = pl.grad_sums(dyv, mask, xv, ch);
        // Σ g·x̂ = r·(Σ g·x − μ·Σ g).
        let (dgamma, dbeta) = (r * (sgx - mu * sg), sg);
        // dx = k·(M·g − Σg − (x − μ)·r·Σ(g·x̂)) = A·g + B·x + C, k = γ·r/M.
        let k = gamma[ch] * r / m;
        let b = -k * r * dgamma;
        let coef = [k * m, b, -k * dbeta - b * mu];
        for (img, dxp) in dxs.iter_mut().enumerate() {
            let mk = mask.map(|mk| pl.get(mk, img, ch));
            axpbypc(dxp, pl.get(dyv, img, ch), mk, pl.get(xv, img, ch), coef);
        }
        (dgamma, dbeta)
    });
    Ok((
        dx,
        grads.iter().map(|g| g.0).collect(),
        grads.iter().map(|g| g.1).collect(),
    ))
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
    let pl = Planes::of(d);
    let xv = x.as_slice();
    let mut y = Tensor::zeros(x.shape());
    pl.per_channel(y.as_slice_mut(), |ch, ys| {
        let scale = gamma[ch] / (running_var[ch] + eps).sqrt();
        let shift = beta[ch] - running_mean[ch] * scale;
        for (img, yp) in ys.iter_mut().enumerate() {
            affine(pl.get(xv, img, ch), yp, scale, shift, relu);
        }
    });
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
    let pl = Planes::of(d);
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    let mask = relu_mask("batch_norm_eval_bwd", dy, relu_out)?;
    let mut dx = Tensor::zeros(x.shape());
    let grads = pl.per_channel(dx.as_slice_mut(), |ch, dxs| {
        let inv = T::one() / (running_var[ch] + eps).sqrt();
        let (sg, sgx) = pl.grad_sums(dyv, mask, xv, ch);
        let k = gamma[ch] * inv;
        for (img, dxp) in dxs.iter_mut().enumerate() {
            let mk = mask.map(|mk| pl.get(mk, img, ch));
            scale_masked(dxp, pl.get(dyv, img, ch), mk, k);
        }
        (inv * (sgx - running_mean[ch] * sg), sg)
    });
    Ok((
        dx,
        grads.iter().map(|g| g.0).collect(),
        grads.iter().map(|g| g.1).collect(),
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
