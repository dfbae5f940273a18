//! Where the convolution time goes, against the machine's peak: an FMA loop on every rayon
//! thread measures the peak f32 GFLOP/s (AVX-512, else AVX2+FMA, else scalar), then every
//! convolution shape of ResNet-20/32 on 1×28×28 (Fashion-MNIST) and 3×32×32 (CIFAR) inputs,
//! batch 128, is timed (median of 5 after a warm-up) forward, backward as training runs it
//! (both gradients in one pass, which share the copies of `dy`: 2× the forward FLOPs), and each
//! gradient on its own (`conv2d_bwd_data`, `conv2d_bwd_weight`: the forward FLOPs each). Every
//! figure is one pass's own time and the FLOPs that pass does, so none can exceed the peak but
//! by timing noise, which is then reported. Printed as `LAYER|…` rows (and one `PEAK|…` row)
//! that `cargo xtask bench` copies into docs/perf.md.
//!
//! Then each 3×3 stride-1 shape again with Winograd's kernels (`Conv3x3::Winograd`, F(2×2,
//! 3×3), and `Conv3x3::Winograd4`, F(4×4, 3×3)): the time of each pass beside the direct
//! kernels' (a ratio; Winograd does fewer FLOPs, so it gets no rate), and the largest error of
//! each result, every algorithm's, relative to the largest value of the f64 result
//! (`WINOGRAD|…` rows).
//!
//! Where the CPU has AVX512-BF16, each 3×3 stride-1 shape with 16 or more input channels once
//! more with bf16 products (`Precision::Bf16`): each pass's time beside the direct kernels' and
//! its rate against the bf16 peak (a `vdpbf16ps` loop, `PEAK_BF16|…`), and the same errors
//! (`BF16|…` rows).

use std::time::Instant;

