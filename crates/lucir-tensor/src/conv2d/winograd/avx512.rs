//! The AVX-512 passes of the Winograd convolution (see the parent module): the copy into row
//! planes, F(2×2, 3×3)'s input, output and gradient transforms (F(4×4, 3×3)'s in `f4`), and
//! the two kinds of products.
//!
//! No CPU check is needed in any of them: each takes the [`Avx512`] token.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{Map, Tiles, Weights, NB};
use crate::Avx512;

mod f4;
pub(super) use f4::{gradient_transform4, input_transform4, output_transform4};

/// Lanes `2l` of two vectors side by side (for `_mm512_permutex2var_ps`).
const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
/// Lanes `2l + 1`.
const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
/// Lanes 0–7 of `a` and `b` interleaved: `a0 b0 a1 b1 …`.
const LOW: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
/// Lanes 8–15 of `a` and `b` interleaved.
const HIGH: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

#[target_feature(enable = "avx512f")]
fn index(i: [i32; 16]) -> __m512i {
    // SAFETY: 16 i32 are one 512-bit vector.
    unsafe { std::mem::transmute::<[i32; 16], __m512i>(i) }
}

/// Copies `planes` H×W planes of `src` into the row planes of `dst` (the rows of the
/// zero-bordered image by their phase mod `m`, see [`Tiles`]), each through `map` (plane `p` is
/// channel `p mod ch`) when one is given. Only the image's own floats are
/// written: the borders keep the zeros the buffer was made with.
///
/// # Safety
/// `src` holds `planes` H×W planes, `dst` `planes · t.plane` floats, and a map at least `ch`
/// channels.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn fill(
    _: Avx512,
    t: &Tiles,
    src: &[f32],
    (planes, ch): (usize, usize),
    dst: &mut [f32],
    map: Option<Map<'_>>,
) {
    let (h, w) = (t.h, t.w);
    let phase = (t.th + 1) * t.wp;
    for p in 0..planes {
        // `x·scale + shift` as two roundings and `max(v, 0)`: the bits of `crate::channel_map`.
        let affine = map.map(|m| {
            let c = p % ch;
            let (s, b) = (_mm512_set1_ps(m.scale[c]), _mm512_set1_ps(m.shift[c]));
            move |v: __m512| {
                let v = _mm512_add_ps(_mm512_mul_ps(v, s), b);
                if m.relu {
                    _mm512_max_ps(v, _mm512_setzero_ps())
                } else {
                    v
                }
            }
        });
        for r in 0..h {
            let from = src.as_ptr().wrapping_add((p * h + r) * w);
            // Image row r is row r + 1 of the bordered image: row (r + 1)/m of its phase.
            let at = (r + 1) % t.m * phase + (r + 1) / t.m * t.wp;
            let to = dst.as_mut_ptr().wrapping_add(p * t.plane + at + 1);
            for k in (0..w).step_by(16) {
                let m = ((1u32 << (w - k).min(16)) - 1) as __mmask16;
                // SAFETY: the mask keeps the lanes inside row r of plane p of `src` and inside
                // the row's W floats after its border in `dst` (rows of wp ≥ W + 2 floats).
                unsafe {
                    let mut v = _mm512_maskz_loadu_ps(m, from.wrapping_add(k));
                    if let Some(f) = affine {
                        v = f(v);
                    }
                    _mm512_mask_storeu_ps(to.wrapping_add(k), m, v);
                }
            }
        }
    }
}

