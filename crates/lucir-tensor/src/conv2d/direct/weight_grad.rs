//! The weight gradient of the direct kernels (see the parent module): output channels in the
//! vector lanes, `x` values broadcast from the input planes, one running sum per entry.

use super::{AlignedPlanes, Grid, Taps};

/// The weight gradient of one chunk of images, summed image by image.
///
/// `dw[o, c, tap] = Σ_p dy[o, p] · x[c, p + tap offset]` is computed with the output channels
/// in the vector lanes: each image's `dy` is transposed to `dyt` (positions × Co rounded up to
/// 16, the extra channels zero), and for each position one aligned load of `dyt` meets the
/// tap values of `x`, broadcast from the input planes (scalar loads, which never split a cache
/// line). Each `dw` entry is then one running sum over the positions of every image in
/// order, kept in `acc` between images: no lane sums at the end. Built on a [`Grid`], so on a
/// CPU with AVX-512 only.
pub(super) struct WeightGrad<'a> {
    grid: &'a Grid,
    taps: &'a Taps,
    ci: usize,
    co: usize,
    /// Co rounded up to a multiple of 16.
    co16: usize,
    /// The current image's `dy`, H·W rows of `co16` floats.
    dyt: AlignedPlanes,
    /// `acc[(c·T + tap)·co16 + o]` (`T` taps), the running sums.
    acc: AlignedPlanes,
    /// Whether the taps are a 3×3 kernel's on bordered planes (`offs[0] + ky·wp + kx`): then
    /// two neighbouring positions share their middle columns of `x` (see `wg_tile`).
    slide: bool,
}

impl<'a> WeightGrad<'a> {
    pub(super) fn new(grid: &'a Grid, taps: &'a Taps, ci: usize, co: usize) -> Self {
        let co16 = co.next_multiple_of(16);
        Self {
            grid,
            taps,
            ci,
            co,
            co16,
            dyt: AlignedPlanes::zeroed(grid.h * grid.w * co16),
            acc: AlignedPlanes::zeroed(ci * taps.offs.len() * co16),
            slide: taps.is_3x3_same(grid.wp),
        }
    }

