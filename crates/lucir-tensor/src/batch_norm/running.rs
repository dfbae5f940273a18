//! The running statistics of a batch norm: moving them towards a training batch's.

use super::{device_of, BatchNormStats};
use crate::{Float, Result, Tensor};

/// Moves running statistics towards a training batch's, as PyTorch does:
/// `mean ← (1 − m)·mean + m·μ`, `var ← (1 − m)·var + m·v·M/(M − 1)` (the unbiased batch
/// variance; the factor is 1 when M = N·H·W is 1).
pub fn batch_norm_update_running<T: Float>(
    (running_mean, running_var): (&mut Tensor<T>, &mut Tensor<T>),
    stats: &BatchNormStats<T>,
    momentum: f64,
) -> Result<()> {
    let op = "batch_norm_update_running";
    let c = stats.mean.len();
    for t in [&*running_mean, &*running_var, &stats.var] {
        t.expect_shape(op, &[c])?;
    }
    if device_of(op, &[running_mean, running_var], &[&stats.mean, &stats.var])?.is_some() {
        return crate::cuda_ops::batch_norm_update_running(
            (running_mean, running_var),
            stats,
            momentum,
        );
    }
    let m = T::of(momentum);
    let n = stats.count;
    let unbias = if n > 1 {
        T::of_usize(n) / T::of_usize(n - 1)
    } else {
        T::one()
    };
    for (r, v) in running_mean
        .as_slice_mut()
        .iter_mut()
        .zip(stats.mean.as_slice())
    {
        *r = (T::one() - m) * *r + m * *v;
    }
    for (r, v) in running_var
        .as_slice_mut()
        .iter_mut()
        .zip(stats.var.as_slice())
    {
        *r = (T::one() - m) * *r + m * *v * unbias;
    }
    Ok(())
}
