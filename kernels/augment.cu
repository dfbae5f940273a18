// augment.cu — the training transform on the device: from a split's u8 images held there,
// the window at (dy, dx) of each image padded by `pad` zeros, mirrored when asked, normalised
// per channel: out = (px/255 − mean)/std, and −mean/std where the window covers padding. The
// same function as lucir_data's `render` (crates/lucir-data/src/augment.rs), which is its
// reference: each operation rounded as the CPU rounds it (__fdiv_rn / __fsub_rn), so the same
// draws give the same bits.
//
// What:   augment_f32: one batch of n images from the table `picks` (per image: the image's
//         index in `images`, dy, dx, flip).
// Layout: images: u8, image i at i·C·H·W, C×H×W; picks: n × 4 i32; norm: 2C f32, the C
//         means then the C deviations (one upload); out: n×C×crop×crop f32.
// Launch: grid-stride over n·C·crop·crop outputs, block = 256.
// Rust:   lucir_cuda::Gpu::augment (crates/lucir-cuda/src/augment.rs).
// Napkin: a CIFAR batch is 128×3×32×32 = 393 k outputs, 0.4 MB read and 1.6 MB written: a
//         few µs, against a 1.6 MB upload of the batch rendered on the host.
#include "common.cuh"

extern "C" __global__ void augment_f32(const unsigned char* images, const int* picks, int n,
                                       int c, int h, int w, int pad, int crop,
                                       const float* norm, float* out) {
    const long long total = (long long)n * c * crop * crop;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int x = (int)(i % crop);
        const int y = (int)((i / crop) % crop);
        const int ch = (int)((i / ((long long)crop * crop)) % c);
        const int b = (int)(i / ((long long)c * crop * crop));
        const int* p = picks + 4 * b;
        const int xx = p[3] ? crop - 1 - x : x;
        const int sy = y + p[1] - pad, sx = xx + p[2] - pad;
        const float m = norm[ch], s = norm[c + ch];
        float v;
        if (sy >= 0 && sy < h && sx >= 0 && sx < w) {
            const unsigned char px = images[(((long long)p[0] * c + ch) * h + sy) * w + sx];
            v = __fdiv_rn(__fsub_rn(__fdiv_rn((float)px, 255.0f), m), s);
        } else {
            v = __fdiv_rn(-m, s);
        }
        out[i] = v;
    }
}
