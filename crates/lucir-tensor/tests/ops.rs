//! Each fast CPU op against its naive `_ref` twin, and shape errors reported as `Err`.

mod common;

use common::*;
use lucir_tensor::{
    self as lt, batch_norm_bwd_ref, batch_norm_eval, batch_norm_ref, batch_norm_train, conv2d,
    conv2d_bwd, conv2d_bwd_ref, conv2d_bwd_weight, conv2d_ref, gemm, gemm_ref, max_pool2d,
    max_pool2d_ref, topk_rows, topk_rows_ref, Conv2dGeometry, MaxPoolGeometry, Tensor, Transpose,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn gemm_matches_reference_for_every_transpose(
        m in 1usize..40, n in 1usize..40, k in 1usize..40,
        ta in any::<bool>(), tb in any::<bool>(), acc in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = uniform(&mut r, &[m * k], -1.0, 1.0);
        let b = uniform(&mut r, &[k * n], -1.0, 1.0);
        let c0 = uniform(&mut r, &[m * n], -1.0, 1.0);
        let t = |x| if x { Transpose::Yes } else { Transpose::No };
        let (mut c1, mut c2) = (c0.clone(), c0);
        gemm([m, n, k], a.as_slice(), t(ta), b.as_slice(), t(tb), c1.as_slice_mut(), acc).unwrap();
        gemm_ref([m, n, k], a.as_slice(), t(ta), b.as_slice(), t(tb), c2.as_slice_mut(), acc).unwrap();
        prop_assert!(max_rel(&c1, &c2) < 1e-12);
    }

    #[test]
    fn conv2d_matches_reference_forward_and_backward(
        n in 1usize..4, ci in 1usize..5, co in 1usize..6, h in 1usize..10, w in 1usize..10,
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3, pad in 0usize..3,
        seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0);
        let wt = uniform(&mut r, &[co, ci, k, k], -1.0, 1.0);
        let g = Conv2dGeometry { stride, pad };
        let y = conv2d(&x, &wt, g).unwrap();
        prop_assert!(max_rel(&y, &conv2d_ref(&x, &wt, g).unwrap()) < 1e-12);
        let dy = uniform(&mut r, y.shape(), -1.0, 1.0);
        let (dx, dw) = conv2d_bwd(&x, &wt, &dy, g).unwrap();
        let (dx_ref, dw_ref) = conv2d_bwd_ref(&x, &wt, &dy, g).unwrap();
        prop_assert!(max_rel(&dx, &dx_ref) < 1e-12);
        prop_assert!(max_rel(&dw, &dw_ref) < 1e-12);
        // Not bit-exact: for "same" convolutions `conv2d_bwd` groups images as its flipped
        // input-gradient path needs, so `dw`'s partial sums are formed in another order.
        prop_assert!(max_rel(&conv2d_bwd_weight(&x, &wt, &dy, g).unwrap(), &dw) < 1e-12);
    }

    #[test]
    fn batch_norm_matches_reference_in_both_modes(
        n in 1usize..4, c in 1usize..5, h in 1usize..5, w in 1usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -3.0, 3.0);
        let (gt, bt) = (uniform(&mut r, &[c], 0.5, 1.5), uniform(&mut r, &[c], -1.0, 1.0));
        let (gamma, beta) = (gt.as_slice(), bt.as_slice());
        let (y, stats) = batch_norm_train(&x, &gt, &bt, 1e-5, false).unwrap();
        let (y_relu, _) = batch_norm_train(&x, &gt, &bt, 1e-5, true).unwrap();
        prop_assert_eq!(y_relu, lt::relu(&y).unwrap());
        prop_assert!(max_rel(&y, &batch_norm_ref(&x, gamma, beta, None, 1e-5).unwrap()) < 1e-12);
        prop_assert_eq!(stats.count, n * h * w);
        let (rm, rv) = (uniform(&mut r, &[c], -1.0, 1.0), uniform(&mut r, &[c], 0.5, 2.0));
        let ye = batch_norm_eval(&x, &gt, &bt, (&rm, &rv), 1e-5, false).unwrap();
        let running = Some((rm.as_slice(), rv.as_slice()));
        let ye_ref = batch_norm_ref(&x, gamma, beta, running, 1e-5).unwrap();
        prop_assert!(max_rel(&ye, &ye_ref) < 1e-12);
    }

    /// The fused forms give the bits of the ops they fuse: statistics alone, the map, and the
    /// batch norm with a residual added before the optional ReLU.
    #[test]
    fn fused_batch_norms_equal_their_parts(
        n in 1usize..4, c in 1usize..5, h in 1usize..5, w in 1usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -3.0, 3.0).cast::<f32>();
        let res = uniform(&mut r, &[n, c, h, w], -1.0, 1.0).cast::<f32>();
        let gt: Tensor<f32> = uniform(&mut r, &[c], 0.5, 1.5).cast();
        let bt: Tensor<f32> = uniform(&mut r, &[c], -1.0, 1.0).cast();
        let (gamma, beta) = (gt.as_slice(), bt.as_slice());
        for relu in [false, true] {
            let (y, stats) = batch_norm_train(&x, &gt, &bt, 1e-5, relu).unwrap();
            prop_assert_eq!(&lt::batch_norm_stats(&x, 1e-5).unwrap(), &stats);
            let map = lt::ChannelMap::train(gamma, beta, &stats, relu);
            prop_assert_eq!(&lt::channel_map(&x, &map).unwrap(), &y);
            let (y0, _) = batch_norm_train(&x, &gt, &bt, 1e-5, false).unwrap();
            let sum = if relu { lt::add_relu(&y0, &res) } else { lt::add(&y0, &res) }.unwrap();
            let (fused, fstats) = lt::batch_norm_train_add(&x, &gt, &bt, 1e-5, &res, relu).unwrap();
            prop_assert_eq!(&fused, &sum);
            prop_assert_eq!(&fstats, &stats);
            let (rm, rv) = (&stats.mean, &stats.var);
            let ye = batch_norm_eval(&x, &gt, &bt, (rm, rv), 1e-5, false).unwrap();
            let sum = if relu { lt::add_relu(&ye, &res) } else { lt::add(&ye, &res) }.unwrap();
            let map = lt::ChannelMap::eval(gamma, beta, (rm.as_slice(), rv.as_slice()), 1e-5, relu);
            prop_assert_eq!(&lt::channel_map_add(&x, &map, &res).unwrap(), &sum);
            let fused = lt::batch_norm_eval_add(&x, [&gt, &bt], (rm, rv), 1e-5, Some(&res), relu);
            prop_assert_eq!(&fused.unwrap(), &sum);
            // The running-statistics update, as the layer's formula.
            let (mut m, mut v) = (rm.clone(), rv.clone());
            lt::batch_norm_update_running((&mut m, &mut v), &stats, 0.1).unwrap();
            let count = n * h * w;
            let unbias = if count > 1 { count as f32 / (count - 1) as f32 } else { 1.0 };
            let mo = 0.1f32;
            for ch in 0..c {
                let (bm, bv) = (stats.mean.as_slice()[ch], stats.var.as_slice()[ch]);
                prop_assert_eq!(m.as_slice()[ch], (1.0 - mo) * rm.as_slice()[ch] + mo * bm);
                prop_assert_eq!(v.as_slice()[ch], (1.0 - mo) * rv.as_slice()[ch] + mo * bv * unbias);
            }
        }
    }

    #[test]
    fn batch_norm_backward_matches_reference_in_both_modes(
        n in 1usize..4, c in 1usize..5, h in 1usize..5, w in 2usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -3.0, 3.0);
        let (gt, bt) = (uniform(&mut r, &[c], -1.5, 1.5), uniform(&mut r, &[c], -1.0, 1.0));
        let dy = uniform(&mut r, x.shape(), -1.0, 1.0);
        let close = |(a, b, c): (Tensor<f64>, Tensor<f64>, Tensor<f64>), (d, e, f): (Tensor<f64>, Vec<f64>, Vec<f64>)| {
            let v = |x: Vec<f64>| Tensor::from_vec(&[x.len()], x).unwrap();
            max_rel(&a, &d).max(max_rel(&b, &v(e))).max(max_rel(&c, &v(f)))
        };
        let (_, stats) = batch_norm_train(&x, &gt, &bt, 1e-5, false).unwrap();
        let fast = lt::batch_norm_train_bwd(&x, &gt, &bt, &stats, &dy, false).unwrap();
        let naive = batch_norm_bwd_ref(&x, gt.as_slice(), None, 1e-5, &dy).unwrap();
        prop_assert!(close(fast, naive) < 1e-12);
        let (rm, rv) = (uniform(&mut r, &[c], -1.0, 1.0), uniform(&mut r, &[c], 0.5, 2.0));
        let fast = lt::batch_norm_eval_bwd(&x, [&gt, &bt], (&rm, &rv), 1e-5, &dy, false).unwrap();
        let running = Some((rm.as_slice(), rv.as_slice()));
        let naive = batch_norm_bwd_ref(&x, gt.as_slice(), running, 1e-5, &dy).unwrap();
        prop_assert!(close(fast, naive) < 1e-12);
    }

    #[test]
    fn fused_batch_norm_relu_backward_equals_relu_then_batch_norm_backward(
        n in 1usize..4, c in 1usize..5, h in 1usize..5, w in 1usize..5, seed in any::<u64>(),
    ) {
        // The fused backward recomputes the ReLU mask from `x`; it must match masking with the
        // stored output bit for bit, in both modes.
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -3.0, 3.0);
        let (gt, bt) = (uniform(&mut r, &[c], -1.5, 1.5), uniform(&mut r, &[c], -1.0, 1.0));
        let dy = uniform(&mut r, x.shape(), -1.0, 1.0);
        let (y, stats) = batch_norm_train(&x, &gt, &bt, 1e-5, true).unwrap();
        let masked = lt::relu_bwd(&y, dy.clone()).unwrap();
        prop_assert_eq!(
            lt::batch_norm_train_bwd(&x, &gt, &bt, &stats, &dy, true).unwrap(),
            lt::batch_norm_train_bwd(&x, &gt, &bt, &stats, &masked, false).unwrap()
        );
        let (rm, rv) = (uniform(&mut r, &[c], -1.0, 1.0), uniform(&mut r, &[c], 0.5, 2.0));
        let ye = batch_norm_eval(&x, &gt, &bt, (&rm, &rv), 1e-5, true).unwrap();
        let masked = lt::relu_bwd(&ye, dy.clone()).unwrap();
        prop_assert_eq!(
            lt::batch_norm_eval_bwd(&x, [&gt, &bt], (&rm, &rv), 1e-5, &dy, true).unwrap(),
            lt::batch_norm_eval_bwd(&x, [&gt, &bt], (&rm, &rv), 1e-5, &masked, false).unwrap()
        );
    }

    #[test]
    fn max_pool2d_matches_reference(
        n in 1usize..3, c in 1usize..4, h in 1usize..9, w in 1usize..9,
        kernel in 1usize..4, stride in 1usize..3, pad in 0usize..2, seed in any::<u64>(),
    ) {
        prop_assume!(pad < kernel && h + 2 * pad >= kernel && w + 2 * pad >= kernel);
        let x = uniform(&mut rng(seed), &[n, c, h, w], -1.0, 1.0);
        let g = MaxPoolGeometry { kernel, stride, pad };
        let (y, _) = max_pool2d(&x, g).unwrap();
        prop_assert_eq!(y, max_pool2d_ref(&x, g).unwrap());
    }

    #[test]
    fn topk_matches_sort_reference(
        b in 1usize..6, c in 1usize..12, k in 0usize..5, seed in any::<u64>(),
    ) {
        prop_assume!(k <= c);
        // Few distinct values, so ties are common and the tie rule is exercised.
        let x = uniform(&mut rng(seed), &[b, c], 0.0, 4.0).map(f64::floor);
        prop_assert_eq!(topk_rows(&x, k).unwrap(), topk_rows_ref(&x, k).unwrap());
    }
}

