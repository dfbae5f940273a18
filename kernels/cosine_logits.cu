// cosine_logits.cu — LUCIR's cosine classifier head (docs/design.md §3 "Gradients of the head").
//
// What:   cos[b,c] = <F_b, Θ_c> / (‖F_b‖·‖Θ_c‖),  z[b,c] = σ·cos[b,c]   (norms clamped at 1e-12)
//         backward from G = ∂L/∂z and an optional extra ∂L/∂cos (margin ranking) M:
//         H = σ·G + M;  ∂σ = Σ G⊙cos;  g_b = Σ_c H[b,c]·Θ̄_c;  e_c = Σ_b H[b,c]·F̄_b;
//         ∂F_b = (g_b − F̄_b<F̄_b, g_b>)/‖F_b‖;  ∂Θ_c = (e_c − Θ̄_c<Θ̄_c, e_c>)/‖Θ_c‖;
//         a row whose norm is clamped at ε has no projection term (x̄ = x/ε is linear there),
//         as lucir_tensor::l2_normalize_rows_bwd.
// Layout: F B×D, Θ C×D, cos/z/G/M B×C, all f32 row-major; σ and ∂σ one float in device memory.
// Launch: cosine_logits_norms_f32      grid = rows,            block = 256
//         cosine_logits_fwd_f32        grid = (⌈C/16⌉, ⌈B/16⌉), block = 16×16 (shared D-tiles)
//         cosine_logits_bwd_feat_f32   grid = B,               block = 256, shared = D floats
//         cosine_logits_bwd_weight_f32 grid = C,               block = 256, shared = D floats
//         cosine_logits_bwd_sigma_f32  grid = ⌈B·C/256⌉,       block = 256 (atomicAdd into ∂σ)
// Rust:   lucir_cuda::Gpu::cosine_logits_fwd / cosine_logits_bwd (crates/lucir-cuda/src/cosine_logits.rs).
// Napkin: forward reads F and Θ once per tile pass ((B·C·D/16)·2·4 bytes from L2, B·D + C·D
//         from DRAM) and writes 2·B·C floats; 2·B·C·D FLOPs. Backward does two B×C×D
//         contractions (4·B·C·D FLOPs) and reads H twice. At B=128, C=1000, D=512 that is
//         0.13 GFLOP forward and 0.26 GFLOP backward: compute-light, so the benchmark reports
//         achieved bandwidth on the B·C + (B+C)·D floats that must cross DRAM.
#include "common.cuh"

#define TILE 16

extern "C" __global__ void cosine_logits_norms_f32(const float* x, int rows, int d, float* norms) {
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float n = block_row_norm(x + (size_t)r * d, d, scratch);
    if (threadIdx.x == 0) norms[r] = n;
}

extern "C" __global__ void cosine_logits_fwd_f32(const float* f, const float* theta,
                                                 const float* fnorm, const float* tnorm,
                                                 const float* sigma, int B, int C, int D,
                                                 float* cos_out, float* z_out) {
    __shared__ float fs[TILE][TILE + 1];
    __shared__ float ts[TILE][TILE + 1];
    const int b = blockIdx.y * TILE + threadIdx.y;
    const int c = blockIdx.x * TILE + threadIdx.x;
    const int tb = blockIdx.y * TILE + threadIdx.x;  // row of F this thread loads
    const int tc = blockIdx.x * TILE + threadIdx.y;  // row of Θ this thread loads
    float acc = 0.0f;
    for (int k0 = 0; k0 < D; k0 += TILE) {
        const int kf = k0 + threadIdx.y, kt = k0 + threadIdx.x;
        fs[threadIdx.x][threadIdx.y] = (tb < B && kf < D) ? f[(size_t)tb * D + kf] : 0.0f;
        ts[threadIdx.y][threadIdx.x] = (tc < C && kt < D) ? theta[(size_t)tc * D + kt] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += fs[threadIdx.y][k] * ts[threadIdx.x][k];
        __syncthreads();
    }
    if (b < B && c < C) {
        const float cs = acc / (fnorm[b] * tnorm[c]);
        cos_out[(size_t)b * C + c] = cs;
        z_out[(size_t)b * C + c] = sigma[0] * cs;
    }
}

// H[b,c] = σ·G[b,c] + M[b,c] (M may be null).
__device__ __forceinline__ float head_grad(const float* g, const float* extra, float s, size_t i) {
    return s * g[i] + (extra ? extra[i] : 0.0f);
}

extern "C" __global__ void cosine_logits_bwd_feat_f32(const float* f, const float* theta,
                                                      const float* fnorm, const float* tnorm,
                                                      const float* sigma, const float* g,
                                                      const float* extra, int B, int C, int D,
                                                      float* df) {
    extern __shared__ float acc[];  // D floats: g_b
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float s = sigma[0];
    for (int j = threadIdx.x; j < D; j += blockDim.x) acc[j] = 0.0f;
    __syncthreads();
    for (int c = 0; c < C; ++c) {
        const float h = head_grad(g, extra, s, (size_t)b * C + c) / tnorm[c];
        for (int j = threadIdx.x; j < D; j += blockDim.x) acc[j] += h * theta[(size_t)c * D + j];
    }
    const float fn = fnorm[b];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) dot += f[(size_t)b * D + j] / fn * acc[j];
    dot = fn > LUCIR_NORM_EPS ? block_sum(dot, scratch) : 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float fb = f[(size_t)b * D + j] / fn;
        df[(size_t)b * D + j] = (acc[j] - fb * dot) / fn;
    }
}

extern "C" __global__ void cosine_logits_bwd_weight_f32(const float* f, const float* theta,
                                                        const float* fnorm, const float* tnorm,
                                                        const float* sigma, const float* g,
                                                        const float* extra, int B, int C, int D,
                                                        float* dtheta) {
    extern __shared__ float acc[];  // D floats: e_c
    __shared__ float scratch[32];
    const int c = blockIdx.x;
    if (c >= C) return;
    const float s = sigma[0];
    for (int j = threadIdx.x; j < D; j += blockDim.x) acc[j] = 0.0f;
    __syncthreads();
    for (int b = 0; b < B; ++b) {
        const float h = head_grad(g, extra, s, (size_t)b * C + c) / fnorm[b];
        for (int j = threadIdx.x; j < D; j += blockDim.x) acc[j] += h * f[(size_t)b * D + j];
    }
    const float tn = tnorm[c];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) dot += theta[(size_t)c * D + j] / tn * acc[j];
    dot = tn > LUCIR_NORM_EPS ? block_sum(dot, scratch) : 0.0f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const float tc = theta[(size_t)c * D + j] / tn;
        dtheta[(size_t)c * D + j] = (acc[j] - tc * dot) / tn;
    }
}

extern "C" __global__ void cosine_logits_bwd_sigma_f32(const float* g, const float* cos_in, int n,
                                                       float* dsigma) {
    __shared__ float scratch[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = (i < n) ? g[i] * cos_in[i] : 0.0f;
    const float s = block_sum(v, scratch);
    if (threadIdx.x == 0) atomicAdd(dsigma, s);
}
