//! Batch normalisation over N, H, W per channel: `y = γ·(x − μ)/√(σ² + ε) + β`.
//!
//! Shapes: `x`, `y` N×C×H×W; `γ`, `β`, statistics C. Training mode uses the batch's mean and
//! biased variance; evaluation mode uses running statistics ([`batch_norm_update_running`]
//! moves them towards a batch's [`BatchNormStats`]). γ, β and the statistics are C-element
//! tensors, so that they can live on a CUDA device with `x`; each op has a CUDA arm
//! (`cuda_ops/`), except the per-channel map ([`ChannelMap`]) the CPU convolutions fuse.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::simd::{
    affine, affine_add, axpbypc, gated_sum_and_dot, prefetch, scale_gated, sum, sum_and_dot,
    sum_sq_dev, Level,
};
use crate::{Error, Float, Result, Tensor};

mod reference;
mod running;
pub use reference::{batch_norm_bwd_ref, batch_norm_ref};
pub use running::batch_norm_update_running;

/// Per-channel statistics of one training-mode forward pass (C-element tensors on the device
/// of `x`).
#[derive(Clone, Debug)]
pub struct BatchNormStats<T> {
    /// Batch mean per channel.
    pub mean: Tensor<T>,
    /// Biased batch variance per channel (divided by N·H·W).
    pub var: Tensor<T>,
    /// `1/√(var + ε)` per channel.
    pub inv_std: Tensor<T>,
    /// Elements per channel, N·H·W.
    pub count: usize,
}

impl<T: Float> PartialEq for BatchNormStats<T> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.mean == other.mean
            && self.var == other.var
            && self.inv_std == other.inv_std
    }
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
struct ChannelPlanes {
    n: usize,
    c: usize,
    hw: usize,
}

impl ChannelPlanes {
    fn of([n, c, h, w]: [usize; 4]) -> Self {
        Self { n, c, hw: h * w }
    }

    /// Plane `(img, ch)` of `a`.
    fn get<T>(self, a: &[T], img: usize, ch: usize) -> &[T] {
        &a[(img * self.c + ch) * self.hw..][..self.hw]
    }

    /// A new N×C×H×W tensor of `shape` filled channel by channel, in parallel:
    /// `f(ch, planes)` gets the N planes of channel `ch` to write, and its results are collected
    /// in channel order. One parallel region per op, and each channel's inputs are read again
    /// while they are still in cache. The tensor is allocated without zeroing.
    ///
    /// # Safety
    /// `f` must write every element of every plane it is given.
    unsafe fn fill_per_channel<T: Float, R: Send>(
        self,
        shape: &[usize],
        f: impl Fn(usize, &mut [&mut [MaybeUninit<T>]]) -> R + Sync,
    ) -> (Tensor<T>, Vec<R>) {
        let fill = |out: &mut [MaybeUninit<T>]| {
            let mut by_channel: Vec<Vec<&mut [MaybeUninit<T>]>> =
                (0..self.c).map(|_| Vec::new()).collect();
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
        };
        // SAFETY: the N·C planes of H·W elements cover the tensor, every plane goes to `f`,
        // and `f` writes all of each (this function's contract).
        unsafe { Tensor::filled(shape, fill) }
    }

    /// The ranges of channel `ch`'s N planes in an N×C×H×W slice.
    fn ranges(self, ch: usize) -> impl Iterator<Item = Range<usize>> {
        (0..self.n).map(move |img| {
            let first = (img * self.c + ch) * self.hw;
            first..first + self.hw
        })
    }

    /// `(Σ g, Σ g·x)` over channel `ch`, `g` being `dy` gated by the fused ReLU (see
    /// `simd::gated`) when a gate is given.
    fn grad_sums<T: Float>(self, dy: &[T], x: &[T], gate: Option<(T, T)>, ch: usize) -> (T, T) {
        match gate {
            Some(gate) => gated_sum_and_dot(dy, x, self.ranges(ch), gate),
            None => sum_and_dot(dy, x, self.ranges(ch)),
        }
    }

    /// Elements per channel, an error if there are none.
    fn count(self, op: &'static str, shape: &[usize]) -> Result<usize> {
        match self.n * self.hw {
            0 => Err(Error::shape(
                op,
                format!("no elements per channel in {shape:?}"),
            )),
            count => Ok(count),
        }
    }