use lucir::tensor::{
    conv2d, conv2d_bwd, conv2d_bwd_data, conv2d_bwd_weight, set_conv3x3, set_precision,
    Conv2dGeometry, Conv3x3, Precision, Tensor,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// As the driver: large buffers on huge pages (see `lucir::tensor::HugePages`).
#[global_allocator]
static ALLOC: lucir::tensor::HugePages = lucir::tensor::HugePages;

mod common;
use common::random;

/// Independent accumulator chains: enough to cover FMA latency (4) × ports (2) with room.
const CHAINS: usize = 12;
/// FMA iterations per chain in one timed pass.
const ITERS: usize = 4_000_000;

/// FLOPs of one pass of [`fma_loop`] on one thread at `lanes` f32 per vector.
fn loop_flops(lanes: usize) -> f64 {
    (2 * lanes * CHAINS * ITERS) as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_avx512(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(seed); CHAINS];
    for _ in 0..ITERS {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

/// The bf16 dot-product loop: `CHAINS` chains of `vdpbf16ps`, each instruction 2 products
/// and 2 additions per f32 lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn dp_loop_bf16(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
    let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(2e-3));
    let mut acc = [_mm512_set1_ps(seed); CHAINS];
    for _ in 0..ITERS {
        for v in acc.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

/// Peak bf16 GFLOP/s of all rayon threads running [`dp_loop_bf16`] at once (best of 3), where
/// the CPU has AVX512-BF16.
fn peak_bf16() -> Option<f64> {
    if !Precision::Bf16.available() {
        return None;
    }
    let threads = rayon::current_num_threads();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        let out: Vec<f32> = (0..threads)
            .into_par_iter()
            .map(|i| {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX512-BF16 (`Precision::Bf16.available`).
                return unsafe { dp_loop_bf16(i as f32 * 1e-3) };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("no AVX512-BF16 off x86-64: {i}")
            })
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(out);
        best = best.max(threads as f64 * 2.0 * loop_flops(16) / secs / 1e9);
    }
    Some(best)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_avx2(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); CHAINS];
    for _ in 0..ITERS {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0f32; 8];
    let mut total = 0.0;
    for v in acc {
        // SAFETY: `out` holds the 8 floats an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        total += out.iter().sum::<f32>();
    }
    total
}

fn fma_loop_scalar(seed: f32) -> f32 {
    let mut acc = [seed; CHAINS];
    for _ in 0..ITERS {
        for v in acc.iter_mut() {
            *v = v.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

/// One pass of the widest FMA loop this CPU runs, and its f32 lanes.
fn fma_loop(seed: f32) -> (f32, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return (unsafe { fma_loop_avx512(seed) }, 16);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return (unsafe { fma_loop_avx2(seed) }, 8);
        }
    }
    (fma_loop_scalar(seed), 1)
}

/// Peak f32 GFLOP/s of all rayon threads running the FMA loop at once (best of 3), and the
/// instruction set used.
fn peak() -> (f64, &'static str) {
    let threads = rayon::current_num_threads();
    let mut best = 0.0f64;
    let mut lanes = 1;
    for _ in 0..3 {
        let t0 = Instant::now();
        let out: Vec<(f32, usize)> = (0..threads)
            .into_par_iter()
            .map(|i| fma_loop(i as f32 * 1e-3))
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        lanes = out[0].1;
        std::hint::black_box(out);
        best = best.max(threads as f64 * loop_flops(lanes) / secs / 1e9);
    }
    let isa = match lanes {
        16 => "AVX-512",
        8 => "AVX2+FMA",
        _ => "scalar",
    };
    (best, isa)
}

/// Median seconds of 5 calls of `run` after one warm-up call.
fn median_secs(run: &mut dyn FnMut()) -> f64 {
    run();
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            run();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[2]
}

/// A convolution of the CIFAR ResNets: (input channels, output channels, input side, kernel,
/// stride, how many of it ResNet-32 has).
type Layer = (usize, usize, usize, usize, usize, usize);

/// ResNet-32's convolutions on a `c`×`s`×`s` input (5 blocks per stage).
fn resnet32_layers(c: usize, s: usize) -> Vec<Layer> {
    vec![
        (c, 16, s, 3, 1, 1),
        (16, 16, s, 3, 1, 10),
        (16, 32, s, 3, 2, 1),
        (16, 32, s, 1, 2, 1),
        (32, 32, s / 2, 3, 1, 9),
        (32, 64, s / 2, 3, 2, 1),
        (32, 64, s / 2, 1, 2, 1),
        (64, 64, s / 4, 3, 1, 9),
    ]
}

/// Median seconds of each pass of one convolution: forward, backward (both gradients), input
/// gradient alone, weight gradient alone.
fn pass_times(x: &Tensor<f32>, w: &Tensor<f32>, dy: &Tensor<f32>, g: Conv2dGeometry) -> [f64; 4] {
    [
        median_secs(&mut || {
            std::hint::black_box(conv2d(x, w, g).expect("valid shapes"));
        }),
        median_secs(&mut || {
            std::hint::black_box(conv2d_bwd(x, w, dy, g).expect("valid shapes"));
        }),
        median_secs(&mut || {
            std::hint::black_box(conv2d_bwd_data(x, w, dy, g).expect("valid shapes"));
        }),
        median_secs(&mut || {
            std::hint::black_box(conv2d_bwd_weight(x, w, dy, g).expect("valid shapes"));
        }),
    ]
}

/// The largest error of the f32 forward, input-gradient and weight-gradient results relative
/// to the largest value of the f64 ones (the gemm path in f64).
fn errors(x: &Tensor<f32>, w: &Tensor<f32>, dy: &Tensor<f32>, g: Conv2dGeometry) -> [f64; 3] {
    let rel = |a: &Tensor<f32>, b: &Tensor<f64>| {
        let scale = b.as_slice().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = a.as_slice().iter().zip(b.as_slice());
        err.fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs())) / scale
    };
    let (x64, w64, dy64) = (x.cast::<f64>(), w.cast::<f64>(), dy.cast::<f64>());
    let y = conv2d(x, w, g).expect("valid shapes");
    let (dx, dw) = conv2d_bwd(x, w, dy, g).expect("valid shapes");
    let y64 = conv2d(&x64, &w64, g).expect("valid shapes");
    let (dx64, dw64) = conv2d_bwd(&x64, &w64, &dy64, g).expect("valid shapes");
    [rel(&y, &y64), rel(&dx, &dx64), rel(&dw, &dw64)]
}

