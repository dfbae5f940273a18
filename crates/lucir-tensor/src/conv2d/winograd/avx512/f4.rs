//! F(4×4, 3×3)'s transforms (see the parent modules): 6×6 input patches per 4×4 output tile,
//! read from row planes by phase mod 4, sixteen tiles a vector.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{dy_tile, index, through_slots, Tiles};
use crate::Avx512;

/// `Bᵀ d` for F(4×4, 3×3) of six vectors `d` (one entry of each of 16 tiles per lane):
/// `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
/// 0 4 0 −5 0 1]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn bt6(d: [__m512; 6]) -> [__m512; 6] {
    let (c2, c4) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0));
    let [d0, d1, d2, d3, d4, d5] = d;
    let (d42, d31) = (_mm512_sub_ps(d4, d2), _mm512_sub_ps(d3, d1));
    [
        _mm512_fmadd_ps(c4, _mm512_sub_ps(d0, d2), d42),
        _mm512_fnmadd_ps(c4, _mm512_add_ps(d1, d2), _mm512_add_ps(d3, d4)),
        _mm512_fmadd_ps(c4, _mm512_sub_ps(d1, d2), _mm512_sub_ps(d4, d3)),
        _mm512_fmadd_ps(c2, d31, d42),
        _mm512_fnmadd_ps(c2, d31, d42),
        _mm512_fmadd_ps(c4, _mm512_sub_ps(d1, d3), _mm512_sub_ps(d5, d3)),
    ]
}

/// `Aᵀ m` for F(4×4, 3×3) of six vectors: `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0;
/// 0 1 −1 8 −8 1]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn at6(m: [__m512; 6]) -> [__m512; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s12, d12) = (_mm512_add_ps(m1, m2), _mm512_sub_ps(m1, m2));
    let (s34, d34) = (_mm512_add_ps(m3, m4), _mm512_sub_ps(m3, m4));
    [
        _mm512_add_ps(_mm512_add_ps(m0, s12), s34),
        _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
        _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
        _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m5),
    ]
}

/// `A d` for F(4×4, 3×3) of four vectors (the output gradient's rows or columns): `(d0,
/// d0 + d1 + d2 + d3, d0 − d1 + d2 − d3, d0 + 2d1 + 4d2 + 8d3, d0 − 2d1 + 4d2 − 8d3, d3)`.
#[target_feature(enable = "avx512f")]
#[inline]
fn a6(d: [__m512; 4]) -> [__m512; 6] {
    let [d0, d1, d2, d3] = d;
    let (e, f) = (_mm512_add_ps(d0, d2), _mm512_add_ps(d1, d3));
    let e4 = _mm512_fmadd_ps(_mm512_set1_ps(4.0), d2, d0);
    let f8 = _mm512_fmadd_ps(_mm512_set1_ps(8.0), d3, _mm512_add_ps(d1, d1));
    [
        d0,
        _mm512_add_ps(e, f),
        _mm512_sub_ps(e, f),
        _mm512_add_ps(e4, f8),
        _mm512_sub_ps(e4, f8),
        d3,
    ]
}

/// Lanes 1…15 of `a` in lanes 0…14, lane 0 of `e` in lane 15.
#[target_feature(enable = "avx512f")]
#[inline]
fn shift_in(a: __m512, e: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
        _mm512_castps_si512(e),
        _mm512_castps_si512(a),
    ))
}

/// Lanes `4l + j` (`l < 8`) of two vectors side by side, for `j` = 0…3 (the upper eight lanes
/// unused).
const QUARTER: [[i32; 16]; 4] = {
    let mut q = [[0i32; 16]; 4];
    let mut j = 0;
    while j < 4 {
        let mut l = 0;
        while l < 8 {
            q[j][l] = (4 * l + j) as i32;
            l += 1;
        }
        j += 1;
    }
    q
};

