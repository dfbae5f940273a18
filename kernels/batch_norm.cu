// batch_norm.cu — batch normalisation over N, H, W per channel, training mode (batch statistics)
// and evaluation mode (running statistics), with the residual add and the ReLU that end a
// residual block fused in (lucir_tensor::batch_norm_train, _train_add, _stats, _eval,
// _train_bwd, _eval_bwd, and lucir_nn::BatchNorm2d's running-statistics update).
//
// What:   M = N·H·W elements per channel c.
//         stats:        μ = Σx/M, v = Σ(x − μ)²/M (biased; two passes, as the CPU op),
//                       r = 1/√(v + ε); given γ, β also the training map
//                       scale = γ·r, shift = β − μ·scale.
//         eval_affine:  the evaluation map from running (μ, v): scale = γ/√(v + ε),
//                       shift = β − μ·scale.
//         fwd:          y = x·scale + shift (+ res), then max(·, 0) if relu.
//         running:      μ_run ← (1 − m)·μ_run + m·μ;  v_run ← (1 − m)·v_run + m·v·M/(M − 1)
//                       (the unbiased batch variance; M/(M − 1) = 1 when M = 1).
//         bwd_reduce:   g = dy masked by the fused ReLU — where the stored output y > 0, or
//                       where x·scale + shift > 0 recomputed — then dβ = Σg,
//                       dγ = r·Σ g·(x − μ), and dx's per-channel coefficients: training
//                       a = k·M, b = −k·r·dγ, c = −k·dβ with k = γ·r/M; evaluation a = γ·r,
//                       b = c = 0.
//         bwd:          dx = a·g + b·(x − μ) + c, and g itself when asked for (the residual's
//                       gradient in the fused add).
//         The maps, the ReLU gate and the running update are written with the CPU op's
//         roundings in its order (__fmul_rn/__fadd_rn: no contraction into FMA), so the same
//         statistics give the same bits as the CPU, and the backward pass's recomputed gate
//         agrees with the forward's output bit for bit.
// Layout: x, res, y, dy, dx, g: N×C×H×W f32 row-major (element e = img·H·W + p of channel c at
//         (img·C + c)·H·W + p); γ, β, μ, v, r, scale, shift, dγ, dβ, running stats: C f32;
//         coef: C×6 f32 (a, b, c, μ, scale, shift).
// Launch: batch_norm_stats_f32, batch_norm_bwd_reduce_f32: grid = C, block = BN_THREADS (one
//         block per channel); batch_norm_fwd_f32, batch_norm_bwd_f32: grid = ⌈N·C·H·W/256⌉,
//         block = 256 (one thread per element); batch_norm_eval_affine_f32,
//         batch_norm_running_f32: grid = ⌈C/256⌉, block = 256 (one thread per channel).
// Determinism: no atomics. A channel's sums are taken by its one block in a fixed order:
//         thread t accumulates elements e = t, t + T, t + 2T, … in float, then block_sum's
//         fixed shuffle tree (common.cuh) adds the T partial sums. T = BN_THREADS is a
//         constant, so the same inputs give the same bits on every run.
// Rust:   lucir_cuda::Gpu::batch_norm_stats / batch_norm_train_fwd / batch_norm_eval_fwd /
//         batch_norm_update_running / batch_norm_bwd (crates/lucir-cuda/src/batch_norm.rs).
// Napkin: ResNet-32 on CIFAR, first stage: N=128, C=16, H=W=32, 2.1 M elements (8 MB). The
//         statistics read x twice (the second pass mostly from L2); the map reads x (and res)
//         and writes y: 32–40 MB, ≈ 15 µs at 2.5 TB/s. The backward reads x and dy (and y)
//         twice and writes dx (and g): 40–56 MB, ≈ 20 µs. ≈ 10 FLOPs per element: bandwidth-
//         bound. The per-channel reductions keep only C SMs busy (16 of 132 at C = 16, 1024
//         threads each, 128 elements per thread), so they run below DRAM speed at small C:
//         the price of one fixed summation order without a second reduction pass; the
//         element-wise passes use every SM.
#include "common.cuh"

#define BN_THREADS 1024

// Offset of element e = img·HW + p of channel c in an N×C×H×W tensor.
__device__ __forceinline__ int bn_at(int e, int c, int C, int HW) {
    const int img = e / HW;
    return (img * C + c) * HW + (e - img * HW);
}

// y = x·scale + shift, rounded after each operation (the CPU map's bits).
__device__ __forceinline__ float bn_map(float x, float scale, float shift) {
    return __fadd_rn(__fmul_rn(x, scale), shift);
}

// The gradient through the fused ReLU: dy where the output y (when stored) or the recomputed
// map x·scale + shift (when `relu`) is positive, else 0; dy itself without a ReLU.
__device__ __forceinline__ float bn_gate(float dy, float x, const float* y, int i, int relu,
                                         float scale, float shift) {
    if (y) return y[i] > 0.0f ? dy : 0.0f;
    if (relu) return bn_map(x, scale, shift) > 0.0f ? dy : 0.0f;
    return dy;
}

