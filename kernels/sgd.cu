// sgd.cu — one SGD-with-momentum update of a parameter tensor (lucir_autograd's Sgd::step,
// PyTorch's convention): d = g + wd·p; v = μ·v + d (v = d on the first step); p = p − lr·v.
//
// What:   sgd_update_f32, in place on p and v, each operation rounded as the CPU rounds it
//         (__fmul_rn / __fadd_rn / __fsub_rn: no contraction into FMA), so the same gradient
//         gives the same parameter bits as the CPU.
// Layout: p, g, v: n f32 (a parameter tensor, flat).
// Launch: grid-stride loop, block = 256, grid = min(⌈n/256⌉, 65535·4).
// Rust:   lucir_cuda::Gpu::sgd_update (crates/lucir-cuda/src/sgd.rs).
// Napkin: ResNet-32 has 0.47 M parameters: 5.6 MB moved per step over all tensors, ≈ 2 µs of
//         bandwidth; one launch per tensor (≈ 100) dominates until the updates share a launch.
#include "common.cuh"

extern "C" __global__ void sgd_update_f32(float* p, const float* g, float* v, long long n,
                                          float lr, float wd, float mu, int first) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float d = __fadd_rn(g[i], __fmul_rn(wd, p[i]));
        const float vi = first ? d : __fadd_rn(__fmul_rn(mu, v[i]), d);
        v[i] = vi;
        p[i] = __fsub_rn(p[i], __fmul_rn(lr, vi));
    }
}
