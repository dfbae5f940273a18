//! The f32 convolution checks shared by the test binaries of each 3×3 algorithm
//! (`conv2d_f32.rs`: the direct kernels; `conv2d_winograd.rs` and `conv2d_winograd4.rs`: the
//! Winograd settings, whose tests `winograd.rs` writes once): each check with the
//! relative error bound `tol` its algorithm is held to.
#![allow(dead_code, unused_macros)]

#[macro_use]
mod winograd;

use crate::common::{max_rel, rng, uniform};
use lucir_tensor::{
    channel_map, conv2d, conv2d_bwd, conv2d_bwd_add, conv2d_bwd_data, conv2d_bwd_ref,
    conv2d_bwd_weight, conv2d_mapped, conv2d_mapped_bwd, conv2d_ref, Avx2Fma, Avx512, ChannelMap,
    Conv2dGeometry, Tensor,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Whether the direct kernels run on this CPU (with AVX-512; or their AVX2 version, with AVX2
/// and FMA, which the note says); if not, prints what
/// `test` does instead: `skipped: …` when it would compare the gemm path with itself
/// (`gemm_only`), a note that the gemm path is checked when it compares with the reference.
pub fn direct_kernels_run(test: &str, gemm_only: bool) -> bool {
    if Avx512::detect().is_some() {
        return true;
    }
    if Avx2Fma::detect().is_some() {
        eprintln!("{test}: no AVX-512: checks the AVX2 direct kernels");
        return true;
    }
    if gemm_only {
        eprintln!("skipped: {test}: no AVX-512, so both sides would be the gemm path");
    } else {
        eprintln!("{test}: no AVX-512: checks the gemm path, not the direct kernels");
    }
    false
}

/// Checks forward, backward and weight-only backward of one convolution against the f64
/// reference, relative error ≤ `tol` of the largest value.
fn check(
    r: &mut rand_chacha::ChaCha8Rng,
    (n, ci, co, h, w): (usize, usize, usize, usize, usize),
    k: usize,
    g: Conv2dGeometry,
    tol: f64,
) {
    let x = uniform(r, &[n, ci, h, w], -1.0, 1.0);
    let kernel = uniform(r, &[co, ci, k, k], -1.0, 1.0);
    let y_ref = conv2d_ref(&x, &kernel, g).unwrap();
    let dy = uniform(r, y_ref.shape(), -1.0, 1.0);
    let (xf, kf, dyf) = (x.cast::<f32>(), kernel.cast::<f32>(), dy.cast::<f32>());
    let what = format!("{n}×{ci}×{h}×{w} → {co}, {k}×{k}/{}", g.stride);
    let y = conv2d(&xf, &kf, g).unwrap();
    let e = max_rel(&y.cast(), &y_ref);
    assert!(e <= tol, "forward {what}: {e:e}");
    let (dx, dw) = conv2d_bwd(&xf, &kf, &dyf, g).unwrap();
    let (dx_ref, dw_ref) = conv2d_bwd_ref(&x, &kernel, &dy, g).unwrap();
    let (ex, ew) = (max_rel(&dx.cast(), &dx_ref), max_rel(&dw.cast(), &dw_ref));
    assert!(ex <= tol && ew <= tol, "backward {what}: {ex:e} {ew:e}");
    let dw_only = conv2d_bwd_weight(&xf, &kf, &dyf, g).unwrap();
    let e = max_rel(&dw_only.cast(), &dw_ref);
    assert!(e <= tol, "weight gradient {what}: {e:e}");
}

/// [`check`] of each 3×3 "same" convolution of `shapes` (N, Ci, Co, H, W), inputs drawn from
/// `seed`.
pub fn same_shapes(shapes: &[(usize, usize, usize, usize, usize)], seed: u64, tol: f64) {
    let g = Conv2dGeometry { stride: 1, pad: 1 };
    let mut r = rng(seed);
    for &shape in shapes {
        check(&mut r, shape, 3, g, tol);
    }
}

pub fn same_convolutions(tol: f64) {
    direct_kernels_run("f32_same_convolutions_match_the_reference", false);
    let g = Conv2dGeometry { stride: 1, pad: 1 };
    // (N, Ci, Co, H, W)
    let shapes = [
        (3, 16, 16, 28, 28),
        (1, 32, 32, 14, 14),
        (3, 64, 64, 7, 7),
        (21, 1, 16, 28, 28),
        (3, 3, 16, 32, 32),
        (2, 16, 16, 32, 32),
        (1, 32, 32, 16, 16),
        (3, 5, 11, 9, 17),
        (1, 4, 9, 3, 31),
        (2, 7, 3, 12, 12),
        (1, 2, 13, 1, 13),
        (1, 64, 64, 56, 56),
        (1, 128, 128, 28, 28),
        (1, 256, 256, 14, 14),
        (1, 24, 20, 11, 11),
        (2, 9, 17, 12, 13),
        (2, 3, 8, 40, 37),
    ];
    let mut r = rng(11);
    for shape in shapes {
        check(&mut r, shape, 3, g, tol);
    }
}

/// The stride-2 layers: the downsampling 3×3 (padding 1) and projection 1×1 (no padding) of
/// the CIFAR ResNets on 28×28 and 32×32 inputs and of ResNet-18, odd batches, odd sides (the
/// odd phases one row or column short), sides of 1 and 2, channel counts off the 8/16 blocks.
pub fn stride_2_convolutions(tol: f64) {
    direct_kernels_run("f32_stride_2_convolutions_match_the_reference", false);
    // (N, Ci, Co, H, W)
    let shapes = [
        (3, 16, 32, 28, 28),
        (1, 32, 64, 14, 14),
        (2, 16, 32, 32, 32),
        (3, 32, 64, 16, 16),
        (1, 64, 128, 56, 56),
        (1, 128, 256, 28, 28),
        (1, 256, 512, 14, 14),
        (21, 3, 16, 7, 7),
        (1, 5, 11, 9, 17),
        (2, 7, 3, 13, 12),
        (1, 2, 13, 1, 1),
        (3, 4, 9, 2, 2),
        (1, 24, 40, 31, 33),
    ];
    let mut r = rng(12);
    for shape in shapes {
        check(&mut r, shape, 3, Conv2dGeometry { stride: 2, pad: 1 }, tol);
        check(&mut r, shape, 1, Conv2dGeometry { stride: 2, pad: 0 }, tol);
    }
}

/// A convolution reading its input through a per-channel map (batch norm, ReLU or not) gives
/// the bits of the map applied first and the plain convolution after, forward and backward:
/// the direct kernels apply the map while copying into their planes, the other shapes (stride
/// 2 here) materialise it.
pub fn mapped_convolutions() {
    if !direct_kernels_run("f32_mapped_convolutions_equal_map_then_convolve", true) {
        return;
    }
    // (N, Ci, Co, H, W, stride)
    let shapes = [
        (3, 16, 16, 28, 28, 1),
        (2, 32, 32, 14, 14, 1),
        (3, 64, 64, 7, 7, 1),
        (1, 5, 11, 9, 17, 1),
        (2, 16, 32, 28, 28, 2),
    ];
    let mut r = rng(13);
    for (n, ci, co, h, w, stride) in shapes {
        let g = Conv2dGeometry { stride, pad: 1 };
        let x = uniform(&mut r, &[n, ci, h, w], -2.0, 2.0).cast::<f32>();
        let k = uniform(&mut r, &[co, ci, 3, 3], -1.0, 1.0).cast::<f32>();
        let scale = uniform(&mut r, &[ci], 0.5, 1.5).into_vec();
        let shift = uniform(&mut r, &[ci], -0.5, 0.5).into_vec();
        for relu in [false, true] {
            let map = ChannelMap {
                scale: scale.iter().map(|v| *v as f32).collect(),
                shift: shift.iter().map(|v| *v as f32).collect(),
                relu,
            };
            let what = format!("{n}×{ci}×{h}×{w} → {co}, stride {stride}, relu {relu}");
            let mapped = channel_map(&x, &map).unwrap();
            let y = conv2d_mapped(&x, &map, &k, g).unwrap();
            let y_ref = conv2d(&mapped, &k, g).unwrap();
            assert_eq!(y.as_slice(), y_ref.as_slice(), "forward {what}");
            let dy = uniform(&mut r, y.shape(), -1.0, 1.0).cast::<f32>();
            let (dm, dw) = conv2d_mapped_bwd(&x, &map, &k, &dy, g).unwrap();
            let (dm_ref, dw_ref) = conv2d_bwd(&mapped, &k, &dy, g).unwrap();
            assert_eq!(dm.as_slice(), dm_ref.as_slice(), "input gradient {what}");
            assert_eq!(dw.as_slice(), dw_ref.as_slice(), "weight gradient {what}");
        }
    }
}

/// The backward pass that adds its input gradient into an existing one gives the bits of
/// computing it and adding afterwards (stride 1 and 2, 3×3 and 1×1, odd sizes); the input
/// gradient alone (`conv2d_bwd_data`, for timing) is the backward pass's, bit for bit, in f32
/// and in f64 (the gemm path).
pub fn backward_into_a_gradient() {
    if !direct_kernels_run(
        "f32_backward_into_a_gradient_equals_adding_afterwards",
        true,
    ) {
        return;
    }
    // (N, Ci, Co, H, W, k, stride)
    let shapes = [
        (3, 16, 16, 28, 28, 3, 1),
        (2, 16, 32, 28, 28, 3, 2),
        (2, 16, 32, 28, 28, 1, 2),
        (1, 5, 11, 9, 17, 3, 1),
        (3, 7, 3, 13, 12, 3, 2),
        (2, 4, 6, 5, 5, 1, 1),
    ];
    let mut r = rng(14);
    for (n, ci, co, h, w, k, stride) in shapes {
        let g = Conv2dGeometry { stride, pad: k / 2 };
        let x = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0).cast::<f32>();
        let kernel = uniform(&mut r, &[co, ci, k, k], -1.0, 1.0).cast::<f32>();
        let dy = uniform(&mut r, conv2d(&x, &kernel, g).unwrap().shape(), -1.0, 1.0).cast::<f32>();
        let acc = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0).cast::<f32>();
        let (dx, dw) = conv2d_bwd(&x, &kernel, &dy, g).unwrap();
        let mut want = acc.clone();
        want.add_assign(&dx).unwrap();
        let (got, dw_got) = conv2d_bwd_add(&x, &kernel, &dy, g, acc).unwrap();
        let what = format!("{n}×{ci}×{h}×{w} → {co}, {k}×{k}/{stride}");
        assert_eq!(got.as_slice(), want.as_slice(), "input gradient {what}");
        assert_eq!(dw_got.as_slice(), dw.as_slice(), "weight gradient {what}");
        let alone = conv2d_bwd_data(&x, &kernel, &dy, g).unwrap();
        assert_eq!(
            alone.as_slice(),
            dx.as_slice(),
            "input gradient alone {what}"
        );
        let (x64, k64, dy64) = (x.cast::<f64>(), kernel.cast::<f64>(), dy.cast::<f64>());
        let (dx64, _) = conv2d_bwd(&x64, &k64, &dy64, g).unwrap();
        let alone64 = conv2d_bwd_data(&x64, &k64, &dy64, g).unwrap();
        assert_eq!(
            alone64.as_slice(),
            dx64.as_slice(),
            "f64 input gradient alone {what}"
        );
    }
}

