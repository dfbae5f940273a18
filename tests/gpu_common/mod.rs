//! Helpers the GPU test binaries share: opening the device (or saying why a test is skipped),
//! seeded inputs, and the normwise comparison with the CPU ops.
#![allow(dead_code)]

use lucir::cuda::Gpu;
use lucir::tensor::Device;

/// The GPU, or `None` (printing why) when the machine has none. Any other failure — a PTX
/// the driver refuses, a kernel missing from a module — fails the test.
pub fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e @ lucir::cuda::Error::NoDevice(_)) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
        Err(e) => panic!("a CUDA device is present but unusable: {e}"),
    }
}

/// `n` values uniform in [−1, 1) from a xorshift stream seeded by `seed`.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Asserts closeness, |a − b| ≤ 1e-4·|b| + 1e-5·max|b|, and reports the worst element; a
/// non-finite value on either side where the other is finite fails.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    if let Some(i) = (0..gpu.len()).find(|&i| gpu[i].is_finite() != cpu[i].is_finite()) {
        panic!("{what}: element {i}: gpu {} cpu {}", gpu[i], cpu[i]);
    }
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = (f32::NEG_INFINITY, 0usize);
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        let excess = if a == b {
            -1e-4 * b.abs() - 1e-5 * scale
        } else {
            (a - b).abs() - (1e-4 * b.abs() + 1e-5 * scale)
        };
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    if gpu.is_empty() {
        return;
    }
    println!(
        "{what}: worst element {i}: gpu {} cpu {} (excess over tolerance {:.3e})",
        gpu[i], cpu[i], worst.0
    );
    assert!(
        worst.0 <= 0.0,
        "{what}: element {i} differs: gpu {} cpu {}",
        gpu[i],
        cpu[i]
    );
}

/// The GPU as a tensor [`Device`], or `None` (printing why) when the machine has none; any
/// other failure fails the test.
pub fn device() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => Some(d),
        Err(lucir::tensor::Error::Cuda(e @ lucir::cuda::Error::NoDevice(_))) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
        Err(e) => panic!("a CUDA device is present but unusable: {e}"),
    }
}