/// `V_ξ = (Bᵀ d B)_ξ` of every tile of `images` images of `ch` channels, from their row planes,
/// into `v` (row `ξ·ch + c`, lanes `image·per_image + tile`). A vector that runs past an
/// image's tiles writes into the next image's lanes, which that image's vectors then
/// overwrite, or into the rows' slack.
///
/// # Safety
/// `planes` holds `images · ch` row planes and `v` 16·ch rows of `t.row` floats.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_transform(
    _: Avx512,
    t: &Tiles,
    planes: &[f32],
    images: usize,
    ch: usize,
    v: &mut [f32],
) {
    let (even, odd) = (index(EVEN), index(ODD));
    let odd_rows = (t.th + 1) * t.wp;
    for g in 0..images {
        for c in 0..ch {
            let base = planes.as_ptr().wrapping_add((g * ch + c) * t.plane);
            for u0 in (0..t.per_image).step_by(16) {
                // Row i of the patches: d_j at 2·tile + j of the even (i = 0, 2) or odd rows.
                let mut r = [[_mm512_setzero_ps(); 4]; 4];
                for (i, ri) in r.iter_mut().enumerate() {
                    let p = base.wrapping_add((i % 2) * odd_rows + (i / 2) * t.wp + 2 * u0);
                    // SAFETY: the reads end 34 floats past 2·u0 < th·wp, inside the plane's
                    // even and odd rows and the slack after them (`Tiles::plane`).
                    let (a, b, a2, b2) = unsafe {
                        (
                            _mm512_loadu_ps(p),
                            _mm512_loadu_ps(p.wrapping_add(16)),
                            _mm512_loadu_ps(p.wrapping_add(2)),
                            _mm512_loadu_ps(p.wrapping_add(18)),
                        )
                    };
                    let d0 = _mm512_permutex2var_ps(a, even, b);
                    let d1 = _mm512_permutex2var_ps(a, odd, b);
                    let d2 = _mm512_permutex2var_ps(a2, even, b2);
                    let d3 = _mm512_permutex2var_ps(a2, odd, b2);
                    *ri = [
                        _mm512_sub_ps(d0, d2),
                        _mm512_add_ps(d1, d2),
                        _mm512_sub_ps(d2, d1),
                        _mm512_sub_ps(d1, d3),
                    ];
                }
                let out = v.as_mut_ptr().wrapping_add(g * t.per_image + u0);
                for j in 0..4 {
                    let col = [
                        _mm512_sub_ps(r[0][j], r[2][j]),
                        _mm512_add_ps(r[1][j], r[2][j]),
                        _mm512_sub_ps(r[2][j], r[1][j]),
                        _mm512_sub_ps(r[1][j], r[3][j]),
                    ];
                    for (i, x) in col.into_iter().enumerate() {
                        // SAFETY: lanes g·per_image + u0 + 16 ≤ group·per_image + 15 < row.
                        unsafe {
                            _mm512_storeu_ps(out.wrapping_add(((4 * i + j) * ch + c) * t.row), x)
                        };
                    }
                }
            }
        }
    }
}

/// `M_ξ = U_ξ · V_ξ` over the first `vecs` vectors of tiles: `u` Co × Ci per ξ, `v` xis·Ci
/// rows, `m` xis·Co rows, each of `t.row` floats.
///
/// # Safety
/// `v` holds xis·Ci rows and `m` xis·Co rows of `t.row` floats, `16·vecs ≤ t.row`,
/// `u.xis = t.xis`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn products(
    _: Avx512,
    t: &Tiles,
    u: &Weights,
    v: &[f32],
    vecs: usize,
    m: &mut [f32],
) {
    const K: usize = 3;
    let (ci, co) = (u.ci, u.co);
    let blocks = co / NB;
    let tiled = vecs / K * K;
    for xi in 0..t.xis {
        let vrow = v.as_ptr().wrapping_add(xi * ci * t.row);
        let mrow = m.as_mut_ptr().wrapping_add(xi * co * t.row);
        for b in 0..blocks {
            let wts = u.packed.as_ptr().wrapping_add((xi * blocks + b) * ci * NB);
            let out = mrow.wrapping_add(b * NB * t.row);
            for k in (0..tiled).step_by(K) {
                // SAFETY: the block's Ci·NB weights, Ci rows of V and NB rows of M at vectors
                // k..k + K ≤ vecs (this function's contract).
                unsafe { tile::<NB, K>(t.row, ci, wts, vrow, out, k) };
            }
            match vecs - tiled {
                // SAFETY: as above.
                2 => unsafe { tile::<NB, 2>(t.row, ci, wts, vrow, out, tiled) },
                // SAFETY: as above.
                1 => unsafe { tile::<NB, 1>(t.row, ci, wts, vrow, out, tiled) },
                _ => {}
            }
        }
        for o in blocks * NB..co {
            let wts = u.plain.as_ptr().wrapping_add((xi * co + o) * ci);
            let out = mrow.wrapping_add(o * t.row);
            for k in (0..tiled).step_by(K) {
                // SAFETY: as above, Ci weights of channel o.
                unsafe { tile::<1, K>(t.row, ci, wts, vrow, out, k) };
            }
            match vecs - tiled {
                // SAFETY: as above.
                2 => unsafe { tile::<1, 2>(t.row, ci, wts, vrow, out, tiled) },
                // SAFETY: as above.
                1 => unsafe { tile::<1, 1>(t.row, ci, wts, vrow, out, tiled) },
                _ => {}
            }
        }
    }
}