/// The input map and the gradient addition that the direct kernels fuse, against the f64
/// reference: `conv2d_mapped` against `conv2d_ref` of the mapped input (the map's parameters
/// are f32 values, so both sides map with the same factors), its backward pass against
/// `conv2d_bwd_ref` of the mapped input, and `conv2d_bwd_add` against `acc + dx_ref`; relative
/// error ≤ `tol` of the largest value.
fn check_fused(
    r: &mut rand_chacha::ChaCha8Rng,
    (n, ci, co, h, w): (usize, usize, usize, usize, usize),
    k: usize,
    g: Conv2dGeometry,
    relu: bool,
    tol: f64,
) {
    let f32_exact = |t: Tensor<f64>| t.cast::<f32>().cast::<f64>();
    let x = f32_exact(uniform(r, &[n, ci, h, w], -2.0, 2.0));
    let kernel = f32_exact(uniform(r, &[co, ci, k, k], -1.0, 1.0));
    let map = ChannelMap {
        scale: f32_exact(uniform(r, &[ci], 0.5, 1.5)).into_vec(),
        shift: f32_exact(uniform(r, &[ci], -0.5, 0.5)).into_vec(),
        relu,
    };
    let map_f = ChannelMap {
        scale: map.scale.iter().map(|v| *v as f32).collect(),
        shift: map.shift.iter().map(|v| *v as f32).collect(),
        relu,
    };
    let mapped = channel_map(&x, &map).unwrap();
    let y_ref = conv2d_ref(&mapped, &kernel, g).unwrap();
    let dy = uniform(r, y_ref.shape(), -1.0, 1.0);
    let acc = uniform(r, x.shape(), -1.0, 1.0);
    let (xf, kf, dyf) = (x.cast::<f32>(), kernel.cast::<f32>(), dy.cast::<f32>());
    let what = format!("{n}×{ci}×{h}×{w} → {co}, {k}×{k}/{}, relu {relu}", g.stride);

    let y = conv2d_mapped(&xf, &map_f, &kf, g).unwrap();
    let e = max_rel(&y.cast(), &y_ref);
    assert!(e <= tol, "mapped forward {what}: {e:e}");
    let (dm, dw) = conv2d_mapped_bwd(&xf, &map_f, &kf, &dyf, g).unwrap();
    let (dm_ref, dw_ref) = conv2d_bwd_ref(&mapped, &kernel, &dy, g).unwrap();
    let (em, ew) = (max_rel(&dm.cast(), &dm_ref), max_rel(&dw.cast(), &dw_ref));
    assert!(
        em <= tol && ew <= tol,
        "mapped backward {what}: {em:e} {ew:e}"
    );

    let (sum, dw) = conv2d_bwd_add(&xf, &kf, &dyf, g, acc.cast::<f32>()).unwrap();
    let (dx_ref, dw_ref) = conv2d_bwd_ref(&x, &kernel, &dy, g).unwrap();
    let mut sum_ref = acc;
    sum_ref.add_assign(&dx_ref).unwrap();
    let (es, ew) = (max_rel(&sum.cast(), &sum_ref), max_rel(&dw.cast(), &dw_ref));
    assert!(
        es <= tol && ew <= tol,
        "backward into a gradient {what}: {es:e} {ew:e}"
    );
}

