//! Row-wise log-softmax of a B×C matrix, numerically stable, and its backward; the mean
//! cross-entropy against integer labels built on it.

use crate::device::Device;
use crate::{cuda_ops, Float, Result, Tensor};

/// `y_bc = z_bc − log Σ_k exp z_bk`.
pub fn log_softmax_rows<T: Float>(z: &Tensor<T>) -> Result<Tensor<T>> {
    let [b, c] = z.dims2("log_softmax_rows")?;
    if !z.is_cpu() {
        return cuda_ops::log_softmax_rows(z, [b, c]);
    }
    let mut y = z.clone();
    if c == 0 {
        return Ok(y);
    }
    for row in y.as_slice_mut().chunks_mut(c) {
        let m = row.iter().fold(T::neg_infinity(), |a, b| a.max(*b));
        // (z − m) − ln Σ exp(z − m): subtracting m first keeps large logits exact.
        let ln_sum = row.iter().map(|v| (*v - m).exp()).sum::<T>().ln();
        for v in row.iter_mut() {
            *v = (*v - m) - ln_sum;
        }
    }
    Ok(y)
}

/// `dz = g − softmax(z)·Σ_k g_k`, from the forward output `y` (log-probabilities).
pub fn log_softmax_rows_bwd<T: Float>(y: &Tensor<T>, dy: &Tensor<T>) -> Result<Tensor<T>> {
    let [b, c] = y.dims2("log_softmax_rows_bwd")?;
    dy.expect_shape("log_softmax_rows_bwd", y.shape())?;
    if crate::device::common("log_softmax_rows_bwd", &[y, dy])? != Device::Cpu {
        return cuda_ops::log_softmax_rows_bwd(y, dy, [b, c]);
    }
    let mut dz = dy.clone();
    if c == 0 {
        return Ok(dz);
    }
    for (o, yr) in dz.as_slice_mut().chunks_mut(c).zip(y.as_slice().chunks(c)) {
        let s: T = o.iter().copied().sum();
        for (v, l) in o.iter_mut().zip(yr) {
            *v -= l.exp() * s;
        }
    }
    Ok(dz)
}

/// Mean cross-entropy of B×C logits `z` against `labels` (one per row, each below C, else an
/// error):
/// `L = −(1/B) Σ_b log softmax(z_b)[y_b]` (0 for an empty batch). Returns the loss (one
/// element, on `z`'s device) and the log-probabilities its backward pass needs.
pub fn cross_entropy<T: Float>(z: &Tensor<T>, labels: &[usize]) -> Result<(Tensor<T>, Tensor<T>)> {
    let [b, c] = z.dims2("cross_entropy")?;
    check_labels("cross_entropy", labels, [b, c])?;
    if !z.is_cpu() {
        return cuda_ops::cross_entropy(z, labels, [b, c]);
    }
    let log_p = log_softmax_rows(z)?;
    let lp = log_p.as_slice();
    let total: T = labels
        .iter()
        .enumerate()
        .map(|(r, &y)| -lp[r * c + y])
        .sum();
    let loss = Tensor::scalar(if b == 0 {
        T::zero()
    } else {
        total / T::of_usize(b)
    });
    Ok((loss, log_p))
}

/// The backward pass of [`cross_entropy`] from its log-probabilities and the upstream gradient
/// `g` (one element): `∂z = (g/B)·(softmax(z) − onehot(y))`.
pub fn cross_entropy_bwd<T: Float>(
    log_p: &Tensor<T>,
    labels: &[usize],
    g: &Tensor<T>,
) -> Result<Tensor<T>> {
    let [b, c] = log_p.dims2("cross_entropy_bwd")?;
    check_labels("cross_entropy_bwd", labels, [b, c])?;
    g.expect_shape("cross_entropy_bwd", &[1])?;
    if crate::device::common("cross_entropy_bwd", &[log_p, g])? != Device::Cpu {
        return cuda_ops::cross_entropy_bwd(log_p, labels, g, [b, c]);
    }
    let k = g.item()? / T::of_usize(b.max(1));
    let mut dz = log_p.map(|l| l.exp() * k);
    let d = dz.as_slice_mut();
    for (r, &y) in labels.iter().enumerate() {
        d[r * c + y] -= k;
    }
    Ok(dz)
}

/// One label per row, each a column of the `rows × cols` logits.
fn check_labels(op: &'static str, labels: &[usize], [rows, cols]: [usize; 2]) -> Result<()> {
    if labels.len() != rows {
        return Err(crate::Error::shape(
            op,
            format!("{} labels for {rows} rows", labels.len()),
        ));
    }
    if let Some(y) = labels.iter().find(|&&y| y >= cols) {
        return Err(crate::Error::shape(
            op,
            format!("label {y} outside the {cols} classes"),
        ));
    }
    Ok(())
}