    /// Asks for the cache lines of the planes a pass over images writes and reads first: the
    /// next output plane (`next`, if any) and plane `(img, ch)` of each of `inputs`, if they
    /// have one.
    fn prefetch<T>(
        self,
        next: Option<&[MaybeUninit<T>]>,
        inputs: &[&[T]],
        (img, ch): (usize, usize),
    ) {
        let bytes = self.hw * std::mem::size_of::<T>();
        if let Some(y) = next {
            prefetch(y.as_ptr(), bytes, Level::L1);
        }
        if img < self.n {
            for a in inputs {
                prefetch(self.get(a, img, ch).as_ptr(), bytes, Level::L1);
            }
        }
    }

    /// Plane `(img, ch)` of `x` mapped into `y`: `x·scale + shift`, plus the residual's plane
    /// if there is one, then `max(·, 0)` if `relu`.
    fn apply<T: Float>(
        self,
        (x, residual): (&[T], Option<&[T]>),
        (img, ch): (usize, usize),
        y: &mut [MaybeUninit<T>],
        (scale, shift): (T, T),
        relu: bool,
    ) {
        let xp = self.get(x, img, ch);
        match residual {
            Some(r) => affine_add(xp, self.get(r, img, ch), y, scale, shift, relu),
            None => affine(xp, y, scale, shift, relu),
        }
    }

    /// Channel `ch`'s mean, biased variance and `1/√(var + ε)`: the mean, then `Σ(x − μ)²`.
    fn moments<T: Float>(self, xv: &[T], ch: usize, eps: T) -> (T, T, T) {
        let cnt = T::of_usize(self.n * self.hw);
        let mean = sum(xv, self.ranges(ch)) / cnt;
        let var = sum_sq_dev(xv, self.ranges(ch), mean) / cnt;
        (mean, var, T::one() / (var + eps).sqrt())
    }
}

/// A per-channel affine map followed by a ReLU or not, `y = x·scale + shift` (then
/// `max(y, 0)`): a batch norm once its statistics are known, which a convolution can apply to
/// its input as it reads it (`conv2d_mapped`) instead of a pass of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMap<T> {
    /// Per-channel factor.
    pub scale: Vec<T>,
    /// Per-channel offset.
    pub shift: Vec<T>,
    /// Whether `max(·, 0)` follows.
    pub relu: bool,
}

impl<T: Float> ChannelMap<T> {
    /// Training mode's map: batch statistics `stats`, then γ and β. (Vectors of different
    /// lengths give a map as long as the shortest, which the ops taking it reject.)
    pub fn train(gamma: &[T], beta: &[T], stats: &BatchNormStats<T>, relu: bool) -> Self {
        let (scale, shift) = gamma
            .iter()
            .zip(beta)
            .zip(stats.mean.as_slice().iter().zip(stats.inv_std.as_slice()))
            .map(|((&g, &b), (&m, &r))| train_affine(g, b, m, r))
            .unzip();
        Self { scale, shift, relu }
    }

    /// Evaluation mode's map: running statistics, then γ and β (lengths as in
    /// [`ChannelMap::train`]).
    pub fn eval(
        gamma: &[T],
        beta: &[T],
        (running_mean, running_var): (&[T], &[T]),
        eps: T,
        relu: bool,
    ) -> Self {
        let (scale, shift) = gamma
            .iter()
            .zip(beta)
            .zip(running_mean.iter().zip(running_var))
            .map(|((&g, &b), (&m, &v))| eval_affine(g, b, m, v, eps))
            .unzip();
        Self { scale, shift, relu }
    }
}

/// The per-channel `(scale, shift)` of training mode: `y = x·scale + shift` with
/// `scale = γ·r`, `shift = β − μ·scale`. The backward pass of a fused BN+ReLU recomputes its
/// mask `x·scale + shift > 0` with these same values, so it matches the forward bit for bit.
fn train_affine<T: Float>(gamma: T, beta: T, mean: T, inv_std: T) -> (T, T) {
    let scale = gamma * inv_std;
    (scale, beta - mean * scale)
}

/// The per-channel `(scale, shift)` of evaluation mode (running statistics); see
/// [`train_affine`].
fn eval_affine<T: Float>(gamma: T, beta: T, mean: T, var: T, eps: T) -> (T, T) {
    let scale = gamma / (var + eps).sqrt();
    (scale, beta - mean * scale)
}

impl<T: Float> BatchNormStats<T> {
    fn of(moments: Vec<(T, T, T)>, count: usize) -> Self {
        Self {
            mean: vector(moments.iter().map(|m| m.0).collect()),
            var: vector(moments.iter().map(|m| m.1).collect()),
            inv_std: vector(moments.iter().map(|m| m.2).collect()),
            count,
        }
    }
}