/// Random shapes of the three layer families the direct kernels take — 3×3 stride 1 padding
/// 1, 3×3 stride 2 padding 1, 1×1 stride 2 no padding — with 1–4 images, input channels from
/// `ci`, 1–40 output channels and sides of 1–24: forward, backward and weight-only backward
/// ([`check`]), the fused input map with and without ReLU and the fused gradient addition
/// ([`check_fused`]), against the f64 reference. 32 cases.
pub fn random_shapes(ci: std::ops::RangeInclusive<usize>, tol: f64) {
    if !direct_kernels_run(
        "f32_direct_kernels_match_the_reference_on_random_shapes",
        true,
    ) {
        return;
    }
    let families = [(3, 1, 1), (3, 2, 1), (1, 2, 0)];
    let shapes = (
        0..3usize,
        1..=4usize,
        ci,
        1..=40usize,
        1..=24usize,
        1..=24usize,
    );
    let mut runner = TestRunner::new(Config::with_cases(32));
    runner
        .run(
            &(shapes, any::<bool>(), any::<u64>()),
            |((family, n, ci, co, h, w), relu, seed)| {
                let (k, stride, pad) = families[family];
                let g = Conv2dGeometry { stride, pad };
                let mut r = rng(seed);
                check(&mut r, (n, ci, co, h, w), k, g, tol);
                check_fused(&mut r, (n, ci, co, h, w), k, g, relu, tol);
                Ok(())
            },
        )
        .unwrap();
}
