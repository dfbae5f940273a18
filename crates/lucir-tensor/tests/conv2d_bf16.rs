//! The bf16 kernels (`Precision::Bf16`, set for this whole test binary) of the 3×3 stride-1
//! layers with 16 or more input channels: forward, input gradient and weight gradient against
//! the f64 reference on the bf16 roundings of their operands — what the kernels compute, up to
//! the f32 sums' rounding — and against the reference on the unrounded operands, within the
//! bound that bf16's 8-bit significand gives. Every such ResNet layer shape, odd batches (1, 3,
//! 21), odd channel counts (a pair plane with one channel), sides off the vectors, the fused
//! input map, gradient addition, and random shapes.
//!
//! Winograd (`Conv3x3::Winograd`) is set as well, for the whole binary: bf16 takes its layers,
//! so every check here also shows that it does (Winograd's results would miss the rounded
//! reference by far more than [`TOL_ROUNDED`]).
//!
//! On a CPU without AVX512-BF16 the setting has no effect; each test says `skipped: …`.

mod common;

use common::{max_rel, rng, uniform};
use half::bf16;
use lucir_tensor::{
    channel_map, conv2d, conv2d_bwd, conv2d_bwd_add, conv2d_bwd_data, conv2d_bwd_ref,
    conv2d_bwd_weight, conv2d_mapped, conv2d_mapped_bwd, conv2d_ref, ChannelMap, Conv2dGeometry,
    Conv3x3, Precision, Tensor,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const SAME: Conv2dGeometry = Conv2dGeometry { stride: 1, pad: 1 };

/// The f32 sums' error relative to the largest value, as the f32 kernels' (`conv2d_f32.rs`):
/// on the rounded operands the bf16 kernels differ from the reference only by the order and
/// rounding of their f32 sums.
const TOL_ROUNDED: f64 = 1e-4;

/// Sets bf16 (and Winograd) for this test binary; false (after saying so) where the CPU lacks
/// bf16.
fn bf16_runs(test: &str) -> bool {
    lucir_tensor::set_conv3x3(Conv3x3::Winograd);
    lucir_tensor::set_precision(Precision::Bf16);
    assert_eq!(lucir_tensor::precision(), Precision::Bf16);
    if Precision::Bf16.available() {
        return true;
    }
    eprintln!("skipped: {test}: no AVX512-BF16 on this CPU");
    false
}

/// Each value rounded to bf16 (nearest, ties to even), as the kernels round their operands.
fn rounded(t: &Tensor<f64>) -> Tensor<f64> {
    let v = t.as_slice().iter();
    let v = v.map(|x| f64::from(bf16::from_f32(*x as f32).to_f32()));
    Tensor::from_vec(t.shape(), v.collect()).unwrap()
}

/// Each value's magnitude.
fn abs(t: &Tensor<f64>) -> Tensor<f64> {
    Tensor::from_vec(t.shape(), t.as_slice().iter().map(|v| v.abs()).collect()).unwrap()
}

/// Asserts `got` is within the bf16 bound of `exact`: bf16 keeps 8 significant bits, so each
/// term `a·b` of a sum becomes `(a + δa)(b + δb)` with `|δ| ≤ 2⁻⁸` of its operand (the unit
/// roundoff), and a sum of `terms` products moves by at most `(2⁻⁷ + 2⁻¹⁶)·Σ|a||b|` (`mag`)
/// from rounding the operands, plus `terms·2⁻²⁴·Σ|a||b|` (one f32 rounding per addition),
/// doubled for slack.
fn within_bf16_bound(got: &Tensor<f64>, exact: &Tensor<f64>, mag: &Tensor<f64>, terms: usize) {
    let unit = 2f64.powi(-7) + 2f64.powi(-16) + 2.0 * terms as f64 * 2f64.powi(-24);
    let slices = got
        .as_slice()
        .iter()
        .zip(exact.as_slice())
        .zip(mag.as_slice());
    for (i, ((g, e), m)) in slices.enumerate() {
        assert!(
            (g - e).abs() <= unit * m,
            "element {i}: {g} vs {e}, bound {}",
            unit * m
        );
    }
}

/// Forward, backward and weight-only backward of one 3×3 "same" convolution: against the
/// reference on the rounded operands (relative error ≤ [`TOL_ROUNDED`]) and on the exact ones
/// (each element within [`within_bf16_bound`]).
fn check(r: &mut rand_chacha::ChaCha8Rng, (n, ci, co, h, w): (usize, usize, usize, usize, usize)) {
    let x = uniform(r, &[n, ci, h, w], -1.0, 1.0)
        .cast::<f32>()
        .cast::<f64>();
    let k = uniform(r, &[co, ci, 3, 3], -1.0, 1.0)
        .cast::<f32>()
        .cast::<f64>();
    let dy = uniform(r, &[n, co, h, w], -1.0, 1.0)
        .cast::<f32>()
        .cast::<f64>();
    let (xr, kr, dyr) = (rounded(&x), rounded(&k), rounded(&dy));
    let (xf, kf, dyf) = (x.cast::<f32>(), k.cast::<f32>(), dy.cast::<f32>());
    let what = format!("{n}×{ci}×{h}×{w} → {co}");

    let y = conv2d(&xf, &kf, SAME).unwrap().cast::<f64>();
    let e = max_rel(&y, &conv2d_ref(&xr, &kr, SAME).unwrap());
    assert!(e <= TOL_ROUNDED, "forward {what}: {e:e}");
    let mag = conv2d_ref(&abs(&x), &abs(&k), SAME).unwrap();
    within_bf16_bound(&y, &conv2d_ref(&x, &k, SAME).unwrap(), &mag, ci * 9);

    let (dx, dw) = conv2d_bwd(&xf, &kf, &dyf, SAME).unwrap();
    let (dx, dw) = (dx.cast::<f64>(), dw.cast::<f64>());
    let (dx_r, dw_r) = conv2d_bwd_ref(&xr, &kr, &dyr, SAME).unwrap();
    let (ex, ew) = (max_rel(&dx, &dx_r), max_rel(&dw, &dw_r));
    assert!(
        ex <= TOL_ROUNDED && ew <= TOL_ROUNDED,
        "backward {what}: {ex:e} {ew:e}"
    );
    let (dx_e, dw_e) = conv2d_bwd_ref(&x, &k, &dy, SAME).unwrap();
    let (dx_m, dw_m) = conv2d_bwd_ref(&abs(&x), &abs(&k), &abs(&dy), SAME).unwrap();
    within_bf16_bound(&dx, &dx_e, &dx_m, co * 9);
    within_bf16_bound(&dw, &dw_e, &dw_m, n * h * w);

    let dw_only = conv2d_bwd_weight(&xf, &kf, &dyf, SAME)
        .unwrap()
        .cast::<f64>();
    assert_eq!(
        dw_only.as_slice(),
        dw.as_slice(),
        "weight gradient alone {what}"
    );
    let dx_only = conv2d_bwd_data(&xf, &kf, &dyf, SAME).unwrap().cast::<f64>();
    assert_eq!(
        dx_only.as_slice(),
        dx.as_slice(),
        "input gradient alone {what}"
    );
}

#[test]
fn bf16_layer_shapes_match_the_reference() {
    if !bf16_runs("bf16_layer_shapes_match_the_reference") {
        return;
    }
    // (N, Ci, Co, H, W): the 3×3 stride-1 layers of ResNet-20/32/56 on 28×28 and 32×32
    // inputs and of ResNet-18 (batch 1 for the large ones), then odd batches and sizes.
    let shapes = [
        (3, 16, 16, 28, 28),
        (3, 32, 32, 14, 14),
        (3, 64, 64, 7, 7),
        (2, 16, 16, 32, 32),
        (1, 32, 32, 16, 16),
        (3, 64, 64, 8, 8),
        (1, 64, 64, 56, 56),
        (1, 128, 128, 28, 28),
        (1, 256, 256, 14, 14),
        (1, 512, 512, 7, 7),
        (21, 16, 16, 28, 28),
        (21, 64, 64, 7, 7),
        (1, 17, 9, 5, 6),
        (3, 20, 33, 6, 5),
        (1, 16, 16, 1, 9),
        (2, 16, 5, 13, 11),
        (3, 31, 16, 9, 17),
    ];
    let mut r = rng(21);
    for shape in shapes {
        check(&mut r, shape);
    }
}

/// A convolution reading its input through a per-channel map gives the bits of the map
/// applied first and the plain convolution after (the kernels round the mapped value).
#[test]
fn bf16_mapped_convolutions_equal_map_then_convolve() {
    if !bf16_runs("bf16_mapped_convolutions_equal_map_then_convolve") {
        return;
    }
    let mut r = rng(22);
    for (n, ci, co, h, w) in [(3, 16, 16, 28, 28), (2, 33, 17, 7, 9), (3, 64, 64, 7, 7)] {
        let x = uniform(&mut r, &[n, ci, h, w], -2.0, 2.0).cast::<f32>();
        let k = uniform(&mut r, &[co, ci, 3, 3], -1.0, 1.0).cast::<f32>();
        let dy = uniform(&mut r, &[n, co, h, w], -1.0, 1.0).cast::<f32>();
        let scale = uniform(&mut r, &[ci], 0.5, 1.5).cast::<f32>().into_vec();
        let shift = uniform(&mut r, &[ci], -0.5, 0.5).cast::<f32>().into_vec();
        for relu in [false, true] {
            let map = ChannelMap {
                scale: scale.clone(),
                shift: shift.clone(),
                relu,
            };
            let what = format!("{n}×{ci}×{h}×{w} → {co}, relu {relu}");
            let mapped = channel_map(&x, &map).unwrap();
            let y = conv2d_mapped(&x, &map, &k, SAME).unwrap();
            assert_eq!(
                y.as_slice(),
                conv2d(&mapped, &k, SAME).unwrap().as_slice(),
                "{what}"
            );
            let (dm, dw) = conv2d_mapped_bwd(&x, &map, &k, &dy, SAME).unwrap();
            let (dm_ref, dw_ref) = conv2d_bwd(&mapped, &k, &dy, SAME).unwrap();
            assert_eq!(dm.as_slice(), dm_ref.as_slice(), "input gradient {what}");
            assert_eq!(dw.as_slice(), dw_ref.as_slice(), "weight gradient {what}");
        }
    }
}

/// The backward pass that adds its input gradient into an existing one gives the bits of
/// computing it and adding afterwards.
#[test]
fn bf16_backward_into_a_gradient_equals_adding_afterwards() {
    if !bf16_runs("bf16_backward_into_a_gradient_equals_adding_afterwards") {
        return;
    }
    let mut r = rng(23);
    for (n, ci, co, h, w) in [(3, 16, 16, 28, 28), (2, 17, 33, 5, 7)] {
        let x = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0).cast::<f32>();
        let k = uniform(&mut r, &[co, ci, 3, 3], -1.0, 1.0).cast::<f32>();
        let dy = uniform(&mut r, &[n, co, h, w], -1.0, 1.0).cast::<f32>();
        let acc = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0).cast::<f32>();
        let (dx, dw) = conv2d_bwd(&x, &k, &dy, SAME).unwrap();
        let mut want = acc.clone();
        want.add_assign(&dx).unwrap();
        let (got, dw_got) = conv2d_bwd_add(&x, &k, &dy, SAME, acc).unwrap();
        assert_eq!(got.as_slice(), want.as_slice(), "{n}×{ci}×{h}×{w} → {co}");
        assert_eq!(dw_got.as_slice(), dw.as_slice(), "{n}×{ci}×{h}×{w} → {co}");
    }
}