    /// Adds one image: `xb` its `ci` channels' input planes, `dy` its Co×H×W gradient.
    pub(super) fn add_image(&mut self, xb: &[f32], dy: &[f32]) {
        let g = self.grid;
        // The furthest float read: the last real position plus the largest offset.
        let reach = (g.h.max(1) - 1) * g.wp + g.w + self.taps.offs.iter().max().unwrap_or(&0);
        assert!(
            (self.ci == 0 || xb.len() >= (self.ci - 1) * self.taps.stride + reach)
                && dy.len() == self.co * g.h * g.w
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the grid's `Avx512` token proves the CPU has AVX-512F; the lengths were just
        // checked and `dyt`, `acc` were sized by `new` for this grid, these taps and channel
        // counts.
        unsafe {
            let co16 = self.co16;
            avx512::transpose_dy(g.cpu, dy, self.co, g.h * g.w, co16, self.dyt.get_mut());
            let offs = &self.taps.offs;
            match offs.len() {
                9 => avx512::weight_grad::<9>(self, offs.as_slice().try_into().unwrap(), xb),
                1 => avx512::weight_grad::<1>(self, offs.as_slice().try_into().unwrap(), xb),
                n => unreachable!("no kernel has {n} taps"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (xb, dy);
            unreachable!("no `Avx512` token exists off x86-64");
        }
    }

    /// The sums as a Co×Ci×taps weight gradient.
    pub(super) fn into_dw(self) -> Vec<f32> {
        unpack_sums(
            self.acc.get(),
            self.co,
            self.ci * self.taps.offs.len(),
            self.co16,
        )
    }
}

/// Running sums laid out `acc[t·co16 + o]` (`t` the (input channel, tap) index, `per` of
/// them) as a Co × per weight gradient.
pub(super) fn unpack_sums(acc: &[f32], co: usize, per: usize, co16: usize) -> Vec<f32> {
    let mut dw = vec![0.0f32; co * per];
    for (o, dwo) in dw.chunks_exact_mut(per.max(1)).enumerate() {
        for (t, d) in dwo.iter_mut().enumerate() {
            *d = acc[t * co16 + o];
        }
    }
    dw
}

#[cfg(target_arch = "x86_64")]
pub(in crate::conv2d::direct) use avx512::transpose16;
#[cfg(target_arch = "x86_64")]
pub(in crate::conv2d) use avx512::transpose_dy;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::WeightGrad;
    use crate::Avx512;

    /// `dy` (Co × P, NCHW) into `dyt` (P × co16): 16×16 blocks transposed in registers,
    /// channels past Co written as zeros. The token is the proof that the CPU has AVX-512F.
    ///
    /// # Safety
    /// `dy` holds Co·P floats and `dyt` P·co16, co16 a multiple of 16 and ≥ Co.
    #[target_feature(enable = "avx512f")]
    pub(in crate::conv2d) unsafe fn transpose_dy(
        _: Avx512,
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
    #[inline]
    pub(in crate::conv2d::direct) fn transpose16(r: &mut [__m512; 16]) {
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
    /// channels × `T` taps, over every position of the image.
    ///
    /// No CPU check is needed: `wg.grid` holds the [`Avx512`] token.
    ///
    /// # Safety
    /// `xb` holds `wg.ci` channels' planes, so that every tap of every real position reads
    /// inside it (as `WeightGrad::add_image` checks); `wg.dyt` holds this image's transposed
    /// `dy`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad<const T: usize>(
        wg: &mut WeightGrad<'_>,
        offs: &[usize; T],
        xb: &[f32],
    ) {
        // 18 accumulators with nine taps, 16 with one.
        // Sliding (see `wg_tile`) pays with one output-channel vector only: measured slower
        // with two.
        let tiles = match (T, wg.co16 == 16, wg.slide) {
            (9, true, true) => tiles::<1, 2, T, true>,
            (9, true, false) => tiles::<1, 2, T, false>,
            (9, false, _) => tiles::<2, 1, T, false>,
            (_, true, _) => tiles::<1, 16, T, false>,
            (_, false, _) => tiles::<2, 8, T, false>,
        };
        // SAFETY: this function's contract, passed on.
        unsafe { tiles(wg, offs, xb) }
    }

    /// Every (output-channel vector, input channel) of the image in tiles of `M × C`, then the
    /// rest in tiles of 1 in the short direction.
    ///
    /// # Safety
    /// As [`weight_grad`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tiles<const M: usize, const C: usize, const T: usize, const SLIDE: bool>(
        wg: &mut WeightGrad<'_>,
        offs: &[usize; T],
        xb: &[f32],
    ) {
        let ov = wg.co16 / 16;
        let (vfull, cfull) = (ov / M * M, wg.ci / C * C);
        for c in (0..cfull).step_by(C) {
            for v in (0..vfull).step_by(M) {
                // SAFETY: this function's contract; v + M ≤ co16/16, c + C ≤ Ci.
                unsafe { wg_tile::<M, C, T, SLIDE>(wg, offs, xb, (v, c)) };
            }
            for v in vfull..ov {
                // SAFETY: as above.
                unsafe { wg_tile::<1, C, T, SLIDE>(wg, offs, xb, (v, c)) };
            }
        }
        for c in cfull..wg.ci {
            for v in (0..vfull).step_by(M) {
                // SAFETY: as above.
                unsafe { wg_tile::<M, 1, T, SLIDE>(wg, offs, xb, (v, c)) };
            }
            for v in vfull..ov {
                // SAFETY: as above.
                unsafe { wg_tile::<1, 1, T, SLIDE>(wg, offs, xb, (v, c)) };
            }
        }
    }

    /// Output-channel vectors `v..v + M`, input channels `c..c + C`, all `T` taps: the running
    /// sums loaded, every position of the image added in order, the sums stored back.
    ///
    /// # Safety
    /// As [`weight_grad`], with `16·(v + M) ≤ co16` and `c + C ≤ Ci`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn wg_tile<const M: usize, const C: usize, const T: usize, const SLIDE: bool>(
        wg: &mut WeightGrad<'_>,
        offs: &[usize; T],
        xb: &[f32],
        (v, c): (usize, usize),
    ) {
        let g = wg.grid;
        let co16 = wg.co16;
        let acc_ptr = wg.acc.get_mut().as_mut_ptr();
        let at = |cc: usize, t: usize, m: usize| ((c + cc) * T + t) * co16 + 16 * (v + m);
        // Loaded in plain loops: through nested `from_fn` closures the sums took a trip
        // through the stack (a call per tile).
        let mut acc = [[[_mm512_setzero_ps(); M]; T]; C];
        for (cc, accc) in acc.iter_mut().enumerate() {
            for (t, acct) in accc.iter_mut().enumerate() {
                for (m, a) in acct.iter_mut().enumerate() {
                    // SAFETY: entries (c + cc, t) < (Ci, T) and channels 16·(v + m) + 16 ≤
                    // co16: inside `acc` (Ci·T·co16 floats).
                    *a = unsafe { _mm512_loadu_ps(acc_ptr.wrapping_add(at(cc, t, m))) };
                }
            }
        }
        let dyt = wg.dyt.get().as_ptr().wrapping_add(16 * v);
        let load = |p: usize, m: usize| {
            // SAFETY: called for positions p < H·W; channels 16·(v + m) + 16 ≤ co16: inside
            // `dyt`.
            unsafe { _mm512_loadu_ps(dyt.wrapping_add(p * co16 + 16 * m)) }
        };
        for r in 0..g.h {
            let mut col = 0;
            // Two positions at a time on a 3×3 kernel's taps: tap (ky, kx) of position
            // p + 1 reads what tap (ky, kx + 1) of p reads, so each kernel row takes four `x`
            // values instead of six. Each sum still adds position p before p + 1.
            while SLIDE && col + 1 < g.w {
                let p = r * g.w + col;
                let (d0, d1): ([__m512; M], [__m512; M]) = (
                    std::array::from_fn(|m| load(p, m)),
                    std::array::from_fn(|m| load(p + 1, m)),
                );
                for (cc, accc) in acc.iter_mut().enumerate() {
                    let x = xb
                        .as_ptr()
                        .wrapping_add((c + cc) * wg.taps.stride + r * g.wp + col + offs[0]);
                    for ky in 0..3 {
                        let row = x.wrapping_add(ky * g.wp);
                        let xv: [__m512; 4] = std::array::from_fn(|k| {
                            // SAFETY: columns kx ≤ 2 of position p + 1's row ky taps, which
                            // read inside `xb` (the contract).
                            _mm512_set1_ps(unsafe { *row.wrapping_add(k) })
                        });
                        for (d, shift) in [(&d0, 0), (&d1, 1)] {
                            for kx in 0..3 {
                                for m in 0..M {
                                    let a = &mut accc[ky * 3 + kx][m];
                                    *a = _mm512_fmadd_ps(d[m], xv[kx + shift], *a);
                                }
                            }
                        }
                    }
                }
                col += 2;
            }
            for col in col..g.w {
                let p = r * g.w + col;
                let d: [__m512; M] = std::array::from_fn(|m| load(p, m));
                for (cc, accc) in acc.iter_mut().enumerate() {
                    let x = xb
                        .as_ptr()
                        .wrapping_add((c + cc) * wg.taps.stride + r * g.wp + col);
                    for (acct, &off) in accc.iter_mut().zip(offs) {
                        // SAFETY: a real position's taps read inside `xb` (the contract).
                        let xv = _mm512_set1_ps(unsafe { *x.wrapping_add(off) });
                        for m in 0..M {
                            acct[m] = _mm512_fmadd_ps(d[m], xv, acct[m]);
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