extern "C" __global__ void __launch_bounds__(BN_THREADS)
    batch_norm_stats_f32(const float* x, const float* gamma, const float* beta, int N, int C,
                         int HW, float eps, float* mean, float* var, float* inv_std,
                         float* scale, float* shift) {
    __shared__ float scratch[32];
    const int c = blockIdx.x;
    if (c >= C) return;
    const int M = N * HW;
    const float cnt = __int2float_rn(M);
    float s = 0.0f;
    for (int e = threadIdx.x; e < M; e += blockDim.x) s += x[bn_at(e, c, C, HW)];
    const float mu = __fdiv_rn(block_sum(s, scratch), cnt);
    float q = 0.0f;
    for (int e = threadIdx.x; e < M; e += blockDim.x) {
        const float d = x[bn_at(e, c, C, HW)] - mu;
        q = __fmaf_rn(d, d, q);
    }
    const float v = __fdiv_rn(block_sum(q, scratch), cnt);
    if (threadIdx.x != 0) return;
    const float r = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(v, eps)));
    mean[c] = mu;
    var[c] = v;
    inv_std[c] = r;
    if (gamma) {
        const float sc = __fmul_rn(gamma[c], r);
        scale[c] = sc;
        shift[c] = __fsub_rn(beta[c], __fmul_rn(mu, sc));
    }
}

extern "C" __global__ void batch_norm_eval_affine_f32(const float* gamma, const float* beta,
                                                      const float* running_mean,
                                                      const float* running_var, int C,
                                                      float eps, float* scale, float* shift) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float sc = __fdiv_rn(gamma[c], __fsqrt_rn(__fadd_rn(running_var[c], eps)));
    scale[c] = sc;
    shift[c] = __fsub_rn(beta[c], __fmul_rn(running_mean[c], sc));
}

extern "C" __global__ void batch_norm_fwd_f32(const float* x, const float* res,
                                              const float* scale, const float* shift, int total,
                                              int C, int HW, int relu, float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int c = (i / HW) % C;
    float v = bn_map(x[i], scale[c], shift[c]);
    if (res) v = __fadd_rn(v, res[i]);
    if (relu) v = v > 0.0f ? v : 0.0f;
    y[i] = v;
}

extern "C" __global__ void batch_norm_running_f32(const float* mean, const float* var, int C,
                                                  float momentum, float unbias,
                                                  float* running_mean, float* running_var) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float keep = __fsub_rn(1.0f, momentum);
    running_mean[c] = __fadd_rn(__fmul_rn(keep, running_mean[c]), __fmul_rn(momentum, mean[c]));
    running_var[c] = __fadd_rn(__fmul_rn(keep, running_var[c]),
                               __fmul_rn(__fmul_rn(momentum, var[c]), unbias));
}

// Training mode (eval = 0): `mean` and `spread` are the batch's μ and r = 1/√(v + ε).
// Evaluation mode (eval = 1): they are the running μ and v, and ε gives r.
extern "C" __global__ void __launch_bounds__(BN_THREADS)
    batch_norm_bwd_reduce_f32(const float* x, const float* dy, const float* y,
                              const float* gamma, const float* beta, const float* mean,
                              const float* spread, int N, int C, int HW, float eps, int eval,
                              int relu, float* dgamma, float* dbeta, float* coef) {
    __shared__ float scratch[32];
    const int c = blockIdx.x;
    if (c >= C) return;
    const float mu = mean[c];
    float r, scale;
    if (eval) {
        const float sd = __fsqrt_rn(__fadd_rn(spread[c], eps));
        r = __fdiv_rn(1.0f, sd);
        scale = __fdiv_rn(gamma[c], sd);
    } else {
        r = spread[c];
        scale = __fmul_rn(gamma[c], r);
    }
    const float shift = __fsub_rn(beta[c], __fmul_rn(mu, scale));
    const int M = N * HW;
    float sg = 0.0f, sgd = 0.0f;
    for (int e = threadIdx.x; e < M; e += blockDim.x) {
        const int i = bn_at(e, c, C, HW);
        const float xv = x[i];
        const float g = bn_gate(dy[i], xv, y, i, relu, scale, shift);
        sg += g;
        sgd = __fmaf_rn(g, xv - mu, sgd);
    }
    sg = block_sum(sg, scratch);
    sgd = block_sum(sgd, scratch);
    if (threadIdx.x != 0) return;
    const float dg = __fmul_rn(r, sgd);
    dgamma[c] = dg;
    dbeta[c] = sg;
    float a, b, k0;
    if (eval) {
        a = __fmul_rn(gamma[c], r);
        b = 0.0f;
        k0 = 0.0f;
    } else {
        const float m = __int2float_rn(M);
        const float k = __fdiv_rn(__fmul_rn(gamma[c], r), m);
        a = __fmul_rn(k, m);
        b = -__fmul_rn(__fmul_rn(k, r), dg);
        k0 = -__fmul_rn(k, sg);
    }
    float* out = coef + (size_t)c * 6;
    out[0] = a;
    out[1] = b;
    out[2] = k0;
    out[3] = mu;
    out[4] = scale;
    out[5] = shift;
}

extern "C" __global__ void batch_norm_bwd_f32(const float* x, const float* dy, const float* y,
                                              const float* coef, int total, int C, int HW,
                                              int eval, int relu, float* dx, float* g_out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const float* k = coef + (size_t)((i / HW) % C) * 6;
    const float xv = x[i];
    const float g = bn_gate(dy[i], xv, y, i, relu, k[4], k[5]);
    // Evaluation mode is dx = a·g alone: no (x − μ) term to turn an infinite x into a NaN.
    dx[i] = eval ? __fmul_rn(k[0], g) : k[0] * g + (k[1] * (xv - k[3]) + k[2]);
    if (g_out) g_out[i] = g;
}
