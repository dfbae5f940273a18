//! The weight gradient with bf16 products: as the f32 one (`super::super::weight_grad`), output
//! channels in the lanes and `x` broadcast, but over *pairs of neighbouring positions*.
//!
//! `dw[o, c, tap] = Σ_p dy[o, p] · x[c, p + tap offset]` runs over each row's positions two
//! at a time, columns `(2k, 2k + 1)` (on an odd width the last pair's second position is the
//! zero border, with `dy = 0`): `dyt` holds, per pair, the bf16 values of `dy` at both
//! positions for every output channel (a 32-bit lane per channel), and the input planes hold
//! plain bf16 values, so the two inputs a tap reads for the pair sit side by side — one 32-bit
//! broadcast. One `vdpbf16ps` then adds both positions' products to each channel's sum. Each
//! `dw` entry is one running sum over the pairs of every image in order (row by row), kept
//! between images.

#[cfg(target_arch = "x86_64")]
use super::super::weight_grad::transpose_dy;
use super::super::weight_grad::unpack_sums;
use super::super::{AlignedPlanes, Grid, Map};
use crate::Avx512Bf16;

/// The weight gradient of one chunk of images, summed image by image (see the module).
pub(super) struct PairWeightGrad<'a> {
    cpu: Avx512Bf16,
    grid: &'a Grid,
    /// Where tap (0, 0) of a pair reads, counted from the pair's first position on the planes:
    /// the taps are `Grid::taps3x3`'s, tap (ky, kx) at `first_tap + ky·wp + kx`.
    first_tap: usize,
    ci: usize,
    co: usize,
    /// Co rounded up to a multiple of 16.
    co16: usize,
    /// Pairs of positions in a row: W/2 rounded up.
    row_pairs: usize,
    /// The current image's `dy` transposed, H·W rows of `co16` floats (f32).
    dyt32: AlignedPlanes,
    /// The current image's `dy` in pairs: H·`row_pairs` rows of `co16` bf16 pairs.
    dyt: AlignedPlanes,
    /// The current image's input, `ci` planes of bf16 values (a plane of the grid's
    /// `plane` 16-bit elements, the bordered layout).
    xb: AlignedPlanes,
    /// `acc[(c·9 + tap)·co16 + o]`, the running sums.
    acc: AlignedPlanes,
}

impl<'a> PairWeightGrad<'a> {
    pub(super) fn new(cpu: Avx512Bf16, grid: &'a Grid, ci: usize, co: usize) -> Self {
        let co16 = co.next_multiple_of(16);
        let row_pairs = grid.w.div_ceil(2);
        Self {
            cpu,
            grid,
            first_tap: {
                let taps = grid.taps3x3();
                // `wg_tile` reads the taps as rows and columns from the first.
                assert!(taps.is_3x3_same(grid.wp), "bf16 weight gradient: 3×3 taps");
                taps.offs[0]
            },
            ci,
            co,
            co16,
            row_pairs,
            dyt32: AlignedPlanes::zeroed(grid.h * grid.w * co16),
            dyt: AlignedPlanes::zeroed(grid.h * row_pairs * co16),
            // Two bf16 values per float; `plane` is a multiple of 16.
            xb: AlignedPlanes::zeroed(ci * grid.plane / 2),
            acc: AlignedPlanes::zeroed(ci * 9 * co16),
        }
    }

