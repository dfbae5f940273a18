// margin_rank.cu — LUCIR's inter-class separation loss (docs/design.md §3 "Losses").
//
// What:   for each row b whose label y_b < n_old: s⁺ = cos[b,y_b], s_1..s_K the K largest of
//         cos[b, n_old..C) (ties to the lower column; NaNs skipped, and slots they leave
//         empty filled with the lowest unchosen columns, as lucir_tensor::topk_rows), row_loss[b] = Σ_k max(0, m − s⁺ + s_k);
//         L = Σ_b row_loss[b] / P with P = (old rows)·K (the launcher sums and divides).
//         Backward: every active pair adds −g/P to dcos[b,y_b] and +g/P to dcos[b,k].
// Layout: cos and dcos B×C f32 row-major; labels B int32; row_loss B f32.
// Launch: margin_rank_fwd_f32 / margin_rank_bwd_f32: grid = ⌈B/128⌉, block = 128, one thread
//         per row (K ≤ 16, kept in registers; the scan over C − n_old columns is sequential).
// Rust:   lucir_cuda::Gpu::margin_rank_fwd / margin_rank_bwd (crates/lucir-cuda/src/margin_rank.rs).
// Napkin: reads B·C floats once (B=128, C=1000: 0.5 MB) and writes B (forward) or B·C
//         (backward) floats; ≈ B·C·K compares. Bandwidth-bound on the cos read.
#include "common.cuh"

// Top-K column indices (absolute) of row `row` over [n_old, C), largest first; K ≤ C − n_old.
__device__ __forceinline__ int row_topk(const float* row, int n_old, int C, int K, int* idx) {
    int n = 0;
    for (int j = n_old; j < C; ++j) {
        const float v = row[j];
        if (v != v) continue;  // NaN
        int pos = n;
        while (pos > 0 && v > row[idx[pos - 1]]) --pos;
        if (pos < K) {
            const int last = n < K ? n : K - 1;
            for (int q = last; q > pos; --q) idx[q] = idx[q - 1];
            idx[pos] = j;
            if (n < K) ++n;
        }
    }
    for (int j = n_old; n < K && j < C; ++j) {
        bool taken = false;
        for (int q = 0; q < n; ++q) taken = taken || idx[q] == j;
        if (!taken) idx[n++] = j;
    }
    return n;
}

extern "C" __global__ void margin_rank_fwd_f32(const float* cos_in, const int* labels, int B,
                                               int C, int n_old, int K, float margin,
                                               float* row_loss) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    float total = 0.0f;
    const int y = labels[b];
    if (y < n_old && K > 0) {
        const float* row = cos_in + (size_t)b * C;
        int idx[LUCIR_MAX_K];
        const int n = row_topk(row, n_old, C, K, idx);
        for (int k = 0; k < n; ++k) total += fmaxf(0.0f, margin - row[y] + row[idx[k]]);
    }
    row_loss[b] = total;
}

extern "C" __global__ void margin_rank_bwd_f32(const float* cos_in, const int* labels, int B,
                                               int C, int n_old, int K, float margin,
                                               float scale, float* dcos) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    float* out = dcos + (size_t)b * C;
    for (int j = 0; j < C; ++j) out[j] = 0.0f;
    const int y = labels[b];
    if (y >= n_old || K <= 0) return;
    const float* row = cos_in + (size_t)b * C;
    int idx[LUCIR_MAX_K];
    const int n = row_topk(row, n_old, C, K, idx);
    for (int k = 0; k < n; ++k) {
        if (margin - row[y] + row[idx[k]] > 0.0f) {
            out[y] -= scale;
            out[idx[k]] += scale;
        }
    }
}
