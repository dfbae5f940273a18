// linear.cu — the bias of a fully connected layer y = x·Wᵀ + b (lucir_autograd's Tape::linear;
// the two products are cuBLAS's, lucir_cuda::Gpu::gemm).
//
// What:   linear_bias_fwd_f32: y[r, j] += b[j] (in place, after the product);
//         linear_bias_bwd_f32: db[j] = Σ_r g[r, j], added in row order from 0 — the CPU op's
//         order and roundings (__fadd_rn), so the same bits.
// Layout: y, g: rows×cols f32 row-major; b, db: cols f32.
// Launch: linear_bias_fwd_f32: grid = ⌈rows·cols/256⌉, block = 256 (one thread per element);
//         linear_bias_bwd_f32: grid = ⌈cols/256⌉, block = 256 (one thread per column).
// Determinism: no atomics; each column is one thread's sequential sum.
// Rust:   lucir_cuda::Gpu::linear_bias_fwd / linear_bias_bwd (crates/lucir-cuda/src/linear.rs).
// Napkin: rows = 128, cols ≤ 1000: ≤ 0.5 MB each way, a few µs, launch-bound. The backward's
//         column-per-thread walk reads with a stride of cols floats but along a row the
//         threads of a warp read adjacent columns, so each load is coalesced.
#include "common.cuh"

extern "C" __global__ void linear_bias_fwd_f32(float* y, const float* b, int rows, int cols) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * cols) return;
    y[i] = __fadd_rn(y[i], b[i % cols]);
}

extern "C" __global__ void linear_bias_bwd_f32(const float* g, int rows, int cols, float* db) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) s = __fadd_rn(s, g[(size_t)r * cols + j]);
    db[j] = s;
}
