//! Direct 3×3 "same" convolution (stride 1, padding 1) of f32 NCHW images up to 32 pixels wide,
//! with AVX-512: no im2col, no column buffer, no zeroing.
//!
//! One output row of a block of output channels lives in registers — 16 accumulators of 16
//! lanes: 8 channels × 2 vectors for rows of 17–32 pixels, 16 channels × 1 vector up to 16 —
//! and the loop runs over input channels and the nine taps: each tap loads the (shifted,
//! edge-masked) input row once and adds it, times one broadcast weight, into every channel's
//! accumulators. Rows above and below the image are skipped and columns outside it masked off,
//! so the zero padding costs nothing. The sum over (input channel, tap) has one fixed order,
//! whatever the thread count.
//!
//! Used for the forward pass; the input gradient (the same operation with the flipped,
//! transposed kernel) stays a gemm over the column matrices the weight gradient builds anyway,
//! which measured faster. The reference is [`super::conv2d_ref`]; the gemm path stays for every
//! other shape and CPU.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Whether this CPU runs the direct kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a 3×3, stride-1, padding-1 convolution of `w`-pixel-wide rows fits the kernel.
pub(super) fn fits(kh: usize, kw: usize, stride: usize, pad: usize, w: usize) -> bool {
    kh == 3 && kw == 3 && stride == 1 && pad == 1 && (1..=32).contains(&w)
}

/// `y = w ⋆ x` for a batch: `x` N×Ci×H×W, `w` Co×Ci×3×3, `y` N×Co×H×W, rayon over the
/// images. The output is allocated without zeroing: the kernel writes every element.
///
/// # Panics
/// If the slices do not have those lengths, the shape does not [`fits`], or the CPU lacks
/// AVX-512 ([`available`]); callers check both first.
pub(super) fn conv3x3(x: &[f32], w: &[f32], [n, ci, co, h, wd]: [usize; 5]) -> Vec<f32> {
    assert!(
        fits(3, 3, 1, 1, wd) && available(),
        "direct kernel: unsupported shape or CPU"
    );
    assert_eq!(x.len(), n * ci * h * wd, "direct kernel: input length");
    assert_eq!(w.len(), co * ci * 9, "direct kernel: weight length");
    let out_len = co * h * wd;
    let mut y: Vec<f32> = Vec::with_capacity(n * out_len);
    if out_len > 0 && ci * h * wd > 0 {
        y.spare_capacity_mut()[..n * out_len]
            .par_chunks_mut(out_len)
            .zip(x.par_chunks(ci * h * wd))
            .for_each(|(yi, xi)| image(xi, w, [ci, co, h, wd], yi));
    } else {
        y.resize(n * out_len, 0.0);
    }
    // SAFETY: when the images were computed, `image` wrote each of the n·Co·H·W elements
    // (every row of every output channel, all W columns); otherwise `resize` filled them.
    unsafe { y.set_len(n * out_len) };
    y
}

