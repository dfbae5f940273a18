//! Training-mode batch norm fused with ReLU, forward and backward, at the activation shapes of
//! ResNet-32 on 28×28 inputs, batch 128 (the memory-bound part of a step; docs/perf.md §12).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lucir::tensor::{batch_norm_train, batch_norm_train_bwd, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::random;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 128;
    let mut group = c.benchmark_group("cpu");
    group.sample_size(20);
    for (ch, h) in [(16, 28), (32, 14), (64, 7)] {
        let x = random(&[n, ch, h, h], &mut rng);
        let dy = random(x.shape(), &mut rng);
        let gamma: Vec<f32> = (0..ch).map(|_| rng.random_range(0.5..1.5)).collect();
        let beta: Vec<f32> = (0..ch).map(|_| rng.random_range(-0.5..0.5)).collect();
        let (gamma, beta) = (
            Tensor::from_vec(&[ch], gamma).unwrap(),
            Tensor::from_vec(&[ch], beta).unwrap(),
        );
        let (_, stats) = batch_norm_train(&x, &gamma, &beta, 1e-5, true).unwrap();
        let id = format!("b{n}_{ch}x{h}x{h}");
        group.throughput(Throughput::Elements(x.len() as u64));
        group.bench_function(format!("batch_norm_relu_fwd/{id}"), |b| {
            b.iter(|| batch_norm_train(&x, &gamma, &beta, 1e-5, true).unwrap())
        });
        group.bench_function(format!("batch_norm_relu_bwd/{id}"), |b| {
            b.iter(|| batch_norm_train_bwd(&x, &gamma, &beta, &stats, &dy, true).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