/// A per-channel vector as a tensor.
fn vector<T: Float>(v: Vec<T>) -> Tensor<T> {
    Tensor::from_vec(&[v.len()], v).expect("the shape is the length")
}

/// The CUDA arm of an op whose operands `xs` (and per-channel tensors `per_channel`) are not
/// all on the CPU: `Ok(None)` when they all are (the CPU arm runs), `Ok(Some(device))` when
/// they all are on one device, else the error naming `op`.
fn device_of<T: Float>(
    op: &'static str,
    xs: &[&Tensor<T>],
    per_channel: &[&Tensor<T>],
) -> Result<Option<crate::Device>> {
    let all: Vec<&Tensor<T>> = xs.iter().chain(per_channel).copied().collect();
    match crate::device::common(op, &all)? {
        crate::Device::Cpu => Ok(None),
        d => Ok(Some(d)),
    }
}

/// Training-mode forward: normalises with batch statistics and returns them. With `relu` the
/// output is `max(BN(x), 0)` (the fused BN+ReLU of a residual block).
///
/// Per channel, in parallel over channels: the mean, then `Σ(x − μ)²`, then the output planes.
pub fn batch_norm_train<T: Float>(
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    eps: T,
    relu: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    train_with("batch_norm_train", x, gamma, beta, eps, None, relu)
}

/// [`batch_norm_train`] plus a residual `r` (same shape) before the optional ReLU:
/// `max(BN(x) + r, 0)`, the end of a residual block, in the pass that writes the output.
pub fn batch_norm_train_add<T: Float>(
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    eps: T,
    r: &Tensor<T>,
    relu: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    r.expect_shape("batch_norm_train_add", x.shape())?;
    train_with("batch_norm_train_add", x, gamma, beta, eps, Some(r), relu)
}

fn train_with<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    eps: T,
    residual: Option<&Tensor<T>>,
    relu: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    check_shapes(op, x, &[gamma, beta])?;
    let xs: Vec<&Tensor<T>> = std::iter::once(x).chain(residual).collect();
    if device_of(op, &xs, &[gamma, beta])?.is_some() {
        return crate::cuda_ops::batch_norm_train(x, [gamma, beta], eps, residual, relu);
    }
    let (gamma, beta) = (gamma.as_slice(), beta.as_slice());
    let pl = ChannelPlanes::of(check(op, x, &[gamma, beta])?);
    let count = pl.count(op, x.shape())?;
    let src = (x.as_slice(), residual.map(Tensor::as_slice));
    // SAFETY: `ChannelPlanes::apply` writes every element of each plane it is given.
    let (y, moments) = unsafe {
        pl.fill_per_channel(x.shape(), |ch, ys| {
            let (mean, var, inv_std) = pl.moments(src.0, ch, eps);
            let affine = train_affine(gamma[ch], beta[ch], mean, inv_std);
            for img in 0..ys.len() {
                let residual: &[&[T]] = src.1.as_slice();
                pl.prefetch(ys.get(img + 1).map(|y| &**y), residual, (img + 1, ch));
                pl.apply(src, (img, ch), ys[img], affine, relu);
            }
            (mean, var, inv_std)
        })
    };
    Ok((y, BatchNormStats::of(moments, count)))
}

/// The batch statistics of [`batch_norm_train`] without its output (the same values: for a
/// batch norm whose map the next convolution applies, see [`ChannelMap`]).
pub fn batch_norm_stats<T: Float>(x: &Tensor<T>, eps: T) -> Result<BatchNormStats<T>> {
    if device_of("batch_norm_stats", &[x], &[])?.is_some() {
        return crate::cuda_ops::batch_norm_stats(x, eps);
    }
    let pl = ChannelPlanes::of(x.dims4("batch_norm_stats")?);
    let count = pl.count("batch_norm_stats", x.shape())?;
    let xv = x.as_slice();
    let moments = (0..pl.c)
        .into_par_iter()
        .map(|ch| pl.moments(xv, ch, eps))
        .collect();
    Ok(BatchNormStats::of(moments, count))
}

/// `map` applied to `x` (N×C×H×W): `x·scale + shift` per channel, then `max(·, 0)` if
/// `map.relu` — the values a convolution with that input map reads.
pub fn channel_map<T: Float>(x: &Tensor<T>, map: &ChannelMap<T>) -> Result<Tensor<T>> {
    crate::device::on_cpu("channel_map", &[x])?;
    map_with("channel_map", x, map, None)
}

