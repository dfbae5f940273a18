//! The checks of `conv2d_winograd.rs` with Winograd F(4×4, 3×3) (`Conv3x3::Winograd4`, set for
//! this whole test binary), against the f64 reference with the bound [`TOL`].
//!
//! On a CPU without AVX-512 the setting has no effect and these check what runs there (and say
//! so): the AVX2 direct kernels where the CPU has AVX2, else the gemm path.

mod common;
#[macro_use]
mod conv_cases;

use lucir_tensor::Conv3x3;

/// The relative error bound (of the largest value) F(4×4, 3×3) is held to, the direct
/// kernels' bound; docs/perf.md §37 gives the errors measured on every layer shape.
const TOL: f64 = 1e-4;

winograd_tests!(Conv3x3::Winograd4, TOL);
