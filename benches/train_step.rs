//! One ResNet-32 training step on 1×28×28 inputs, batch 128: forward, cosine head,
//! cross-entropy, backward and an SGD step. Throughput is in images.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lucir::autograd::{ParamGroup, Sgd, Tape};
use lucir::nn::{CosineLinear, Init, Mode, Module, ResNet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// As the driver: large buffers on huge pages (see `lucir::tensor::HugePages`).
#[global_allocator]
static ALLOC: lucir::tensor::HugePages = lucir::tensor::HugePages;

mod common;
use common::random;

fn bench(c: &mut Criterion) {
    // SAFETY: the first thing the program does, before any other thread is started.
    unsafe {
        lucir::tensor::retain_freed_memory();
    }
    let (batch, classes) = (128, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = random(&[batch, 1, 28, 28], &mut rng);
    let labels: Vec<usize> = (0..batch).map(|i| i % classes).collect();
    let mut net = ResNet::<f32>::cifar(5, 1, 1).unwrap();
    let mut head = CosineLinear::<f32>::new(&mut Init::new(2), 64, classes);
    let mut sgd = Sgd::new(0.9);

    let mut group = c.benchmark_group("cpu");
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("resnet32_train_step/b128_1x28x28", |b| {
        // As training runs it: on a worker, the others polling (`with_workers_awake`).
        b.iter(|| {
            lucir::tensor::with_workers_awake(|| {
                let mut tape = Tape::new();
                let xv = tape.constant(x.clone());
                let f = net.forward(&mut tape, xv, Mode::Train).unwrap();
                let out = head.forward(&mut tape, f).unwrap();
                let loss = tape.cross_entropy(out.logits, &labels).unwrap();
                tape.backward(loss).unwrap();
                let params = net.params_mut().into_iter().chain(head.params_mut());
                let mut groups = [ParamGroup::named(0.1, 5e-4, params)];
                sgd.step(&tape, &mut groups).unwrap();
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
