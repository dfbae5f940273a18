// scale.cu — multiplication by a learnable scalar, z = σ·x (the cosine classifier's scale,
// lucir_autograd's Tape::scale), with σ read from device memory.
//
// What:   scale_fwd_f32: y[i] = x[i]·s[0] (the backward's dx = g·σ is the same kernel);
//         scale_dot_f32: out[0] = Σ_i a[i]·b[i] (the backward's dσ = ⟨g, x⟩).
// Layout: x, y, a, b: n f32; s, out: 1 f32.
// Launch: scale_fwd_f32: grid-stride, block = 256; scale_dot_f32: grid = 1, block = 1024
//         (thread partial sums, then common.cuh's block_sum).
// Determinism: no atomics; the dot's launch shape is fixed.
// Rust:   lucir_cuda::Gpu::scale_fwd / scale_dot (crates/lucir-cuda/src/scale.rs).
// Napkin: n = B·C ≤ 128·1000: ≤ 0.5 MB, a few µs; the dot is one block, still a few µs.
#include "common.cuh"

extern "C" __global__ void scale_fwd_f32(const float* x, const float* s, long long n, float* y) {
    const float sv = s[0];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = __fmul_rn(x[i], sv);
}

extern "C" __global__ void scale_dot_f32(const float* a, const float* b, long long n,
                                         float* out) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += a[i] * b[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[0] = s;
}