fn main() {
    // As the driver does: freed activations stay in the process, so each timed call reuses
    // memory instead of faulting fresh pages in (which training never pays in its steady state).
    // SAFETY: the first thing the program does, before any other thread is started.
    unsafe {
        lucir::tensor::retain_freed_memory();
    }
    let (peak, isa) = peak();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let threads = rayon::current_num_threads();
    println!("PEAK|{cpu}, {threads} threads|{isa} FMA loop|{peak:.0} GFLOP/s|");
    let peak16 = peak_bf16();
    if let Some(p) = peak16 {
        println!("PEAK_BF16|{cpu}, {threads} threads|vdpbf16ps loop|{p:.0} GFLOP/s|");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 128;
    for (c, s) in [(1, 28), (3, 32)] {
        for (ci, co, h, k, stride, count) in resnet32_layers(c, s) {
            let g = Conv2dGeometry { stride, pad: k / 2 };
            let x = random(&[n, ci, h, h], &mut rng);
            let w = random(&[co, ci, k, k], &mut rng);
            let y = conv2d(&x, &w, g).expect("valid shapes");
            let ho = y.shape()[2];
            let dy = random(y.shape(), &mut rng);
            let flops = (2 * n * co * ho * ho * ci * k * k) as f64;
            let [fwd, bwd, bwd_data, bwd_weight] = pass_times(&x, &w, &dy, g);
            let layer = format!("{ci}→{co} {k}×{k}/{stride} at {h}×{h}");
            let rate = |what: &str, flops: f64, secs: f64| {
                let gf = flops / secs / 1e9;
                if gf > peak {
                    eprintln!(
                        "{layer} {what}: {gf:.0} GFLOP/s, above the measured peak ({peak:.0}): \
                         the machine was busier while the peak was measured"
                    );
                }
                format!("{gf:.0} ({:.0}%)", 100.0 * gf / peak)
            };
            println!(
                "LAYER|{c}×{s}×{s}|{layer} (×{count})|{}|{}|{}|{}|{:.1}|",
                rate("forward", flops, fwd),
                rate("backward", 2.0 * flops, bwd),
                rate("input gradient", flops, bwd_data),
                rate("weight gradient", flops, bwd_weight),
                count as f64 * (fwd + bwd) * 1e3
            );
            // The stems (1 and 3 input channels) stay direct under Winograd too.
            if k == 3 && stride == 1 && ci >= 16 && Conv3x3::Winograd.available() {
                let direct = errors(&x, &w, &dy, g);
                set_conv3x3(Conv3x3::Winograd);
                let times = pass_times(&x, &w, &dy, g);
                let winograd = errors(&x, &w, &dy, g);
                set_conv3x3(Conv3x3::Winograd4);
                let times4 = pass_times(&x, &w, &dy, g);
                let winograd4 = errors(&x, &w, &dy, g);
                set_conv3x3(Conv3x3::Direct);
                let cell = |i: usize, old: f64| {
                    let (t2, t4) = (times[i], times4[i]);
                    format!(
                        "{:.2} → {:.2} ({:.2}×) / {:.2} ({:.2}×)",
                        old * 1e3,
                        t2 * 1e3,
                        old / t2,
                        t4 * 1e3,
                        old / t4
                    )
                };
                let errs = |e: [f64; 3]| format!("{:.1e} / {:.1e} / {:.1e}", e[0], e[1], e[2]);
                if let Some(peak16) = peak16 {
                    set_precision(Precision::Bf16);
                    let t = pass_times(&x, &w, &dy, g);
                    let e = errors(&x, &w, &dy, g);
                    set_precision(Precision::F32);
                    let cell = |i: usize, old: f64, flops: f64| {
                        format!(
                            "{:.2} → {:.2} ({:.2}×, {:.0}%)",
                            old * 1e3,
                            t[i] * 1e3,
                            old / t[i],
                            100.0 * flops / t[i] / 1e9 / peak16
                        )
                    };
                    println!(
                        "BF16|{c}×{s}×{s}|{layer} (×{count})|{}|{}|{}|{}|{:.1e} / {:.1e} / {:.1e}|",
                        cell(0, fwd, flops),
                        cell(1, bwd, 2.0 * flops),
                        cell(2, bwd_data, flops),
                        cell(3, bwd_weight, flops),
                        e[0],
                        e[1],
                        e[2]
                    );
                }
                println!(
                    "WINOGRAD|{c}×{s}×{s}|{layer} (×{count})|{}|{}|{}|{}|{}|{}|{}|",
                    cell(0, fwd),
                    cell(1, bwd),
                    cell(2, bwd_data),
                    cell(3, bwd_weight),
                    errs(direct),
                    errs(winograd),
                    errs(winograd4),
                );
            }
        }
    }
}
