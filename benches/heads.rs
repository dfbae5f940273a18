//! The LUCIR head computations at B = 128: cosine logits (forward + backward), margin ranking
//! and feature distillation, on the CPU (criterion) and, in a `--features cuda` build on a
//! machine with a GPU, the `lucir-cuda` launchers as training calls them (transfers included,
//! and timed alone beside) and the whole head step on a tape of device tensors against the CPU
//! step — printed as `HEAD|…` table rows that `cargo xtask bench` copies into docs/perf.md.
//! `benches/reference/pytorch_heads.py` times the same step in PyTorch.

use std::time::Instant;

use criterion::{criterion_group, Criterion};
use lucir::autograd::{Tape, Var};
use lucir::tensor::Tensor;

const SHAPES: [(usize, usize, usize); 3] = [(128, 100, 64), (128, 1000, 512), (128, 10000, 512)];

fn random(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

/// One head step on the device of its inputs: cosine logits, σ, margin ranking and
/// less-forget, forward and backward (`sigma` a one-element tensor beside them).
fn head_step([f, theta, f_star, sigma]: [&Tensor<f32>; 4], labels: &[usize]) {
    let c = theta.shape()[0];
    let mut t = Tape::new();
    let fv = t.leaf(f.clone());
    let tv = t.leaf(theta.clone());
    let cos = t.cosine_logits(fv, tv).unwrap();
    let mr = t.margin_rank(cos, labels, c / 2, 2, 0.5).unwrap();
    let lf = t.feature_distill(fv, f_star, 5.0).unwrap();
    finish_step(t, [cos, mr, lf], sigma, labels);
}

/// One CPU head step.
fn cpu_step(f: &Tensor<f32>, theta: &Tensor<f32>, f_star: &Tensor<f32>, labels: &[usize]) {
    head_step([f, theta, f_star, &Tensor::scalar(4.0)], labels);
}

/// The rest of a head step: z = σ·cos, cross-entropy, the sum, backward.
fn finish_step(mut t: Tape<f32>, [cos, mr, lf]: [Var; 3], sigma: &Tensor<f32>, labels: &[usize]) {
    let s = t.leaf(sigma.clone());
    let z = t.scale(cos, s).unwrap();
    let ce = t.cross_entropy(z, labels).unwrap();
    let a = t.add(ce, mr).unwrap();
    let loss = t.add(a, lf).unwrap();
    t.backward(loss).unwrap();
}

/// The margin-ranking settings of every step here, as [`cpu_step`] passes them: the upper half
/// of the `c` classes new, K = 2, margin 0.5.
#[cfg(feature = "cuda")]
fn margin_args(c: usize) -> lucir::cuda::MarginRankArgs {
    lucir::cuda::MarginRankArgs {
        n_old: c / 2,
        k: 2,
        margin: 0.5,
    }
}

fn inputs(b: usize, c: usize, d: usize) -> (Tensor<f32>, Tensor<f32>, Tensor<f32>, Vec<usize>) {
    (
        Tensor::from_vec(&[b, d], random(b * d, 1)).unwrap(),
        Tensor::from_vec(&[c, d], random(c * d, 2)).unwrap(),
        Tensor::from_vec(&[b, d], random(b * d, 3)).unwrap(),
        (0..b).map(|i| (i * 7) % c).collect(),
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu");
    group.sample_size(10);
    for (b, cl, d) in SHAPES {
        let (f, theta, f_star, labels) = inputs(b, cl, d);
        group.bench_function(format!("lucir_heads_fwd_bwd/b{b}_c{cl}_d{d}"), |bn| {
            bn.iter(|| cpu_step(&f, &theta, &f_star, &labels))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

/// Mean seconds per call of `run` over `iters` calls after one warm-up call.
#[cfg(feature = "cuda")]
fn time_calls(
    gpu: &lucir::cuda::Gpu,
    iters: usize,
    run: &mut dyn FnMut() -> lucir::cuda::Result<()>,
) -> lucir::cuda::Result<f64> {
    run()?;
    gpu.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..iters {
        run()?;
    }
    gpu.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

/// Mean seconds of uploading buffers of `ups` floats and downloading buffers of `downs` floats,
/// one copy each: the transfers a launcher makes, without its kernels.
#[cfg(feature = "cuda")]
fn transfers(
    gpu: &lucir::cuda::Gpu,
    ups: &[usize],
    downs: &[usize],
    iters: usize,
) -> lucir::cuda::Result<f64> {
    let host: Vec<Vec<f32>> = ups.iter().map(|&n| random(n, 5)).collect();
    let dev = downs
        .iter()
        .map(|&n| gpu.upload(&random(n, 6)))
        .collect::<lucir::cuda::Result<Vec<_>>>()?;
    time_calls(gpu, iters, &mut || {
        for h in &host {
            gpu.upload(h)?;
        }
        for (d, &n) in dev.iter().zip(downs) {
            gpu.download(d, n)?;
        }
        Ok(())
    })
}

/// One launcher row: name, seconds per call, bytes crossing per call, seconds of those
/// transfers alone.
#[cfg(feature = "cuda")]
type Row = (&'static str, f64, f64, f64);

/// The head launchers as training calls them (uploads, kernels, downloads included): per call,
/// the time, the bytes that cross between host and device, and the time of those transfers
/// alone.
#[cfg(feature = "cuda")]
fn gpu_rows(
    gpu: &lucir::cuda::Gpu,
    [b, c, d]: [usize; 3],
    iters: usize,
) -> lucir::cuda::Result<Vec<Row>> {
    let (f, theta, f_star) = (random(b * d, 1), random(c * d, 2), random(b * d, 3));
    let g = random(b * c, 4);
    let labels: Vec<usize> = (0..b).map(|i| (i * 7) % c).collect();
    let args = margin_args(c);
    let fwd = gpu.cosine_logits_fwd(&f, &theta, 4.0, [b, c, d])?;
    let cos = fwd.cos(gpu)?;
    let mut rows = Vec::new();
    let mut row =
        |name, run: &mut dyn FnMut() -> lucir::cuda::Result<()>, ups: &[usize], downs: &[usize]| {
            let t = time_calls(gpu, iters, run)?;
            let bytes = 4.0 * ups.iter().chain(downs).sum::<usize>() as f64;
            rows.push((name, t, bytes, transfers(gpu, ups, downs, iters)?));
            lucir::cuda::Result::Ok(())
        };
    row(
        "cosine_logits_fwd",
        &mut || {
            gpu.cosine_logits_fwd(&f, &theta, 4.0, [b, c, d])?
                .cos(gpu)?;
            Ok(())
        },
        &[b * d, c * d, 1],
        &[b * c],
    )?;
    row(
        "cosine_logits_bwd",
        &mut || {
            gpu.cosine_logits_bwd(&fwd, &g, None, false)?;
            Ok(())
        },
        &[b * c],
        &[b * d, c * d],
    )?;
    row(
        "margin_rank_fwd_bwd",
        &mut || {
            let m = gpu.margin_rank_fwd(&cos, &labels, args, [b, c])?;
            gpu.margin_rank_bwd(&m, 1.0)?;
            Ok(())
        },
        &[b * c, b],
        &[b, b * c],
    )?;
    row(
        "feature_distill_fwd_bwd",
        &mut || {
            let l = gpu.feature_distill_fwd(&f, &f_star, 5.0, [b, d])?;
            gpu.feature_distill_bwd(&l, 1.0)?;
            Ok(())
        },
        &[b * d, b * d],
        &[b, b * d],
    )?;
    Ok(rows)
}

/// Mean seconds of `reps` calls of `run` after one warm-up call.
#[cfg(feature = "cuda")]
fn mean_secs(reps: usize, run: &mut dyn FnMut()) -> f64 {
    run();
    let t0 = Instant::now();
    for _ in 0..reps {
        run();
    }
    t0.elapsed().as_secs_f64() / reps as f64
}

#[cfg(feature = "cuda")]
fn gpu_table() {
    let (gpu, dev) = match (lucir::cuda::Gpu::new(0), lucir::tensor::Device::cuda(0)) {
        (Ok(g), Ok(d)) => (g, d),
        (Err(e), _) => {
            println!("skipped GPU head benchmark: {e}");
            return;
        }
        (_, Err(e)) => {
            println!("skipped GPU head benchmark: {e}");
            return;
        }
    };
    let lucir::tensor::Device::Cuda(dev_gpu) = &dev else {
        return;
    };
    println!("HEAD|device|{}|", gpu.name());
    for (b, c, d) in SHAPES {
        let (f, theta, f_star, labels) = inputs(b, c, d);
        let cpu = mean_secs(5, &mut || cpu_step(&f, &theta, &f_star, &labels));
        let on = |t: &Tensor<f32>| t.to_device(&dev).unwrap();
        let inputs = [on(&f), on(&theta), on(&f_star), on(&Tensor::scalar(4.0))];
        let on_gpu = mean_secs(50, &mut || {
            head_step([&inputs[0], &inputs[1], &inputs[2], &inputs[3]], &labels);
            dev_gpu.synchronize().unwrap();
        });
        match gpu_rows(&gpu, [b, c, d], 50) {
            Ok(rows) => {
                for (name, secs, bytes, moved) in rows {
                    println!(
                        "HEAD|{name}|B={b} C={c} D={d}|{:.1} µs|{:.1} MB moved in {:.1} µs ({:.0}%)|",
                        secs * 1e6,
                        bytes / 1e6,
                        moved * 1e6,
                        100.0 * moved / secs
                    );
                }
                println!(
                    "HEAD|LUCIR head step on a tape|B={b} C={c} D={d}|{:.1} µs GPU vs {:.1} µs CPU|CPU/GPU {:.1}×|",
                    on_gpu * 1e6,
                    cpu * 1e6,
                    cpu / on_gpu
                );
            }
            Err(e) => println!("HEAD|error|{e}|"),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn gpu_table() {
    let _ = Instant::now;
    println!("skipped GPU head benchmark: built without the `cuda` feature");
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    gpu_table();
}
