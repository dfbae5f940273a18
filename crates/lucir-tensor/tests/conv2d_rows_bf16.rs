//! The bf16 kernels' row tiles (`Precision::Bf16`, on images with rows of 7, 8 or 14 outputs
//! and Co a multiple of 16) against their position tiles (`force_position_tiles`), bit for
//! bit: forward, input gradient, the added input gradient and the fused input map, on the
//! ResNets' small layers, odd batches and odd channel counts. Both sum each output's pair
//! products in the same order, so they must agree exactly; the f32 row tiles are held to the
//! order model in `conv2d_order.rs` and `conv2d_order_strided.rs`.
//!
//! One test in this binary: the switch and the precision are process-wide.
//!
//! On a CPU without AVX512-BF16 the test says `skipped: …`.

mod common;

use common::{rng, uniform};
use lucir_tensor::{
    conv2d, conv2d_bwd, conv2d_bwd_add, conv2d_mapped, conv2d_mapped_bwd, force_position_tiles,
    ChannelMap, Conv2dGeometry, Precision, Tensor,
};

const SAME: Conv2dGeometry = Conv2dGeometry { stride: 1, pad: 1 };

/// Bit patterns, so that −0 and 0 (and NaN payloads) count as different.
fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.as_slice().iter().map(|v| v.to_bits()).collect()
}

/// Every pass of one shape, as bit patterns, in order.
fn passes(x: &Tensor<f32>, w: &Tensor<f32>, dy: &Tensor<f32>, old: &Tensor<f32>) -> Vec<Vec<u32>> {
    let ci = x.shape()[1];
    let map = ChannelMap {
        scale: (0..ci).map(|c| 0.5 + 0.1 * c as f32).collect(),
        shift: (0..ci).map(|c| 0.2 - 0.05 * c as f32).collect(),
        relu: true,
    };
    let (dx, dw) = conv2d_bwd(x, w, dy, SAME).unwrap();
    let (sum, dw_add) = conv2d_bwd_add(x, w, dy, SAME, old.clone()).unwrap();
    let (mdx, mdw) = conv2d_mapped_bwd(x, &map, w, dy, SAME).unwrap();
    vec![
        bits(&conv2d(x, w, SAME).unwrap()),
        bits(&dx),
        bits(&dw),
        bits(&sum),
        bits(&dw_add),
        bits(&conv2d_mapped(x, &map, w, SAME).unwrap()),
        bits(&mdx),
        bits(&mdw),
    ]
}

#[test]
fn bf16_row_tiles_give_the_position_tiles_bits() {
    lucir_tensor::set_precision(Precision::Bf16);
    if !Precision::Bf16.available() {
        eprintln!("skipped: bf16_row_tiles_give_the_position_tiles_bits: no AVX512-BF16");
        return;
    }
    let names = [
        "forward",
        "input gradient",
        "weight gradient",
        "added input gradient",
        "weight gradient (adding)",
        "mapped forward",
        "mapped input gradient",
        "mapped weight gradient",
    ];
    let mut r = rng(46);
    // N, Ci, Co, H (= W): the ResNets' 7×7, 8×8 and 14×14 layers, odd batches and channels.
    for [n, ci, co, h] in [
        [3, 64, 64, 7],
        [1, 64, 64, 8],
        [2, 32, 32, 14],
        [1, 33, 16, 7],
        [3, 17, 48, 14],
    ] {
        let mut f32s = |shape: &[usize]| uniform(&mut r, shape, -1.0, 1.0).cast::<f32>();
        let (x, w) = (f32s(&[n, ci, h, h]), f32s(&[co, ci, 3, 3]));
        let (dy, old) = (f32s(&[n, co, h, h]), f32s(&[n, ci, h, h]));
        let rows = passes(&x, &w, &dy, &old);
        force_position_tiles(true);
        let positions = passes(&x, &w, &dy, &old);
        force_position_tiles(false);
        for ((a, b), name) in rows.iter().zip(&positions).zip(names) {
            assert!(
                a == b,
                "{name}, {n}×{ci}→{co} at {h}×{h}: row tiles differ from position tiles"
            );
        }
    }
}
