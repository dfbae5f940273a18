//! One file per op: the forward as a `Tape` method, the backward as a struct beside it.

pub mod add;
pub mod add_relu;
pub mod batch_norm;
pub mod batch_norm_add;
pub mod batch_norm_conv2d;
pub mod concat_rows;
pub mod conv2d;
pub mod cosine_logits;
pub mod cross_entropy;
pub mod custom;
pub mod feature_distill;
pub mod kd;
pub mod linear;
pub mod log_softmax;
pub mod margin_rank;
pub mod mse;
pub mod normalize;
pub mod pool;
pub mod relu;
pub mod scale;
pub mod slice_cols;
pub mod sum;

use crate::{Error, Result};

/// Checks that every label indexes one of `classes` columns and that there is one per row.
pub(crate) fn check_labels(
    op: &'static str,
    labels: &[usize],
    rows: usize,
    classes: usize,
) -> Result<()> {
    if labels.len() != rows {
        return Err(Error::invalid(
            op,
            format!("{} labels for {rows} rows", labels.len()),
        ));
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(Error::Label {
            op,
            row,
            label,
            classes,
        });
    }
    Ok(())
}

/// Errors unless every operand is in host memory: the guard of a tape op computed on the host
/// whose device arm is not written (MSE, which only the checks use), so that device tensors
/// get an error naming the op, not a panic.
pub(crate) fn host_only<T: lucir_tensor::Float>(
    op: &'static str,
    operands: &[&lucir_tensor::Tensor<T>],
) -> Result<()> {
    match operands.iter().find(|t| !t.is_cpu()) {
        Some(t) => Err(Error::Tensor(lucir_tensor::Error::Device {
            op,
            detail: format!("has no {} implementation yet", t.device().kind()),
        })),
        None => Ok(()),
    }
}