/// `B` rows of `M` at vectors `k..k + K`: `B × K` accumulators summed over the channels in
/// order, then stored.
///
/// # Safety
/// `wts` holds `ci·B` weights (`B` per channel), `v` `ci` rows and `m` `B` rows of `row`
/// floats, each with vectors `k..k + K`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const B: usize, const K: usize>(
    row: usize,
    ci: usize,
    wts: *const f32,
    v: *const f32,
    m: *mut f32,
    k: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); K]; B];
    for c in 0..ci {
        let at = v.wrapping_add(c * row + 16 * k);
        // SAFETY: this function's contract.
        let mut x = [_mm512_setzero_ps(); K];
        for (j, xj) in x.iter_mut().enumerate() {
            // SAFETY: this function's contract.
            *xj = unsafe { _mm512_loadu_ps(at.wrapping_add(16 * j)) };
        }
        for (b, accb) in acc.iter_mut().enumerate() {
            // SAFETY: c·B + b < ci·B.
            let wb = _mm512_set1_ps(unsafe { *wts.add(c * B + b) });
            for j in 0..K {
                accb[j] = _mm512_fmadd_ps(wb, x[j], accb[j]);
            }
        }
    }
    for (b, accb) in acc.iter().enumerate() {
        for (j, a) in accb.iter().enumerate() {
            // SAFETY: this function's contract.
            unsafe { _mm512_storeu_ps(m.wrapping_add(b * row + 16 * (k + j)), *a) };
        }
    }
}

