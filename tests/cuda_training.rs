//! Training on the device, end to end at the network level: a ResNet-20 with a linear head
//! trained for 30 SGD steps (momentum 0.9, weight decay 5e-4, learning rate 0.1; cross-entropy
//! on seeded 3×32×32 batches of 16: ten class patterns plus noise) on the CPU and on a CUDA device from
//! the same initial weights. Every step's loss must agree within 2e-3 relative (the device sums
//! in other orders, so the two runs drift apart slowly; each step's pair is printed), and so
//! must an evaluation-mode forward pass after training (running statistics included). Two
//! device runs must give the same bits (losses and every parameter): what makes `--resume`
//! exact on a GPU. A second test runs the method's own step (`TrainStep`) of an incremental
//! LUCIR phase — split cosine head, the frozen previous model's features, cross-entropy plus
//! feature distillation plus margin ranking — for 30 steps on both and compares every loss
//! term step by step. Without a GPU the tests print `skipped: no CUDA device` and check
//! nothing.
#![cfg(feature = "cuda")]

mod gpu_common;

use gpu_common::device;
use lucir::autograd::{ParamGroup, Sgd};
use lucir::method::{
    adaptive_lambda, Arch, LossTerms, MethodConfig, Network, Stage, StepLoss, TrainStep,
};
use lucir::nn::{Init, Linear, Mode, Module, ResNet, Tape};
use lucir::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEPS: usize = 30;
const BATCH: usize = 16;
const CLASSES: usize = 10;

/// A network and its head.
struct Model {
    net: ResNet<f32>,
    head: Linear<f32>,
}

impl Model {
    fn new() -> Self {
        let net = ResNet::cifar(3, 3, 7).unwrap();
        let mut init = Init::new(8);
        let head = Linear::new(&mut init, net.feature_dim(), CLASSES);
        Self { net, head }
    }

    fn to(&self, device: &Device) -> Self {
        let mut m = Self {
            net: self.net.clone(),
            head: self.head.clone(),
        };
        m.net.to_device(device).unwrap();
        m.head.to_device(device).unwrap();
        m
    }

    /// Every parameter and buffer, read back, in listing order.
    fn state(&self) -> Vec<Vec<f32>> {
        let params = self.net.params().into_iter().chain(self.head.params());
        let mut v: Vec<Vec<f32>> = params
            .map(|(_, p)| p.value.to_cpu().unwrap().into_vec())
            .collect();
        v.extend(
            self.net
                .buffers()
                .into_iter()
                .map(|(_, b)| b.to_cpu().unwrap().into_vec()),
        );
        v
    }
}

/// The seeded batches: images and labels. Each class has its own pattern, and an image is its
/// class's pattern plus noise, so the task is learnable and the losses fall (a run that only
/// fits noise would amplify the two devices' rounding differences without end).
fn batches() -> Vec<(Tensor<f32>, Vec<usize>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let len = 3 * 32 * 32;
    let patterns: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| (0..len).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    (0..STEPS)
        .map(|_| {
            let y: Vec<usize> = (0..BATCH).map(|_| rng.random_range(0..CLASSES)).collect();
            let x: Vec<f32> = y
                .iter()
                .flat_map(|&c| patterns[c].clone())
                .map(|p| p + rng.random_range(-1.0f32..1.0))
                .collect();
            (Tensor::from_vec(&[BATCH, 3, 32, 32], x).unwrap(), y)
        })
        .collect()
}

/// Trains `m` on `data` (moved to `device` batch by batch); returns each step's loss and the
/// logits of an evaluation-mode pass over the first batch afterwards.
fn train(
    m: &mut Model,
    data: &[(Tensor<f32>, Vec<usize>)],
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let mut sgd = Sgd::new(0.9);
    let mut losses = Vec::new();
    for (x, y) in data {
        let mut tape = Tape::new();
        let xv = tape.constant(x.to_device(device).unwrap());
        let f = m.net.forward(&mut tape, xv, Mode::Train).unwrap();
        let z = m.head.forward(&mut tape, f).unwrap().logits;
        let loss = tape.cross_entropy(z, y).unwrap();
        tape.backward(loss).unwrap();
        losses.push(tape.value(loss).item().unwrap());
        let params = m.net.params_mut().into_iter().chain(m.head.params_mut());
        let mut groups = [ParamGroup::named(0.1, 5e-4, params)];
        sgd.step(&tape, &mut groups).unwrap();
    }
    let mut tape = Tape::no_grad();
    let xv = tape.constant(data[0].0.to_device(device).unwrap());
    let f = m.net.forward(&mut tape, xv, Mode::Eval).unwrap();
    let z = m.head.forward(&mut tape, f).unwrap().logits;
    (losses, tape.value(z).to_cpu().unwrap().into_vec())
}

