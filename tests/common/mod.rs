//! Helpers shared by the cross-crate tests: seeded random tensors and gradient-check asserts.
#![allow(dead_code)]

use lucir::autograd::gradcheck::{self, Options};
use lucir::autograd::{Result, Tape, Var};
use lucir::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Relative error every gradient check must meet.
pub const GRAD_TOL: f64 = 1e-6;

/// A seeded generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [lo, hi).
pub fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor<f64> {
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(shape, data).unwrap()
}

/// Values with magnitude in [0.05, 1) and random sign: away from ReLU's kink at 0.
pub fn away_from_zero(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor<f64> {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let m = rng.random_range(0.05..1.0);
            if rng.random_bool(0.5) {
                m
            } else {
                -m
            }
        })
        .collect();
    Tensor::from_vec(shape, data).unwrap()
}

/// Distinct values 0.01 apart in random order (no ties for max pooling or top-k).
pub fn distinct(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    let mut data: Vec<f64> = (0..n).map(|i| i as f64 * 0.01 - 0.005 * n as f64).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        data.swap(i, j);
    }
    Tensor::from_vec(shape, data).unwrap()
}

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
