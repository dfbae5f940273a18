//! Whole-network properties: a ResNet-20 gradient check, the f32 path against the f64 path,
//! SGD lowering the loss, optimizer arithmetic, and bit-exact state files.

#[path = "../crates/lucir-autograd/tests/common/mod.rs"]
mod common;

use std::cell::RefCell;

use common::*;
use lucir::autograd::gradcheck::Options;
use lucir::autograd::{MultiStepLr, Param, ParamGroup, Sgd, Tape, Var};
use lucir::nn::{
    load_state, save_state, CosineLinear, Float, Init, Mode, Module, ResNet, SplitCosineLinear,
};
use lucir::tensor::Tensor;

/// Features → cosine head → cross-entropy, on a tape, with all parameters bound to `vars`.
fn resnet_loss<T: Float>(
    net: &mut ResNet<T>,
    head: &CosineLinear<T>,
    tape: &mut Tape<T>,
    x: Var,
    labels: &[usize],
) -> lucir::nn::Result<Var> {
    let f = net.forward(tape, x, Mode::Train)?;
    let out = head.forward(tape, f)?;
    Ok(tape.cross_entropy(out.logits, labels)?)
}

/// Gradient check of a whole ResNet-20 (train-mode BN, the last block without ReLU) with a
/// cosine head and cross-entropy, through the input and a spread of elements of every
/// parameter tensor.
#[test]
fn resnet20_forward_backward_matches_finite_difference() {
    let net = RefCell::new(ResNet::<f64>::cifar(3, 1, 7).unwrap());
    let head = CosineLinear::<f64>::new(&mut Init::new(8), 64, 3);
    let x = uniform(&mut rng(9), &[2, 1, 8, 8], -1.0, 1.0);
    let labels = [0usize, 2];
    let mut inputs = vec![x];
    inputs.extend(net.borrow().params().iter().map(|(_, p)| p.value.clone()));
    inputs.extend(head.params().iter().map(|(_, p)| p.value.clone()));
    let opts = Options {
        eps: 1e-6,
        max_elements: Some(3),
    };
    assert_grads_with(
        "resnet20",
        &inputs,
        |tape, vars| {
            let mut net = net.borrow_mut();
            let params = net.params();
            let n = params.len();
            for ((_, p), v) in params.iter().zip(&vars[1..]) {
                tape.bind_param(p, *v);
            }
            for ((_, p), v) in head.params().iter().zip(&vars[1 + n..]) {
                tape.bind_param(p, *v);
            }
            resnet_loss(&mut net, &head, tape, vars[0], &labels).map_err(|e| {
                lucir::autograd::Error::Invalid {
                    op: "resnet",
                    detail: e.to_string(),
                }
            })
        },
        &opts,
    );
}

fn rel(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    let num = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    num / b.as_slice().iter().fold(1e-30f64, |m, v| m.max(v.abs()))
}

/// The f32 path computes the same features, loss and gradients as the f64 path to 1e-4.
#[test]
fn f32_path_matches_f64_path() {
    let mut n32 = ResNet::<f32>::cifar(3, 1, 11).unwrap();
    let mut n64 = ResNet::<f64>::cifar(3, 1, 11).unwrap();
    // Give the f64 network exactly the f32 network's weights, widened.
    for ((_, p64), (_, p32)) in n64.params_mut().into_iter().zip(n32.params()) {
        p64.value = p32.value.cast();
    }
    let h32 = CosineLinear::<f32>::new(&mut Init::new(12), 64, 4);
    let mut h64 = CosineLinear::<f64>::new(&mut Init::new(12), 64, 4);
    for ((_, p64), (_, p32)) in h64.params_mut().into_iter().zip(h32.params()) {
        p64.value = p32.value.cast();
    }
    let x64 = uniform(&mut rng(13), &[5, 1, 12, 12], -1.0, 1.0).map(|v| v as f32 as f64);
    let x32: Tensor<f32> = x64.cast();
    let labels = [0usize, 1, 2, 3, 1];

    let mut t32 = Tape::new();
    let xv = t32.constant(x32);
    let l32 = resnet_loss(&mut n32, &h32, &mut t32, xv, &labels).unwrap();
    t32.backward(l32).unwrap();
    let mut t64 = Tape::new();
    let xv = t64.constant(x64);
    let l64 = resnet_loss(&mut n64, &h64, &mut t64, xv, &labels).unwrap();
    t64.backward(l64).unwrap();

    let loss_err = rel(&t32.value(l32).cast(), t64.value(l64));
    assert!(loss_err < 1e-4, "loss differs by {loss_err:e}");
    for ((name, p32), (_, p64)) in n32.params().into_iter().zip(n64.params()) {
        let g32: Tensor<f64> = t32.param_grad(p32).unwrap().cast();
        let g64 = t64.param_grad(p64).unwrap();
        let e = rel(&g32, g64);
        assert!(e < 1e-4, "{name}: f32 gradient differs from f64 by {e:e}");
    }
}

