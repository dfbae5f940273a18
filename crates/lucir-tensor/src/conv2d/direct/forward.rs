//! The forward kernel of the direct convolutions (see the parent module): tiles of [`NB`]
//! output channels × [`V`] vectors of 16 output positions, or, on small images, the row tiles
//! of [`super::lanes`]. The input gradient runs it too, on the flipped kernel.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::grid::{with_tap_count, Ahead, Grid, Taps};
use super::lanes;

/// Output channels per register tile.
pub(super) const NB: usize = 8;

/// Vectors of 16 positions per forward tile.
pub(super) const V: usize = 3;

/// A kernel's weights for the forward tiles: for each block of `B` output channels ([`NB`]
/// here, 2 in `avx2`), entry `(c·T + tap)·B + b` holds `w[o + b, c, tap]` (`T` taps), so a
/// tap's B weights sit together. Channels past the last full block keep their own layout
/// (`w[o]` is already (c, tap) ordered).
pub(super) fn pack<const B: usize>(w: &[f32], ci: usize, co: usize, taps: usize) -> Vec<f32> {
    let full = co / B * B;
    let per = ci * taps;
    let mut packed = Vec::with_capacity(full * per);
    for o in (0..full).step_by(B) {
        for t in 0..per {
            packed.extend((0..B).map(|b| w[(o + b) * per + t]));
        }
    }
    packed
}

/// The forward kernel's view of one convolution: `ci` input channels' planes → `co` NCHW
/// output planes of the grid's H×W outputs, `w` Co × Ci × taps. Built on a [`Grid`], so on a
/// CPU with AVX-512 only.
pub(super) struct Forward<'a> {
    pub(super) grid: &'a Grid,
    pub(super) taps: Taps,
    pub(super) packed: Vec<f32>,
    pub(super) w: Cow<'a, [f32]>,
    pub(super) ci: usize,
    pub(super) co: usize,
    /// The row tiles and their weights when [`lanes::RowTile::plan`] takes this shape.
    pub(super) rows: Option<(lanes::RowTile, Vec<f32>)>,
}

impl<'a> Forward<'a> {
    pub(super) fn new(grid: &'a Grid, taps: Taps, w: Cow<'a, [f32]>, ci: usize, co: usize) -> Self {
        assert_eq!(
            w.len(),
            co * ci * taps.offs.len(),
            "direct kernel: weight length"
        );
        let rows = lanes::RowTile::plan(grid, co, taps.offs.len())
            .map(|t| (t, lanes::pack_lanes(&w, co, ci * taps.offs.len())));
        let packed = match rows {
            Some(_) => Vec::new(),
            None => pack::<NB>(&w, ci, co, taps.offs.len()),
        };
        Self {
            grid,
            taps,
            packed,
            w,
            ci,
            co,
            rows,
        }
    }

