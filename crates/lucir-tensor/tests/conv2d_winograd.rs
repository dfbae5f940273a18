//! The f32 checks of `conv2d_f32.rs` with the 3×3 stride-1 convolutions run as Winograd
//! F(2×2, 3×3)'s (`Conv3x3::Winograd`, set for this whole test binary): every layer shape of
//! the ResNets, odd batches (1, 3, 21), odd sides, channel counts off the register blocks, the
//! fused input map and gradient addition (bit for bit as the unfused operations), and random
//! shapes, against the f64 reference with the bound [`TOL`].
//!
//! On a CPU without AVX-512 the setting has no effect and these check what runs there (and say
//! so): the AVX2 direct kernels where the CPU has AVX2, else the gemm path.

mod common;
#[macro_use]
mod conv_cases;

use lucir_tensor::Conv3x3;

/// The relative error bound (of the largest value) Winograd is held to, the direct kernels'
/// bound: on `same_convolutions`' shapes (inputs in [−1, 1], up to 256 input channels) the
/// largest error measured was 1.3e-6, against the direct kernels' 1.9e-6 (docs/perf.md §36).
const TOL: f64 = 1e-4;

winograd_tests!(Conv3x3::Winograd, TOL);
