// pool.cu — global average pooling (the head's N×C×H×W → N×C) and max pooling (ResNet-18's
// stem) with their backward passes (lucir_tensor::global_avg_pool, global_avg_pool_bwd,
// max_pool2d, max_pool2d_bwd).
//
// What:   gap fwd:  y[p] = (Σ_{H×W} x[p]) · inv, inv = 1/(H·W), for each plane p = n·C + c.
//         gap bwd:  dx[p, :, :] = dy[p] · inv.
//         max fwd:  y[p, oy, ox] = max of x[p] over the window rows oy·s − pad + [0, k),
//                   columns ox·s − pad + [0, k) inside the image (padding is −∞); argmax the
//                   flat index into x of the first maximum in scan order (rows, then columns),
//                   as the CPU op. A window with no value above −∞ (all −∞ or NaN) keeps its
//                   first in-image element as argmax (the CPU op points at the plane's first
//                   element instead; only such windows differ).
//         max bwd:  dx[i] = Σ dy[o] over the outputs o whose argmax is i: a gather, each input
//                   element visiting the windows that contain it in ascending output order —
//                   the order in which the CPU op adds them, so the same bits.
// Layout: x, dx N×C×H×W, y, dy N×C (gap) or N×C×Ho×Wo (max) f32 row-major; argmax N×C×Ho×Wo
//         int32 (flat indices into x).
// Launch: global_avg_pool_fwd_f32: grid = ⌈N·C/8⌉, block = 256 (one warp per plane, its lanes'
//         strided partial sums added by a fixed shuffle tree).
//         global_avg_pool_bwd_f32, max_pool2d_bwd_f32: grid = ⌈N·C·H·W/256⌉, block = 256 (one
//         thread per input element). max_pool2d_fwd_f32: grid = ⌈N·C·Ho·Wo/256⌉, block = 256
//         (one thread per output). No atomics: every result has one writer and a fixed order.
// Rust:   lucir_cuda::Gpu::global_avg_pool_fwd / global_avg_pool_bwd / max_pool2d_fwd /
//         max_pool2d_bwd (crates/lucir-cuda/src/pool.rs).
// Napkin: global average pool at the end of ResNet-32 (N=128, C=64, 8×8): reads 2 MB, writes
//         32 KB. ResNet-18's stem max pool (N=128, C=64, 112×112 → 56×56, k=3, s=2, pad=1):
//         reads 103 M floats (411 MB) once from DRAM (each by up to 4 windows, the rest from
//         L1/L2), writes 103 MB of y and 103 MB of argmax, 9 compares per output; ≈ 0.25 ms at
//         2.5 TB/s. The backward reads argmax and dy ≈ 2.25 times per output (overlapping
//         windows, mostly from cache) and writes 411 MB of dx. Bandwidth-bound throughout.
#include "common.cuh"

#define POOL_NEG_INF __int_as_float(0xff800000)  // −∞

#define POOL_WARPS (LUCIR_BLOCK / 32)

extern "C" __global__ void global_avg_pool_fwd_f32(const float* x, int planes, int HW, float inv,
                                                   float* y) {
    const int lane = threadIdx.x & 31;
    const int p = blockIdx.x * POOL_WARPS + (threadIdx.x >> 5);
    if (p >= planes) return;  // the whole warp leaves together
    const float* xp = x + (size_t)p * HW;
    float s = 0.0f;
    for (int j = lane; j < HW; j += 32) s += xp[j];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) y[p] = __fmul_rn(s, inv);
}

extern "C" __global__ void global_avg_pool_bwd_f32(const float* dy, int total, int HW, float inv,
                                                   float* dx) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    dx[i] = __fmul_rn(dy[i / HW], inv);
}

extern "C" __global__ void max_pool2d_fwd_f32(const float* x, int planes, int H, int W, int Ho,
                                              int Wo, int k, int s, int pad, float* y,
                                              int* argmax) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= planes * Ho * Wo) return;
    const int p = o / (Ho * Wo), q = o - p * (Ho * Wo);
    const int oy = q / Wo, ox = q - oy * Wo;
    const int y0 = oy * s - pad, x0 = ox * s - pad;
    const int base = p * H * W;
    float best = POOL_NEG_INF;
    int at = base + max(y0, 0) * W + max(x0, 0);
    for (int ki = 0; ki < k; ++ki) {
        const int iy = y0 + ki;
        if (iy < 0 || iy >= H) continue;
        for (int kj = 0; kj < k; ++kj) {
            const int ix = x0 + kj;
            if (ix < 0 || ix >= W) continue;
            const int i = base + iy * W + ix;
            const float v = x[i];
            if (v > best) {
                best = v;
                at = i;
            }
        }
    }
    y[o] = best;
    argmax[o] = at;
}

// The first output row (or column) whose window, of side k at stride s after `pad`, holds
// input row (column) i.
__device__ __forceinline__ int pool_first_out(int i, int k, int s, int pad) {
    const int t = i + pad - k + 1;
    return t <= 0 ? 0 : (t + s - 1) / s;
}

extern "C" __global__ void max_pool2d_bwd_f32(const float* dy, const int* argmax, int planes,
                                              int H, int W, int Ho, int Wo, int k, int s,
                                              int pad, float* dx) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= planes * H * W) return;
    const int p = i / (H * W), q = i - p * (H * W);
    const int iy = q / W, ix = q - iy * W;
    const int oy1 = min((iy + pad) / s, Ho - 1), ox1 = min((ix + pad) / s, Wo - 1);
    const int ox0 = pool_first_out(ix, k, s, pad);
    float acc = 0.0f;
    for (int oy = pool_first_out(iy, k, s, pad); oy <= oy1; ++oy) {
        const int row = (p * Ho + oy) * Wo;
        for (int ox = ox0; ox <= ox1; ++ox)
            if (argmax[row + ox] == i) acc = __fadd_rn(acc, dy[row + ox]);
    }
    dx[i] = acc;
}
