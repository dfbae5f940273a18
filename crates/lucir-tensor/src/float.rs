//! The element types tensors may hold: f32 for training, f64 for gradient checks.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type supported by every op (implemented for `f32` and `f64` only,
/// the two types the `gemm` crate has fast kernels for).
pub trait Float:
    num_traits::Float
    + sealed::Sealed
    + Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Converts from f64 (rounding for f32).
    fn of(v: f64) -> Self;
    /// Widens to f64 (exact).
    fn as_f64(self) -> f64;
    /// Converts a count to this type.
    fn of_usize(v: usize) -> Self {
        Self::of(v as f64)
    }
    /// The slice itself when this type is f32 (for the f32-only direct kernels), else `None`.
    fn f32_slice(s: &[Self]) -> Option<&[f32]>;
    /// The slice itself, mutable, when this type is f32, else `None`.
    fn f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// The vector itself when this type is f32, else `None`.
    fn from_f32_vec(v: Vec<f32>) -> Option<Vec<Self>>;
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    fn of(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn f32_slice(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn from_f32_vec(v: Vec<f32>) -> Option<Vec<Self>> {
        Some(v)
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    fn of(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn f32_slice_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn from_f32_vec(_: Vec<f32>) -> Option<Vec<Self>> {
        None
    }
}