/// `map` applied to `x` with a residual `r` (same shape) added before the optional ReLU:
/// `max(x·scale + shift + r, 0)`, an evaluation-mode batch norm ending a residual block.
pub fn channel_map_add<T: Float>(
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    r: &Tensor<T>,
) -> Result<Tensor<T>> {
    crate::device::on_cpu("channel_map_add", &[x, r])?;
    r.expect_shape("channel_map_add", x.shape())?;
    map_with("channel_map_add", x, map, Some(r))
}

fn map_with<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    residual: Option<&Tensor<T>>,
) -> Result<Tensor<T>> {
    let pl = ChannelPlanes::of(check(op, x, &[&map.scale, &map.shift])?);
    let src = (x.as_slice(), residual.map(Tensor::as_slice));
    // SAFETY: `ChannelPlanes::apply` writes every element of each plane it is given.
    let (y, _) = unsafe {
        pl.fill_per_channel(x.shape(), |ch, ys| {
            let affine = (map.scale[ch], map.shift[ch]);
            let inputs: Vec<&[T]> = std::iter::once(src.0).chain(src.1).collect();
            for img in 0..ys.len() {
                pl.prefetch(ys.get(img + 1).map(|y| &**y), &inputs, (img + 1, ch));
                pl.apply(src, (img, ch), ys[img], affine, map.relu);
            }
        })
    };
    Ok(y)
}

/// Training-mode backward: returns `(dx, dγ, dβ)`. For a fused BN+ReLU (`relu`) `dy` is first
/// masked where the forward output was zero; the mask is recomputed from `x`, γ and β.
///
/// With x̂ = (x − μ)·r and M = N·H·W:
/// `dx = γ·r/M · (M·dy − Σdy − x̂·Σ(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
pub fn batch_norm_train_bwd<T: Float>(
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    stats: &BatchNormStats<T>,
    dy: &Tensor<T>,
    relu: bool,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let op = "batch_norm_train_bwd";
    let per_channel = [gamma, beta, &stats.mean, &stats.var, &stats.inv_std];
    check_shapes(op, x, &per_channel)?;
    dy.expect_shape(op, x.shape())?;
    if device_of(op, &[x, dy], &per_channel)?.is_some() {
        return crate::cuda_ops::batch_norm_train_bwd(x, [gamma, beta], stats, dy, relu);
    }
    let (gamma, beta) = (gamma.as_slice(), beta.as_slice());
    let (mean, inv_std) = (stats.mean.as_slice(), stats.inv_std.as_slice());
    let d = check(op, x, &[gamma, beta, mean, inv_std])?;
    let pl = ChannelPlanes::of(d);
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    let m = T::of_usize(stats.count);
    // SAFETY: `axpbypc` writes every element of each plane it is given.
    let (dx, grads) = unsafe {
        pl.fill_per_channel(x.shape(), |ch, dxs| {
            let (mu, r) = (mean[ch], inv_std[ch]);
            let gate = relu.then(|| train_affine(gamma[ch], beta[ch], mu, r));
            let (sg, sgx) = pl.grad_sums(dyv, xv, gate, ch);
            // Σ g·x̂ = r·(Σ g·x − μ·Σ g).
            let (dgamma, dbeta) = (r * (sgx - mu * sg), sg);
            // dx = k·(M·g − Σg − (x − μ)·r·Σ(g·x̂)) = A·g + B·x + C, k = γ·r/M.
            let k = gamma[ch] * r / m;
            let b = -k * r * dgamma;
            let coef = [k * m, b, -k * dbeta - b * mu];
            for img in 0..dxs.len() {
                pl.prefetch::<T>(dxs.get(img + 1).map(|y| &**y), &[], (img + 1, ch));
                axpbypc(
                    dxs[img],
                    pl.get(dyv, img, ch),
                    pl.get(xv, img, ch),
                    gate,
                    coef,
                );
            }
            (dgamma, dbeta)
        })
    };
    Ok((
        dx,
        vector(grads.iter().map(|g| g.0).collect()),
        vector(grads.iter().map(|g| g.1).collect()),
    ))
}

/// Evaluation-mode forward with running statistics (then `max(·, 0)` when `relu`).
pub fn batch_norm_eval<T: Float>(
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    (running_mean, running_var): (&Tensor<T>, &Tensor<T>),
    eps: T,
    relu: bool,
) -> Result<Tensor<T>> {
    batch_norm_eval_add(
        x,
        [gamma, beta],
        (running_mean, running_var),
        eps,
        None,
        relu,
    )
}

