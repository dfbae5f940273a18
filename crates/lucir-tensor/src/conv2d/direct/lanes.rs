//! The forward kernel with the output channels in the vector lanes, for small images.
//!
//! The parent module's tiles put 16 output *positions* in a vector, so on an H×W image with
//! rows of W + 2 a vector also computes the border columns, and the last vector of the plane
//! runs past it: a 7×7 image is 49 outputs in 64 lanes, an 8×8 one 64 in 80. Here a tile is
//! the `P` = W outputs of one row (7, 8 or 14) × `16·OV` output channels: per input channel and
//! tap, `OV` vector loads of weights (the channels of one tap side by side) meet `P` input
//! values broadcast from the same bordered (or phase) planes, and every lane is a real output.
//! The bf16 kernels' row tiles (`bf16::rows`) share the plan, the tile order and the stores.
//!
//! Each output is the same running sum as in the parent module's tiles — one fused
//! multiply-add per (input channel, tap) in that order, from zero — so the bits are the same
//! whichever kernel computes it. The sums of a tile are transposed in registers (16 channels ×
//! `P` positions) and stored as rows of the NCHW output.

use std::mem::MaybeUninit;

use super::forward::Forward;
use super::grid::{Ahead, Grid};

/// A row tile's shape: the `p` outputs of a row (W) × `ov` vectors of 16 output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RowTile {
    pub(super) p: usize,
    pub(super) ov: usize,
}

impl RowTile {
    /// The row tile for `co` output channels on `g`'s outputs from `taps` taps, if these
    /// kernels take them: Co a multiple of 16, nine taps (a 3×3 kernel: with fewer, the
    /// transposes of the stores cost as much as the products), and rows of 7, 8 or 14 outputs
    /// (where the position vectors waste the most lanes). Chosen by measurement: docs/perf.md
    /// §46. None while `force_position_tiles` is on.
    pub(super) fn plan(g: &Grid, co: usize, taps: usize) -> Option<Self> {
        let forced = crate::conv2d::dispatch::position_tiles_forced();
        if forced || co == 0 || !co.is_multiple_of(16) || g.h == 0 || taps != 9 {
            return None;
        }
        let p = match g.w {
            7 | 8 | 14 => g.w,
            _ => return None,
        };
        let ov = if (co / 16).is_multiple_of(2) { 2 } else { 1 };
        Some(Self { p, ov })
    }

    /// An image's tiles in the order the kernels take them, each as (its first output channel,
    /// its row), for H rows and Co output channels (a multiple of 16·`ov`), and their number.
    pub(super) fn tiles(self, h: usize, co: usize) -> (usize, impl Iterator<Item = [usize; 2]>) {
        let step = 16 * self.ov;
        let tiles = (0..co / step).flat_map(move |b| (0..h).map(move |r| [b * step, r]));
        (co / step * h, tiles)
    }
}

/// `$rows!(P, OV)` with the sizes of `$tile` (a [`RowTile`] that [`RowTile::plan`] made) as
/// constants.
macro_rules! with_row_tile {
    ($tile:expr, $rows:ident) => {
        match ($tile.p, $tile.ov) {
            (7, 2) => $rows!(7, 2),
            (7, 1) => $rows!(7, 1),
            (8, 2) => $rows!(8, 2),
            (8, 1) => $rows!(8, 1),
            (14, 2) => $rows!(14, 2),
            (14, 1) => $rows!(14, 1),
            t => unreachable!("no row tile {t:?}"),
        }
    };
}
pub(super) use with_row_tile;