/// One SGD step (lr 0.1, momentum 0.9, weight decay 5e-4) on a fixed batch lowers the loss.
#[test]
fn one_sgd_step_lowers_the_loss() {
    let mut net = ResNet::<f32>::cifar(3, 1, 21).unwrap();
    let mut head = CosineLinear::<f32>::new(&mut Init::new(22), 64, 5);
    let x: Tensor<f32> = uniform(&mut rng(23), &[16, 1, 28, 28], -1.0, 1.0).cast();
    let labels: Vec<usize> = (0..16).map(|i| i % 5).collect();
    let mut sgd = Sgd::new(0.9);
    let mut losses = Vec::new();
    for _ in 0..2 {
        let mut tape = Tape::new();
        let xv = tape.constant(x.clone());
        let loss = resnet_loss(&mut net, &head, &mut tape, xv, &labels).unwrap();
        losses.push(tape.value(loss).item().unwrap());
        tape.backward(loss).unwrap();
        let params = net.params_mut().into_iter().chain(head.params_mut());
        let mut groups = [ParamGroup::named(0.1, 5e-4, params)];
        sgd.step(&tape, &mut groups).unwrap();
    }
    assert!(
        losses[1] < losses[0],
        "loss went from {} to {}",
        losses[0],
        losses[1]
    );
}

/// SGD arithmetic on a hand-computed case, and a group with lr 0 left untouched.
///
/// p = 1, g = 2 (loss 2p), wd 0.5, lr 0.1, μ 0.9: d = 2 + 0.5 = 2.5, v = 2.5, p = 0.75;
/// second step: d = 2 + 0.375 = 2.375, v = 0.9·2.5 + 2.375 = 4.625, p = 0.75 − 0.4625 = 0.2875.
#[test]
fn sgd_momentum_and_frozen_groups_follow_the_formula() {
    let mut p = Param::new(Tensor::scalar(1.0f64));
    let mut frozen = Param::new(Tensor::scalar(1.0f64));
    let mut sgd = Sgd::new(0.9);
    for _ in 0..2 {
        let mut tape = Tape::new();
        let a = tape.param(&p);
        let b = tape.param(&frozen);
        let s = tape.add(a, b).unwrap();
        let loss = tape.sum_weighted(s, Tensor::scalar(2.0)).unwrap();
        tape.backward(loss).unwrap();
        let mut groups = [
            ParamGroup {
                lr: 0.1,
                weight_decay: 0.5,
                params: vec![&mut p],
            },
            ParamGroup {
                lr: 0.0,
                weight_decay: 0.5,
                params: vec![&mut frozen],
            },
        ];
        sgd.step(&tape, &mut groups).unwrap();
    }
    assert!((p.value.item().unwrap() - 0.2875).abs() < 1e-12);
    assert_eq!(frozen.value.item().unwrap(), 1.0);
}

#[test]
fn multistep_schedule_decays_at_half_and_three_quarters() {
    let s = MultiStepLr::lucir(0.1, 12);
    let lrs: Vec<f64> = (0..12).map(|e| s.lr_at(e)).collect();
    assert_eq!(s.milestones, vec![6, 9]);
    assert!((lrs[5] - 0.1).abs() < 1e-15);
    assert!((lrs[6] - 0.01).abs() < 1e-15 && (lrs[8] - 0.01).abs() < 1e-15);
    assert!((lrs[9] - 0.001).abs() < 1e-15 && (lrs[11] - 0.001).abs() < 1e-15);
}

#[test]
fn class_balanced_schedule_decays_once_at_half() {
    let s = MultiStepLr::cbf(0.01, 20);
    assert_eq!(s.milestones, vec![10]);
    assert!((s.lr_at(9) - 0.01).abs() < 1e-15);
    assert!((s.lr_at(10) - 0.001).abs() < 1e-15 && (s.lr_at(19) - 0.001).abs() < 1e-15);
    assert!(MultiStepLr::cbf(0.01, 1).milestones.is_empty());
}

