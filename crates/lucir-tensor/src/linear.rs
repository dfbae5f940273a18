//! The bias of a fully connected layer, `y = x·Wᵀ + b` (the products are [`crate::matmul`]):
//! adding `b` to every row, and the bias gradient as column sums, on the CPU or a CUDA device.

use crate::device::{common, Device};
use crate::{cuda_ops, Error, Float, Result, Tensor};

/// `y[r, j] += b[j]` in place: `y` B×C, `b` C.
pub fn add_row_bias<T: Float>(y: &mut Tensor<T>, b: &Tensor<T>) -> Result<()> {
    let [rows, c] = y.dims2("add_row_bias")?;
    if b.shape() != [c] {
        return Err(Error::shape(
            "add_row_bias",
            format!("bias shape {:?} does not match {c} columns", b.shape()),
        ));
    }
    if common("add_row_bias", &[y, b])? != Device::Cpu {
        return cuda_ops::add_row_bias(y, b, [rows, c]);
    }
    let bias = b.as_slice().to_vec();
    if c > 0 {
        for row in y.as_slice_mut().chunks_mut(c) {
            for (v, bv) in row.iter_mut().zip(&bias) {
                *v += *bv;
            }
        }
    }
    Ok(())
}

/// `s[j] = Σ_r g[r, j]` of a B×C matrix, added in row order (the bias gradient).
pub fn column_sums<T: Float>(g: &Tensor<T>) -> Result<Tensor<T>> {
    let [rows, c] = g.dims2("column_sums")?;
    if !g.is_cpu() {
        return cuda_ops::column_sums(g, [rows, c]);
    }
    let mut s = vec![T::zero(); c];
    if c > 0 {
        for row in g.as_slice().chunks(c) {
            for (a, v) in s.iter_mut().zip(row) {
                *a += *v;
            }
        }
    }
    Tensor::from_vec(&[c], s)
}
