//! Row L2 normalisation `v̄ = v / max(‖v‖₂, ε)` of a B×D matrix, and its backward, on the CPU
//! or a CUDA device.

use crate::device::{common, Device};
use crate::{cuda_ops, Float, Result, Tensor};

/// The ε of `max(‖v‖, ε)` (docs/design.md §3).
pub const NORM_EPS: f64 = 1e-12;

/// Returns `(v̄, n)` with `n_b = max(‖v_b‖, ε)` per row (`n` a B-element tensor; 1 when D = 0).
pub fn l2_normalize_rows<T: Float>(x: &Tensor<T>) -> Result<(Tensor<T>, Tensor<T>)> {
    let [b, d] = x.dims2("l2_normalize_rows")?;
    if !x.is_cpu() {
        return cuda_ops::l2_normalize_rows(x, [b, d]);
    }
    let mut y = x.clone();
    let mut norms = vec![T::one(); b];
    if d > 0 {
        for (row, n) in y.as_slice_mut().chunks_mut(d).zip(norms.iter_mut()) {
            let s: T = row.iter().map(|v| *v * *v).sum();
            *n = s.sqrt().max(T::of(NORM_EPS));
            for v in row.iter_mut() {
                *v /= *n;
            }
        }
    }
    Ok((y, Tensor::from_vec(&[b], norms)?))
}

/// Backward of [`l2_normalize_rows`]: `dx = (g − v̄⟨v̄, g⟩)/‖v‖` (plain `g/ε` on rows clamped at ε).
pub fn l2_normalize_rows_bwd<T: Float>(
    y: &Tensor<T>,
    norms: &Tensor<T>,
    dy: &Tensor<T>,
) -> Result<Tensor<T>> {
    let [b, d] = y.dims2("l2_normalize_rows_bwd")?;
    dy.expect_shape("l2_normalize_rows_bwd", &[b, d])?;
    norms.expect_shape("l2_normalize_rows_bwd", &[b])?;
    if common("l2_normalize_rows_bwd", &[y, norms, dy])? != Device::Cpu {
        return cuda_ops::l2_normalize_rows_bwd(y, norms, dy, [b, d]);
    }
    let mut dx = Tensor::zeros(&[b, d]);
    if d == 0 {
        return Ok(dx);
    }
    for ((o, (yr, gr)), n) in dx
        .as_slice_mut()
        .chunks_mut(d)
        .zip(y.as_slice().chunks(d).zip(dy.as_slice().chunks(d)))
        .zip(norms.as_slice())
    {
        let clamped = *n <= T::of(NORM_EPS);
        let dot: T = if clamped {
            T::zero()
        } else {
            yr.iter().zip(gr).map(|(a, b)| *a * *b).sum()
        };
        for j in 0..d {
            o[j] = (gr[j] - yr[j] * dot) / *n;
        }
    }
    Ok(dx)
}