    /// Adds one image: `x` its Ci×H×W input (read through `map` if given), `dy` its Co×H×W
    /// gradient.
    pub(super) fn add_image(&mut self, x: &[f32], dy: &[f32], map: Option<Map<'_>>) {
        let g = self.grid;
        let hw = g.h * g.w;
        assert!(x.len() == self.ci * hw && dy.len() == self.co * hw);
        assert!(map.is_none_or(|m| m.scale.len() >= self.ci && m.shift.len() >= self.ci));
        // The furthest 16-bit element a pair's tap reads, plus one: the last row's last pair's
        // second input under tap (2, 2).
        let reach = (g.h.max(1) - 1) * g.wp + 2 * self.row_pairs + self.first_tap + 2 * g.wp + 2;
        assert!(
            reach <= g.plane,
            "bf16 weight gradient: taps past the plane"
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the token proves the CPU has the instructions; the lengths were just checked
        // and the buffers were sized by `new` for this grid and these channel counts.
        unsafe {
            avx512::fill_plain(self.cpu, g, x, self.xb.get_mut(), self.ci, map);
            let (co, co16) = (self.co, self.co16);
            transpose_dy(self.cpu.avx512(), dy, co, hw, co16, self.dyt32.get_mut());
            avx512::pair_rows(self);
            match self.co16 == 16 {
                true => avx512::tiles::<1, 2>(self),
                false => avx512::tiles::<2, 1>(self),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no `Avx512Bf16` token exists off x86-64");
    }

    /// The sums as a Co×Ci×3×3 weight gradient.
    pub(super) fn into_dw(self) -> Vec<f32> {
        unpack_sums(self.acc.get(), self.co, self.ci * 9, self.co16)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::super::grid::channel_map;
    use super::super::avx512::{bf16_pairs, dot2};
    use super::{Grid, Map, PairWeightGrad};
    use crate::Avx512Bf16;

    /// Copies `chans` H×W planes of `src` (through `map`) into the interiors of the bf16
    /// planes of `dst`, rounded to bf16; the borders keep their zeros.
    ///
    /// # Safety
    /// `src` holds `chans` H×W planes, `dst` `chans` planes of `g.plane` 16-bit elements, and
    /// `map`, if given, `chans` channels.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn fill_plain(
        _: Avx512Bf16,
        g: &Grid,
        src: &[f32],
        dst: &mut [f32],
        chans: usize,
        map: Option<Map<'_>>,
    ) {
        let (hw, w) = (g.h * g.w, g.w);
        for c in 0..chans {
            let f = map.map(|m| channel_map(m, c));
            for r in 0..g.h {
                let from = src.as_ptr().wrapping_add(c * hw + r * w);
                let to = dst
                    .as_mut_ptr()
                    .cast::<i16>()
                    .wrapping_add(c * g.plane + g.lead + (r + 1) * g.wp + 1);
                for k in (0..w).step_by(16) {
                    let m = ((1u32 << (w - k).min(16)) - 1) as __mmask16;
                    // SAFETY: the mask keeps the lanes inside row r of channel c in `src` and
                    // inside the interior of plane c in `dst`.
                    unsafe {
                        let mut v = _mm512_maskz_loadu_ps(m, from.wrapping_add(k));
                        if let Some(f) = &f {
                            v = f(v);
                        }
                        let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                        _mm256_mask_storeu_epi16(to.wrapping_add(k), m, h);
                    }
                }
            }
        }
    }

    /// `wg.dyt` from `wg.dyt32`: per pair of positions in a row, both positions' `dy` rows as
    /// bf16 pairs (zeros for the border column after an odd width).
    ///
    /// # Safety
    /// `wg.dyt32` holds the image's transposed `dy`; the buffers have `new`'s sizes.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn pair_rows(wg: &mut PairWeightGrad<'_>) {
        let g = wg.grid;
        let co16 = wg.co16;
        let src = wg.dyt32.get().as_ptr();
        let dst = wg.dyt.get_mut().as_mut_ptr().cast::<i32>();
        for j in 0..g.h * wg.row_pairs {
            let (r, col) = (j / wg.row_pairs, 2 * (j % wg.row_pairs));
            let (p0, p1) = (
                Some(r * g.w + col),
                (col + 1 < g.w).then_some(r * g.w + col + 1),
            );
            for ob in (0..co16).step_by(16) {
                // SAFETY: real positions p < H·W and channels ob + 16 ≤ co16 read inside
                // `dyt32`; pair j < H·row_pairs writes inside `dyt`.
                unsafe {
                    let row = |p: Option<usize>| match p {
                        Some(p) => _mm512_loadu_ps(src.wrapping_add(p * co16 + ob)),
                        None => _mm512_setzero_ps(),
                    };
                    let v = bf16_pairs(row(p0), row(p1));
                    _mm512_storeu_epi32(dst.wrapping_add(j * co16 + ob), v);
                }
            }
        }
    }

    /// Every (output-channel vector, input channel) of the image in tiles of `M × C`, then the
    /// rest in tiles of 1 in the short direction.
    ///
    /// # Safety
    /// The buffers hold this image's planes and pairs (`add_image` fills them).
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn tiles<const M: usize, const C: usize>(wg: &mut PairWeightGrad<'_>) {
        let ov = wg.co16 / 16;
        let (vfull, cfull) = (ov / M * M, wg.ci / C * C);
        for c in (0..cfull).step_by(C) {
            for v in (0..vfull).step_by(M) {
                // SAFETY: this function's contract; v + M ≤ co16/16, c + C ≤ Ci.
                unsafe { wg_tile::<M, C>(wg, (v, c)) };
            }
            for v in vfull..ov {
                // SAFETY: as above.
                unsafe { wg_tile::<1, C>(wg, (v, c)) };
            }
        }
        for c in cfull..wg.ci {
            for v in (0..vfull).step_by(M) {
                // SAFETY: as above.
                unsafe { wg_tile::<M, 1>(wg, (v, c)) };
            }
            for v in vfull..ov {
                // SAFETY: as above.
                unsafe { wg_tile::<1, 1>(wg, (v, c)) };
            }
        }
    }

    /// Output-channel vectors `v..v + M`, input channels `c..c + C`, the nine taps: the
    /// running sums loaded, every pair of positions added in order, the sums stored back.
    ///
    /// # Safety
    /// As [`tiles`], with `16·(v + M) ≤ co16` and `c + C ≤ Ci`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[inline]
    unsafe fn wg_tile<const M: usize, const C: usize>(
        wg: &mut PairWeightGrad<'_>,
        (v, c): (usize, usize),
    ) {
        let (co16, plane, wp) = (wg.co16, wg.grid.plane, wg.grid.wp);
        let acc_ptr = wg.acc.get_mut().as_mut_ptr();
        let at = |cc: usize, t: usize, m: usize| ((c + cc) * 9 + t) * co16 + 16 * (v + m);
        // Loaded in plain loops: through nested `from_fn` closures the sums took a trip
        // through the stack (a call per tile).
        let mut acc = [[[_mm512_setzero_ps(); M]; 9]; C];
        for (cc, accc) in acc.iter_mut().enumerate() {
            for (t, acct) in accc.iter_mut().enumerate() {
                for (m, a) in acct.iter_mut().enumerate() {
                    // SAFETY: entries (c + cc, t) < (Ci, 9) and channels 16·(v + m) + 16 ≤
                    // co16: inside `acc` (Ci·9·co16 floats).
                    *a = unsafe { _mm512_loadu_ps(acc_ptr.wrapping_add(at(cc, t, m))) };
                }
            }
        }
        let dyt = wg.dyt.get().as_ptr().cast::<i32>().wrapping_add(16 * v);
        let xb = wg.xb.get().as_ptr().cast::<i16>();
        // Pair j = r·row_pairs + k (row r, columns 2k and 2k + 1), in order of j; its first
        // position on the planes is q = r·wp + 2k, and tap (ky, kx) reads at q + first_tap +
        // ky·wp + kx. Both as address arithmetic on one pointer per input channel: a division
        // of j per pair, or the eighteen tap pointers of two channels (more than the
        // registers, so reloaded from the stack every pair), cost about as much as the
        // products.
        let first_tap = wg.first_tap;
        for r in 0..wg.grid.h {
            for k in 0..wg.row_pairs {
                let j = r * wg.row_pairs + k;
                let d: [__m512i; M] = std::array::from_fn(|m| {
                    // SAFETY: pair j < H·row_pairs, channels 16·(v + m) + 16 ≤ co16: inside
                    // `dyt`.
                    unsafe { _mm512_loadu_epi32(dyt.wrapping_add(j * co16 + 16 * m)) }
                });
                let q = r * wp + 2 * k;
                for (cc, accc) in acc.iter_mut().enumerate() {
                    let x = xb.wrapping_add((c + cc) * plane + q + first_tap);
                    for ky in 0..3 {
                        let row = x.wrapping_add(ky * wp);
                        for kx in 0..3 {
                            // SAFETY: the tap's two elements for the pair, inside plane
                            // c + cc (`add_image` checks the reach).
                            let xv = _mm512_set1_epi32(unsafe {
                                row.wrapping_add(kx).cast::<i32>().read_unaligned()
                            });
                            for m in 0..M {
                                let a = &mut accc[ky * 3 + kx][m];
                                *a = dot2(*a, d[m], xv);
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
