//! The AVX2 + FMA kernels of the parent module: forward tiles, their packed stores and the
//! weight gradient's tiles.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{Forward, Planes, WeightGrad, L, NB, V};
use crate::Avx2Fma;

/// One image through the forward kernel: blocks of [`NB`] output channels (then the rest
/// one at a time), each over the position vectors in tiles of [`V`] (then the rest).
///
/// The token is the proof that the CPU has AVX2 and FMA.
///
/// # Safety
/// `src` holds `f.ci` channels' planes, so that every tap (`offs`, `f`'s taps) of every
/// position vector reads inside it (as `Forward::image` checks), and `y` at least `f.co·H·W`
/// floats, initialised if `ADD`. Every one of those `y` elements is written, since the stores
/// tile the plane.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn forward_image<const T: usize, const ADD: bool>(
    _: Avx2Fma,
    f: &Forward<'_>,
    offs: &[usize; T],
    src: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let full = f.co / NB * NB;
    let nvec = f.p.nvec;
    let tiled = nvec / V * V;
    let per = f.ci * T;
    for o in (0..full).step_by(NB) {
        let wts = &f.packed[o * per..(o + NB) * per];
        for v in (0..tiled).step_by(V) {
            // SAFETY: this function's contract; o + NB ≤ Co, v + V ≤ nvec.
            unsafe { tile::<NB, V, T, ADD>(f, offs, src, wts, (o, v), y) };
        }
        let rest = (o, tiled);
        // SAFETY: as above, tiled + the rest = nvec.
        unsafe {
            match nvec - tiled {
                5 => tile::<NB, 5, T, ADD>(f, offs, src, wts, rest, y),
                4 => tile::<NB, 4, T, ADD>(f, offs, src, wts, rest, y),
                3 => tile::<NB, 3, T, ADD>(f, offs, src, wts, rest, y),
                2 => tile::<NB, 2, T, ADD>(f, offs, src, wts, rest, y),
                1 => tile::<NB, 1, T, ADD>(f, offs, src, wts, rest, y),
                0 => {}
                r => unreachable!("{r} vectors left after tiles of {V}"),
            }
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
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const B: usize, const K: usize, const T: usize, const ADD: bool>(
    f: &Forward<'_>,
    offs: &[usize; T],
    src: &[f32],
    wts: &[f32],
    (o, v): (usize, usize),
    y: &mut [MaybeUninit<f32>],
) {
    let p = f.p;
    let mut acc = [[_mm256_setzero_ps(); K]; B];
    let base = src.as_ptr().wrapping_add(L * v);
    let wp = wts.as_ptr();
    for c in 0..f.ci {
        let chan = base.wrapping_add(c * f.taps.stride);
        for (t, &off) in offs.iter().enumerate() {
            let at = chan.wrapping_add(off);
            let k = (c * T + t) * B;
            let wb: [__m256; B] = std::array::from_fn(|b| {
                // SAFETY: k + b < ci·T·B = wts.len().
                _mm256_set1_ps(unsafe { *wp.add(k + b) })
            });
            for j in 0..K {
                // SAFETY: position vector v + j < nvec reads inside `src` (the contract).
                let input = unsafe { _mm256_loadu_ps(at.wrapping_add(L * j)) };
                for b in 0..B {
                    acc[b][j] = _mm256_fmadd_ps(wb[b], input, acc[b][j]);
                }
            }
        }
    }
    // SAFETY: this function's contract.
    unsafe { store_tile::<B, K, ADD>(p, &acc, (o, v), y) };
}

/// Stores a tile's sums, output channels `o..o + B` at position vectors `v..v + K`: the
/// real lanes of each vector permuted to the low lanes and written, under their mask, to
/// their NCHW places in `y` (with `ADD`, added to the values there).
///
/// # Safety
/// `y` holds at least `(o + B)·H·W` floats, initialised if `ADD`, and `v + K ≤ nvec`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_tile<const B: usize, const K: usize, const ADD: bool>(
    p: &Planes,
    acc: &[[__m256; K]; B],
    (o, v): (usize, usize),
    y: &mut [MaybeUninit<f32>],
) {
    let hw = p.h * p.w;
    for (b, accb) in acc.iter().enumerate() {
        let out = y.as_mut_ptr().cast::<f32>().wrapping_add((o + b) * hw);
        for (j, a) in accb.iter().enumerate() {
            let s = &p.stores[v + j];
            // SAFETY: `perm` and `low` are 8 i32 each.
            let (perm, low) = unsafe {
                (
                    _mm256_loadu_si256(s.perm.as_ptr().cast()),
                    _mm256_loadu_si256(s.low.as_ptr().cast()),
                )
            };
            let mut sum = _mm256_permutevar8x32_ps(*a, perm);
            let to = out.wrapping_add(s.at);
            // SAFETY: the `low` lanes are as many as the vector's real outputs, whose NCHW
            // positions start at `at` within plane o + b of `y` (which holds initialised
            // values when adding: the contract); masked-off lanes are not touched.
            unsafe {
                if ADD {
                    sum = _mm256_add_ps(_mm256_maskload_ps(to, low), sum);
                }
                _mm256_maskstore_ps(to, low, sum);
            }
        }
    }
}

/// One image into the running sums: for each vector of 8 output channels, tiles of input
/// channels × all `T` taps over every position of the image (one input channel with nine
/// taps, 9 accumulators; eight with one tap, 8).
///
/// The token is the proof that the CPU has AVX2 and FMA.
///
/// # Safety
/// `xb` holds `wg.ci` channels' planes, so that every tap of every real position reads
/// inside it (as `WeightGrad::add_image` checks); `wg.dyt` holds this image's transposed
/// `dy`; `T` is the number of `wg`'s taps.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weight_grad<const T: usize>(_: Avx2Fma, wg: &mut WeightGrad<'_>, xb: &[f32]) {
    let offs: &[usize; T] = wg.taps.offs[..].try_into().expect("T taps");
    let full = if T == 1 { wg.ci / 8 * 8 } else { 0 };
    for v in 0..wg.co8 / L {
        for c in (0..full).step_by(8) {
            // SAFETY: this function's contract; c + 8 ≤ Ci, 8·(v + 1) ≤ co8.
            unsafe { wg_tile::<8, T, false>(wg, offs, xb, (v, c)) };
        }
        for c in full..wg.ci {
            // SAFETY: as above, c < Ci.
            unsafe {
                match wg.slide {
                    true => wg_tile::<1, T, true>(wg, offs, xb, (v, c)),
                    false => wg_tile::<1, T, false>(wg, offs, xb, (v, c)),
                }
            }
        }
    }
}

