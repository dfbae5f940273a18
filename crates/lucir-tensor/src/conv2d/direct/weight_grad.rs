//! The weight gradient of the direct 3×3 kernels (see the parent module): output channels in
//! the vector lanes, `x` values broadcast from the bordered planes, one running sum per entry.

use super::{Grid, Planes};

/// The weight gradient of one chunk of images, summed image by image.
///
/// `dw[o, c, tap] = Σ_p dy[o, p] · x[c, p + tap offset]` is computed with the output channels
/// in the vector lanes: each image's `dy` is transposed to `dyt` (positions × Co rounded up to
/// 16, the extra channels zero), and for each position one aligned load of `dyt` meets the nine
/// tap values of `x`, broadcast from the bordered planes (scalar loads, which never split a
/// cache line). Each `dw` entry is then one running sum over the positions of every image in
/// order, kept in `acc` between images: no lane sums at the end.
pub(super) struct WeightGrad<'a> {
    grid: &'a Grid,
    ci: usize,
    co: usize,
    /// Co rounded up to a multiple of 16.
    co16: usize,
    /// The current image's `dy`, H·W rows of `co16` floats.
    dyt: Planes,
    /// `acc[(c·9 + tap)·co16 + o]`, the running sums.
    acc: Planes,
}

impl<'a> WeightGrad<'a> {
    pub(super) fn new(grid: &'a Grid, ci: usize, co: usize) -> Self {
        let co16 = co.next_multiple_of(16);
        Self {
            grid,
            ci,
            co,
            co16,
            dyt: Planes::zeroed(grid.h * grid.w * co16),
            acc: Planes::zeroed(ci * 9 * co16),
        }
    }

