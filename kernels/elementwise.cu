// elementwise.cu — the elementwise ops of the network on the device (docs/design.md §5,
// "Training on the GPU"): the same maths as lucir-tensor's `elementwise.rs` and
// `Tensor::add_assign`, element by element, so the bits equal the CPU's.
//
// What:   add_f32:      out = a + b
//         add_relu_f32: out = max(a + b, 0)            (a residual connection and its ReLU)
//         relu_f32:     out = max(x, 0)
//         relu_bwd_f32: g = y > 0 ? g : 0, in place     (NaN in y masks, as on the CPU)
//         axpy_f32:     y = y + alpha·x, in place       (alpha = 1: gradient accumulation)
// Layout: flat f32 buffers of n elements (any shape, row-major).
// Launch: grid-stride loops, block = LUCIR_BLOCK, grid = min(ceil(n / block), 65535·4).
// Rust:   lucir_cuda::Gpu::{add, add_relu, relu, relu_bwd, axpy}
//         (crates/lucir-cuda/src/elementwise.rs).
// Napkin: 2–3 floats moved per element; bandwidth-bound (a 128×16×32×32 activation, 8 MB,
//         moves in ≈ 10 µs at 3 TB/s, so launches, not bytes, dominate at this project's sizes).
#include "common.cuh"

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void add_f32(const float* a, const float* b, long long n, float* out) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

extern "C" __global__ void add_relu_f32(const float* a, const float* b, long long n,
                                        float* out) {
    GRID_STRIDE(i, n) {
        const float s = a[i] + b[i];
        out[i] = s > 0.0f ? s : 0.0f;
    }
}

extern "C" __global__ void relu_f32(const float* x, long long n, float* out) {
    // max(x, 0) with the CPU's NaN rule (num_traits' max returns the non-NaN operand).
    GRID_STRIDE(i, n) out[i] = fmaxf(x[i], 0.0f);
}

extern "C" __global__ void relu_bwd_f32(const float* y, long long n, float* g) {
    GRID_STRIDE(i, n) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
}

extern "C" __global__ void axpy_f32(const float* x, long long n, float alpha, float* y) {
    // fmaf(1, x, y) rounds once, so alpha = 1 gives exactly the CPU's y + x.
    GRID_STRIDE(i, n) y[i] = fmaf(alpha, x[i], y[i]);
}
