//! The 3×3 stride-1 "same" kernels of the parent module with bf16 products
//! ([`crate::Precision::Bf16`]): each product's two operands rounded to bf16 (round to nearest
//! even), the products summed in f32 by `vdpbf16ps`, which adds two products per f32 lane and
//! instruction — twice the f32 FMA's products per instruction, and half the bytes per operand.
//!
//! - **Forward and input gradient** ([`forward`], [`backward`]): the parent's tiles of 8 output
//!   channels × 3 vectors of 16 positions, on *pair planes*: the bordered planes of the parent
//!   module with each 32-bit element holding the bf16 values of two channels at that position
//!   (channel 2p in the low half, 2p + 1 in the high half; a missing last channel is zero). A
//!   tap's load brings 16 positions × 2 channels, the broadcast weight the two channels'
//!   weights, and one `vdpbf16ps` adds both products to each accumulator. Each output sums its
//!   terms by (channel pair, ky, kx), the pair's two products one after the other.
//! - **Weight gradient** (`weight_grad`): pairs of neighbouring positions instead of channels,
//!   see there.
//!
//! The reference is the f32 one on bf16-rounded operands: [`super::super::conv2d_ref`] of the
//! rounded tensors equals these kernels up to the f32 sums' rounding and the subnormal
//! operands the instructions flush to zero (`tests/conv2d_bf16.rs`).
//! Every entry point takes an [`Avx512Bf16`] token: no kernel runs on a CPU without the
//! instructions.

use std::mem::MaybeUninit;

use half::bf16;

use super::super::InputGrad;
use super::{checked_bwd, forward_images, Ahead, AlignedPlanes, Grid, Map, NB, V};
use crate::Avx512Bf16;

mod rows;
mod weight_grad;

use super::lanes::RowTile;
use weight_grad::PairWeightGrad;

/// A kernel's weights (Co × Ci × 9) rounded to bf16 (nearest, ties to even) in one pass
/// over them, then taken two input channels at a time: the layout of the packed weights.
struct Bf16Kernel {
    bits: Vec<u32>,
    ci: usize,
}

impl Bf16Kernel {
    fn new(w: &[f32], ci: usize) -> Self {
        let bits = w.iter().map(|&v| u32::from(bf16::from_f32(v).to_bits()));
        Self {
            bits: bits.collect(),
            ci,
        }
    }

    /// `(w[o, 2p, t], w[o, 2p + 1, t])` in one 32-bit word, channel 2p in the low half (a
    /// missing channel 2p + 1 is zero), as the pair planes hold two channels' values.
    fn pair(&self, o: usize, p: usize, t: usize) -> u32 {
        let at = |c: usize| match c < self.ci {
            true => self.bits[(o * self.ci + c) * 9 + t],
            false => 0,
        };
        at(2 * p) | at(2 * p + 1) << 16
    }
}

/// A kernel's weights (`w` Co × Ci × 9) for the forward tiles: output channels in blocks of
/// [`NB`], then the rest one at a time; within a block, entry `(p·9 + tap)·NB + b` holds the
/// pair `(w[o + b, 2p, tap], w[o + b, 2p + 1, tap])` (a missing channel 2p + 1 is zero), and a
/// single channel's entry `p·9 + tap`. Output channel `o`'s block starts at `o·pairs·9`.
fn pack(w: &[f32], ci: usize, co: usize) -> Vec<u32> {
    let pairs = ci.div_ceil(2);
    let k = Bf16Kernel::new(w, ci);
    let full = co / NB * NB;
    let mut packed = Vec::with_capacity(co * pairs * 9);
    for o in (0..full).step_by(NB) {
        for p in 0..pairs {
            for t in 0..9 {
                packed.extend((0..NB).map(|b| k.pair(o + b, p, t)));
            }
        }
    }
    for o in full..co {
        for p in 0..pairs {
            packed.extend((0..9).map(|t| k.pair(o, p, t)));
        }
    }
    packed
}

/// The forward kernel's view of one convolution on pair planes: `ci` input channels (in
/// `ci.div_ceil(2)` pair planes) → `co` NCHW output planes of the grid's H×W outputs.
struct PairForward<'a> {
    cpu: Avx512Bf16,
    grid: &'a Grid,
    offs: [usize; 9],
    packed: Vec<u32>,
    pairs: usize,
    co: usize,
    /// The row tiles and their weights when [`RowTile::plan`] takes this shape.
    rows: Option<(RowTile, Vec<u32>)>,
}

