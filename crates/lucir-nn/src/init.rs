//! Seeded parameter initialisers (docs/design.md §3): Kaiming-normal (fan-out) for convolutions,
//! uniform ±1/√fan-in for linear and cosine layers.

use lucir_tensor::{Float, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A seeded source of initial values; the same seed gives the same network.
#[derive(Debug, Clone)]
pub struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    /// An initialiser seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Normal(0, std²) values.
    pub fn normal<T: Float>(&mut self, shape: &[usize], std: f64) -> Tensor<T> {
        let n: usize = shape.iter().product();
        // A non-finite std (only from a degenerate shape) gives zeros.
        let std = if std.is_finite() { std.max(0.0) } else { 0.0 };
        let dist = Normal::new(0.0, std).expect("a finite, non-negative std is valid");
        let data = (0..n).map(|_| T::of(dist.sample(&mut self.rng))).collect();
        Tensor::from_vec(shape, data).expect("element count equals the shape's product")
    }

    /// Uniform(−bound, bound) values.
    pub fn uniform<T: Float>(&mut self, shape: &[usize], bound: f64) -> Tensor<T> {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| T::of(self.rng.random_range(-1.0..1.0) * bound))
            .collect();
        Tensor::from_vec(shape, data).expect("element count equals the shape's product")
    }

    /// Kaiming-normal with fan-out mode for a Co×Ci×KH×KW convolution weight.
    pub fn kaiming_conv<T: Float>(&mut self, shape: [usize; 4]) -> Tensor<T> {
        let fan_out = (shape[0] * shape[2] * shape[3]).max(1);
        self.normal(&shape, (2.0 / fan_out as f64).sqrt())
    }
}
