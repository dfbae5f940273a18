//! Finite-difference property tests: for every differentiable op and loss, on random shapes
//! (batch 1 and odd sizes included) and random values kept away from kinks, the analytic
//! gradient equals central differences in f64 to a relative error of 1e-6.

mod common;

use common::*;
use lucir_autograd::Tape;
use lucir_tensor::{Conv2dGeometry, MaxPoolGeometry, Tensor};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Turns any output into a scalar with fixed random weights, so every element matters.
fn weighted(
    tape: &mut Tape<f64>,
    y: lucir_autograd::Var,
    seed: u64,
) -> lucir_autograd::Result<lucir_autograd::Var> {
    let shape = tape.value(y).shape().to_vec();
    let r = uniform(&mut rng(seed ^ 0x5eed), &shape, -1.0, 1.0);
    tape.sum_weighted(y, r)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn conv2d_grad_matches_finite_difference(
        n in 1usize..3, ci in 1usize..4, co in 1usize..4, h in 3usize..7, w in 3usize..7,
        k in prop::sample::select(vec![1usize, 3]), stride in 1usize..3, pad in 0usize..2,
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, ci, h, w], -1.0, 1.0);
        let wt = uniform(&mut r, &[co, ci, k, k], -1.0, 1.0);
        let g = Conv2dGeometry { stride, pad };
        assert_grads("conv2d", &[x, wt], |t, v| {
            let y = t.conv2d(v[0], v[1], g)?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn batch_norm_train_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..4, h in 1usize..4, w in 3usize..5, seed in any::<u64>(),
    ) {
        // At least 3 elements per channel: with 2, x̂ = ±1 whatever x is and ∂y/∂x vanishes,
        // so a relative error would compare rounding noise with rounding noise.
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -2.0, 2.0);
        let gamma = uniform(&mut r, &[c], 0.5, 1.5);
        let beta = uniform(&mut r, &[c], -0.5, 0.5);
        assert_grads("batch_norm_train", &[x, gamma, beta], |t, v| {
            let y = t.batch_norm_train(v[0], v[1], v[2], 1e-5, false)?.y;
            weighted(t, y, seed)
        });
    }

    /// BN fused with the ReLU after it (draws with an output within 1e-4 of the kink skipped).
    #[test]
    fn batch_norm_relu_train_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..4, h in 1usize..4, w in 3usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -2.0, 2.0);
        let gamma = uniform(&mut r, &[c], 0.5, 1.5);
        let beta = uniform(&mut r, &[c], -0.5, 0.5);
        let (y, _) = lucir_tensor::batch_norm_train(&x, &gamma, &beta, 1e-5, false).unwrap();
        prop_assume!(y.as_slice().iter().all(|v| v.abs() > 1e-4));
        assert_grads("batch_norm_relu_train", &[x, gamma, beta], |t, v| {
            let y = t.batch_norm_train(v[0], v[1], v[2], 1e-5, true)?.y;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn batch_norm_eval_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..4, h in 1usize..4, w in 1usize..4, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -2.0, 2.0);
        let gamma = uniform(&mut r, &[c], 0.5, 1.5);
        let beta = uniform(&mut r, &[c], -0.5, 0.5);
        let mean = uniform(&mut r, &[c], -0.5, 0.5);
        let var = uniform(&mut r, &[c], 0.5, 2.0);
        for relu in [false, true] {
            let y = lucir_tensor::batch_norm_eval(&x, &gamma, &beta, (&mean, &var), 1e-5, false).unwrap();
            if relu && y.as_slice().iter().any(|v| v.abs() < 1e-4) {
                continue;
            }
            assert_grads("batch_norm_eval", &[x.clone(), gamma.clone(), beta.clone()], |t, v| {
                let y = t.batch_norm_eval(v[0], v[1], v[2], (&mean, &var), 1e-5, relu)?;
                weighted(t, y, seed)
            });
        }
    }

    /// Batch norm (training mode, ReLU or not) and the convolution after it as one node
    /// (draws with a ReLU input within 1e-4 of the kink skipped).
    #[test]
    fn batch_norm_train_conv2d_grad_matches_finite_difference(
        n in 1usize..3, ci in 1usize..4, co in 1usize..4, h in 2usize..5, w in 3usize..5,
        k in prop::sample::select(vec![1usize, 3]), stride in 1usize..3, relu in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, ci, h, w], -2.0, 2.0);
        let gamma = uniform(&mut r, &[ci], 0.5, 1.5);
        let beta = uniform(&mut r, &[ci], -0.5, 0.5);
        let wt = uniform(&mut r, &[co, ci, k, k], -1.0, 1.0);
        let g = Conv2dGeometry { stride, pad: k / 2 };
        let (y, _) = lucir_tensor::batch_norm_train(&x, &gamma, &beta, 1e-5, false).unwrap();
        prop_assume!(!relu || y.as_slice().iter().all(|v| v.abs() > 1e-4));
        assert_grads("batch_norm_train_conv2d", &[x, gamma, beta, wt], |t, v| {
            let y = t.batch_norm_train_conv2d([v[0], v[1], v[2]], 1e-5, relu, v[3], g)?.y;
            weighted(t, y, seed)
        });
    }

    /// The same with running statistics.
    #[test]
    fn batch_norm_eval_conv2d_grad_matches_finite_difference(
        n in 1usize..3, ci in 1usize..4, co in 1usize..4, h in 2usize..5, w in 3usize..5,
        relu in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, ci, h, w], -2.0, 2.0);
        let gamma = uniform(&mut r, &[ci], 0.5, 1.5);
        let beta = uniform(&mut r, &[ci], -0.5, 0.5);
        let wt = uniform(&mut r, &[co, ci, 3, 3], -1.0, 1.0);
        let mean = uniform(&mut r, &[ci], -0.5, 0.5);
        let var = uniform(&mut r, &[ci], 0.5, 2.0);
        let g = Conv2dGeometry { stride: 1, pad: 1 };
        let y = lucir_tensor::batch_norm_eval(&x, &gamma, &beta, (&mean, &var), 1e-5, false).unwrap();
        prop_assume!(!relu || y.as_slice().iter().all(|v| v.abs() > 1e-4));
        assert_grads("batch_norm_eval_conv2d", &[x, gamma, beta, wt], |t, v| {
            let y = t.batch_norm_eval_conv2d([v[0], v[1], v[2]], (&mean, &var), 1e-5, relu, v[3], g)?;
            weighted(t, y, seed)
        });
    }

    /// Batch norm plus a residual, then a ReLU or not, as one node, in both modes (draws with
    /// a ReLU input within 1e-4 of the kink skipped).
    #[test]
    fn batch_norm_add_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..4, h in 1usize..4, w in 3usize..5, relu in any::<bool>(),
        train in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[n, c, h, w], -2.0, 2.0);
        let res = uniform(&mut r, &[n, c, h, w], -1.0, 1.0);
        let gamma = uniform(&mut r, &[c], 0.5, 1.5);
        let beta = uniform(&mut r, &[c], -0.5, 0.5);
        let mean = uniform(&mut r, &[c], -0.5, 0.5);
        let var = uniform(&mut r, &[c], 0.5, 2.0);
        let y = if train {
            lucir_tensor::batch_norm_train(&x, &gamma, &beta, 1e-5, false).unwrap().0
        } else {
            lucir_tensor::batch_norm_eval(&x, &gamma, &beta, (&mean, &var), 1e-5, false).unwrap()
        };
        let y = lucir_tensor::add(&y, &res).unwrap();
        prop_assume!(!relu || y.as_slice().iter().all(|v| v.abs() > 1e-4));
        assert_grads("batch_norm_add", &[x, gamma, beta, res], |t, v| {
            let y = if train {
                t.batch_norm_train_add([v[0], v[1], v[2]], 1e-5, v[3], relu)?.y
            } else {
                t.batch_norm_eval_add([v[0], v[1], v[2]], (&mean, &var), 1e-5, v[3], relu)?
            };
            weighted(t, y, seed)
        });
    }

    #[test]
    fn relu_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..4, hw in 1usize..5, seed in any::<u64>(),
    ) {
        let x = away_from_zero(&mut rng(seed), &[n, c, hw, hw]);
        assert_grads("relu", &[x], |t, v| {
            let y = t.relu(v[0])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn add_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = uniform(&mut r, &[n, c, 2, 3], -1.0, 1.0);
        let b = uniform(&mut r, &[n, c, 2, 3], -1.0, 1.0);
        assert_grads("add", &[a, b], |t, v| {
            let y = t.add(v[0], v[1])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn add_relu_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = uniform(&mut r, &[n, c, 2, 3], -1.0, 1.0);
        let b = uniform(&mut r, &[n, c, 2, 3], -1.0, 1.0);
        prop_assume!(a.as_slice().iter().zip(b.as_slice()).all(|(x, y)| (x + y).abs() > 1e-3));
        assert_grads("add_relu", &[a, b], |t, v| {
            let y = t.add_relu(v[0], v[1])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn global_avg_pool_grad_matches_finite_difference(
        n in 1usize..4, c in 1usize..5, h in 1usize..5, w in 1usize..5, seed in any::<u64>(),
    ) {
        let x = uniform(&mut rng(seed), &[n, c, h, w], -1.0, 1.0);
        assert_grads("global_avg_pool", &[x], |t, v| {
            let y = t.global_avg_pool(v[0])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn max_pool2d_grad_matches_finite_difference(
        n in 1usize..3, c in 1usize..3, h in 3usize..8, w in 3usize..8,
        kernel in 2usize..4, stride in 1usize..3, pad in 0usize..2, seed in any::<u64>(),
    ) {
        let x = distinct(&mut rng(seed), &[n, c, h, w]);
        let g = MaxPoolGeometry { kernel, stride, pad };
        assert_grads("max_pool2d", &[x], |t, v| {
            let y = t.max_pool2d(v[0], g)?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn l2_normalize_rows_grad_matches_finite_difference(
        b in 1usize..5, d in 1usize..9, seed in any::<u64>(),
    ) {
        let x = away_from_zero(&mut rng(seed), &[b, d]);
        assert_grads("l2_normalize_rows", &[x], |t, v| {
            let y = t.l2_normalize_rows(v[0])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn log_softmax_grad_matches_finite_difference(
        b in 1usize..5, c in 1usize..9, seed in any::<u64>(),
    ) {
        let z = uniform(&mut rng(seed), &[b, c], -3.0, 3.0);
        assert_grads("log_softmax", &[z], |t, v| {
            let y = t.log_softmax(v[0])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn linear_grad_matches_finite_difference(
        b in 1usize..5, d in 1usize..7, c in 1usize..6, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[b, d], -1.0, 1.0);
        let w = uniform(&mut r, &[c, d], -1.0, 1.0);
        let bias = uniform(&mut r, &[c], -1.0, 1.0);
        assert_grads("linear", &[x, w, bias], |t, v| {
            let y = t.linear(v[0], v[1], Some(v[2]))?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn cosine_logits_grad_matches_finite_difference(
        b in 1usize..6, d in 1usize..9, c in 1usize..7, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let f = away_from_zero(&mut r, &[b, d]);
        let theta = away_from_zero(&mut r, &[c, d]);
        assert_grads("cosine", &[f, theta], |t, v| {
            let y = t.cosine_logits(v[0], v[1])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn scale_grad_matches_finite_difference(
        b in 1usize..5, c in 1usize..6, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, &[b, c], -1.0, 1.0);
        let sigma = uniform(&mut r, &[1], 0.5, 10.0);
        assert_grads("scale", &[x, sigma], |t, v| {
            let y = t.scale(v[0], v[1])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn concat_rows_grad_matches_finite_difference(
        ra in 1usize..4, rb in 1usize..4, d in 1usize..5, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = uniform(&mut r, &[ra, d], -1.0, 1.0);
        let b = uniform(&mut r, &[rb, d], -1.0, 1.0);
        assert_grads("concat_rows", &[a, b], |t, v| {
            let y = t.concat_rows(v[0], v[1])?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn slice_cols_grad_matches_finite_difference(
        b in 1usize..4, c in 1usize..7, seed in any::<u64>(),
    ) {
        let x = uniform(&mut rng(seed), &[b, c], -1.0, 1.0);
        let (start, end) = ((seed as usize) % c, c);
        assert_grads("slice_cols", &[x], |t, v| {
            let y = t.slice_cols(v[0], start, end)?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn cross_entropy_grad_matches_finite_difference(
        b in 1usize..7, c in 1usize..8, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let z = uniform(&mut r, &[b, c], -4.0, 4.0);
        let labels: Vec<usize> = (0..b).map(|_| rand::Rng::random_range(&mut r, 0..c)).collect();
        assert_grads("cross_entropy", &[z], |t, v| t.cross_entropy(v[0], &labels));
    }

    #[test]
    fn feature_distill_grad_matches_finite_difference(
        b in 1usize..6, d in 1usize..9, lambda in 0.1f64..20.0, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let f = away_from_zero(&mut r, &[b, d]);
        let f_star = away_from_zero(&mut r, &[b, d]);
        assert_grads("feature_distill", &[f], |t, v| t.feature_distill(v[0], &f_star, lambda));
    }

    #[test]
    fn margin_rank_grad_matches_finite_difference(
        b in 1usize..7, n_old in 1usize..5, n_new in 1usize..5, k in 1usize..4,
        margin in 0.1f64..0.9, seed in any::<u64>(),
    ) {
        let c = n_old + n_new;
        let mut r = rng(seed);
        let cos = uniform(&mut r, &[b, c], -1.0, 1.0);
        let labels: Vec<usize> = (0..b).map(|_| rand::Rng::random_range(&mut r, 0..c)).collect();
        // Keep away from the kinks: hinge terms and top-k ranks must not change within ±eps.
        let cv = cos.as_slice();
        let kk = k.min(n_new);
        for (row, &y) in labels.iter().enumerate() {
            if y >= n_old { continue; }
            let mut new: Vec<f64> = cv[row * c + n_old..(row + 1) * c].to_vec();
            new.sort_by(|a, b| b.total_cmp(a));
            for w in new.windows(2) { prop_assume!((w[0] - w[1]).abs() > 1e-4); }
            for s in &new[..kk] { prop_assume!((margin - cv[row * c + y] + s).abs() > 1e-4); }
        }
        assert_grads("margin_rank", &[cos], |t, v| t.margin_rank(v[0], &labels, n_old, k, margin));
    }

    #[test]
    fn mse_grad_matches_finite_difference(
        b in 1usize..5, d in 1usize..6, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = uniform(&mut r, &[b, d], -1.0, 1.0);
        let c = uniform(&mut r, &[b, d], -1.0, 1.0);
        assert_grads("mse", &[a, c], |t, v| t.mse(v[0], v[1]));
    }

    #[test]
    fn kd_grad_matches_finite_difference(
        b in 1usize..5, c in 1usize..7, tau in 0.5f64..4.0, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let z = uniform(&mut r, &[b, c], -3.0, 3.0);
        let targets = uniform(&mut r, &[b, c], -3.0, 3.0);
        assert_grads("kd", &[z], |t, v| t.kd(v[0], &targets, tau));
    }

    /// A custom op (the way the CUDA head kernels enter the tape), here y = x³ with
    /// backward 3x²·g, differentiates like any other op.
    #[test]
    fn custom_op_grad_matches_finite_difference(
        b in 1usize..5, d in 1usize..6, seed in any::<u64>(),
    ) {
        let x = uniform(&mut rng(seed), &[b, d], -1.0, 1.0);
        assert_grads("custom", &[x], |t, v| {
            let y = t.value(v[0]).map(|a| a * a * a);
            let y = t.custom(&[v[0]], y, Box::new(|g, inputs| {
                let mut dx = inputs[0].map(|a| 3.0 * a * a);
                for (o, gi) in dx.as_slice_mut().iter_mut().zip(g.as_slice()) {
                    *o *= gi;
                }
                Ok(vec![Some(dx)])
            }))?;
            weighted(t, y, seed)
        });
    }

    #[test]
    fn sum_weighted_grad_matches_finite_difference(
        b in 1usize..5, d in 1usize..6, seed in any::<u64>(),
    ) {
        let x = uniform(&mut rng(seed), &[b, d], -1.0, 1.0);
        assert_grads("sum_weighted", &[x], |t, v| weighted(t, v[0], seed));
    }

    /// The whole LUCIR incremental-phase loss: split cosine head (old and new blocks, shared σ),
    /// CE on σ·cos + less-forget + margin ranking, differentiated through features, both blocks
    /// and σ.
    #[test]
    fn lucir_loss_grad_matches_finite_difference(
        b in 1usize..6, d in 2usize..7, n_old in 1usize..4, n_new in 1usize..4,
        seed in any::<u64>(),
    ) {
        check_lucir_loss(b, d, n_old, n_new, seed)?;
    }
}

/// A draw that once failed: every gradient of `new` is below 1e-4 while the loss is ≈ 21, so the
/// finite differences' rounding noise (≈ |L| · 1e-10) exceeded an absolute bound that ignored
/// the loss's size.
#[test]
fn lucir_loss_grad_small_gradient_of_a_large_loss() {
    check_lucir_loss(1, 3, 3, 1, 1817888465719606960).unwrap();
}

/// Body of the LUCIR-loss property: random features, head blocks, σ, previous features and
/// labels; draws that sit on a hinge or top-k kink are rejected.
fn check_lucir_loss(
    b: usize,
    d: usize,
    n_old: usize,
    n_new: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let c = n_old + n_new;
    let mut r = rng(seed);
    let f = away_from_zero(&mut r, &[b, d]);
    let old = away_from_zero(&mut r, &[n_old, d]);
    let new = away_from_zero(&mut r, &[n_new, d]);
    let sigma = uniform(&mut r, &[1], 1.0, 8.0);
    let f_star = away_from_zero(&mut r, &[b, d]);
    let labels: Vec<usize> = (0..b)
        .map(|_| rand::Rng::random_range(&mut r, 0..c))
        .collect();
    let loss = |t: &mut Tape<f64>, v: &[lucir_autograd::Var]| {
        let theta = t.concat_rows(v[1], v[2])?;
        let cos = t.cosine_logits(v[0], theta)?;
        let z = t.scale(cos, v[3])?;
        let ce = t.cross_entropy(z, &labels)?;
        let lf = t.feature_distill(v[0], &f_star, 5.0 * (n_old as f64 / n_new as f64).sqrt())?;
        let mr = t.margin_rank(cos, &labels, n_old, 2, 0.5)?;
        let s = t.add(ce, lf)?;
        t.add(s, mr)
    };
    // Skip draws that sit on a hinge or top-k kink (measured on the forward cosines).
    let mut probe = Tape::no_grad();
    let vars: Vec<_> = [&f, &old, &new, &sigma]
        .iter()
        .map(|x| probe.leaf((*x).clone()))
        .collect();
    let theta = probe.concat_rows(vars[1], vars[2]).unwrap();
    let cos = probe.cosine_logits(vars[0], theta).unwrap();
    let cv = probe.value(cos).as_slice().to_vec();
    for (row, &y) in labels.iter().enumerate() {
        if y >= n_old {
            continue;
        }
        let mut newc: Vec<f64> = cv[row * c + n_old..(row + 1) * c].to_vec();
        newc.sort_by(|a, b| b.total_cmp(a));
        for w in newc.windows(2) {
            prop_assume!((w[0] - w[1]).abs() > 1e-4);
        }
        for s in newc.iter().take(2) {
            prop_assume!((0.5 - cv[row * c + y] + s).abs() > 1e-4);
        }
    }
    assert_grads("lucir_loss", &[f, old, new, sigma], loss);
    Ok(())
}

/// A loss of a constant alone cannot be differentiated: `backward` says so instead of
/// returning zeros.
#[test]
fn backward_of_constant_loss_is_an_error() {
    let mut t = Tape::<f64>::new();
    let x = t.constant(Tensor::scalar(1.0));
    let err = t.backward(x);
    assert!(
        matches!(err, Err(lucir_autograd::Error::Invalid { .. })),
        "{err:?}"
    );
}
