// kd.cu — knowledge distillation of the iCaRL-style baseline (lucir_autograd's Tape::kd) and
// the column slice that picks the old classes' logits (Tape::slice_cols).
//
// What:   kd_temper_f32:   y = x / τ (the logits softened before lucir-tensor's log-softmax);
//         kd_terms_f32:    t[i] = exp(lp[i])·(lp[i] − lq[i]), whose sum (reduce.cu's
//                          sum_scaled_f32 with τ², B) is τ²·Σ KL(p‖q)/B;
//         kd_bwd_f32:      dz[i] = (exp(lq[i]) − exp(lp[i]))·k with k = g·τ/B, the upstream
//                          gradient g read from device memory;
//         slice_cols_fwd_f32 / _bwd_f32: y[r, j] = x[r, start + j] (j < w), and its backward
//                          (zeros outside the slice).
//         Element operations rounded as the CPU's (__fdiv_rn, __fmul_rn, __fsub_rn).
// Layout: x, y, lp, lq, t, dz: flat f32; slices B×C → B×w row-major.
// Launch: one thread per element (grid = ⌈n/256⌉, block = 256).
// Rust:   lucir_cuda::Gpu::{kd_temper, kd_terms, kd_bwd, slice_cols_fwd, slice_cols_bwd}
//         (crates/lucir-cuda/src/kd.rs).
// Napkin: B = 128 rows of ≤ 100 old classes: ≤ 50 KB each way; launch-bound.
#include "common.cuh"

extern "C" __global__ void kd_temper_f32(const float* x, int n, float tau, float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __fdiv_rn(x[i], tau);
}

extern "C" __global__ void kd_terms_f32(const float* lp, const float* lq, int n, float* t) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) t[i] = __fmul_rn(expf(lp[i]), __fsub_rn(lp[i], lq[i]));
}

extern "C" __global__ void kd_bwd_f32(const float* lq, const float* lp, int n, const float* g,
                                      float tau, int B, float* dz) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float k = __fdiv_rn(__fmul_rn(g[0], tau), __int2float_rn(B > 1 ? B : 1));
    dz[i] = __fmul_rn(__fsub_rn(expf(lq[i]), expf(lp[i])), k);
}

extern "C" __global__ void slice_cols_fwd_f32(const float* x, int B, int C, int start, int w,
                                              float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * w) return;
    const int r = i / w;
    y[i] = x[(size_t)r * C + start + (i - r * w)];
}

extern "C" __global__ void slice_cols_bwd_f32(const float* g, int B, int C, int start, int w,
                                              float* dx) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * C) return;
    const int r = i / C, j = i - r * C;
    dx[i] = (j >= start && j < start + w) ? g[(size_t)r * w + j - start] : 0.0f;
}