#[test]
fn thirty_steps_on_the_device_follow_the_cpu_and_repeat_bit_for_bit() {
    let Some(dev) = device() else { return };
    let data = batches();
    let start = Model::new();
    let (cpu_losses, cpu_eval) = train(&mut start.to(&Device::Cpu), &data, &Device::Cpu);
    let mut gpu_model = start.to(&dev);
    let (gpu_losses, gpu_eval) = train(&mut gpu_model, &data, &dev);
    for (i, (g, c)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        println!(
            "step {i:2}: loss gpu {g:.7} cpu {c:.7} (rel {:.2e})",
            (g - c).abs() / c.abs()
        );
    }
    for (i, (g, c)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        assert!(
            (g - c).abs() <= 2e-3 * c.abs().max(1.0),
            "step {i}: loss gpu {g} cpu {c}"
        );
    }
    let spread = cpu_eval.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = gpu_eval
        .iter()
        .zip(&cpu_eval)
        .fold(0.0f32, |m, (g, c)| m.max((g - c).abs()));
    println!("evaluation logits: worst difference {worst:.3e} of a largest {spread:.3e}");
    assert!(
        worst <= 2e-2 * spread.max(1.0),
        "evaluation logits drifted: {worst}"
    );

    // The same run again on the device: the same bits.
    let mut again = start.to(&dev);
    let (again_losses, again_eval) = train(&mut again, &data, &dev);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&again_losses), bits(&gpu_losses), "losses repeat");
    assert_eq!(bits(&again_eval), bits(&gpu_eval), "evaluation repeats");
    for (i, (a, b)) in again.state().iter().zip(gpu_model.state()).enumerate() {
        assert_eq!(bits(a), bits(&b), "parameter or buffer {i} repeats");
    }
}

/// `a` within 2e-3 of `b` (relative to |b|, at least 1).
fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2e-3 * b.abs().max(1.0)
}

/// One incremental LUCIR phase's first 30 steps (5 old classes, 5 new, the previous model
/// frozen) on `device`: the loss terms of each step, read after each step or (`deferred`, as the
/// learner's loop runs) all after the last.
fn lucir_steps(
    start: &(Network<f32>, Network<f32>),
    data: &[(Tensor<f32>, Vec<usize>)],
    device: &Device,
    deferred: bool,
) -> Vec<LossTerms> {
    let (mut net, mut prev) = (start.0.clone(), start.1.clone());
    net.to_device(device).unwrap();
    prev.to_device(device).unwrap();
    let cfg = MethodConfig::lucir(Arch::Resnet20, 30);
    let step = TrainStep {
        cfg: &cfg,
        phase: 1,
        old: 5,
        lambda: adaptive_lambda(&cfg, 5, 5),
        stage: Stage::Train,
    };
    let mut sgd = Sgd::new(cfg.momentum);
    let held: Vec<StepLoss<f32>> = data
        .iter()
        .map(|(x, y)| {
            let x = x.to_device(device).unwrap();
            if deferred {
                step.run_deferred(&mut net, Some(&mut prev), x, y, 0.1, &mut sgd)
            } else {
                step.run(&mut net, Some(&mut prev), x, y, 0.1, &mut sgd)
                    .map(StepLoss::Host)
            }
            .unwrap()
        })
        .collect();
    held.iter().map(|l| l.read().unwrap()).collect()
}

#[test]
fn lucir_incremental_steps_on_the_device_follow_the_cpu() {
    let Some(dev) = device() else { return };
    let data = batches();
    let prev = Network::<f32>::new(Arch::Resnet20, 3, 5, true, 11).unwrap();
    let mut net = prev.clone();
    let dim = net.backbone.feature_dim();
    net.head.grow(&mut Init::new(12), 5, dim).unwrap();
    let start = (net, prev);
    let cpu = lucir_steps(&start, &data, &Device::Cpu, false);
    let gpu = lucir_steps(&start, &data, &dev, false);
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        println!(
            "step {i:2}: gpu ce {:.6} lf {:.6} mr {:.6} | cpu ce {:.6} lf {:.6} mr {:.6}",
            g.ce, g.lf, g.mr, c.ce, c.lf, c.mr
        );
    }
    assert!(
        cpu.iter().any(|t| t.mr > 0.0),
        "the margin loss never acted"
    );
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        for (name, a, b) in [("ce", g.ce, c.ce), ("lf", g.lf, c.lf), ("mr", g.mr, c.mr)] {
            assert!(near(a, b), "step {i}: {name} gpu {a} cpu {b}");
        }
    }
    // The second run leaves each step's terms on the device (no wait inside a step) and reads
    // them all at the end, as the learner does: the same bits.
    let again = lucir_steps(&start, &data, &dev, true);
    assert_eq!(
        again, gpu,
        "a second device run, terms read at the end, repeats every loss"
    );
}