/// One image into `y` (Co·H·W floats, every one written).
fn image(x: &[f32], w: &[f32], dims: [usize; 4], y: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: AVX-512F is present and the lengths hold (checked by `conv3x3`), which is
        // what the kernel's masked loads and stores rely on.
        unsafe {
            if dims[3] <= 16 {
                avx512::image::<1, 16>(x, w, dims, y)
            } else {
                avx512::image::<2, 8>(x, w, dims, y)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, dims, y);
        unreachable!("`available` is false off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Lanes `l` of vector `v` whose input column `16v + l + kx − 1` lies in `0..w`, for output
    /// columns inside `0..w`.
    fn tap_mask(v: usize, kx: usize, w: usize) -> __mmask16 {
        let mut m = 0u16;
        for l in 0..16 {
            let out = 16 * v + l;
            let col = (out + kx).checked_sub(1);
            if out < w && col.is_some_and(|c| c < w) {
                m |= 1 << l;
            }
        }
        m
    }

    /// Lanes of vector `v` inside a row of `w` pixels.
    fn row_mask(v: usize, w: usize) -> __mmask16 {
        let n = w.saturating_sub(16 * v).min(16);
        ((1u32 << n) - 1) as __mmask16
    }

    /// The whole image, `V` vectors per row (W ≤ 16·V): blocks of `CB` output channels (16
    /// accumulators: enough independent chains to cover the FMA latency), then the remaining
    /// channels one at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x`, `w`, `y` hold Ci·H·W, Co·Ci·9 and Co·H·W floats and
    /// W ≤ 16·V. Every element of `y` is written.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image<const V: usize, const CB: usize>(
        x: &[f32],
        w: &[f32],
        [ci, co, h, wd]: [usize; 4],
        y: &mut [MaybeUninit<f32>],
    ) {
        let masks = Masks::<V>::new(wd);
        let dims = [ci, h, wd];
        let full = co / CB * CB;
        for o in (0..full).step_by(CB) {
            let packed = pack::<CB>(w, ci, o);
            for r in 0..h {
                // SAFETY: as this function's own contract; o + CB ≤ Co.
                unsafe { row::<V, CB>(x, &packed, dims, &masks, (o, r), y) };
            }
        }
        for o in full..co {
            let packed = pack::<1>(w, ci, o);
            for r in 0..h {
                // SAFETY: as above; o < Co.
                unsafe { row::<V, 1>(x, &packed, dims, &masks, (o, r), y) };
            }
        }
    }

    /// The weights of output channels `o..o + NB` tap by tap: entry `c·9 + ky·3 + kx` holds
    /// `w[o + b, c, ky, kx]` for each `b`, so a tap's NB weights sit together.
    fn pack<const NB: usize>(w: &[f32], ci: usize, o: usize) -> Vec<[f32; NB]> {
        (0..ci * 9)
            .map(|t| std::array::from_fn(|b| w[(o + b) * ci * 9 + t]))
            .collect()
    }

    /// The load masks of each tap column and the store masks of a row.
    struct Masks<const V: usize> {
        taps: [[__mmask16; 3]; V],
        rows: [__mmask16; V],
    }

    impl<const V: usize> Masks<V> {
        fn new(wd: usize) -> Self {
            Self {
                taps: std::array::from_fn(|v| [0, 1, 2].map(|kx| tap_mask(v, kx, wd))),
                rows: std::array::from_fn(|v| row_mask(v, wd)),
            }
        }
    }

    /// Output row `r` of channels `o..o + NB`, its `NB × V` accumulators in registers.
    ///
    /// # Safety
    /// As [`image`] (with `w` packed by [`pack`] for channel `o`), and `o + NB ≤ Co`, `r < H`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row<const V: usize, const NB: usize>(
        x: &[f32],
        w: &[[f32; NB]],
        [ci, h, wd]: [usize; 3],
        m: &Masks<V>,
        (o, r): (usize, usize),
        y: &mut [MaybeUninit<f32>],
    ) {
        let plane = h * wd;
        let mut acc = [[_mm512_setzero_ps(); V]; NB];
        for c in 0..ci {
            for ky in 0..3 {
                let Some(ir) = (r + ky).checked_sub(1).filter(|&ir| ir < h) else {
                    continue;
                };
                let row = x.as_ptr().wrapping_add(c * plane + ir * wd);
                for kx in 0..3 {
                    let mut input = [_mm512_setzero_ps(); V];
                    for (v, inp) in input.iter_mut().enumerate() {
                        // The pointer may sit one float before the row (kx = 0): only lanes
                        // inside the row are read, as the mask allows.
                        let p = row.wrapping_add(16 * v + kx).wrapping_sub(1);
                        // SAFETY: the mask keeps every read lane inside row `ir` of channel
                        // `c`, within `x`.
                        *inp = unsafe { _mm512_maskz_loadu_ps(m.taps[v][kx], p) };
                    }
                    let wt = &w[c * 9 + ky * 3 + kx];
                    for (b, accb) in acc.iter_mut().enumerate() {
                        let wb = _mm512_set1_ps(wt[b]);
                        for v in 0..V {
                            accb[v] = _mm512_fmadd_ps(wb, input[v], accb[v]);
                        }
                    }
                }
            }
        }
        for (b, accb) in acc.iter().enumerate() {
            let out = y
                .as_mut_ptr()
                .cast::<f32>()
                .wrapping_add((o + b) * plane + r * wd);
            for v in 0..V {
                // SAFETY: the row mask keeps the written lanes inside row `r` of output channel
                // `o + b`, within `y`.
                unsafe { _mm512_mask_storeu_ps(out.wrapping_add(16 * v), m.rows[v], accb[v]) };
            }
        }
    }
}
