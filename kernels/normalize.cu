// normalize.cu — row L2 normalisation v̄ = v / max(‖v‖, ε) of a B×D matrix and its backward
// (lucir_tensor::l2_normalize_rows / _bwd): the cosine classifier's features and weights.
//
// What:   fwd: n_b = max(√Σ_j v[b,j]², ε), y[b,j] = v[b,j] / n_b, norms[b] = n_b.
//         bwd: dx[b,j] = (g[b,j] − y[b,j]·⟨y_b, g_b⟩) / n_b, without the projection term on a
//         row clamped at ε (n_b ≤ ε), as the CPU op; the element operations rounded as the
//         CPU's (__fmul_rn / __fsub_rn / __fdiv_rn), the sums in a block tree.
// Layout: v, y, g, dx: B×D f32 row-major; norms: B f32.
// Launch: grid = B, block = 256 (one block per row; common.cuh's block_sum).
// Determinism: no atomics; a fixed tree per row.
// Rust:   lucir_cuda::Gpu::l2_normalize_rows_fwd / _bwd (crates/lucir-cuda/src/normalize.rs).
// Napkin: B = 128 rows of D = 64 (features) or C = 100 rows of 64 (weights): 32 KB, a few µs,
//         launch-bound.
#include "common.cuh"

extern "C" __global__ void l2_normalize_rows_fwd_f32(const float* v, int B, int D, float* y,
                                                     float* norms) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float* row = v + (size_t)b * D;
    const float n = block_row_norm(row, D, scratch);
    for (int j = threadIdx.x; j < D; j += blockDim.x) y[(size_t)b * D + j] = __fdiv_rn(row[j], n);
    if (threadIdx.x == 0) norms[b] = n;
}

extern "C" __global__ void l2_normalize_rows_bwd_f32(const float* y, const float* norms,
                                                     const float* g, int B, int D, float* dx) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float* yr = y + (size_t)b * D;
    const float* gr = g + (size_t)b * D;
    const float n = norms[b];
    float s = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += yr[j] * gr[j];
    s = block_sum(s, scratch);
    const float dot = n <= LUCIR_NORM_EPS ? 0.0f : s;
    for (int j = threadIdx.x; j < D; j += blockDim.x)
        dx[(size_t)b * D + j] = __fdiv_rn(__fsub_rn(gr[j], __fmul_rn(yr[j], dot)), n);
}