/// `Y = Aᵀ M A` of every tile of `images` images and `co` channels, into `y` (NCHW, `images`
/// × `co` × H×W; with `add`, added to the values it holds). Each channel's tiles go to its
/// even and odd output rows in one of two slots of `out` first, then row by row into `y`
/// ([`copy_rows`]), a channel later.
///
/// # Safety
/// `m` holds 16·Co rows of `t.row` floats, `out` 2 slots of 2 · `t.out_phase()` floats, `y`
/// `images·co·H·W` (initialised if `add`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn output_transform(
    _: Avx512,
    t: &Tiles,
    m: &[f32],
    images: usize,
    co: usize,
    out: &mut [f32],
    y: &mut [MaybeUninit<f32>],
    add: bool,
) {
    let (low, high) = (index(LOW), index(HIGH));
    let phase = t.out_phase();
    let channel = |g: usize, o: usize, slot: *mut f32| {
        for u0 in (0..t.per_image).step_by(16) {
            let at = m.as_ptr().wrapping_add(o * t.row + g * t.per_image + u0);
            let mut mx = [_mm512_setzero_ps(); 16];
            for (xi, m) in mx.iter_mut().enumerate() {
                // SAFETY: lanes g·per_image + u0 + 16 < row of rows ξ·Co + o < 16·Co.
                *m = unsafe { _mm512_loadu_ps(at.wrapping_add(xi * co * t.row)) };
            }
            // Aᵀ over the rows: (m0 + m1 + m2, m1 − m2 − m3) per column.
            let mut r = [[_mm512_setzero_ps(); 4]; 2];
            for j in 0..4 {
                r[0][j] = _mm512_add_ps(_mm512_add_ps(mx[j], mx[4 + j]), mx[8 + j]);
                r[1][j] = _mm512_sub_ps(_mm512_sub_ps(mx[4 + j], mx[8 + j]), mx[12 + j]);
            }
            for (a, ra) in r.iter().enumerate() {
                let y0 = _mm512_add_ps(_mm512_add_ps(ra[0], ra[1]), ra[2]);
                let y1 = _mm512_sub_ps(_mm512_sub_ps(ra[1], ra[2]), ra[3]);
                let to = slot.wrapping_add(a * phase + 2 * u0);
                // SAFETY: 2·u0 + 32 ≤ 2·per_image + 30 = th·wp + 30 < phase, inside the
                // slot (2 phases) of `out`.
                unsafe {
                    _mm512_storeu_ps(to, _mm512_permutex2var_ps(y0, low, y1));
                    _mm512_storeu_ps(to.wrapping_add(16), _mm512_permutex2var_ps(y0, high, y1));
                }
            }
        }
    };
    // SAFETY: this function's contract; `channel` writes only inside its slot.
    unsafe { through_slots(t, (images, co), out, (y, add), channel) };
}

/// Runs `channel(g, o, slot)` for every image `g` and output channel `o`, which writes that
/// channel's output rows by phase (`t.m` phases of `t.out_phase()` floats) into `slot`, one of
/// two in `out` in turn; each channel's rows are copied into `y` ([`copy_rows`], adding with
/// `add`) one channel later, when the vector stores that wrote them have left the store
/// buffer (reading them back at once stalls every load).
///
/// # Safety
/// `out` holds 2 · `t.m` · `t.out_phase()` floats, `y` `images·co·H·W` (initialised if `add`),
/// and `channel` writes every output row of its channel and nothing outside its slot.
#[target_feature(enable = "avx512f")]
unsafe fn through_slots(
    t: &Tiles,
    (images, co): (usize, usize),
    out: &mut [f32],
    (y, add): (&mut [MaybeUninit<f32>], bool),
    mut channel: impl FnMut(usize, usize, *mut f32),
) {
    let (plane, slot) = (t.h * t.w, t.m * t.out_phase());
    for k in 0..images * co {
        channel(k / co, k % co, out.as_mut_ptr().wrapping_add(k % 2 * slot));
        if k > 0 {
            let prev = out.as_ptr().wrapping_add((k - 1) % 2 * slot);
            // SAFETY: this function's contract; `prev` holds channel k − 1's rows.
            unsafe { copy_rows(t, prev, t.out_phase(), y, (k - 1) * plane, add) };
        }
    }
    if let Some(k) = (images * co).checked_sub(1) {
        let last = out.as_ptr().wrapping_add(k % 2 * slot);
        // SAFETY: as above.
        unsafe { copy_rows(t, last, t.out_phase(), y, k * plane, add) };
    }
}

