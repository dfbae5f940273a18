//! Helpers of the gradient tests: the seeded random tensors of `lucir-tensor`'s tests (one
//! file, included here) and the gradient-check asserts. The workspace's cross-crate tests
//! include this file too.
#![allow(dead_code)]

#[path = "../../../lucir-tensor/tests/common/mod.rs"]
mod random;

pub use random::*;

use lucir_autograd::gradcheck::{self, Options};
use lucir_autograd::{Result, Tape, Var};
use lucir_tensor::Tensor;

/// Relative error every gradient check must meet.
pub const GRAD_TOL: f64 = 1e-6;

/// Runs a full gradient check of `f` over `inputs` and asserts every input's relative error.
pub fn assert_grads<F>(op: &str, inputs: &[Tensor<f64>], f: F)
where
    F: Fn(&mut Tape<f64>, &[Var]) -> Result<Var>,
{
    assert_grads_with(op, inputs, f, &Options::default())
}

/// [`assert_grads`] with explicit options.
pub fn assert_grads_with<F>(op: &str, inputs: &[Tensor<f64>], f: F, opts: &Options)
where
    F: Fn(&mut Tape<f64>, &[Var]) -> Result<Var>,
{
    let reports = gradcheck::check(inputs, f, opts).unwrap();
    for (i, r) in reports.iter().enumerate() {
        assert!(
            r.rel_error <= GRAD_TOL,
            "{op}: input {i} (shape {:?}) gradient relative error {:.3e} > {GRAD_TOL:e} \
             (max |grad| {:.3e}, {} elements checked)",
            inputs[i].shape(),
            r.rel_error,
            r.max_abs_grad,
            r.checked
        );
    }
}
