//! What the two summation-order tests (`conv2d_order`, stride 1; `conv2d_order_strided`,
//! stride 2) share: reading a bordered image, bit patterns to compare, the unmapped passes
//! checked against a model, and running a check on every direct kernel version this CPU has.

use lucir_tensor::{
    conv2d, conv2d_bwd, conv2d_bwd_add, conv2d_bwd_weight, force_avx2_convolutions,
    force_position_tiles, Avx2Fma, Avx512, Conv2dGeometry, Tensor,
};

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

/// The model's results for one convolution: the forward pass, the input gradient and the
/// weight gradient.
pub struct Model {
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
}

/// Every unmapped pass of `conv(x, w)` (geometry `g`) against `model`, bit for bit: forward,
/// backward, the input gradient added into `old` (`old + dx`), the weight gradient beside it
/// and alone; `what` names the case in messages.
pub fn check_passes(
    [x, w, dy, old]: [&Tensor<f32>; 4],
    g: Conv2dGeometry,
    model: &Model,
    what: &str,
) {
    let y = conv2d(x, w, g).unwrap();
    assert_eq!(bits(y.as_slice()), bits(&model.y), "forward {what}");
    let (dx, dw) = conv2d_bwd(x, w, dy, g).unwrap();
    assert_eq!(
        bits(dx.as_slice()),
        bits(&model.dx),
        "input gradient {what}"
    );
    assert_eq!(
        bits(dw.as_slice()),
        bits(&model.dw),
        "weight gradient {what}"
    );
    let (sum, dw_add) = conv2d_bwd_add(x, w, dy, g, old.clone()).unwrap();
    let sum_model: Vec<f32> = old
        .as_slice()
        .iter()
        .zip(&model.dx)
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(
        bits(sum.as_slice()),
        bits(&sum_model),
        "added input gradient {what}"
    );
    assert_eq!(
        bits(dw_add.as_slice()),
        bits(&model.dw),
        "weight gradient (adding) {what}"
    );
    let dw_only = conv2d_bwd_weight(x, w, dy, g).unwrap();
    assert_eq!(
        bits(dw_only.as_slice()),
        bits(&model.dw),
        "weight gradient alone {what}"
    );
}

/// Runs `check_all(version name)` on the AVX-512 kernels (with their row tiles on small
/// images, then, forced with `force_position_tiles`, with their position tiles everywhere) and
/// then, forced with `force_avx2_convolutions`, the AVX2 ones where the CPU has AVX-512; on the
/// AVX2 ones where it has only AVX2; and prints `skipped: test: …` where it has neither.
pub fn on_each_version(test: &str, check_all: impl Fn(&str)) {
    if Avx512::detect().is_some() {
        check_all("AVX-512 kernels");
        force_position_tiles(true);
        check_all("AVX-512 kernels, position tiles only");
        force_position_tiles(false);
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