/// `Z = A dY Aᵀ` of every tile of image `i` of a group, from its transposed output gradient
/// `dyt` (H·W positions × `co16` channels), into `z` (entry `(ξ·T + tile)·co16 + o`, `T` the
/// group's tiles). Positions past the image read as zeros, so the tiles past it get `Z = 0`.
///
/// # Safety
/// `dyt` holds H·W·co16 floats, `z` 16·group·per_image·co16, `i < group`, co16 a multiple of 16.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn gradient_transform(
    _: Avx512,
    t: &Tiles,
    dyt: &[f32],
    co16: usize,
    i: usize,
    z: &mut [f32],
) {
    let cols = t.wp / 2;
    let stride = t.group * t.per_image * co16;
    let zero = _mm512_setzero_ps();
    for ty in 0..t.th {
        for tx in 0..cols {
            let tile = i * t.per_image + ty * cols + tx;
            for ov in (0..co16).step_by(16) {
                // A over the columns: (d0, d0 + d1, d0 − d1, −d1) per row.
                // SAFETY: this function's contract.
                let tile_dy = unsafe { dy_tile::<2>(t, dyt, co16, (ty, tx), ov) };
                let mut r = [[zero; 4]; 2];
                for (ra, d) in r.iter_mut().zip(tile_dy) {
                    let [d0, d1] = d;
                    *ra = [
                        d0,
                        _mm512_add_ps(d0, d1),
                        _mm512_sub_ps(d0, d1),
                        _mm512_sub_ps(zero, d1),
                    ];
                }
                for j in 0..4 {
                    let (r0, r1) = (r[0][j], r[1][j]);
                    let col = [
                        r0,
                        _mm512_add_ps(r0, r1),
                        _mm512_sub_ps(r0, r1),
                        _mm512_sub_ps(zero, r1),
                    ];
                    for (ii, x) in col.into_iter().enumerate() {
                        let at = (4 * ii + j) * stride + tile * co16 + ov;
                        // SAFETY: ξ < 16, tile < group·per_image, ov + 16 ≤ co16.
                        unsafe { _mm512_storeu_ps(z.as_mut_ptr().wrapping_add(at), x) };
                    }
                }
            }
        }
    }
}

/// Output-gradient tile `(ty, tx)` of side `M` for channels `ov..ov + 16`, from `dyt` (H·W
/// positions × `co16` channels); zeros for the positions past the image.
///
/// # Safety
/// `dyt` holds H·W·co16 floats and `ov + 16 ≤ co16`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn dy_tile<const M: usize>(
    t: &Tiles,
    dyt: &[f32],
    co16: usize,
    (ty, tx): (usize, usize),
    ov: usize,
) -> [[__m512; M]; M] {
    let mut d = [[_mm512_setzero_ps(); M]; M];
    for (a, da) in d.iter_mut().enumerate() {
        for (b, v) in da.iter_mut().enumerate() {
            let (row, col) = (M * ty + a, M * tx + b);
            if row < t.h && col < t.w {
                let at = (row * t.w + col) * co16 + ov;
                // SAFETY: position row·W + col < H·W, channels ov..ov + 16 ≤ co16.
                *v = unsafe { _mm512_loadu_ps(dyt.as_ptr().wrapping_add(at)) };
            }
        }
    }
    d
}

/// `S_ξ[c, ·] += Σ_tile Z_ξ[tile, ·] · V_ξ[c, tile]` over the group's first `tiles` tiles:
/// output channels in the lanes, `V` broadcast; `s` entry `(ξ·Ci + c)·co16 + o`.
///
/// # Safety
/// `z` as [`gradient_transform`] writes it, `v` xis·Ci rows of `t.row` floats, `s` xis·Ci·co16
/// floats, `tiles ≤ group·per_image`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weight_products(
    _: Avx512,
    t: &Tiles,
    z: &[f32],
    v: &[f32],
    (ci, co16, tiles): (usize, usize, usize),
    s: &mut [f32],
) {
    const CB: usize = 8;
    let stride = t.group * t.per_image * co16;
    let ov = if co16 % 32 == 0 { 2 } else { 1 };
    for xi in 0..t.xis {
        for o in (0..co16).step_by(16 * ov) {
            for c in (0..ci).step_by(CB) {
                let args = WeightTile {
                    z: z.as_ptr().wrapping_add(xi * stride + o),
                    co16,
                    v: v.as_ptr().wrapping_add((xi * ci + c) * t.row),
                    row: t.row,
                    tiles,
                    s: s.as_mut_ptr().wrapping_add((xi * ci + c) * co16 + o),
                };
                macro_rules! run {
                    ($($n:literal)*) => {
                        match (ov, (ci - c).min(CB)) {
                            $(
                                // SAFETY: this function's contract; ov·16 channels from o and
                                // the n channels from c are inside `z`, `v` and `s`.
                                (1, $n) => unsafe { weight_tile::<1, $n>(&args) },
                                // SAFETY: as above.
                                (2, $n) => unsafe { weight_tile::<2, $n>(&args) },
                            )*
                            _ => unreachable!("1 or 2 vectors of 1 to 8 channels"),
                        }
                    };
                }
                run!(1 2 3 4 5 6 7 8);
            }
        }
    }
}