/// `conv2d` of a 3×3 kernel of ones over a 3×3 image of ones with padding 1 counts the
/// in-bounds neighbours of each pixel: 4 at corners, 6 at edges, 9 in the middle.
#[test]
fn conv2d_with_padding_counts_neighbours() {
    let x = Tensor::<f64>::full(&[1, 1, 3, 3], 1.0);
    let w = Tensor::<f64>::full(&[1, 1, 3, 3], 1.0);
    let y = conv2d(&x, &w, Conv2dGeometry { stride: 1, pad: 1 }).unwrap();
    assert_eq!(y.as_slice(), &[4., 6., 4., 6., 9., 6., 4., 6., 4.]);
}

#[test]
fn conv2d_over_whole_and_partial_image_groups_matches_reference() {
    // 7×7 and 14×14 outputs share a gemm between 16 and 4 images; 21 images leave a partial
    // group, in the forward pass and in each backward chunk.
    let mut r = rng(7);
    for (hw, stride) in [(7, 1), (14, 1), (14, 2)] {
        let x = uniform(&mut r, &[21, 3, hw, hw], -1.0, 1.0);
        let wt = uniform(&mut r, &[4, 3, 3, 3], -1.0, 1.0);
        let g = Conv2dGeometry { stride, pad: 1 };
        let y = conv2d(&x, &wt, g).unwrap();
        assert!(max_rel(&y, &conv2d_ref(&x, &wt, g).unwrap()) < 1e-12);
        let dy = uniform(&mut r, y.shape(), -1.0, 1.0);
        let (dx, dw) = conv2d_bwd(&x, &wt, &dy, g).unwrap();
        let (dx_ref, dw_ref) = conv2d_bwd_ref(&x, &wt, &dy, g).unwrap();
        assert!(
            max_rel(&dx, &dx_ref) < 1e-12,
            "dx, {hw}×{hw} stride {stride}"
        );
        assert!(
            max_rel(&dw, &dw_ref) < 1e-12,
            "dw, {hw}×{hw} stride {stride}"
        );
    }
}