impl<'a> PairForward<'a> {
    /// `w` Co × Ci × 3 × 3.
    fn new(cpu: Avx512Bf16, grid: &'a Grid, w: &[f32], ci: usize, co: usize) -> Self {
        assert_eq!(w.len(), co * ci * 9, "bf16 kernel: weight length");
        let offs = grid
            .taps3x3()
            .offs
            .try_into()
            .expect("a 3×3 kernel has nine taps");
        let rows = RowTile::plan(grid, co, 9).map(|t| (t, rows::pack_pair_lanes(w, ci, co)));
        Self {
            cpu,
            grid,
            offs,
            packed: if rows.is_some() {
                Vec::new()
            } else {
                pack(w, ci, co)
            },
            pairs: ci.div_ceil(2),
            co,
            rows,
        }
    }

    /// One image, as the parent's `Forward::image`: `src` its pair planes, `y` its `co·H·W`
    /// outputs, every one written (with `add`, added to the initialised value there); on
    /// small images by the row tiles (`rows`).
    fn image(&self, src: &AlignedPlanes, y: &mut [MaybeUninit<f32>], add: bool, ahead: Ahead) {
        let g = self.grid;
        let src = src.get();
        let reach = 16 * g.nvec + self.offs[8];
        assert!(
            (self.pairs == 0 || src.len() >= (self.pairs - 1) * g.plane + reach)
                && y.len() >= self.co * g.h * g.w
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the `Avx512Bf16` token proves the CPU has the instructions; the lengths were
        // just checked.
        unsafe {
            if let Some((tile, lanes)) = &self.rows {
                return rows::forward_rows(self, *tile, lanes, src, y, (add, ahead));
            }
            match add {
                false => avx512::forward_image::<false>(self.cpu, self, src, y, ahead),
                true => avx512::forward_image::<true>(self.cpu, self, src, y, ahead),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (src, y, ahead);
            unreachable!("no `Avx512Bf16` token exists off x86-64");
        }
    }
}

/// Copies H×W planes from `src` into the pair planes of `dst` (`src.len()/(H·W)` channels,
/// through `map` if one is given): pair plane p holds channels 2p and 2p + 1, rounded to bf16.
/// The borders keep their zeros.
fn fill_pairs(cpu: Avx512Bf16, g: &Grid, src: &[f32], dst: &mut AlignedPlanes, map: Option<Map>) {
    let chans = src.len() / (g.h * g.w).max(1);
    let dst = dst.get_mut();
    assert!(src.len() == chans * g.h * g.w && dst.len() >= chans.div_ceil(2) * g.plane);
    assert!(map.is_none_or(|m| m.scale.len() >= chans && m.shift.len() >= chans));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the token proves the CPU has the instructions; the lengths were just checked.
    unsafe {
        avx512::fill_pairs(cpu, g, src, dst, chans, map)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cpu, dst);
        unreachable!("no `Avx512Bf16` token exists off x86-64");
    }
}

/// `y = w ⋆ x` with bf16 products: `x` N×Ci×H×W, `w` Co×Ci×3×3, `y` N×Co×H×W, rayon over the
/// images; the parent's `conv3x3` otherwise.
///
/// # Panics
/// If the slices do not have those lengths; callers check first.
pub(in crate::conv2d) fn forward(
    cpu: Avx512Bf16,
    x: &[f32],
    w: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map>,
) -> Vec<f32> {
    assert_eq!(x.len(), n * ci * h * wd, "bf16 kernel: input length");
    let grid = Grid::same(cpu.avx512(), h, wd);
    let fwd = PairForward::new(cpu, &grid, w, ci, co);
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    let image = |buf: &mut AlignedPlanes, i, xi: &[f32], yi: &mut [MaybeUninit<f32>]| {
        fill_pairs(cpu, &grid, xi, buf, map);
        let ahead = Ahead::next(i, [(x, in_len), (&[], 0)]);
        fwd.image(buf, yi, false, ahead);
    };
    let scratch = || grid.buffer(ci.div_ceil(2));
    // SAFETY: `PairForward::image` writes every element of each image's output.
    unsafe { forward_images(x, [n, in_len, out_len], scratch, image) }
}

/// The backward pass of [`forward`]: from `dy` (N×Co×H×W) the weight gradient (Co×Ci×3×3) and
/// the input gradient (N×Ci×H×W) as `dx` asks, both with bf16 products. Rayon over chunks of
/// images, one per thread; the weight gradient's chunks are added in order.
///
/// # Panics
/// As [`forward`], and if `dy` does not hold N×Co×H×W floats.
pub(in crate::conv2d) fn backward(
    cpu: Avx512Bf16,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    let want_dx = dx.wanted();
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    if let Some(empty) = checked_bwd("bf16", [x, w, dy], [n, ci, co, h, wd], &dx) {
        return empty;
    }
    let grid = Grid::same(cpu.avx512(), h, wd);
    let flipped = super::super::gemm_path::flip_kernel(w, [ci, co, 9]);
    let bwd = PairForward::new(cpu, &grid, &flipped, co, ci);
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut wg = want_dw.then(|| PairWeightGrad::new(cpu, &grid, ci, co));
        let mut db = grid.buffer(if want_dx { co.div_ceil(2) } else { 0 });
        for (i, (xi, dyi)) in xc.chunks(in_len).zip(dyc.chunks(out_len)).enumerate() {
            if want_dx {
                fill_pairs(cpu, &grid, dyi, &mut db, None);
                let ahead = Ahead::next(i, [(xc, in_len), (dyc, out_len)]);
                bwd.image(&db, &mut dxc[i * in_len..][..in_len], add, ahead);
            }
            if let Some(wg) = &mut wg {
                wg.add_image(xi, dyi, map);
            }
        }
        wg.map_or_else(|| vec![0.0; co * ci * 9], PairWeightGrad::into_dw)
    };
    // SAFETY: with a new input gradient `PairForward::image` writes every element of each
    // image of a chunk; when adding, it stores only the sums of the floats it loads from the
    // buffer and the kernel's accumulators.
    unsafe { dx.run_chunked(n, [in_len, out_len], [x, dy], chunk) }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::super::forward::store_tile;
    use super::super::grid::channel_map;
    use super::{Ahead, Grid, Map, PairForward, NB, V};
    use crate::Avx512Bf16;

