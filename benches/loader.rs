//! Loader throughput with augmentation: one epoch over 10 000 Fashion-MNIST-sized images
//! (1×28×28, random crop with 4-pixel padding + flip + normalisation), batch 128.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lucir::data::{Augment, Loader, Normalization, Sample, Split};

fn bench(c: &mut Criterion) {
    let n = 10_000;
    let images: Vec<u8> = (0..n * 784).map(|i| (i * 31 % 251) as u8).collect();
    let split = Arc::new(Split {
        images,
        labels: (0..n).map(|i| i % 10).collect(),
        shape: [1, 28, 28],
    });
    let samples: Vec<Sample> = (0..n)
        .map(|i| Sample {
            id: i,
            label: i % 10,
        })
        .collect();
    let aug = Augment {
        crop: 28,
        pad: 4,
        flip: true,
    };
    let loader = Loader::train(split, samples, 128, Normalization::fmnist(), aug, 7);
    let mut group = c.benchmark_group("cpu");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    let mut epoch = 0;
    group.bench_function("loader_epoch_augmented/b128_1x28x28", |b| {
        b.iter(|| {
            epoch += 1;
            loader.epoch(epoch).map(|b| b.labels.len()).sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
