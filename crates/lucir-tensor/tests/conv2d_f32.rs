//! The f32 convolution paths against the f64 reference: every 3×3 "same" layer shape of the
//! CIFAR ResNets, ResNet-18's 3×3 stride-1 layers, the stride-2 3×3 and 1×1 layers of both,
//! the stems (1 and 3 input channels), odd batch sizes, plane sizes that end a 16-position
//! vector (and a 16×16 transpose block) anywhere, channel counts that leave partial 8-channel
//! blocks, odd input-channel counts and output channels that are not a multiple of 16; forward,
//! backward and the weight-only backward of a first layer, relative error ≤ 1e-4 of the
//! largest value; then random shapes of the same layer families, the fused input map and the
//! fused gradient addition included.
//!
//! On a CPU with AVX-512 these run the direct kernels (the checks live in `conv_cases`, shared
//! with `conv2d_winograd.rs`); on one with AVX2 and FMA only, the AVX2 direct kernels (and
//! say so). Elsewhere the comparisons
//! with the reference check the gemm path instead (and say so), and the tests whose two sides
//! would both be the gemm path print that they are skipped.

mod common;
mod conv_cases;

#[test]
fn f32_same_convolutions_match_the_reference() {
    conv_cases::same_convolutions(1e-4);
}

#[test]
fn f32_stride_2_convolutions_match_the_reference() {
    conv_cases::stride_2_convolutions(1e-4);
}

#[test]
fn f32_mapped_convolutions_equal_map_then_convolve() {
    conv_cases::mapped_convolutions();
}

#[test]
fn f32_backward_into_a_gradient_equals_adding_afterwards() {
    conv_cases::backward_into_a_gradient();
}

#[test]
fn f32_direct_kernels_match_the_reference_on_random_shapes() {
    conv_cases::random_shapes(1..=20, 1e-4);
}