    /// 16 floats rounded to bf16 (nearest, ties to even), each in the low half of a 32-bit
    /// lane, the high half zero.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[inline]
    pub(super) fn bf16_lanes(v: __m512) -> __m512i {
        // SAFETY: `__m256bh` and `__m256i` are both 256 bits of plain data.
        let h = unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)) };
        _mm512_cvtepu16_epi32(h)
    }

    /// 16 pairs `(lo[l], hi[l])` rounded to bf16, `lo` in the low half of each lane.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[inline]
    pub(super) fn bf16_pairs(lo: __m512, hi: __m512) -> __m512i {
        _mm512_or_si512(bf16_lanes(lo), _mm512_slli_epi32::<16>(bf16_lanes(hi)))
    }

    /// `acc + a.lo·b.lo + a.hi·b.hi` in each lane, `a` and `b` holding bf16 pairs.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[inline]
    pub(super) fn dot2(acc: __m512, a: __m512i, b: __m512i) -> __m512 {
        // SAFETY: `__m512i` and `__m512bh` are both 512 bits of plain data.
        let as_bh = |v| unsafe { std::mem::transmute::<__m512i, __m512bh>(v) };
        let (a, b) = (as_bh(a), as_bh(b));
        _mm512_dpbf16_ps(acc, a, b)
    }

    /// See [`super::fill_pairs`]; the token is the proof of the instructions.
    ///
    /// # Safety
    /// `src` holds `chans` H×W planes and `dst` `chans.div_ceil(2)` pair planes, and `map`, if
    /// given, `chans` channels.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn fill_pairs(
        _: Avx512Bf16,
        g: &Grid,
        src: &[f32],
        dst: &mut [f32],
        chans: usize,
        map: Option<Map<'_>>,
    ) {
        let (hw, w) = (g.h * g.w, g.w);
        for p in 0..chans.div_ceil(2) {
            let (c0, c1) = (2 * p, (2 * p + 1 < chans).then_some(2 * p + 1));
            let maps = map.map(|m| (channel_map(m, c0), c1.map(|c| channel_map(m, c))));
            for r in 0..g.h {
                let lo = src.as_ptr().wrapping_add(c0 * hw + r * w);
                let hi = c1.map(|c| src.as_ptr().wrapping_add(c * hw + r * w));
                let to = dst
                    .as_mut_ptr()
                    .cast::<i32>()
                    .wrapping_add(p * g.plane + g.lead + (r + 1) * g.wp + 1);
                for k in (0..w).step_by(16) {
                    let m = ((1u32 << (w - k).min(16)) - 1) as __mmask16;
                    // SAFETY: the mask keeps the lanes inside row r of channels c0 (and c1)
                    // in `src` and inside the interior of pair plane p in `dst`.
                    unsafe {
                        let mut a = _mm512_maskz_loadu_ps(m, lo.wrapping_add(k));
                        let mut b = match hi {
                            Some(hi) => _mm512_maskz_loadu_ps(m, hi.wrapping_add(k)),
                            None => _mm512_setzero_ps(),
                        };
                        if let Some((f0, f1)) = &maps {
                            a = f0(a);
                            if let Some(f1) = f1 {
                                b = f1(b);
                            }
                        }
                        _mm512_mask_storeu_epi32(to.wrapping_add(k), m, bf16_pairs(a, b));
                    }
                }
            }
        }
    }

    /// One image through the pair kernel: blocks of [`NB`] output channels (then the rest one
    /// at a time), each over the position vectors in tiles of [`V`] (then the rest in tiles
    /// of 2 and 1; four left, as on 7×7 images, in two of 2). The token is the proof of the
    /// instructions.
    ///
    /// # Safety
    /// `src` holds `f.pairs` pair planes, so that every tap of every position vector reads
    /// inside it (as `PairForward::image` checks), and `y` at least `f.co·H·W` floats,
    /// initialised if `ADD`. Every one of those `y` elements is written.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) unsafe fn forward_image<const ADD: bool>(
        _: Avx512Bf16,
        f: &PairForward<'_>,
        src: &[f32],
        y: &mut [MaybeUninit<f32>],
        ahead: Ahead,
    ) {
        let full = f.co / NB * NB;
        let nvec = f.grid.nvec;
        // The vectors after the tiles of `V`: four go as two tiles of 2 (a tile of 1 keeps 8
        // accumulators for 9 loads a tap).
        let rest = match nvec % V {
            1 if nvec > V => V + 1,
            r => r,
        };
        let tiled = nvec - rest;
        let per = f.pairs * 9;
        let tiles = full / NB * (tiled / V);
        for o in (0..full).step_by(NB) {
            let wts = &f.packed[o * per..(o + NB) * per];
            for v in (0..tiled).step_by(V) {
                ahead.share(o / NB * (tiled / V) + v / V, tiles);
                // SAFETY: this function's contract; o + NB ≤ Co, v + V ≤ nvec.
                unsafe { tile::<NB, V, ADD>(f, src, wts, (o, v), y) };
            }
            match rest {
                // SAFETY: as above, v + 4 ≤ nvec.
                4 => unsafe {
                    tile::<NB, 2, ADD>(f, src, wts, (o, tiled), y);
                    tile::<NB, 2, ADD>(f, src, wts, (o, tiled + 2), y);
                },
                // SAFETY: as above, v + 2 ≤ nvec.
                2 => unsafe { tile::<NB, 2, ADD>(f, src, wts, (o, tiled), y) },
                // SAFETY: as above, v < nvec.
                1 => unsafe { tile::<NB, 1, ADD>(f, src, wts, (o, tiled), y) },
                0 => {}
                r => unreachable!("{r} vectors left after tiles of {V}"),
            }
        }
        for o in full..f.co {
            let wts = &f.packed[o * per..(o + 1) * per];
            for v in (0..tiled).step_by(V) {
                // SAFETY: as above, o < Co.
                unsafe { tile::<1, V, ADD>(f, src, wts, (o, v), y) };
            }
            for v in tiled..nvec {
                // SAFETY: as above.
                unsafe { tile::<1, 1, ADD>(f, src, wts, (o, v), y) };
            }
        }
    }

    /// Output channels `o..o + B` at position vectors `v..v + K`: `B × K` accumulators summed
    /// over (channel pair, tap), then stored as the f32 kernel's.
    ///
    /// # Safety
    /// As [`forward_image`], with `wts` the `pairs·9·B` packed weights of the block,
    /// `o + B ≤ Co` and `v + K ≤ nvec`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[inline]
    unsafe fn tile<const B: usize, const K: usize, const ADD: bool>(
        f: &PairForward<'_>,
        src: &[f32],
        wts: &[u32],
        (o, v): (usize, usize),
        y: &mut [MaybeUninit<f32>],
    ) {
        let mut acc = [[_mm512_setzero_ps(); K]; B];
        let base = src.as_ptr().cast::<i32>().wrapping_add(16 * v);
        let wp = wts.as_ptr();
        for p in 0..f.pairs {
            let chan = base.wrapping_add(p * f.grid.plane);
            for (t, &off) in f.offs.iter().enumerate() {
                let at = chan.wrapping_add(off);
                let input: [__m512i; K] = std::array::from_fn(|j| {
                    // SAFETY: position vector v + j < nvec reads inside `src` (the contract).
                    unsafe { _mm512_loadu_epi32(at.wrapping_add(16 * j)) }
                });
                let k = (p * 9 + t) * B;
                for (b, accb) in acc.iter_mut().enumerate() {
                    // SAFETY: k + b < pairs·9·B = wts.len().
                    let wb = _mm512_set1_epi32(unsafe { *wp.add(k + b) } as i32);
                    for j in 0..K {
                        accb[j] = dot2(accb[j], wb, input[j]);
                    }
                }
            }
        }
        // SAFETY: this function's contract.
        unsafe { store_tile::<B, K, ADD>(f.grid, &acc, (o, v), y) };
    }
}
