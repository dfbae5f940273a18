//! The LUCIR head computations at B = 128: cosine logits (forward + backward), margin ranking
//! and feature distillation, on the CPU (criterion) and, in a `--features cuda` build on a
//! machine with a GPU, the `lucir-cuda` launchers as training calls them (transfers included)
//! — printed as `HEAD|…` table rows that `cargo xtask bench` copies into docs/perf.md.

use std::time::Instant;

use criterion::{criterion_group, Criterion};
use lucir::autograd::Tape;
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

/// One CPU head step: cosine logits, σ, margin ranking and less-forget, forward and backward.
fn cpu_step(f: &Tensor<f32>, theta: &Tensor<f32>, f_star: &Tensor<f32>, labels: &[usize]) {
    let c = theta.shape()[0];
    let mut t = Tape::new();
    let fv = t.leaf(f.clone());
    let tv = t.leaf(theta.clone());
    let s = t.leaf(Tensor::scalar(4.0));
    let cos = t.cosine_logits(fv, tv).unwrap();
    let z = t.scale(cos, s).unwrap();
    let ce = t.cross_entropy(z, labels).unwrap();
    let mr = t.margin_rank(cos, labels, c / 2, 2, 0.5).unwrap();
    let lf = t.feature_distill(fv, f_star, 5.0).unwrap();
    let a = t.add(ce, mr).unwrap();
    let loss = t.add(a, lf).unwrap();
    t.backward(loss).unwrap();
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

/// The head launchers as training calls them (uploads, kernels, downloads included): per call,
/// the time and the rate of the bytes that cross between host and device.
#[cfg(feature = "cuda")]
fn gpu_rows(
    gpu: &lucir::cuda::Gpu,
    [b, c, d]: [usize; 3],
    iters: usize,
) -> lucir::cuda::Result<Vec<(&'static str, f64, f64)>> {
    use lucir::cuda::MarginRankArgs;
    let (f, theta, f_star) = (random(b * d, 1), random(c * d, 2), random(b * d, 3));
    let g = random(b * c, 4);
    let labels: Vec<usize> = (0..b).map(|i| (i * 7) % c).collect();
    let args = MarginRankArgs {
        n_old: c / 2,
        k: 2,
        margin: 0.5,
    };
    let (bc, bd, cd) = ((b * c) as f64, (b * d) as f64, (c * d) as f64);
    let fwd = gpu.cosine_logits_fwd(&f, &theta, 4.0, [b, c, d])?;
    let cos = fwd.cos(gpu)?;
    let mut rows = Vec::new();
    let t = time_calls(gpu, iters, &mut || {
        gpu.cosine_logits_fwd(&f, &theta, 4.0, [b, c, d])?
            .cos(gpu)?;
        Ok(())
    })?;
    rows.push(("cosine_logits_fwd", t, 4.0 * (bd + cd + bc)));
    let t = time_calls(gpu, iters, &mut || {
        gpu.cosine_logits_bwd(&fwd, &g, None, false)?;
        Ok(())
    })?;
    rows.push(("cosine_logits_bwd", t, 4.0 * (bc + bd + cd)));
    let t = time_calls(gpu, iters, &mut || {
        let m = gpu.margin_rank_fwd(&cos, &labels, args, [b, c])?;
        gpu.margin_rank_bwd(&m, 1.0)?;
        Ok(())
    })?;
    rows.push(("margin_rank_fwd_bwd", t, 4.0 * (2.0 * bc + b as f64)));
    let t = time_calls(gpu, iters, &mut || {
        let l = gpu.feature_distill_fwd(&f, &f_star, 5.0, [b, d])?;
        gpu.feature_distill_bwd(&l, 1.0)?;
        Ok(())
    })?;
    rows.push(("feature_distill_fwd_bwd", t, 4.0 * 3.0 * bd));
    Ok(rows)
}

#[cfg(feature = "cuda")]
fn gpu_table() {
    let gpu = match lucir::cuda::Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("skipped GPU head benchmark: {e}");
            return;
        }
    };
    println!("HEAD|device|{}", gpu.name());
    for (b, c, d) in SHAPES {
        let (f, theta, f_star, labels) = inputs(b, c, d);
        let t0 = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            cpu_step(&f, &theta, &f_star, &labels);
        }
        let cpu = t0.elapsed().as_secs_f64() / reps as f64;
        match gpu_rows(&gpu, [b, c, d], 50) {
            Ok(rows) => {
                let total: f64 = rows.iter().map(|r| r.1).sum();
                for (name, secs, bytes) in rows {
                    println!(
                        "HEAD|{name}|B={b} C={c} D={d}|{:.1} µs|{:.1} GB/s host↔device|",
                        secs * 1e6,
                        bytes / secs / 1e9
                    );
                }
                println!(
                    "HEAD|all heads (fwd+bwd)|B={b} C={c} D={d}|{:.1} µs GPU vs {:.1} µs CPU|CPU/GPU {:.1}×|",
                    total * 1e6,
                    cpu * 1e6,
                    cpu / total
                );
            }
            Err(e) => println!("HEAD|error|{e}"),
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
