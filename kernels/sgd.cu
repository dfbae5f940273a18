// sgd.cu — SGD-with-momentum updates of parameter tensors (lucir_autograd's Sgd::step,
// PyTorch's convention): d = g + wd·p; v = μ·v + d (v = d on the first step); p = p − lr·v.
//
// What:   sgd_update_f32, one tensor, in place on p and v; sgd_update_many_f32, every tensor
//         of a parameter group in one launch, from a table of their buffers. Each operation
//         is rounded as the CPU rounds it (__fmul_rn / __fadd_rn / __fsub_rn: no contraction
//         into FMA), so the same gradient gives the same parameter bits as the CPU, and the
//         two kernels give the same bits as each other (sgd_step below is their one body).
// Layout: p, g, v: n f32 (a parameter tensor, flat). The table of sgd_update_many_f32: per
//         tensor five u64 — p, g, v (device addresses), n, first (0 or 1).
// Launch: sgd_update_f32: grid-stride loop, block = 256, grid = min(⌈n/256⌉, 65535·4).
//         sgd_update_many_f32: grid = (min(⌈max n/256⌉, 1024), tensors); blockIdx.y picks
//         the tensor, a grid-stride loop in x covers it.
// Rust:   lucir_cuda::Gpu::sgd_update, Gpu::sgd_update_many (crates/lucir-cuda/src/sgd.rs).
// Napkin: ResNet-32 has 0.47 M parameters: 5.6 MB moved per step over all tensors, ≈ 2 µs of
//         bandwidth; one launch per tensor (≈ 100, a few µs each) dominated, hence the table.
#include "common.cuh"

__device__ __forceinline__ void sgd_step(float* p, const float* g, float* v, long long n,
                                         float lr, float wd, float mu, int first,
                                         long long start, long long stride) {
    for (long long i = start; i < n; i += stride) {
        const float d = __fadd_rn(g[i], __fmul_rn(wd, p[i]));
        const float vi = first ? d : __fadd_rn(__fmul_rn(mu, v[i]), d);
        v[i] = vi;
        p[i] = __fsub_rn(p[i], __fmul_rn(lr, vi));
    }
}

extern "C" __global__ void sgd_update_f32(float* p, const float* g, float* v, long long n,
                                          float lr, float wd, float mu, int first) {
    sgd_step(p, g, v, n, lr, wd, mu, first, (long long)blockIdx.x * blockDim.x + threadIdx.x,
             (long long)gridDim.x * blockDim.x);
}

extern "C" __global__ void sgd_update_many_f32(const unsigned long long* table, float lr,
                                               float wd, float mu) {
    const unsigned long long* t = table + 5 * (long long)blockIdx.y;
    sgd_step((float*)t[0], (const float*)t[1], (float*)t[2], (long long)t[3], lr, wd, mu,
             (int)t[4], (long long)blockIdx.x * blockDim.x + threadIdx.x,
             (long long)gridDim.x * blockDim.x);
}
