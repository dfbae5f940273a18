// feature_distill.cu — LUCIR's less-forget constraint (docs/design.md §3 "Losses").
//
// What:   row_loss[b] = 1 − <F̄_b, F̄*_b>;  L = λ·Σ_b row_loss[b] / B (summed on the device by
//         reduce.cu's sum_scaled_f32);
//         backward with upstream g: ∂F_b = −(λ·g/B)·(F̄*_b − F̄_b<F̄_b, F̄*_b>)/‖F_b‖, without
//         the projection term when ‖F_b‖ is clamped at ε (as the CPU op).
// Layout: F, F* (previous model, constant), dF: B×D f32 row-major; row_loss B f32.
// Launch: feature_distill_fwd_f32 / feature_distill_bwd_f32: grid = B, block = 256 (one block
//         per row; three block reductions: ‖F_b‖², ‖F*_b‖², <F_b, F*_b>).
// Rust:   lucir_cuda::Gpu::feature_distill_fwd / feature_distill_bwd (crates/lucir-cuda/src/feature_distill.rs).
// Napkin: reads 2·B·D floats (B=128, D=512: 0.5 MB), writes B (forward) or B·D (backward);
//         6·B·D FLOPs. Purely bandwidth-bound.
#include "common.cuh"

struct RowStats { float fn, sn, dot; };

__device__ __forceinline__ RowStats row_stats(const float* f, const float* s, int D,
                                              float* scratch) {
    float a = 0.0f, b = 0.0f, c = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        a += f[j] * f[j];
        b += s[j] * s[j];
        c += f[j] * s[j];
    }
    RowStats r;
    r.fn = fmaxf(sqrtf(block_sum(a, scratch)), LUCIR_NORM_EPS);
    r.sn = fmaxf(sqrtf(block_sum(b, scratch)), LUCIR_NORM_EPS);
    r.dot = block_sum(c, scratch);
    return r;
}

extern "C" __global__ void feature_distill_fwd_f32(const float* f, const float* f_star, int B,
                                                   int D, float* row_loss) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const RowStats r = row_stats(f + (size_t)b * D, f_star + (size_t)b * D, D, scratch);
    if (threadIdx.x == 0) row_loss[b] = 1.0f - r.dot / (r.fn * r.sn);
}

extern "C" __global__ void feature_distill_bwd_f32(const float* f, const float* f_star, int B,
                                                   int D, const float* g, float neg_lambda,
                                                   float* df) {
    // scale = −λ·g/B with the upstream gradient g read from device memory (the CPU's order).
    const float scale = __fdiv_rn(__fmul_rn(neg_lambda, g[0]), __int2float_rn(B > 1 ? B : 1));
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float* fr = f + (size_t)b * D;
    const float* sr = f_star + (size_t)b * D;
    const RowStats r = row_stats(fr, sr, D, scratch);
    const float cosv = r.fn > LUCIR_NORM_EPS ? r.dot / (r.fn * r.sn) : 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float fb = fr[j] / r.fn, sb = sr[j] / r.sn;
        df[(size_t)b * D + j] = scale * (sb - fb * cosv) / r.fn;
    }
}
