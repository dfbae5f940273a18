// margin_rank.cu — LUCIR's inter-class separation loss (docs/design.md §3 "Losses").
//
// What:   for each row b whose label y_b < n_old: s⁺ = cos[b,y_b], s_1..s_K the K largest of
//         cos[b, n_old..C) (ties to the lower column; NaNs skipped, and slots they leave
//         empty filled with the lowest unchosen columns, as lucir_tensor::topk_rows), row_loss[b] = Σ_k max(0, m − s⁺ + s_k);
//         L = Σ_b row_loss[b] / P with P = (old rows)·K (summed and divided on the device by
//         reduce.cu's sum_scaled_f32).
//         Backward: every active pair adds −g/P to dcos[b,y_b] and +g/P to dcos[b,k] (g, the
//         upstream gradient, read from device memory).
// Layout: cos and dcos B×C f32 row-major; labels B int32; row_loss B f32.
// Launch: margin_rank_fwd_f32 / margin_rank_bwd_f32: grid = ⌈B/MR_ROWS⌉, block = 32·MR_ROWS,
//         one warp per row: each lane keeps the top K of its strided share of the columns
//         (K ≤ 16, in a local array), then K warp-wide arg-max rounds merge the 32 lists.
// Rust:   lucir_cuda::Gpu::margin_rank_fwd / margin_rank_bwd (crates/lucir-cuda/src/margin_rank.rs).
// Napkin: reads B·C floats once, coalesced (B=128, C=1000: 0.5 MB) and writes B (forward) or
//         B·C (backward) floats; ≈ B·C·K compares spread over 32 lanes a row, plus K·5
//         shuffle steps. Bandwidth-bound on the cos read.
#include "common.cuh"

#define MR_ROWS 4
#define MR_NONE 0x7fffffff

// Whether candidate (v1, j1) ranks above (v2, j2): larger value, then lower column; MR_NONE
// (no candidate) ranks below everything.
__device__ __forceinline__ bool mr_above(float v1, int j1, float v2, int j2) {
    if (j1 == MR_NONE) return false;
    if (j2 == MR_NONE) return true;
    return v1 > v2 || (v1 == v2 && j1 < j2);
}

// Top-K column indices (absolute) of `row` over [n_old, C), largest first, computed by the
// calling warp; every lane returns the same list. K ≤ min(C − n_old, LUCIR_MAX_K).
__device__ int warp_row_topk(const float* row, int n_old, int C, int K, int* idx) {
    const int lane = threadIdx.x & 31;
    float lv[LUCIR_MAX_K];
    int lj[LUCIR_MAX_K];
    int ln = 0;  // this lane's list: its columns n_old + lane + 32·i, best first
    for (int j = n_old + lane; j < C; j += 32) {
        const float v = row[j];
        if (v != v) continue;  // NaN
        int pos = ln;
        while (pos > 0 && v > lv[pos - 1]) --pos;  // an equal value keeps its lower column first
        if (pos < K) {
            const int last = ln < K ? ln : K - 1;
            for (int q = last; q > pos; --q) {
                lv[q] = lv[q - 1];
                lj[q] = lj[q - 1];
            }
            lv[pos] = v;
            lj[pos] = j;
            if (ln < K) ++ln;
        }
    }
    int head = 0, n = 0;
    for (int k = 0; k < K; ++k) {
        float v = head < ln ? lv[head] : 0.0f;
        int j = head < ln ? lj[head] : MR_NONE;
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
            const int j2 = __shfl_xor_sync(0xffffffffu, j, o);
            if (mr_above(v2, j2, v, j)) {
                v = v2;
                j = j2;
            }
        }
        if (j == MR_NONE) break;  // the same in every lane
        idx[n++] = j;
        if (head < ln && lj[head] == j) ++head;
    }
    // Slots NaNs left empty: the lowest unchosen columns, as lucir_tensor::topk_rows.
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
    const int b = blockIdx.x * MR_ROWS + (threadIdx.x >> 5);
    if (b >= B) return;  // whole warps leave together
    const int y = labels[b];
    float total = 0.0f;
    if (y < n_old && K > 0) {
        const float* row = cos_in + (size_t)b * C;
        int idx[LUCIR_MAX_K];
        const int n = warp_row_topk(row, n_old, C, K, idx);
        for (int k = 0; k < n; ++k) total += fmaxf(0.0f, margin - row[y] + row[idx[k]]);
    }
    if ((threadIdx.x & 31) == 0) row_loss[b] = total;
}

extern "C" __global__ void margin_rank_bwd_f32(const float* cos_in, const int* labels, int B,
                                               int C, int n_old, int K, float margin,
                                               const float* g, float pairs, float* dcos) {
    const float scale = __fdiv_rn(g[0], pairs);  // g/P, the upstream gradient on the device
    const int b = blockIdx.x * MR_ROWS + (threadIdx.x >> 5);
    if (b >= B) return;  // whole warps leave together
    const int lane = threadIdx.x & 31;
    float* out = dcos + (size_t)b * C;
    for (int j = lane; j < C; j += 32) out[j] = 0.0f;
    const int y = labels[b];
    if (y >= n_old || K <= 0) return;
    const float* row = cos_in + (size_t)b * C;
    int idx[LUCIR_MAX_K];
    const int n = warp_row_topk(row, n_old, C, K, idx);
    __syncwarp();  // the zeros above are visible to lane 0
    if (lane != 0) return;
    for (int k = 0; k < n; ++k) {
        if (margin - row[y] + row[idx[k]] > 0.0f) {
            out[y] -= scale;
            out[idx[k]] += scale;
        }
    }
}
