//! The row tiles of `super::super::lanes` with bf16 products: one row's outputs × 32 (or 16)
//! output channels in the lanes, on the pair planes. Per channel pair and tap, the packed
//! weights hold the two channels' bf16 weights of 16 output channels in one vector, and each
//! output's pair value, broadcast, meets it in one `vdpbf16ps`. Each output sums the same
//! pair products in the same order (channel pair, ky, kx) as the parent's position tiles, so
//! the bits are the same.

use std::mem::MaybeUninit;

use super::{Bf16Kernel, PairForward};
use crate::conv2d::direct::grid::Ahead;
use crate::conv2d::direct::lanes::{with_row_tile, RowTile};

/// `w` (Co × Ci × 9) as rows of Co pairs: entry `(p·9 + t)·co + o` holds
/// `(w[o, 2p, t], w[o, 2p + 1, t])` rounded to bf16 (a missing channel 2p + 1 is zero).
pub(super) fn pack_pair_lanes(w: &[f32], ci: usize, co: usize) -> Vec<u32> {
    let k = Bf16Kernel::new(w, ci);
    let mut packed = Vec::with_capacity(ci.div_ceil(2) * 9 * co);
    for p in 0..ci.div_ceil(2) {
        for t in 0..9 {
            packed.extend((0..co).map(|o| k.pair(o, p, t)));
        }
    }
    packed
}

/// One image through the row tiles of `tile` (see `super::super::lanes::forward_rows`),
/// `lanes` the weights packed by [`pack_pair_lanes`].
///
/// # Safety
/// As `PairForward::image` checks before calling it: `src` holds `f.pairs` pair planes, so
/// that every tap of every real output reads inside it, and `y` at least `f.co·H·W` floats,
/// initialised if `add`; `tile` is [`RowTile::plan`]'s for `f`.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn forward_rows(
    f: &PairForward<'_>,
    tile: RowTile,
    lanes: &[u32],
    src: &[f32],
    y: &mut [MaybeUninit<f32>],
    (add, ahead): (bool, Ahead),
) {
    assert_eq!(
        lanes.len(),
        f.pairs * 9 * f.co,
        "bf16 row tiles: weight length"
    );
    macro_rules! rows {
        ($p:literal, $ov:literal) => {
            // SAFETY: this function's contract; `plan` chose P = W and 16·OV dividing Co.
            unsafe {
                match add {
                    false => avx512::rows_image::<$p, $ov, false>(f, lanes, src, y, ahead),
                    true => avx512::rows_image::<$p, $ov, true>(f, lanes, src, y, ahead),
                }
            }
        };
    }
    with_row_tile!(tile, rows)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::super::avx512::dot2;
    use super::PairForward;
    use crate::conv2d::direct::grid::Ahead;
    use crate::conv2d::direct::lanes::{store_rows, RowTile};

    /// One image through the row tiles: every block of `16·OV` output channels, every row of
    /// `P` = W outputs; a share of `ahead` prefetched per tile. `f.cpu` is the proof of the
    /// instructions.
    ///
    /// # Safety
    /// As [`super::forward_rows`], with Co a multiple of `16·OV` and W = `P` ≤ 16.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn rows_image<const P: usize, const OV: usize, const ADD: bool>(
        f: &PairForward<'_>,
        lanes: &[u32],
        src: &[f32],
        y: &mut [MaybeUninit<f32>],
        ahead: Ahead,
    ) {
        let (n, tiles) = RowTile { p: P, ov: OV }.tiles(f.grid.h, f.co);
        for (k, at) in tiles.enumerate() {
            ahead.share(k, n);
            // SAFETY: this function's contract; the tile's channels and row are inside the
            // output.
            unsafe { row_tile::<P, OV, ADD>(f, lanes, src, at, y) };
        }
    }

    /// Output channels `o..o + 16·OV` × the `P` outputs of row `r`.
    ///
    /// # Safety
    /// As [`rows_image`], with the tile's channels and row inside the output.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[inline]
    unsafe fn row_tile<const P: usize, const OV: usize, const ADD: bool>(
        f: &PairForward<'_>,
        lanes: &[u32],
        src: &[f32],
        [o, r]: [usize; 2],
        y: &mut [MaybeUninit<f32>],
    ) {
        let g = f.grid;
        let mut acc = [[_mm512_setzero_ps(); OV]; P];
        let base = src.as_ptr().cast::<i32>().wrapping_add(r * g.wp);
        let wl = lanes.as_ptr().wrapping_add(o);
        for p in 0..f.pairs {
            let chan = base.wrapping_add(p * g.plane);
            for (t, &off) in f.offs.iter().enumerate() {
                let at = chan.wrapping_add(off);
                let wrow = wl.wrapping_add((p * 9 + t) * f.co);
                let wv: [__m512i; OV] = std::array::from_fn(|j| {
                    // SAFETY: channels o + 16j..o + 16j + 16 ≤ Co of row (p, t) of `lanes`.
                    unsafe { _mm512_loadu_epi32(wrow.wrapping_add(16 * j).cast()) }
                });
                for (q, accq) in acc.iter_mut().enumerate() {
                    // SAFETY: output (r, q) is real, so its tap reads inside `src`.
                    let x = _mm512_set1_epi32(unsafe { *at.add(q) });
                    for j in 0..OV {
                        accq[j] = dot2(accq[j], wv[j], x);
                    }
                }
            }
        }
        // SAFETY: this function's contract.
        unsafe { store_rows::<P, OV, ADD>(g, &acc, [o, r], y) };
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::pack_pair_lanes;

    /// Entry `(p·9 + t)·co + o` holds `w[o, 2p, t]` and `w[o, 2p + 1, t]` rounded to bf16, the
    /// first in the low half, zero for a channel past Ci (odd Ci), NaN and ties included.
    #[test]
    fn packed_pairs_hold_each_weight_rounded_once() {
        let (ci, co) = (5, 3);
        let w: Vec<f32> = (0..co * ci * 9)
            .map(|i| match i % 7 {
                0 => f32::NAN,
                1 => 1.0 + f32::EPSILON * 64.0,
                2 => -3.5e-39,
                _ => (i as f32 * 0.37).sin(),
            })
            .collect();
        let packed = pack_pair_lanes(&w, ci, co);
        assert_eq!(packed.len(), ci.div_ceil(2) * 9 * co);
        let bits = |v: f32| u32::from(bf16::from_f32(v).to_bits());
        for p in 0..ci.div_ceil(2) {
            for t in 0..9 {
                for o in 0..co {
                    let at = |c: usize| {
                        if c < ci {
                            bits(w[(o * ci + c) * 9 + t])
                        } else {
                            0
                        }
                    };
                    let want = at(2 * p) | at(2 * p + 1) << 16;
                    assert_eq!(
                        packed[(p * 9 + t) * co + o],
                        want,
                        "pair {p}, tap {t}, o {o}"
                    );
                }
            }
        }
    }
}