/// Saving then loading reproduces every parameter and running statistic bit for bit, and a
/// mismatched architecture or a damaged file is a clear error naming the file.
#[test]
fn state_round_trip_is_bit_exact_and_mismatches_are_errors() {
    let dir = std::env::temp_dir().join(format!("lucir-state-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.state");
    let mut net = ResNet::<f32>::cifar(3, 1, 31).unwrap();
    // Move the running statistics away from their initial values.
    let mut tape = Tape::no_grad();
    let x = tape.constant(uniform(&mut rng(32), &[4, 1, 8, 8], -1.0, 1.0).cast());
    net.forward(&mut tape, x, Mode::Train).unwrap();
    save_state(&net, &path).unwrap();

    let mut other = ResNet::<f32>::cifar(3, 1, 99).unwrap();
    load_state(&mut other, &path).unwrap();
    let bits = |m: &ResNet<f32>| -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for (_, p) in m.params() {
            v.extend(p.value.as_slice().iter().map(|x| x.to_bits()));
        }
        for (_, b) in m.buffers() {
            v.extend(b.as_slice().iter().map(|x| x.to_bits()));
        }
        v
    };
    assert_eq!(bits(&net), bits(&other));

    let mut wrong = ResNet::<f32>::cifar(5, 1, 31).unwrap();
    let err = load_state(&mut wrong, &path).unwrap_err().to_string();
    assert!(err.contains("net.state"), "{err}");
    let mut wrong_type = ResNet::<f64>::cifar(3, 1, 31).unwrap();
    let err = load_state(&mut wrong_type, &path);
    assert!(
        matches!(err, Err(lucir::nn::Error::State { .. })),
        "{err:?}"
    );

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_state(&mut other, &path).unwrap_err().to_string();
    assert!(
        err.contains("net.state") && err.contains("not a readable"),
        "{err}"
    );
    let err = load_state(&mut other, &dir.join("missing.state"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.state"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// ResNet-18 maps 3×64×64 images to 512 features; ResNet-20/32/56 have the CIFAR parameter
/// counts (0.27M / 0.46M / 0.85M with 1×1-conv shortcuts) and 64 features.
#[test]
fn resnet_shapes_and_sizes() {
    let mut r18 = ResNet::<f32>::resnet18(3, 1).unwrap();
    let mut tape = Tape::no_grad();
    let x = tape.constant(Tensor::zeros(&[2, 3, 64, 64]));
    let f = r18.forward(&mut tape, x, Mode::Eval).unwrap();
    assert_eq!(tape.value(f).shape(), &[2, 512]);
    for (n, lo, hi) in [
        (3, 260_000, 290_000),
        (5, 450_000, 480_000),
        (9, 840_000, 870_000),
    ] {
        let net = ResNet::<f32>::cifar(n, 3, 1).unwrap();
        let count = net.num_params();
        assert!(
            (lo..hi).contains(&count),
            "ResNet-{}: {count} parameters",
            6 * n + 2
        );
        assert_eq!(net.feature_dim(), 64);
    }
    let err = ResNet::<f32>::cifar(0, 1, 1);
    assert!(
        matches!(err, Err(lucir::nn::Error::Config(_))),
        "{:?}",
        err.err()
    );
}

/// Features of the last block may be negative: it adds its shortcut without a ReLU.
#[test]
fn resnet_features_can_be_negative() {
    let mut net = ResNet::<f32>::cifar(3, 1, 41).unwrap();
    let mut tape = Tape::no_grad();
    let x = tape.constant(uniform(&mut rng(42), &[8, 1, 16, 16], -1.0, 1.0).cast());
    let f = net.forward(&mut tape, x, Mode::Train).unwrap();
    assert!(tape.value(f).as_slice().iter().any(|v| *v < 0.0));
}

/// The split head scores old then new classes exactly like the merged head, sharing σ.
#[test]
fn split_cosine_head_matches_its_merge() {
    let base = CosineLinear::<f64>::new(&mut Init::new(51), 6, 3);
    let split = SplitCosineLinear::grow(&base, &mut Init::new(52), 2).unwrap();
    assert_eq!(split.old_classes(), 3);
    assert_eq!(split.old.value, base.weight.value);
    let merged = split.merge().unwrap();
    let f = uniform(&mut rng(53), &[4, 6], -1.0, 1.0);
    let mut t = Tape::no_grad();
    let fv = t.constant(f);
    let a = split.forward(&mut t, fv).unwrap().logits;
    let b = merged.forward(&mut t, fv).unwrap().logits;
    assert_eq!(t.value(a).shape(), &[4, 5]);
    assert_eq!(t.value(a), t.value(b));
}