/// F(4×4, 3×3)'s input transform (see [`super::input_transform`]): `V_ξ = (Bᵀ d B)_ξ`, 36 entries
/// per tile, from the row planes by phase mod 4.
///
/// # Safety
/// As [`super::input_transform`], with `t.m = 4`: `planes` holds `images · ch` row planes and `v`
/// 36·ch rows of `t.row` floats.
#[target_feature(enable = "avx512f")]
pub(in crate::conv2d::winograd) unsafe fn input_transform4(
    _: Avx512,
    t: &Tiles,
    planes: &[f32],
    images: usize,
    ch: usize,
    v: &mut [f32],
) {
    let q = [
        index(QUARTER[0]),
        index(QUARTER[1]),
        index(QUARTER[2]),
        index(QUARTER[3]),
    ];
    let phase = (t.th + 1) * t.wp;
    for g in 0..images {
        for c in 0..ch {
            let base = planes.as_ptr().wrapping_add((g * ch + c) * t.plane);
            for u0 in (0..t.per_image).step_by(16) {
                let mut r = [[_mm512_setzero_ps(); 6]; 6];
                for (i, ri) in r.iter_mut().enumerate() {
                    let p = base.wrapping_add((i % 4) * phase + (i / 4) * t.wp + 4 * u0);
                    // SAFETY: the reads end 66 floats past 4·u0 < th·wp, inside the plane's
                    // phases and the slack after them (`Tiles::plane`).
                    let (q0, q1, q2, q3, e0, e1) = unsafe {
                        (
                            _mm512_loadu_ps(p),
                            _mm512_loadu_ps(p.wrapping_add(16)),
                            _mm512_loadu_ps(p.wrapping_add(32)),
                            _mm512_loadu_ps(p.wrapping_add(48)),
                            _mm512_set1_ps(*p.wrapping_add(64)),
                            _mm512_set1_ps(*p.wrapping_add(65)),
                        )
                    };
                    let mut d = [_mm512_setzero_ps(); 6];
                    for j in 0..4 {
                        let lo = _mm512_permutex2var_ps(q0, q[j], q1);
                        let hi = _mm512_permutex2var_ps(q2, q[j], q3);
                        d[j] = _mm512_shuffle_f32x4::<0x44>(lo, hi);
                    }
                    // Lanes 4l + 4 and 4l + 5: lanes l + 1 of d0 and d1, the last from p[64], p[65].
                    d[4] = shift_in(d[0], e0);
                    d[5] = shift_in(d[1], e1);
                    *ri = bt6(d);
                }
                let out = v.as_mut_ptr().wrapping_add(g * t.per_image + u0);
                for j in 0..6 {
                    let col = bt6([r[0][j], r[1][j], r[2][j], r[3][j], r[4][j], r[5][j]]);
                    for (i, x) in col.into_iter().enumerate() {
                        let at = ((6 * i + j) * ch + c) * t.row;
                        // SAFETY: lanes g·per_image + u0 + 16 ≤ group·per_image + 15 < row.
                        unsafe { _mm512_storeu_ps(out.wrapping_add(at), x) };
                    }
                }
            }
        }
    }
}