#[test]
fn bf16_matches_the_reference_on_random_shapes() {
    if !bf16_runs("bf16_matches_the_reference_on_random_shapes") {
        return;
    }
    let shapes = (
        1usize..=4,
        16usize..=40,
        1usize..=40,
        1usize..=20,
        1usize..=20,
    );
    let mut runner = TestRunner::new(Config::with_cases(24));
    runner
        .run(&(shapes, any::<u64>()), |(shape, seed)| {
            check(&mut rng(seed), shape);
            Ok(())
        })
        .unwrap();
}

/// The stems (fewer than 16 input channels) and the stride-2 layers stay f32: their error
/// against the f64 reference is the f32 kernels' (≤ 2·10⁻⁶ measured), far below what bf16
/// operands give (≈ 10⁻³).
#[test]
fn bf16_leaves_the_other_layers_f32() {
    if !bf16_runs("bf16_leaves_the_other_layers_f32") {
        return;
    }
    let mut r = rng(24);
    let cases = [
        ((3, 3, 16, 32, 32), SAME, 3),
        ((3, 15, 16, 14, 14), SAME, 3),
        ((3, 16, 32, 28, 28), Conv2dGeometry { stride: 2, pad: 1 }, 3),
        ((3, 16, 32, 28, 28), Conv2dGeometry { stride: 2, pad: 0 }, 1),
    ];
    for ((n, ci, co, h, w), g, kk) in cases {
        let x = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0)
            .cast::<f32>()
            .cast::<f64>();
        let k = uniform(&mut r, &[co, ci, kk, kk], -1.0, 1.0)
            .cast::<f32>()
            .cast::<f64>();
        let y = conv2d(&x.cast::<f32>(), &k.cast::<f32>(), g).unwrap();
        let e = max_rel(&y.cast(), &conv2d_ref(&x, &k, g).unwrap());
        assert!(
            e <= 1e-5,
            "{n}×{ci}×{h}×{w} → {co}, {kk}×{kk}/{}: {e:e}",
            g.stride
        );
    }
}

/// The setting shows in the name of the CPU kernels a run records (so a resume with the other
/// one is refused), in place of Winograd's, whose layers it takes.
#[test]
fn bf16_is_named_in_the_kernel_path() {
    if !bf16_runs("bf16_is_named_in_the_kernel_path") {
        return;
    }
    let path = lucir_tensor::kernel_path();
    assert!(path.ends_with("+bf16"), "{path}");
}
