//! What the two summation-order tests (`conv2d_order`, stride 1; `conv2d_order_strided`,
//! stride 2) share: reading a bordered image, bit patterns to compare, and running a check on
//! every direct kernel version this CPU has.

use lucir_tensor::{force_avx2_convolutions, Avx2Fma, Avx512};

/// Element (c, r, col) of image `i` of an N×C×H×W buffer, 0 outside the image (the border).
pub fn at(v: &[f32], [c_n, h, w]: [usize; 3], i: usize, c: usize, r: isize, col: isize) -> f32 {
    if r < 0 || col < 0 || r as usize >= h || col as usize >= w {
        return 0.0;
    }
    v[((i * c_n + c) * h + r as usize) * w + col as usize]
}

/// The bit patterns of `v`, for comparisons that must be exact.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Runs `check_all(version name)` on the AVX-512 kernels and then, forced with
/// `force_avx2_convolutions`, the AVX2 ones where the CPU has AVX-512; on the AVX2 ones where
/// it has only AVX2; and prints `skipped: test: …` where it has neither.
pub fn on_each_version(test: &str, check_all: impl Fn(&str)) {
    if Avx512::detect().is_some() {
        check_all("AVX-512 kernels");
        if Avx2Fma::detect().is_some() {
            force_avx2_convolutions(true);
            check_all("AVX2 kernels");
            force_avx2_convolutions(false);
        }
    } else if Avx2Fma::detect().is_some() {
        eprintln!("no AVX-512: checks the AVX2 kernels only");
        check_all("AVX2 kernels");
    } else {
        eprintln!("skipped: {test}: no AVX2 nor AVX-512, so no direct kernels");
    }
}