/// Where one register tile of [`weight_products`] reads and adds.
struct WeightTile {
    /// `Z_ξ` at the tile's first output channel: tile `k`'s lanes at `k·co16`.
    z: *const f32,
    co16: usize,
    /// `V_ξ` at the tile's first input channel: channel `c`'s row at `c·row`.
    v: *const f32,
    row: usize,
    tiles: usize,
    /// `S_ξ` at the tile's first entry: channel `c` at `c·co16`.
    s: *mut f32,
}

/// `OV` vectors of output channels × `C` input channels: running sums over the tiles, then
/// added into `S`.
///
/// # Safety
/// The `tiles` tiles of `OV·16` lanes of `z`, `C` rows of `v` and `C` rows of `OV·16` floats of
/// `s` are inside their buffers.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn weight_tile<const OV: usize, const C: usize>(a: &WeightTile) {
    let mut acc = [[_mm512_setzero_ps(); C]; OV];
    for k in 0..a.tiles {
        let zp = a.z.wrapping_add(k * a.co16);
        // SAFETY: this function's contract.
        let mut zv = [_mm512_setzero_ps(); OV];
        for (j, z) in zv.iter_mut().enumerate() {
            // SAFETY: this function's contract.
            *z = unsafe { _mm512_loadu_ps(zp.wrapping_add(16 * j)) };
        }
        for c in 0..C {
            // SAFETY: as above.
            let x = _mm512_set1_ps(unsafe { *a.v.add(c * a.row + k) });
            for j in 0..OV {
                acc[j][c] = _mm512_fmadd_ps(zv[j], x, acc[j][c]);
            }
        }
    }
    for (j, accj) in acc.iter().enumerate() {
        for (c, sum) in accj.iter().enumerate() {
            let at = a.s.wrapping_add(c * a.co16 + 16 * j);
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *sum)) };
        }
    }
}

/// Copies output rows `r` (row `r / m` of phase `r mod m` from `out`, phases `phase` floats
/// apart) into the H×W plane at `at` in `y`, adding to what it holds with `add`.
///
/// # Safety
/// `out` points to `t.m` phases of `th` rows of `wp` floats, `phase` apart; `y` holds at least
/// `at + H·W` floats, initialised if `add`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn copy_rows(
    t: &Tiles,
    out: *const f32,
    phase: usize,
    y: &mut [MaybeUninit<f32>],
    at: usize,
    add: bool,
) {
    let (h, w) = (t.h, t.w);
    let plane = y.as_mut_ptr().cast::<f32>().wrapping_add(at);
    for r in 0..h {
        let from = out.wrapping_add(r % t.m * phase + r / t.m * t.wp);
        let to = plane.wrapping_add(r * w);
        for k in (0..w).step_by(16) {
            let mask = ((1u32 << (w - k).min(16)) - 1) as __mmask16;
            // SAFETY: the mask keeps the lanes inside output row r of the plane and inside the
            // row's W floats in `out`; `y` is initialised if `add`.
            unsafe {
                let mut s = _mm512_maskz_loadu_ps(mask, from.wrapping_add(k));
                if add {
                    s = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, to.wrapping_add(k)), s);
                }
                _mm512_mask_storeu_ps(to.wrapping_add(k), mask, s);
            }
        }
    }
}
