//! Row-wise log-softmax of a B×C matrix, numerically stable, and its backward.

use crate::{Float, Result, Tensor};

/// `y_bc = z_bc − log Σ_k exp z_bk`.
pub fn log_softmax_rows<T: Float>(z: &Tensor<T>) -> Result<Tensor<T>> {
    crate::device::on_cpu("log_softmax_rows", &[z])?;
    let [_, c] = z.dims2("log_softmax_rows")?;
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
    crate::device::on_cpu("log_softmax_rows_bwd", &[y, dy])?;
    let [_, c] = y.dims2("log_softmax_rows_bwd")?;
    dy.expect_shape("log_softmax_rows_bwd", y.shape())?;
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