/// `w` (Co × `per`, `per` = Ci·taps) as `per` rows of Co: entry `t·co + o` is `w[o, t]`, so one
/// tap's output channels sit side by side.
pub(super) fn pack_lanes(w: &[f32], co: usize, per: usize) -> Vec<f32> {
    let mut packed = vec![0.0f32; co * per];
    for (o, wo) in w.chunks_exact(per.max(1)).enumerate().take(co) {
        for (t, &v) in wo.iter().enumerate() {
            packed[t * co + o] = v;
        }
    }
    packed
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx512::store_rows;

/// One image through the row tiles of `tile`, `lanes` the weights packed by [`pack_lanes`];
/// with `add`, added to `y`; `ahead` prefetched meanwhile. The taps are nine (see
/// [`RowTile::plan`]).
///
/// # Safety
/// As `Forward::image` checks before calling it: `src` holds `f.ci` channels' planes, so that
/// every tap of every real output reads inside it, and `y` at least `f.co·H·W` floats,
/// initialised if `add`; `tile` is [`RowTile::plan`]'s for `f` and `lanes` `f`'s weights
/// packed by [`pack_lanes`].
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn forward_rows(
    f: &Forward<'_>,
    tile: RowTile,
    lanes: &[f32],
    src: &[f32],
    y: &mut [MaybeUninit<f32>],
    (add, ahead): (bool, Ahead),
) {
    assert_eq!(lanes.len(), f.ci * 9 * f.co, "row tiles: weight length");
    let offs: &[usize; 9] = f.taps.offs[..]
        .try_into()
        .expect("row tiles take nine taps");
    macro_rules! rows {
        ($p:literal, $ov:literal) => {
            // SAFETY: this function's contract; `plan` chose P = W and 16·OV dividing Co.
            unsafe {
                match add {
                    false => avx512::rows_image::<$p, $ov, false>(f, offs, lanes, src, y, ahead),
                    true => avx512::rows_image::<$p, $ov, true>(f, offs, lanes, src, y, ahead),
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

    use super::super::forward::Forward;
    use super::super::grid::{Ahead, Grid};
    use super::super::weight_grad::transpose16;
    use super::RowTile;

    /// One image through the row tiles: every block of `16·OV` output channels, every row of
    /// `P` = W outputs. Nine taps at `offs`, `lanes` the weights packed by
    /// [`super::pack_lanes`]; a share of `ahead` prefetched per tile.
    ///
    /// No CPU check is needed: `f.grid` holds the [`crate::Avx512`] token.
    ///
    /// # Safety
    /// As the parent module's `forward_image`: `src` holds `f.ci` channels' planes, so that
    /// every tap of every real output reads inside it, and `y` at least `f.co·H·W` floats,
    /// initialised if `ADD`; also `lanes.len() == f.ci·9·f.co`, Co a multiple of `16·OV` and
    /// W = `P` ≤ 16. Every output is written (with `ADD`, added to).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_image<const P: usize, const OV: usize, const ADD: bool>(
        f: &Forward<'_>,
        offs: &[usize; 9],
        lanes: &[f32],
        src: &[f32],
        y: &mut [MaybeUninit<f32>],
        ahead: Ahead,
    ) {
        let (n, tiles) = RowTile { p: P, ov: OV }.tiles(f.grid.h, f.co);
        for (k, at) in tiles.enumerate() {
            ahead.share(k, n);
            // SAFETY: this function's contract; the tile's channels and row are inside the
            // output.
            unsafe { row_tile::<P, OV, ADD>(f, offs, lanes, src, at, y) };
        }
    }

    /// Output channels `o..o + 16·OV` × the `P` outputs of row `r`.
    ///
    /// # Safety
    /// As [`rows_image`], with the tile's channels and row inside the output.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_tile<const P: usize, const OV: usize, const ADD: bool>(
        f: &Forward<'_>,
        offs: &[usize; 9],
        lanes: &[f32],
        src: &[f32],
        [o, r]: [usize; 2],
        y: &mut [MaybeUninit<f32>],
    ) {
        let g = f.grid;
        let mut acc = [[_mm512_setzero_ps(); OV]; P];
        let base = src.as_ptr().wrapping_add(r * g.wp);
        let wl = lanes.as_ptr().wrapping_add(o);
        for c in 0..f.ci {
            let chan = base.wrapping_add(c * f.taps.stride);
            for (t, &off) in offs.iter().enumerate() {
                let at = chan.wrapping_add(off);
                let wrow = wl.wrapping_add((c * 9 + t) * f.co);
                let wv: [__m512; OV] = std::array::from_fn(|j| {
                    // SAFETY: channels o + 16j..o + 16j + 16 ≤ Co of row (c, t) of `lanes`.
                    unsafe { _mm512_loadu_ps(wrow.wrapping_add(16 * j)) }
                });
                for (p, accp) in acc.iter_mut().enumerate() {
                    // SAFETY: output (r, p) is real, so its tap reads inside `src`.
                    let x = _mm512_set1_ps(unsafe { *at.add(p) });
                    for j in 0..OV {
                        accp[j] = _mm512_fmadd_ps(wv[j], x, accp[j]);
                    }
                }
            }
        }
        // SAFETY: this function's contract.
        unsafe { store_rows::<P, OV, ADD>(g, &acc, [o, r], y) };
    }

    /// Stores a row tile's sums, `acc[p][j]` the 16 output channels `o + 16j..` at output `p`
    /// of row `r`: each vector of channels transposed in registers into 16 rows of `P` outputs
    /// and written (with `ADD`, added) to their NCHW places in `y`.
    ///
    /// # Safety
    /// `y` holds at least `(o + 16·OV)·H·W` floats, initialised if `ADD`; row `r` is inside
    /// the grid's H×W outputs, W = `P` ≤ 16.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::conv2d::direct) unsafe fn store_rows<
        const P: usize,
        const OV: usize,
        const ADD: bool,
    >(
        g: &Grid,
        acc: &[[__m512; OV]; P],
        [o, r]: [usize; 2],
        y: &mut [MaybeUninit<f32>],
    ) {
        let hw = g.h * g.w;
        let keep = ((1u32 << P) - 1) as __mmask16;
        for j in 0..OV {
            let mut rows: [__m512; 16] = std::array::from_fn(|p| {
                if p < P {
                    acc[p][j]
                } else {
                    _mm512_setzero_ps()
                }
            });
            transpose16(&mut rows);
            for (l, v) in rows.iter().enumerate() {
                let out = y
                    .as_mut_ptr()
                    .cast::<f32>()
                    .wrapping_add((o + 16 * j + l) * hw + r * g.w);
                // SAFETY: the P outputs of row r of channel o + 16j + l < Co, inside
                // `y` (initialised when adding: the contract).
                unsafe {
                    let mut sum = *v;
                    if ADD {
                        sum = _mm512_add_ps(_mm512_maskz_loadu_ps(keep, out), sum);
                    }
                    _mm512_mask_storeu_ps(out, keep, sum);
                }
            }
        }
    }
}