/// Asserts that `$e` fails with `lucir_tensor::Error::$variant`.
macro_rules! assert_err {
    ($e:expr, $variant:ident) => {{
        let r = $e;
        assert!(
            matches!(r, Err(lt::Error::$variant { .. })),
            "expected Error::{}, got {:?}",
            stringify!($variant),
            r.as_ref().err()
        );
    }};
}

#[test]
fn shape_mismatches_are_errors_not_panics() {
    let x = Tensor::<f32>::zeros(&[2, 3, 4, 4]);
    let w_bad = Tensor::<f32>::zeros(&[8, 2, 3, 3]);
    let g = Conv2dGeometry { stride: 1, pad: 1 };
    let err = conv2d(&x, &w_bad, g).unwrap_err().to_string();
    assert!(err.contains("conv2d") && err.contains("channels"), "{err}");
    assert_err!(conv2d(&x, &Tensor::zeros(&[8, 3, 9, 9]), g), Shape);
    let stride0 = Conv2dGeometry { stride: 0, pad: 0 };
    assert_err!(conv2d(&x, &Tensor::zeros(&[8, 3, 3, 3]), stride0), Argument);
    assert_err!(conv2d(&Tensor::<f32>::zeros(&[3, 4]), &w_bad, g), Shape);
    assert_err!(lt::add(&x, &Tensor::zeros(&[2, 3, 4, 5])), Shape);
    let (a, b) = (Tensor::<f32>::zeros(&[2, 3]), Tensor::zeros(&[4, 2]));
    assert_err!(lt::matmul(&a, Transpose::No, &b, Transpose::No), Shape);
    let (a, b, mut c) = ([0f32; 3], [0f32; 4], [0f32; 4]);
    assert_err!(
        gemm(
            [2, 2, 2],
            &a,
            Transpose::No,
            &b,
            Transpose::No,
            &mut c,
            false
        ),
        Shape
    );
    assert_err!(
        batch_norm_train(
            &x,
            &Tensor::full(&[2], 1.0),
            &Tensor::zeros(&[3]),
            1e-5,
            false
        ),
        Shape
    );
    assert_err!(
        lt::batch_norm_train_add(
            &x,
            &Tensor::full(&[3], 1.0),
            &Tensor::zeros(&[3]),
            1e-5,
            &Tensor::zeros(&[1]),
            true
        ),
        Shape
    );
    let map = lt::ChannelMap {
        scale: vec![1.0; 2],
        shift: vec![0.0; 2],
        relu: false,
    };
    assert_err!(lt::channel_map(&x, &map), Shape);
    assert_err!(
        lt::conv2d_mapped(&x, &map, &Tensor::zeros(&[8, 3, 3, 3]), g),
        Shape
    );
    assert_err!(
        lt::batch_norm_stats(&Tensor::<f32>::zeros(&[0, 3, 4, 4]), 1e-5),
        Shape
    );
    assert_err!(topk_rows(&Tensor::<f32>::zeros(&[2, 3]), 4), Argument);
    assert_err!(lt::relu_bwd(&x, Tensor::zeros(&[1])), Shape);
    assert_err!(lt::add_relu(&x, &Tensor::zeros(&[1])), Shape);
    assert_err!(Tensor::<f32>::from_vec(&[2, 2], vec![0.0; 3]), Shape);
}

#[test]
fn l2_normalize_rows_gives_unit_rows_and_clamps_zero_rows() {
    let x = Tensor::<f64>::from_vec(&[2, 2], vec![3.0, 4.0, 0.0, 0.0]).unwrap();
    let (y, norms) = lt::l2_normalize_rows(&x).unwrap();
    assert_eq!(y.as_slice(), &[0.6, 0.8, 0.0, 0.0]);
    assert_eq!(norms.as_slice(), &[5.0, lt::NORM_EPS]);
}

#[test]
fn log_softmax_is_stable_for_large_logits() {
    let z = Tensor::<f32>::from_vec(&[1, 3], vec![1000.0, 1000.0, -1000.0]).unwrap();
    let y = lt::log_softmax_rows(&z).unwrap();
    let ln_half = 0.5f32.ln();
    assert!((y.as_slice()[0] - ln_half).abs() < 1e-6 && (y.as_slice()[1] - ln_half).abs() < 1e-6);
    assert!(y.all_finite());
}
