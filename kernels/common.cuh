// common.cuh — helpers shared by the LUCIR head kernels (cosine_logits.cu, margin_rank.cu,
// feature_distill.cu). Everything is f32, row-major; rows are reduced by one thread block.
#pragma once

#define LUCIR_NORM_EPS 1e-12f
#define LUCIR_BLOCK 256
#define LUCIR_MAX_K 16

// Sum of `v` over the calling block (blockDim.x a multiple of 32, at most 1024). Every thread
// gets the result. `scratch` holds at least 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    float t = (threadIdx.x < warps) ? scratch[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (threadIdx.x == 0) scratch[0] = t;
    __syncthreads();
    return scratch[0];
}

// max(sqrt(sum_j x[j]^2), eps) of one row of length d, reduced by the block.
__device__ __forceinline__ float block_row_norm(const float* x, int d, float* scratch) {
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) s += x[j] * x[j];
    return fmaxf(sqrtf(block_sum(s, scratch)), LUCIR_NORM_EPS);
}
