// reduce.cu — the sum that turns per-row losses into a loss on the device, so that no loss
// crosses to the host inside a step (margin ranking, feature distillation).
//
// What:   sum_scaled_f32: out[0] = (mul·Σ_i x[i]) / div, each operation rounded once, in that
//         order (the CPU ops compute λ·Σ/B and Σ/P so).
// Layout: x: n f32; out: 1 f32.
// Launch: grid = 1, block = 1024: thread t adds x[t], x[t + 1024], … in float, then
//         common.cuh's block_sum adds the partial sums in a fixed tree.
// Determinism: no atomics; the launch shape depends on nothing, so the same x gives the same
//         bits.
// Rust:   lucir_cuda::Gpu::sum_scaled (crates/lucir-cuda/src/reduce.rs).
// Napkin: n = B ≤ a few hundred rows: one block, a few µs, launch-bound.
#include "common.cuh"

extern "C" __global__ void sum_scaled_f32(const float* x, int n, float mul, float div,
                                          float* out) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[0] = __fdiv_rn(__fmul_rn(mul, s), div);
}