    /// One image: `src` its input planes, `y` its `co·H·W` outputs, every one written (with
    /// `add`, added to the value `y` holds, which must be initialised); `ahead` prefetched
    /// meanwhile. Every output is written because the grid's stores tile the H×W plane (see
    /// [`Grid::stores`]), or, with row tiles, because they cover every row and channel.
    pub(super) fn image(&self, src: &[f32], y: &mut [MaybeUninit<f32>], add: bool, ahead: Ahead) {
        let g = self.grid;
        // The furthest float a tile reads: its last position plus the largest offset.
        let reach = 16 * g.nvec + self.taps.offs.iter().max().unwrap_or(&0);
        assert!(
            (self.ci == 0 || src.len() >= (self.ci - 1) * self.taps.stride + reach)
                && y.len() >= self.co * g.h * g.w
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the grid's `Avx512` token proves the CPU has AVX-512F; the lengths were just
        // checked.
        unsafe {
            let offs = &self.taps.offs;
            if let Some((tile, lanes)) = &self.rows {
                return lanes::forward_rows(self, *tile, lanes, src, y, (add, ahead));
            }
            macro_rules! run {
                ($t:literal) => {
                    match add {
                        false => avx512::forward_image::<$t, false>(
                            self,
                            offs[..].try_into().unwrap(),
                            src,
                            y,
                            ahead,
                        ),
                        true => avx512::forward_image::<$t, true>(
                            self,
                            offs[..].try_into().unwrap(),
                            src,
                            y,
                            ahead,
                        ),
                    }
                };
            }
            with_tap_count!(offs.len(), run)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (src, y);
            unreachable!("no `Avx512` token exists off x86-64");
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(in crate::conv2d::direct) use avx512::store_tile;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Ahead, Forward, Grid, NB, V};

    /// One image through the forward kernel: blocks of [`NB`] output channels (then the rest
    /// one at a time), each over the position vectors in tiles of [`V`] (then the rest). `T`
    /// taps at `offs`; a share of `ahead` prefetched before each full tile.
    ///
    /// No CPU check is needed: `f.grid` holds the [`crate::Avx512`] token.
    ///
    /// # Safety
    /// `src` holds `f.ci` channels' planes, so that every tap of every position vector reads
    /// inside it (as `Forward::image` checks), and `y` at least `f.co·H·W` floats, initialised
    /// if `ADD`. Every one of those `y` elements is written (with `ADD`, the value it held plus
    /// the convolution's), since the grid's stores tile the plane.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward_image<const T: usize, const ADD: bool>(
        f: &Forward<'_>,
        offs: &[usize; T],
        src: &[f32],
        y: &mut [MaybeUninit<f32>],
        ahead: Ahead,
    ) {
        let full = f.co / NB * NB;
        let nvec = f.grid.nvec;
        let tiled = nvec / V * V;
        let per = f.ci * T;
        let tiles = full / NB * (tiled / V);
        for o in (0..full).step_by(NB) {
            let wts = &f.packed[o * per..(o + NB) * per];
            for v in (0..tiled).step_by(V) {
                ahead.share(o / NB * (tiled / V) + v / V, tiles);
                // SAFETY: this function's contract; o + NB ≤ Co, v + V ≤ nvec.
                unsafe { tile::<NB, V, T, ADD>(f, offs, src, wts, (o, v), y) };
            }
            match nvec - tiled {
                // SAFETY: as above, v + 2 ≤ nvec.
                2 => unsafe { tile::<NB, 2, T, ADD>(f, offs, src, wts, (o, tiled), y) },
                // SAFETY: as above, v < nvec.
                1 => unsafe { tile::<NB, 1, T, ADD>(f, offs, src, wts, (o, tiled), y) },
                0 => {}
                r => unreachable!("{r} vectors left after tiles of {V}"),
            }
        }
        for o in full..f.co {
            let wts = &f.w[o * per..(o + 1) * per];
            for v in (0..tiled).step_by(V) {
                // SAFETY: as above, o < Co.
                unsafe { tile::<1, V, T, ADD>(f, offs, src, wts, (o, v), y) };
            }
            for v in tiled..nvec {
                // SAFETY: as above.
                unsafe { tile::<1, 1, T, ADD>(f, offs, src, wts, (o, v), y) };
            }
        }
    }

    /// Output channels `o..o + B` at position vectors `v..v + K`: `B × K` accumulators summed
    /// over (input channel, tap), then the real lanes packed and stored.
    ///
    /// # Safety
    /// As [`forward_image`], with `wts` the `ci·T·B` weights of the block (tap-major, `B` per
    /// tap), `o + B ≤ Co` and `v + K ≤ nvec`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const B: usize, const K: usize, const T: usize, const ADD: bool>(
        f: &Forward<'_>,
        offs: &[usize; T],
        src: &[f32],
        wts: &[f32],
        (o, v): (usize, usize),
        y: &mut [MaybeUninit<f32>],
    ) {
        let g = f.grid;
        let mut acc = [[_mm512_setzero_ps(); K]; B];
        let base = src.as_ptr().wrapping_add(16 * v);
        let wp = wts.as_ptr();
        for c in 0..f.ci {
            let chan = base.wrapping_add(c * f.taps.stride);
            for (t, &off) in offs.iter().enumerate() {
                let at = chan.wrapping_add(off);
                let input: [__m512; K] = std::array::from_fn(|j| {
                    // SAFETY: position vector v + j < nvec reads inside `src` (the contract).
                    unsafe { _mm512_loadu_ps(at.wrapping_add(16 * j)) }
                });
                let k = (c * T + t) * B;
                for (b, accb) in acc.iter_mut().enumerate() {
                    // SAFETY: k + b < ci·T·B = wts.len().
                    let wb = _mm512_set1_ps(unsafe { *wp.add(k + b) });
                    for j in 0..K {
                        accb[j] = _mm512_fmadd_ps(wb, input[j], accb[j]);
                    }
                }
            }
        }
        // SAFETY: this function's contract.
        unsafe { store_tile::<B, K, ADD>(g, &acc, (o, v), y) };
    }

    /// Stores a tile's sums, output channels `o..o + B` at position vectors `v..v + K`: the
    /// real lanes of each vector packed and written to their NCHW places in `y` (with `ADD`,
    /// added to the values there).
    ///
    /// # Safety
    /// `y` holds at least `(o + B)·H·W` floats, initialised if `ADD`, and `v + K ≤ nvec`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::conv2d::direct) unsafe fn store_tile<
        const B: usize,
        const K: usize,
        const ADD: bool,
    >(
        g: &Grid,
        acc: &[[__m512; K]; B],
        (o, v): (usize, usize),
        y: &mut [MaybeUninit<f32>],
    ) {
        let hw = g.h * g.w;
        for (b, accb) in acc.iter().enumerate() {
            let out = y.as_mut_ptr().cast::<f32>().wrapping_add((o + b) * hw);
            for (j, a) in accb.iter().enumerate() {
                let (keep, low, at) = g.stores[v + j];
                let mut sum = _mm512_maskz_compress_ps(keep, *a);
                // SAFETY: the `low` lanes are the `keep` lanes' count, the real outputs of this
                // vector, whose NCHW positions start at `at` within plane o + b of `y` (which
                // holds initialised values when adding: the contract).
                unsafe {
                    if ADD {
                        sum = _mm512_add_ps(_mm512_maskz_loadu_ps(low, out.wrapping_add(at)), sum);
                    }
                    _mm512_mask_storeu_ps(out.wrapping_add(at), low, sum)
                };
            }
        }
    }
}