/// F(4×4, 3×3)'s output transform (see [`super::output_transform`]): `Y = Aᵀ M A` of every tile, 4×4
/// outputs, through the output rows by phase mod 4 in two slots of `out`.
///
/// # Safety
/// As [`super::output_transform`], with `t.m = 4`: `m` holds 36·Co rows of `t.row` floats and `out`
/// 2 slots of 4 · `t.out_phase()` floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(in crate::conv2d::winograd) unsafe fn output_transform4(
    _: Avx512,
    t: &Tiles,
    m: &[f32],
    images: usize,
    co: usize,
    out: &mut [f32],
    y: &mut [MaybeUninit<f32>],
    add: bool,
) {
    let phase = t.out_phase();
    let channel = |g: usize, o: usize, slot: *mut f32| {
        for u0 in (0..t.per_image).step_by(16) {
            let at = m.as_ptr().wrapping_add(o * t.row + g * t.per_image + u0);
            let mut mx = [_mm512_setzero_ps(); 36];
            for (xi, v) in mx.iter_mut().enumerate() {
                // SAFETY: lanes g·per_image + u0 + 16 < row of rows ξ·Co + o < 36·Co.
                *v = unsafe { _mm512_loadu_ps(at.wrapping_add(xi * co * t.row)) };
            }
            // Aᵀ over the rows (per column j), then over the columns (per output row a).
            let mut r = [[_mm512_setzero_ps(); 6]; 4];
            for j in 0..6 {
                let col = at6([
                    mx[j],
                    mx[6 + j],
                    mx[12 + j],
                    mx[18 + j],
                    mx[24 + j],
                    mx[30 + j],
                ]);
                for a in 0..4 {
                    r[a][j] = col[a];
                }
            }
            for (a, ra) in r.iter().enumerate() {
                let [y0, y1, y2, y3] = at6(*ra);
                // Tile l's four outputs side by side: a 4×4 transpose within each 128-bit
                // lane, then of the 128-bit lanes across the four vectors.
                let (t0, t1) = (_mm512_unpacklo_ps(y0, y1), _mm512_unpackhi_ps(y0, y1));
                let (t2, t3) = (_mm512_unpacklo_ps(y2, y3), _mm512_unpackhi_ps(y2, y3));
                let pd = _mm512_castps_pd;
                let ps = _mm512_castpd_ps;
                let u = [
                    ps(_mm512_unpacklo_pd(pd(t0), pd(t2))),
                    ps(_mm512_unpackhi_pd(pd(t0), pd(t2))),
                    ps(_mm512_unpacklo_pd(pd(t1), pd(t3))),
                    ps(_mm512_unpackhi_pd(pd(t1), pd(t3))),
                ];
                let v0 = _mm512_shuffle_f32x4::<0x44>(u[0], u[1]);
                let v1 = _mm512_shuffle_f32x4::<0xEE>(u[0], u[1]);
                let v2 = _mm512_shuffle_f32x4::<0x44>(u[2], u[3]);
                let v3 = _mm512_shuffle_f32x4::<0xEE>(u[2], u[3]);
                let outs = [
                    _mm512_shuffle_f32x4::<0x88>(v0, v2),
                    _mm512_shuffle_f32x4::<0xDD>(v0, v2),
                    _mm512_shuffle_f32x4::<0x88>(v1, v3),
                    _mm512_shuffle_f32x4::<0xDD>(v1, v3),
                ];
                let to = slot.wrapping_add(a * phase + 4 * u0);
                for (v, x) in outs.into_iter().enumerate() {
                    // SAFETY: 4·u0 + 64 ≤ 4·per_image + 60 = th·wp + 60 < phase, inside
                    // the slot (4 phases) of `out`.
                    unsafe { _mm512_storeu_ps(to.wrapping_add(16 * v), x) };
                }
            }
        }
    };
    // SAFETY: this function's contract; `channel` writes only inside its slot.
    unsafe { through_slots(t, (images, co), out, (y, add), channel) };
}

/// F(4×4, 3×3)'s gradient transform (see [`super::gradient_transform`]): `Z = A dY Aᵀ`, 36 entries
/// per 4×4 tile of image `i` of a group.
///
/// # Safety
/// As [`super::gradient_transform`], with `t.m = 4`: `z` holds 36·group·per_image·co16 floats.
#[target_feature(enable = "avx512f")]
pub(in crate::conv2d::winograd) unsafe fn gradient_transform4(
    _: Avx512,
    t: &Tiles,
    dyt: &[f32],
    co16: usize,
    i: usize,
    z: &mut [f32],
) {
    let cols = t.wp / 4;
    let stride = t.group * t.per_image * co16;
    let zero = _mm512_setzero_ps();
    for ty in 0..t.th {
        for tx in 0..cols {
            let tile = i * t.per_image + ty * cols + tx;
            for ov in (0..co16).step_by(16) {
                // SAFETY: this function's contract.
                let tile_dy = unsafe { dy_tile::<4>(t, dyt, co16, (ty, tx), ov) };
                let mut r = [[zero; 6]; 4];
                for (ra, d) in r.iter_mut().zip(tile_dy) {
                    *ra = a6(d);
                }
                for j in 0..6 {
                    let col = a6([r[0][j], r[1][j], r[2][j], r[3][j]]);
                    for (ii, x) in col.into_iter().enumerate() {
                        let at = (6 * ii + j) * stride + tile * co16 + ov;
                        // SAFETY: ξ < 36, tile < group·per_image, ov + 16 ≤ co16.
                        unsafe { _mm512_storeu_ps(z.as_mut_ptr().wrapping_add(at), x) };
                    }
                }
            }
        }
    }
}
