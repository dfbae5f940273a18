//! Inputs shared by the CPU benchmarks.

use lucir::tensor::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A tensor of `shape` with values drawn uniformly from [-1, 1).
pub fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<f32> {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()).unwrap()
}
