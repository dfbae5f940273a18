//! Convolution forward and backward at the shapes of ResNet-32 on 28×28 inputs, batch 128.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lucir::tensor::{conv2d, conv2d_bwd, conv2d_bwd_weight, Conv2dGeometry};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::random;

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // (Ci, Co, H, stride): the three stages' 3×3 convs and the two downsampling ones.
    let cases = [
        (16, 16, 28, 1),
        (16, 32, 28, 2),
        (32, 32, 14, 1),
        (32, 64, 14, 2),
        (64, 64, 7, 1),
    ];
    let n = 128;
    let mut group = c.benchmark_group("cpu");
    group.sample_size(10);
    for (ci, co, h, stride) in cases {
        let g = Conv2dGeometry { stride, pad: 1 };
        let x = random(&[n, ci, h, h], &mut rng);
        let w = random(&[co, ci, 3, 3], &mut rng);
        let y = conv2d(&x, &w, g).unwrap();
        let ho = y.shape()[2];
        let flops = 2 * n * co * ho * ho * ci * 9;
        let id = format!("b{n}_{ci}x{h}x{h}_to_{co}_s{stride}");
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(format!("conv2d_fwd/{id}"), |b| {
            b.iter(|| conv2d(&x, &w, g).unwrap())
        });
        let dy = random(y.shape(), &mut rng);
        group.throughput(Throughput::Elements(2 * flops as u64));
        group.bench_function(format!("conv2d_bwd/{id}"), |b| {
            b.iter(|| conv2d_bwd(&x, &w, &dy, g).unwrap())
        });
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(format!("conv2d_bwd_weight/{id}"), |b| {
            b.iter(|| conv2d_bwd_weight(&x, &w, &dy, g).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