    /// Adds one image: `xb` its `ci` bordered planes, `dy` its Co×H×W gradient.
    pub(super) fn add_image(&mut self, xb: &[f32], dy: &[f32]) {
        let g = self.grid;
        assert!(xb.len() >= self.ci * g.plane && dy.len() == self.co * g.h * g.w);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` was checked by `conv3x3_bwd`; the lengths were just checked and
        // `dyt`, `acc` were sized by `new` for this grid and these channel counts.
        unsafe {
            avx512::transpose_dy(dy, self.co, g.h * g.w, self.co16, self.dyt.get_mut());
            avx512::weight_grad(self, xb);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (xb, dy);
            unreachable!("`available` is false off x86-64");
        }
    }

    /// The sums as a Co×Ci×3×3 weight gradient.
    pub(super) fn into_dw(self) -> Vec<f32> {
        let acc = self.acc.get();
        let mut dw = vec![0.0f32; self.co * self.ci * 9];
        for (o, dwo) in dw.chunks_exact_mut(self.ci * 9).enumerate() {
            for (t, d) in dwo.iter_mut().enumerate() {
                *d = acc[t * self.co16 + o];
            }
        }
        dw
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::WeightGrad;

    /// `dy` (Co × P, NCHW) into `dyt` (P × co16): 16×16 blocks transposed in registers,
    /// channels past Co written as zeros.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `dy` holds Co·P floats and `dyt` P·co16, co16 a multiple of 16
    /// and ≥ Co.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_dy(
        dy: &[f32],
        co: usize,
        p: usize,
        co16: usize,
        dyt: &mut [f32],
    ) {
        for ob in (0..co16).step_by(16) {
            for pb in (0..p).step_by(16) {
                let np = (p - pb).min(16);
                let m = ((1u32 << np) - 1) as __mmask16;
                let mut r: [__m512; 16] = std::array::from_fn(|i| {
                    if ob + i < co {
                        // SAFETY: the mask keeps the lanes inside row ob + i of `dy`.
                        unsafe {
                            _mm512_maskz_loadu_ps(m, dy.as_ptr().wrapping_add((ob + i) * p + pb))
                        }
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                transpose16(&mut r);
                for (j, v) in r.iter().enumerate().take(np) {
                    // SAFETY: position pb + j < P, channels ob..ob + 16 ≤ co16: inside `dyt`.
                    unsafe {
                        _mm512_storeu_ps(dyt.as_mut_ptr().wrapping_add((pb + j) * co16 + ob), *v)
                    };
                }
            }
        }
    }

    /// Transposes the 16×16 matrix whose rows are `r` (row i, lane j → row j, lane i).
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: &mut [__m512; 16]) {
        // Rows (2i, 2i+1) interleaved by 32 bits within each 128-bit lane k.
        let t: [__m512; 16] = std::array::from_fn(|n| {
            let (a, b) = (r[n & !1], r[n | 1]);
            if n % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // s[4i + j], 128-bit lane k: column 4k + j of rows 4i..4i+3.
        let s: [__m512; 16] = std::array::from_fn(|n| {
            let (i, j) = (n / 4, n % 4);
            let (a, b) = (
                _mm512_castps_pd(t[4 * i + j / 2]),
                _mm512_castps_pd(t[4 * i + 2 + j / 2]),
            );
            _mm512_castpd_ps(if j % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        // u[j] = lanes 0, 2 of s[j] and s[4+j]; u[4+j] = lanes 1, 3; likewise u[8+j], u[12+j]
        // from s[8+j], s[12+j].
        let u: [__m512; 16] = std::array::from_fn(|n| {
            let (half, odd, j) = (n / 8, (n / 4) % 2, n % 4);
            let (a, b) = (s[8 * half + j], s[8 * half + 4 + j]);
            if odd == 0 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        });
        // Column 4k + j: [s[j], s[4+j], s[8+j], s[12+j]] at lane k.
        for j in 0..4 {
            r[j] = _mm512_shuffle_f32x4::<0x88>(u[j], u[8 + j]);
            r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(u[j], u[8 + j]);
            r[4 + j] = _mm512_shuffle_f32x4::<0x88>(u[4 + j], u[12 + j]);
            r[12 + j] = _mm512_shuffle_f32x4::<0xDD>(u[4 + j], u[12 + j]);
        }
    }

    /// One image into the running sums: tiles of `M` vectors of output channels × `C` input
    /// channels × 9 taps (18 accumulators), over every position of the image.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `xb` holds `wg.ci` bordered planes of `wg.grid`; `wg.dyt` holds
    /// this image's transposed `dy`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad(wg: &mut WeightGrad<'_>, xb: &[f32]) {
        let ov = wg.co16 / 16;
        if ov == 1 {
            let pairs = wg.ci / 2 * 2;
            for c in (0..pairs).step_by(2) {
                // SAFETY: this function's contract; c + 2 ≤ Ci, one vector of channels.
                unsafe { wg_tile::<1, 2>(wg, xb, (0, c)) };
            }
            for c in pairs..wg.ci {
                // SAFETY: as above.
                unsafe { wg_tile::<1, 1>(wg, xb, (0, c)) };
            }
        } else {
            let pairs = ov / 2 * 2;
            for c in 0..wg.ci {
                for v in (0..pairs).step_by(2) {
                    // SAFETY: as above; v + 2 ≤ co16/16.
                    unsafe { wg_tile::<2, 1>(wg, xb, (v, c)) };
                }
                for v in pairs..ov {
                    // SAFETY: as above.
                    unsafe { wg_tile::<1, 1>(wg, xb, (v, c)) };
                }
            }
        }
    }

    /// Output-channel vectors `v..v + M`, input channels `c..c + C`, all nine taps: the running
    /// sums loaded, every position of the image added in order, the sums stored back.
    ///
    /// # Safety
    /// As [`weight_grad`], with `16·(v + M) ≤ co16` and `c + C ≤ Ci`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn wg_tile<const M: usize, const C: usize>(
        wg: &mut WeightGrad<'_>,
        xb: &[f32],
        (v, c): (usize, usize),
    ) {
        let g = wg.grid;
        let co16 = wg.co16;
        let acc_ptr = wg.acc.get_mut().as_mut_ptr();
        let at = |cc: usize, t: usize, m: usize| ((c + cc) * 9 + t) * co16 + 16 * (v + m);
        let mut acc: [[[__m512; M]; 9]; C] = std::array::from_fn(|cc| {
            std::array::from_fn(|t| {
                // SAFETY: entries (c + cc, t) < (Ci, 9) and channels 16·(v + m) + 16 ≤ co16:
                // inside `acc` (Ci·9·co16 floats).
                std::array::from_fn(|m| unsafe {
                    _mm512_loadu_ps(acc_ptr.wrapping_add(at(cc, t, m)))
                })
            })
        });
        let dyt = wg.dyt.get().as_ptr().wrapping_add(16 * v);
        for r in 0..g.h {
            for col in 0..g.w {
                let p = r * g.w + col;
                // SAFETY: position p < H·W, channels 16·(v + m) + 16 ≤ co16: inside `dyt`.
                let d: [__m512; M] = std::array::from_fn(|m| unsafe {
                    _mm512_loadu_ps(dyt.wrapping_add(p * co16 + 16 * m))
                });
                for (cc, accc) in acc.iter_mut().enumerate() {
                    let x = xb
                        .as_ptr()
                        .wrapping_add((c + cc) * g.plane + g.lead + r * g.wp + col);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            // SAFETY: bordered row r + ky ≤ H + 1, column col + kx ≤ W + 1 of
                            // plane c + cc: inside `xb`.
                            let xv = _mm512_set1_ps(unsafe { *x.wrapping_add(ky * g.wp + kx) });
                            for m in 0..M {
                                accc[ky * 3 + kx][m] =
                                    _mm512_fmadd_ps(d[m], xv, accc[ky * 3 + kx][m]);
                            }
                        }
                    }
                }
            }
        }
        for (cc, accc) in acc.iter().enumerate() {
            for (t, acct) in accc.iter().enumerate() {
                for (m, a) in acct.iter().enumerate() {
                    // SAFETY: as the loads above.
                    unsafe { _mm512_storeu_ps(acc_ptr.wrapping_add(at(cc, t, m)), *a) };
                }
            }
        }
    }
}
