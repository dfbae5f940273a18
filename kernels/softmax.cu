// softmax.cu — row-wise log-softmax of B×C logits and its backward
// (lucir_tensor::log_softmax_rows, log_softmax_rows_bwd), and the mean cross-entropy against
// integer labels with its gradient (lucir_autograd's Tape::cross_entropy).
//
// What:   per row b: m = max_j z[b,j] (NaNs ignored, as f32::max),
//         ln_sum = ln Σ_j exp(z[b,j] − m), log_p[b,j] = (z[b,j] − m) − ln_sum.
//         log_softmax bwd: dz = dy − exp(y)·Σ_j dy[b,j], from the forward output y = log_p.
//         cross_entropy fwd: row_loss[b] = −log_p[b, label_b]; loss = Σ_b row_loss[b] / B (0 when
//         B = 0); with k = g/B (g the upstream gradient of the loss; cross_entropy_bwd_f32
//         reads it from device memory) also
//         dz[b,j] = exp(log_p[b,j])·k − [j = label_b]·k, the CPU op's operations in its order.
//         A label outside [0, C) gives a NaN row loss and no one-hot term (the CPU op rejects it
//         before computing).
// Layout: z, log_p, y, dy, dz B×C f32 row-major; labels B int32; row_loss B f32; loss 1 f32.
// Launch: log_softmax_rows_fwd_f32, log_softmax_rows_bwd_f32, cross_entropy_fwd_f32:
//         grid = B, block = 256 (one block per row; block max, block sums of common.cuh).
//         cross_entropy_bwd_f32: grid = ⌈B·C/256⌉, block = 256 (one thread per element).
//         cross_entropy_mean_f32: grid = 1, block = 256.
// Determinism: no atomics; every sum is a thread's strided partial sum in float followed by a
//         fixed shuffle tree, over a launch shape that depends only on the sizes.
// Rust:   lucir_cuda::Gpu::log_softmax_rows_fwd / log_softmax_rows_bwd / cross_entropy_fwd /
//         cross_entropy_bwd / cross_entropy_fused (crates/lucir-cuda/src/softmax.rs).
// Napkin: B=128, C=100 (CIFAR-100): 12,800 logits, 51 KB; one block a row reads its row two or
//         three times from L1 and writes it once: launch-bound (a few µs). At C=1000 (ImageNet)
//         0.5 MB, still a few µs; ≈ 3 FLOPs and one exp per element.
#include "common.cuh"

#define SM_NEG_INF __int_as_float(0xff800000)  // −∞
#define SM_NAN __int_as_float(0x7fc00000)      // a quiet NaN

// Max of `v` over the calling block (as block_sum; NaNs are ignored by fmaxf, as by f32::max).
__device__ __forceinline__ float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    float t = (threadIdx.x < warps) ? scratch[threadIdx.x] : SM_NEG_INF;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
    if (threadIdx.x == 0) scratch[0] = t;
    __syncthreads();
    return scratch[0];
}

struct RowLse {
    float m, ln_sum;
};

// The row maximum and ln Σ exp(z − m) of one row of length C, reduced by the block.
__device__ __forceinline__ RowLse row_lse(const float* z, int C, float* scratch) {
    float m = SM_NEG_INF;
    for (int j = threadIdx.x; j < C; j += blockDim.x) m = fmaxf(m, z[j]);
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += expf(z[j] - m);
    RowLse r;
    r.m = m;
    r.ln_sum = logf(block_sum(s, scratch));
    return r;
}

extern "C" __global__ void log_softmax_rows_fwd_f32(const float* z, int B, int C, float* y) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float* zr = z + (size_t)b * C;
    const RowLse r = row_lse(zr, C, scratch);
    for (int j = threadIdx.x; j < C; j += blockDim.x)
        y[(size_t)b * C + j] = (zr[j] - r.m) - r.ln_sum;
}

extern "C" __global__ void log_softmax_rows_bwd_f32(const float* y, const float* dy, int B,
                                                    int C, float* dz) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float* yr = y + (size_t)b * C;
    const float* gr = dy + (size_t)b * C;
    float s = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) s += gr[j];
    s = block_sum(s, scratch);
    for (int j = threadIdx.x; j < C; j += blockDim.x)
        dz[(size_t)b * C + j] = __fsub_rn(gr[j], __fmul_rn(expf(yr[j]), s));
}

// ∂z of one element from its log-probability: exp(log_p)·k, less k at the label.
__device__ __forceinline__ float xent_grad(float lp, bool at_label, float k) {
    const float d = __fmul_rn(expf(lp), k);
    return at_label ? __fsub_rn(d, k) : d;
}

extern "C" __global__ void cross_entropy_fwd_f32(const float* z, const int* labels, int B, int C,
                                                 float k, float* row_loss, float* log_p,
                                                 float* dz) {
    __shared__ float scratch[32];
    const int b = blockIdx.x;
    if (b >= B) return;
    const float* zr = z + (size_t)b * C;
    const RowLse r = row_lse(zr, C, scratch);
    const int label = labels[b];
    const bool valid = label >= 0 && label < C;
    if (threadIdx.x == 0)
        row_loss[b] = valid ? -((zr[label] - r.m) - r.ln_sum) : SM_NAN;
    if (!log_p && !dz) return;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        const float lp = (zr[j] - r.m) - r.ln_sum;
        if (log_p) log_p[(size_t)b * C + j] = lp;
        if (dz) dz[(size_t)b * C + j] = xent_grad(lp, j == label, k);
    }
}

extern "C" __global__ void cross_entropy_bwd_f32(const float* log_p, const int* labels, int B,
                                                 int C, const float* g, float* dz) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * C) return;
    const int b = i / C;
    // k = g/B with the upstream gradient read on the device (no host round trip).
    const float k = __fdiv_rn(g[0], __int2float_rn(B > 1 ? B : 1));
    dz[i] = xent_grad(log_p[i], i - b * C == labels[b], k);
}

extern "C" __global__ void cross_entropy_mean_f32(const float* row_loss, int B, float* loss) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (int b = threadIdx.x; b < B; b += blockDim.x) s += row_loss[b];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) loss[0] = B > 0 ? __fdiv_rn(s, __int2float_rn(B)) : 0.0f;
}