/// Output channels `8v..8v + 8`, input channels `c..c + C`, all `T` taps: the running sums
/// loaded, every position of the image added in order, the sums stored back. With `SLIDE`
/// (a 3×3 kernel's taps on bordered planes), two neighbouring positions share their middle
/// columns of `x`: tap (ky, kx) of position p + 1 reads what tap (ky, kx + 1) of p reads, so
/// each kernel row takes four `x` values for two positions; each sum still adds position p
/// before p + 1.
///
/// # Safety
/// As [`weight_grad`], with `8·(v + 1) ≤ co8` and `c + C ≤ Ci`; `SLIDE` only with taps that
/// are that pattern.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn wg_tile<const C: usize, const T: usize, const SLIDE: bool>(
    wg: &mut WeightGrad<'_>,
    offs: &[usize; T],
    xb: &[f32],
    (v, c): (usize, usize),
) {
    let p = wg.p;
    let co8 = wg.co8;
    let acc_ptr = wg.acc.get_mut().as_mut_ptr();
    let at = |cc: usize, t: usize| ((c + cc) * T + t) * co8 + L * v;
    let mut acc: [[__m256; T]; C] = std::array::from_fn(|cc| {
        std::array::from_fn(|t| {
            // SAFETY: entry (c + cc, t) < (Ci, T) and channels 8v + 8 ≤ co8: inside `acc`
            // (Ci·T·co8 floats).
            unsafe { _mm256_loadu_ps(acc_ptr.wrapping_add(at(cc, t))) }
        })
    });
    let dyt = wg.dyt.get().as_ptr().wrapping_add(L * v);
    let load = |q: usize| {
        // SAFETY: called for positions q < H·W; channels 8v + 8 ≤ co8: inside `dyt`.
        unsafe { _mm256_loadu_ps(dyt.wrapping_add(q * co8)) }
    };
    let chan = |cc: usize| xb.as_ptr().wrapping_add((c + cc) * wg.taps.stride);
    for r in 0..p.h {
        let mut col = 0;
        while SLIDE && col + 1 < p.w {
            let q = r * p.w + col;
            let (d0, d1) = (load(q), load(q + 1));
            let x = chan(0).wrapping_add(offs[0] + r * p.wp + col);
            for ky in 0..3 {
                let row = x.wrapping_add(ky * p.wp);
                let xv: [__m256; 4] = std::array::from_fn(|k| {
                    // SAFETY: columns kx ≤ 2 of position q + 1's row ky taps, which read
                    // inside `xb` (the contract).
                    _mm256_set1_ps(unsafe { *row.wrapping_add(k) })
                });
                for (d, shift) in [(d0, 0), (d1, 1)] {
                    for kx in 0..3 {
                        let a = &mut acc[0][ky * 3 + kx];
                        *a = _mm256_fmadd_ps(d, xv[kx + shift], *a);
                    }
                }
            }
            col += 2;
        }
        for col in col..p.w {
            let d = load(r * p.w + col);
            for (cc, accc) in acc.iter_mut().enumerate() {
                let x = chan(cc).wrapping_add(r * p.wp + col);
                for (a, &off) in accc.iter_mut().zip(offs) {
                    // SAFETY: a real position's taps read inside `xb` (the contract).
                    let xv = _mm256_set1_ps(unsafe { *x.wrapping_add(off) });
                    *a = _mm256_fmadd_ps(d, xv, *a);
                }
            }
        }
    }
    for (cc, accc) in acc.iter().enumerate() {
        for (t, a) in accc.iter().enumerate() {
            // SAFETY: as the loads above.
            unsafe { _mm256_storeu_ps(acc_ptr.wrapping_add(at(cc, t)), *a) };
        }
    }
}
