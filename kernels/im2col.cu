// im2col.cu — convolutions without cuDNN: the column matrices of a batch of images and their
// inverse, for the cuBLAS products of lucir_cuda's im2col convolutions (the fallback where
// cuDNN cannot be loaded, docs/design.md §5).
//
// What:   im2col_f32: col[i][(c·KH + ky)·KW + kx][oh·Wo + ow] = x[i][c][oh·s − p + ky][ow·s − p
//         + kx] (0 outside the image), the CPU's `im2col` for n images at once.
//         col2im_f32: dx[i][c][y][x] = Σ over the (ky, kx) that read it, ky then kx ascending,
//         of col[i][(c·KH + ky)·KW + kx][oh·Wo + ow] — a gather, one thread per input element,
//         so no atomics; written, or added to dx when `accumulate`.
//         sum_batches_f32: out[j] = Σ_b parts[b·len + j], b ascending (the weight gradient's
//         sum over images of per-image products); written, or added when `accumulate`.
// Layout: x, dx: n×C×H×W; col: n × (C·KH·KW) × (Ho·Wo); parts: batches × len. All f32.
// Launch: grid-stride loops, block = 256.
// Determinism: every output is one thread's sum in a fixed order: the same inputs give the same
//         bits on a given card.
// Rust:   lucir_cuda::Gpu::conv2d_* when cuDNN is missing or `use_im2col_convolutions` is set
//         (crates/lucir-cuda/src/im2col.rs).
// Napkin: ResNet-32's 16→16 3×3 layer at 32×32, batch 128: a 75 MB column matrix written and
//         read once per pass (≈ 0.1 ms at 3 TB/s), beside a 0.6 GFLOP product.
#include "common.cuh"

extern "C" __global__ void im2col_f32(const float* x, float* col, int n, int c, int h, int w,
                                      int kh, int kw, int stride, int pad, int ho, int wo) {
    const long long total = (long long)n * c * kh * kw * ho * wo;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long t = i;
        const int ow = (int)(t % wo); t /= wo;
        const int oh = (int)(t % ho); t /= ho;
        const int kx = (int)(t % kw); t /= kw;
        const int ky = (int)(t % kh); t /= kh;
        const int ch = (int)(t % c);
        const long long img = t / c;
        const int iy = oh * stride - pad + ky, ix = ow * stride - pad + kx;
        const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
        col[i] = inside ? x[((img * c + ch) * h + iy) * w + ix] : 0.0f;
    }
}

extern "C" __global__ void col2im_f32(const float* col, float* dx, int n, int c, int h, int w,
                                      int kh, int kw, int stride, int pad, int ho, int wo,
                                      int accumulate) {
    const long long total = (long long)n * c * h * w;
    const long long plane = (long long)ho * wo;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long t = i;
        const int ix = (int)(t % w); t /= w;
        const int iy = (int)(t % h); t /= h;
        const int ch = (int)(t % c);
        const long long img = t / c;
        const float* rows = col + (img * c + ch) * kh * kw * plane;
        float s = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            const int sy = iy + pad - ky;
            if (sy < 0 || sy % stride != 0 || sy / stride >= ho) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int sx = ix + pad - kx;
                if (sx < 0 || sx % stride != 0 || sx / stride >= wo) continue;
                s += rows[(ky * kw + kx) * plane + (sy / stride) * wo + sx / stride];
            }
        }
        dx[i] = accumulate ? dx[i] + s : s;
    }
}

extern "C" __global__ void sum_batches_f32(const float* parts, float* out, int batches,
                                           long long len, int accumulate) {
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < len;
         j += (long long)gridDim.x * blockDim.x) {
        float s = accumulate ? out[j] : 0.0f;
        for (int b = 0; b < batches; ++b) s += parts[b * len + j];
        out[j] = s;
    }
}
