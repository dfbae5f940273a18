//! The f32 convolution paths against the f64 reference: every 3×3 "same" layer shape of the
//! CIFAR ResNets, ResNet-18's 3×3 stride-1 layers, the stride-2 3×3 and 1×1 layers of both, the stems (1 and 3 input channels), odd batch
//! sizes, plane sizes that end a 16-position vector (and a 16×16 transpose block) anywhere,
//! channel counts that leave partial 8-channel blocks, odd input-channel counts and output
//! channels that are not a multiple of 16; forward, backward and the weight-only backward of a
//! first layer, relative error ≤ 1e-4 of the largest value. On a CPU with AVX-512 these run the
//! direct kernels, elsewhere the gemm path.

mod common;

use common::{max_rel, rng, uniform};
use lucir_tensor::{
    channel_map, conv2d, conv2d_bwd, conv2d_bwd_add, conv2d_bwd_ref, conv2d_bwd_weight,
    conv2d_mapped, conv2d_mapped_bwd, conv2d_ref, ChannelMap, Conv2dGeometry,
};

/// Checks forward, backward and weight-only backward of one convolution against the f64
/// reference.
fn check(
    r: &mut rand_chacha::ChaCha8Rng,
    (n, ci, co, h, w): (usize, usize, usize, usize, usize),
    k: usize,
    g: Conv2dGeometry,
) {
    let x = uniform(r, &[n, ci, h, w], -1.0, 1.0);
    let kernel = uniform(r, &[co, ci, k, k], -1.0, 1.0);
    let y_ref = conv2d_ref(&x, &kernel, g).unwrap();
    let dy = uniform(r, y_ref.shape(), -1.0, 1.0);
    let (xf, kf, dyf) = (x.cast::<f32>(), kernel.cast::<f32>(), dy.cast::<f32>());
    let what = format!("{n}×{ci}×{h}×{w} → {co}, {k}×{k}/{}", g.stride);
    let y = conv2d(&xf, &kf, g).unwrap();
    let e = max_rel(&y.cast(), &y_ref);
    assert!(e <= 1e-4, "forward {what}: {e:e}");
    let (dx, dw) = conv2d_bwd(&xf, &kf, &dyf, g).unwrap();
    let (dx_ref, dw_ref) = conv2d_bwd_ref(&x, &kernel, &dy, g).unwrap();
    let (ex, ew) = (max_rel(&dx.cast(), &dx_ref), max_rel(&dw.cast(), &dw_ref));
    assert!(ex <= 1e-4 && ew <= 1e-4, "backward {what}: {ex:e} {ew:e}");
    let dw_only = conv2d_bwd_weight(&xf, &kf, &dyf, g).unwrap();
    let e = max_rel(&dw_only.cast(), &dw_ref);
    assert!(e <= 1e-4, "weight gradient {what}: {e:e}");
}

#[test]
fn f32_same_convolutions_match_the_reference() {
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
        check(&mut r, shape, 3, g);
    }
}

/// The stride-2 layers: the downsampling 3×3 (padding 1) and projection 1×1 (no padding) of
/// the CIFAR ResNets on 28×28 and 32×32 inputs and of ResNet-18, odd batches, odd sides (the
/// odd phases one row or column short), sides of 1 and 2, channel counts off the 8/16 blocks.
#[test]
fn f32_stride_2_convolutions_match_the_reference() {
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
        check(&mut r, shape, 3, Conv2dGeometry { stride: 2, pad: 1 });
        check(&mut r, shape, 1, Conv2dGeometry { stride: 2, pad: 0 });
    }
}

/// A convolution reading its input through a per-channel map (batch norm, ReLU or not) gives
/// the bits of the map applied first and the plain convolution after, forward and backward:
/// the direct kernels apply the map while copying into their planes, the other shapes (stride
/// 2 here) materialise it.
#[test]
fn f32_mapped_convolutions_equal_map_then_convolve() {
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
/// computing it and adding afterwards (stride 1 and 2, 3×3 and 1×1, odd sizes).
#[test]
fn f32_backward_into_a_gradient_equals_adding_afterwards() {
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
    }
}
