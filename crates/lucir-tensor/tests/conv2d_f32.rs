//! The f32 convolution paths against the f64 reference: every 3×3 "same" layer shape of the
//! CIFAR ResNets, ResNet-18's 3×3 stride-1 layers, the stems (1 and 3 input channels), odd batch
//! sizes, plane sizes that end a 16-position vector (and a 16×16 transpose block) anywhere,
//! channel counts that leave partial 8-channel blocks, odd input-channel counts and output
//! channels that are not a multiple of 16; forward, backward and the weight-only backward of a
//! first layer, relative error ≤ 1e-4 of the largest value. On a CPU with AVX-512 these run the
//! direct kernels, elsewhere the gemm path.

mod common;

use common::{max_rel, rng, uniform};
use lucir_tensor::{
    conv2d, conv2d_bwd, conv2d_bwd_ref, conv2d_bwd_weight, conv2d_ref, Conv2dGeometry,
};

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
    for (n, ci, co, h, w) in shapes {
        let x = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0);
        let k = uniform(&mut r, &[co, ci, 3, 3], -1.0, 1.0);
        let dy = uniform(&mut r, &[n, co, h, w], -1.0, 1.0);
        let (xf, kf, dyf) = (x.cast::<f32>(), k.cast::<f32>(), dy.cast::<f32>());
        let y = conv2d(&xf, &kf, g).unwrap();
        let e = max_rel(&y.cast(), &conv2d_ref(&x, &k, g).unwrap());
        assert!(e <= 1e-4, "forward {n}×{ci}×{h}×{w} → {co}: {e:e}");
        let (dx, dw) = conv2d_bwd(&xf, &kf, &dyf, g).unwrap();
        let (dx_ref, dw_ref) = conv2d_bwd_ref(&x, &k, &dy, g).unwrap();
        let (ex, ew) = (max_rel(&dx.cast(), &dx_ref), max_rel(&dw.cast(), &dw_ref));
        assert!(
            ex <= 1e-4 && ew <= 1e-4,
            "backward {n}×{ci}×{h}×{w} → {co}: {ex:e} {ew:e}"
        );
        let dw_only = conv2d_bwd_weight(&xf, &kf, &dyf, g).unwrap();
        let e = max_rel(&dw_only.cast(), &dw_ref);
        assert!(e <= 1e-4, "weight gradient {n}×{ci}×{h}×{w} → {co}: {e:e}");
    }
}