/// [`batch_norm_eval`] plus a residual `r` (same shape) before the optional ReLU, when given:
/// `max(BN(x) + r, 0)`.
pub fn batch_norm_eval_add<T: Float>(
    x: &Tensor<T>,
    [gamma, beta]: [&Tensor<T>; 2],
    (running_mean, running_var): (&Tensor<T>, &Tensor<T>),
    eps: T,
    r: Option<&Tensor<T>>,
    relu: bool,
) -> Result<Tensor<T>> {
    let op = if r.is_some() {
        "batch_norm_eval_add"
    } else {
        "batch_norm_eval"
    };
    let per_channel = [gamma, beta, running_mean, running_var];
    check_shapes(op, x, &per_channel)?;
    if let Some(r) = r {
        r.expect_shape(op, x.shape())?;
    }
    let xs: Vec<&Tensor<T>> = std::iter::once(x).chain(r).collect();
    if device_of(op, &xs, &per_channel)?.is_some() {
        let running = (running_mean, running_var);
        return crate::cuda_ops::batch_norm_eval(x, [gamma, beta], running, eps, r, relu);
    }
    let (gamma, beta) = (gamma.as_slice(), beta.as_slice());
    let (running_mean, running_var) = (running_mean.as_slice(), running_var.as_slice());
    let map = ChannelMap::eval(gamma, beta, (running_mean, running_var), eps, relu);
    match r {
        Some(r) => channel_map_add(x, &map, r),
        None => channel_map(x, &map),
    }
}

/// Evaluation-mode backward: returns `(dx, dγ, dβ)` with `dx = dy·γ/√(v + ε)` (`dy` masked
/// where the output was zero for a fused BN+ReLU, as in [`batch_norm_train_bwd`]).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval_bwd<T: Float>(
    x: &Tensor<T>,
    [gamma, beta]: [&Tensor<T>; 2],
    (running_mean, running_var): (&Tensor<T>, &Tensor<T>),
    eps: T,
    dy: &Tensor<T>,
    relu: bool,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let op = "batch_norm_eval_bwd";
    let per_channel = [gamma, beta, running_mean, running_var];
    check_shapes(op, x, &per_channel)?;
    dy.expect_shape(op, x.shape())?;
    if device_of(op, &[x, dy], &per_channel)?.is_some() {
        let running = (running_mean, running_var);
        return crate::cuda_ops::batch_norm_eval_bwd(x, [gamma, beta], running, eps, dy, relu);
    }
    let (gamma, beta) = (gamma.as_slice(), beta.as_slice());
    let (running_mean, running_var) = (running_mean.as_slice(), running_var.as_slice());
    let d = check(op, x, &[gamma, beta, running_mean, running_var])?;
    let pl = ChannelPlanes::of(d);
    let (xv, dyv) = (x.as_slice(), dy.as_slice());
    // SAFETY: `scale_gated` writes every element of each plane it is given.
    let (dx, grads) = unsafe {
        pl.fill_per_channel(x.shape(), |ch, dxs| {
            let (mean, var) = (running_mean[ch], running_var[ch]);
            let gate = relu.then(|| eval_affine(gamma[ch], beta[ch], mean, var, eps));
            let inv = T::one() / (var + eps).sqrt();
            let (sg, sgx) = pl.grad_sums(dyv, xv, gate, ch);
            let k = gamma[ch] * inv;
            for (img, dxp) in dxs.iter_mut().enumerate() {
                scale_gated(dxp, pl.get(dyv, img, ch), pl.get(xv, img, ch), gate, k);
            }
            (inv * (sgx - mean * sg), sg)
        })
    };
    Ok((
        dx,
        vector(grads.iter().map(|g| g.0).collect()),
        vector(grads.iter().map(|g| g.1).collect()),
    ))
}

/// Errors unless every per-channel tensor is 1-D with one element per channel of `x`
/// (N×C×H×W).
fn check_shapes<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    per_channel: &[&Tensor<T>],
) -> Result<()> {
    let c = x.dims4(op)?[1];
    match per_channel.iter().find(|t| t.shape() != [c]) {
        Some(t) => Err(Error::shape(
            op,
            format!(
                "{c} channels in x {:?} but a per-channel tensor has shape {:?}",
                x.shape(),
                t.shape()
            ),
        )),
        None => Ok(()),
    }
}
