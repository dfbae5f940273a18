//! Row and scalar plumbing of the classifier heads, on the CPU or a CUDA device: stacking two
//! matrices' rows (the old- and new-class weights of a split cosine head) and splitting a
//! gradient back, taking a block of columns (the old classes' logits) and its backward, multiplying by a scalar held in a one-element tensor (σ), and the dot
//! product of two tensors as a one-element tensor (σ's gradient).

use crate::device::{common, Device};
use crate::{cuda_ops, Error, Float, Result, Tensor};

/// The rows of `a` (Ra×D) then those of `b` (Rb×D).
pub fn concat_rows<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    let [ra, da] = a.dims2("concat_rows")?;
    let [rb, db] = b.dims2("concat_rows")?;
    if da != db {
        return Err(Error::shape(
            "concat_rows",
            format!("widths differ: {da} and {db}"),
        ));
    }
    if common("concat_rows", &[a, b])? != Device::Cpu {
        return cuda_ops::concat_rows(a, b, [ra + rb, da]);
    }
    let mut data = a.as_slice().to_vec();
    data.extend_from_slice(b.as_slice());
    Tensor::from_vec(&[ra + rb, da], data)
}

/// The first `rows` rows of `g` (R×D) and the rest: the inverse of [`concat_rows`].
pub fn split_rows<T: Float>(g: &Tensor<T>, rows: usize) -> Result<(Tensor<T>, Tensor<T>)> {
    let [r, d] = g.dims2("split_rows")?;
    if rows > r {
        return Err(Error::shape(
            "split_rows",
            format!("{rows} rows asked of {r}"),
        ));
    }
    if !g.is_cpu() {
        return cuda_ops::split_rows(g, [rows, r - rows, d]);
    }
    let (ga, gb) = g.as_slice().split_at(rows * d);
    Ok((
        Tensor::from_vec(&[rows, d], ga.to_vec())?,
        Tensor::from_vec(&[r - rows, d], gb.to_vec())?,
    ))
}

/// `x·s` with `s` a one-element tensor on `x`'s device.
pub fn scale_by<T: Float>(x: &Tensor<T>, s: &Tensor<T>) -> Result<Tensor<T>> {
    if s.len() != 1 {
        return Err(Error::shape(
            "scale_by",
            format!("the scale must have one element, shape is {:?}", s.shape()),
        ));
    }
    if common("scale_by", &[x, s])? != Device::Cpu {
        return cuda_ops::scale_by(x, s);
    }
    let s = s.item()?;
    Ok(x.map(|v| v * s))
}

/// `Σ a·b` over all elements (equal shapes), as a one-element tensor on their device.
pub fn dot<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    b.expect_shape("dot", a.shape())?;
    if common("dot", &[a, b])? != Device::Cpu {
        return cuda_ops::dot(a, b);
    }
    let s: T = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| *x * *y)
        .sum();
    Ok(Tensor::scalar(s))
}

/// Columns `start..end` of `x` (B×C) as a B×(end − start) matrix.
pub fn slice_cols<T: Float>(x: &Tensor<T>, start: usize, end: usize) -> Result<Tensor<T>> {
    let [b, c] = x.dims2("slice_cols")?;
    if start > end || end > c {
        return Err(Error::arg(
            "slice_cols",
            format!("columns {start}..{end} of {c}"),
        ));
    }
    let w = end - start;
    if !x.is_cpu() {
        return cuda_ops::slice_cols(x, [b, c], (start, w), false);
    }
    let mut data = Vec::with_capacity(b * w);
    for r in 0..b {
        data.extend_from_slice(&x.as_slice()[r * c + start..r * c + end]);
    }
    Tensor::from_vec(&[b, w], data)
}

/// The backward pass of [`slice_cols`]: `g` (B×w) placed at columns `start..start + w` of a
/// B×C matrix of zeros.
pub fn slice_cols_bwd<T: Float>(g: &Tensor<T>, c: usize, start: usize) -> Result<Tensor<T>> {
    let [b, w] = g.dims2("slice_cols_bwd")?;
    if start + w > c {
        return Err(Error::arg(
            "slice_cols_bwd",
            format!("columns {start}..{} of {c}", start + w),
        ));
    }
    if !g.is_cpu() {
        return cuda_ops::slice_cols(g, [b, c], (start, w), true);
    }
    let mut dx = Tensor::zeros(&[b, c]);
    let gv = g.as_slice();
    let d = dx.as_slice_mut();
    for r in 0..b {
        d[r * c + start..r * c + start + w].copy_from_slice(&gv[r * w..(r + 1) * w]);
    }
    Ok(dx)
}
