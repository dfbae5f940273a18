//! The f32 checks of `conv2d_f32.rs` with the 3×3 stride-1 convolutions run as Winograd's
//! (`Conv3x3::Winograd`, set for this whole test binary): every layer shape of the ResNets,
//! odd batches (1, 3, 21), odd sides, channel counts off the register blocks, the fused input
//! map and gradient addition (bit for bit as the unfused operations), and random shapes,
//! against the f64 reference with the bound [`TOL`].
//!
//! On a CPU without AVX-512 the setting has no effect and these check the gemm path (and say
//! so).

mod common;
mod conv_cases;

use lucir_tensor::{set_conv3x3, Conv3x3};

/// The relative error bound (of the largest value) Winograd is held to, the direct kernels'
/// bound: on `same_convolutions`' shapes (inputs in [−1, 1], up to 256 input channels) the
/// largest error measured was 1.3e-6, against the direct kernels' 1.9e-6 (docs/perf.md §36).
const TOL: f64 = 1e-4;

fn winograd() {
    set_conv3x3(Conv3x3::Winograd);
    assert_eq!(lucir_tensor::conv3x3(), Conv3x3::Winograd);
}

#[test]
fn winograd_same_convolutions_match_the_reference() {
    winograd();
    conv_cases::same_convolutions(TOL);
}

/// Odd batches through Winograd's layers (the shared shapes' batch of 21 is a stem's, which
/// stays direct), with images that fill a group's vectors unevenly (8×8: 20 tiles each, four
/// to a group, so 21 images end in a group of one), odd and even sides, channel counts off the
/// register blocks.
#[test]
fn winograd_odd_batches_match_the_reference() {
    winograd();
    let shapes = [
        (21, 16, 16, 28, 28),
        (21, 32, 32, 14, 14),
        (21, 64, 64, 7, 7),
        (21, 64, 64, 8, 8),
        (3, 16, 24, 8, 8),
        (1, 17, 9, 5, 6),
        (3, 20, 33, 6, 5),
    ];
    conv_cases::same_shapes(&shapes, 15, TOL);
}

#[test]
fn winograd_mapped_convolutions_equal_map_then_convolve() {
    winograd();
    conv_cases::mapped_convolutions();
}

#[test]
fn winograd_backward_into_a_gradient_equals_adding_afterwards() {
    winograd();
    conv_cases::backward_into_a_gradient();
}

#[test]
fn winograd_matches_the_reference_on_random_shapes() {
    winograd();
    // Input channels from 16, where the 3×3 stride-1 layers run Winograd's kernels.
    conv_cases::random_shapes(16..=40, TOL);
}

/// The setting shows in the name of the CPU kernels a run records (so a resume with the other
/// one is refused), where the CPU runs it.
#[test]
fn winograd_is_named_in_the_kernel_path() {
    winograd();
    let path = lucir_tensor::kernel_path();
    assert_eq!(
        path.ends_with("+winograd"),
        Conv3x3::Winograd.available(),
        "{path}"
    );
}
