//! Seeded random tensors for the tests of every crate: uniform values, values kept away from
//! ReLU's kink, and distinct values (no ties); and the relative error the comparisons use. The
//! one place these helpers live; the autograd tests and the workspace's cross-crate tests
//! include this file too.
#![allow(dead_code)]

use lucir_tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// Largest difference relative to the larger of 1 and the reference's largest magnitude: the
/// inputs are O(1), so an output that happens to be tiny (batch norm over one element per
/// channel gives β) is compared absolutely.
pub fn max_rel(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b.as_slice().iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}
