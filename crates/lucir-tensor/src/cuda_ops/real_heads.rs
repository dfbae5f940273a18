//! The CUDA arms of the classifier heads' ops (a build with the `cuda` feature): row
//! normalisation, row stacking, σ-scaling and the two LUCIR head losses.

use super::real::{buf, labels_on, wrap};
use crate::device::CudaStorage;
use crate::{Float, MarginRankPairs, Result, Tensor};

/// Row L2 normalisation: `(v̄, norms)`.
pub(crate) fn l2_normalize_rows<T: Float>(
    x: &Tensor<T>,
    bd: [usize; 2],
) -> Result<(Tensor<T>, Tensor<T>)> {
    let c = CudaStorage::of("l2_normalize_rows", x)?;
    let (y, n) = c.gpu.l2_normalize_rows_fwd(&c.buf, bd)?;
    Ok((wrap(c, &bd, y), wrap(c, &bd[..1], n)))
}

/// Its backward.
pub(crate) fn l2_normalize_rows_bwd<T: Float>(
    y: &Tensor<T>,
    norms: &Tensor<T>,
    dy: &Tensor<T>,
    bd: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "l2_normalize_rows_bwd";
    let c = CudaStorage::of(op, y)?;
    let dx = c
        .gpu
        .l2_normalize_rows_bwd(&c.buf, buf(op, norms)?, buf(op, dy)?, bd)?;
    Ok(wrap(c, &bd, dx))
}

/// `a`'s rows then `b`'s.
pub(crate) fn concat_rows<T: Float>(
    a: &Tensor<T>,
    b: &Tensor<T>,
    shape: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "concat_rows";
    let c = CudaStorage::of(op, a)?;
    let out = c.gpu.concat((&c.buf, a.len()), (buf(op, b)?, b.len()))?;
    Ok(wrap(c, &shape, out))
}

/// The first `ra` rows and the other `rb` (width `d`).
pub(crate) fn split_rows<T: Float>(
    g: &Tensor<T>,
    [ra, rb, d]: [usize; 3],
) -> Result<(Tensor<T>, Tensor<T>)> {
    let c = CudaStorage::of("split_rows", g)?;
    let (a, b) = c.gpu.split(&c.buf, (ra * d, rb * d))?;
    Ok((wrap(c, &[ra, d], a), wrap(c, &[rb, d], b)))
}

/// `x·s`, `s` one element on the device.
pub(crate) fn scale_by<T: Float>(x: &Tensor<T>, s: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "scale_by";
    let c = CudaStorage::of(op, x)?;
    Ok(wrap(
        c,
        x.shape(),
        c.gpu.scale_fwd(&c.buf, buf(op, s)?, x.len())?,
    ))
}

/// `Σ a·b` as a one-element tensor.
pub(crate) fn dot<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    let op = "dot";
    let c = CudaStorage::of(op, a)?;
    Ok(wrap(
        c,
        &[1],
        c.gpu.scale_dot(&c.buf, buf(op, b)?, a.len())?,
    ))
}

/// The feature-distillation loss.
pub(crate) fn feature_distill<T: Float>(
    f: &Tensor<T>,
    f_star: &Tensor<T>,
    lambda: T,
    bd: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "feature_distill";
    let c = CudaStorage::of(op, f)?;
    let lambda = lambda.as_f64() as f32;
    let loss = c
        .gpu
        .feature_distill_loss((&c.buf, buf(op, f_star)?), lambda, bd)?;
    Ok(wrap(c, &[1], loss))
}

/// Its gradient with respect to `f`.
pub(crate) fn feature_distill_bwd<T: Float>(
    f: &Tensor<T>,
    f_star: &Tensor<T>,
    lambda: T,
    g: &Tensor<T>,
    bd: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "feature_distill_bwd";
    let c = CudaStorage::of(op, f)?;
    let lambda = lambda.as_f64() as f32;
    let df = c
        .gpu
        .feature_distill_grad((&c.buf, buf(op, f_star)?), lambda, buf(op, g)?, bd)?;
    Ok(wrap(c, &bd, df))
}

fn margin_args(state: &MarginRankPairs) -> lucir_cuda::MarginRankArgs {
    lucir_cuda::MarginRankArgs {
        n_old: state.n_old,
        k: state.k,
        margin: state.margin as f32,
    }
}

/// The margin-ranking loss.
pub(crate) fn margin_rank<T: Float>(
    cos: &Tensor<T>,
    labels: &[usize],
    state: &MarginRankPairs,
    bc: [usize; 2],
) -> Result<Tensor<T>> {
    let c = CudaStorage::of("margin_rank", cos)?;
    let l = labels_on(&c.gpu, labels)?;
    let loss = c
        .gpu
        .margin_rank_loss((&c.buf, &l), margin_args(state), state.pairs, bc)?;
    Ok(wrap(c, &[1], loss))
}

/// Its gradient with respect to the cosines.
pub(crate) fn margin_rank_bwd<T: Float>(
    cos: &Tensor<T>,
    labels: &[usize],
    state: &MarginRankPairs,
    g: &Tensor<T>,
    bc: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "margin_rank_bwd";
    let c = CudaStorage::of(op, cos)?;
    let l = labels_on(&c.gpu, labels)?;
    let pairs = (state.pairs, buf(op, g)?);
    let d = c
        .gpu
        .margin_rank_grad((&c.buf, &l), margin_args(state), pairs, bc)?;
    Ok(wrap(c, &bc, d))
}

/// Knowledge distillation: the loss and `(log q, log p)`.
pub(crate) fn kd<T: Float>(
    z: &Tensor<T>,
    targets: &Tensor<T>,
    tau: T,
    bc: [usize; 2],
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let op = "kd";
    let c = CudaStorage::of(op, z)?;
    let (t, n) = (tau.as_f64() as f32, z.len());
    let zq = c.gpu.kd_temper(&c.buf, n, t)?;
    let zp = c.gpu.kd_temper(buf(op, targets)?, n, t)?;
    let lq = c.gpu.log_softmax_rows_fwd(&zq, bc)?;
    let lp = c.gpu.log_softmax_rows_fwd(&zp, bc)?;
    let loss = c.gpu.kd_loss((&lp, &lq), t, bc)?;
    Ok((wrap(c, &[1], loss), wrap(c, &bc, lq), wrap(c, &bc, lp)))
}

/// Its gradient with respect to `z`.
pub(crate) fn kd_bwd<T: Float>(
    log_q: &Tensor<T>,
    log_p: &Tensor<T>,
    tau: T,
    g: &Tensor<T>,
    bc: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "kd_bwd";
    let c = CudaStorage::of(op, log_q)?;
    let t = tau.as_f64() as f32;
    let dz = c
        .gpu
        .kd_bwd((&c.buf, buf(op, log_p)?), buf(op, g)?, t, bc)?;
    Ok(wrap(c, &bc, dz))
}

/// A block of columns (`bwd` = false: B×C → B×w), or its backward (B×w → B×C).
pub(crate) fn slice_cols<T: Float>(
    x: &Tensor<T>,
    [b, c]: [usize; 2],
    (start, w): (usize, usize),
    bwd: bool,
) -> Result<Tensor<T>> {
    let s = CudaStorage::of("slice_cols", x)?;
    let y = s.gpu.slice_cols(&s.buf, [b, c], (start, w), bwd)?;
    Ok(wrap(s, &[b, if bwd { c } else { w }], y))
}
