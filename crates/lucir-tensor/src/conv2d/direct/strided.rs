//! Stride-2 convolutions on phase planes: 3×3 with padding 1 (a ResNet's downsampling layer)
//! and 1×1 without padding (its projection shortcut), forward, input gradient and weight
//! gradient, with the kernels of the parent module.
//!
//! Each input plane is split into four *phase planes*, its even/odd rows × even/odd columns
//! ([`Grid::phases`]). Input row `2i + ky − pad` of output row `i` is row `i + fy` of phase
//! `a`, with `ky − pad = 2·fy + a` (`fy` ∈ {−1, 0}), so on the phase planes every tap is again
//! a plain offset from the output position ([`Taps::phases`]): the forward pass and the weight
//! gradient are the stride-1 kernels over Ci × 4 planes.
//!
//! The input gradient splits the other way: `dx` at phase (a, b) gathers the taps of that
//! phase only, each from `dy` shifted by (−fy, −fx) — a stride-1 convolution of the bordered
//! `dy` with 1, 2 or 4 taps (3×3) or with one tap or none (1×1). The four phase results are
//! interleaved into `dx`.

use std::mem::MaybeUninit;

use super::grid::PlaneLayout;
use super::{forward_images, Ahead, AlignedPlanes, Forward, Grid, Taps, WeightGrad};
use crate::conv2d::InputGrad;
use crate::Avx512;

/// Whether the stride-2 kernels take a convolution: 3×3 with padding 1, or 1×1 without.
pub(super) fn fits(kh: usize, kw: usize, stride: usize, pad: usize) -> bool {
    stride == 2 && kh == kw && ((kh == 3 && pad == 1) || (kh == 1 && pad == 0))
}

/// Phase and shift of kernel offset `k` (padding `pad`): `k − pad = 2·shift + phase`.
fn phase_of(k: usize, pad: usize) -> (usize, isize) {
    let r = k as isize - pad as isize;
    (r.rem_euclid(2) as usize, r.div_euclid(2))
}

impl Taps {
    /// The k×k taps (k = 1 or 3, padding (k − 1)/2) of a stride-2 convolution on phase planes
    /// laid out as `g`: four planes per input channel, phase (a, b) the `2a + b`-th.
    pub(super) fn phases(g: PlaneLayout, k: usize) -> Self {
        let pad = (k - 1) / 2;
        let offs = (0..k * k)
            .map(|t| {
                let ((a, fy), (b, fx)) = (phase_of(t / k, pad), phase_of(t % k, pad));
                // Phase element (i + fy, j + fx) sits at row i + fy + 1, column j + fx + 1.
                let (ry, rx) = ((fy + 1) as usize, (fx + 1) as usize);
                g.lead + (2 * a + b) * g.plane + ry * g.wp + rx
            })
            .collect();
        Self {
            stride: 4 * g.plane,
            offs,
        }
    }
}

/// The input gradient of phase (a, b) as a forward convolution of the bordered `dy` (planes
/// laid out as `g`, Co channels) into Ci channels: its taps and weights (Ci × Co × taps, from
/// `w` Co × Ci × k × k).
pub(super) fn dx_phase(
    g: PlaneLayout,
    w: &[f32],
    [ci, co, k]: [usize; 3],
    (a, b): (usize, usize),
) -> (Taps, Vec<f32>) {
    let pad = (k - 1) / 2;
    let mut offs = Vec::new();
    let mut kernel_taps = Vec::new();
    for t in 0..k * k {
        let ((ta, fy), (tb, fx)) = (phase_of(t / k, pad), phase_of(t % k, pad));
        if (ta, tb) == (a, b) {
            // dx phase element (r, c) takes dy element (r − fy, c − fx), which the bordered
            // plane holds at row r − fy + 1, column c − fx + 1.
            offs.push(g.lead + (1 - fy) as usize * g.wp + (1 - fx) as usize);
            kernel_taps.push(t);
        }
    }
    let mut wab = Vec::with_capacity(ci * co * offs.len());
    for c in 0..ci {
        for o in 0..co {
            wab.extend(kernel_taps.iter().map(|t| w[(o * ci + c) * k * k + t]));
        }
    }
    let taps = Taps {
        stride: g.plane,
        offs,
    };
    (taps, wab)
}

/// The four phases' input-gradient convolutions (see [`dx_phase`]) in phase order.
pub(super) fn dx_phases(g: PlaneLayout, w: &[f32], dims: [usize; 3]) -> [(Taps, Vec<f32>); 4] {
    [(0, 0), (0, 1), (1, 0), (1, 1)].map(|ab| dx_phase(g, w, dims, ab))
}

/// Sizes of a stride-2 convolution: N images, Ci → Co channels, H×W inputs, k×k kernel.
#[derive(Clone, Copy, Debug)]
pub(super) struct StridedShape {
    pub(super) n: usize,
    pub(super) ci: usize,
    pub(super) co: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) k: usize,
}

impl From<super::Shape> for StridedShape {
    fn from([n, ci, co, h, w, k, _stride]: super::Shape) -> Self {
        Self { n, ci, co, h, w, k }
    }
}

impl StridedShape {
    /// Output rows and columns, ⌈H/2⌉ × ⌈W/2⌉ for both kernels.
    pub(super) fn out(&self) -> (usize, usize) {
        (self.h.div_ceil(2), self.w.div_ceil(2))
    }
    pub(super) fn in_len(&self) -> usize {
        self.ci * self.h * self.w
    }
    pub(super) fn out_len(&self) -> usize {
        let (ho, wo) = self.out();
        self.co * ho * wo
    }
    pub(super) fn check(&self, x: &[f32], w: &[f32]) {
        assert_eq!(
            x.len(),
            self.n * self.in_len(),
            "direct kernel: input length"
        );
        assert_eq!(
            w.len(),
            self.co * self.ci * self.k * self.k,
            "direct kernel: weight length"
        );
    }

    /// Splits `planes` H×W planes of `src` into the phase planes of `dst` (grid `g`): all four
    /// for a 3×3 kernel, only phase (0, 0) — the even rows' even columns, which is all a 1×1
    /// kernel reads — for a 1×1 (the other three keep their zeros).
    fn fill_phases(&self, g: &Grid, src: &[f32], dst: &mut super::AlignedPlanes, planes: usize) {
        let dst = dst.get_mut();
        assert!(src.len() == planes * self.h * self.w && dst.len() >= 4 * planes * g.plane);
        assert!(g.h == self.h.div_ceil(2) && g.w == self.w.div_ceil(2));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `g.cpu` proves the CPU has AVX-512F; the lengths and the grid were just
        // checked.
        unsafe {
            avx512::fill_phases(g, src, dst, planes, (self.h, self.w), self.k == 3)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("no `Avx512` token exists off x86-64");
    }
}

/// `y = w ⋆ x` with stride 2: `x` N×Ci×H×W, `w` Co×Ci×k×k, `y` N×Co×⌈H/2⌉×⌈W/2⌉, rayon over
/// the images; every output written by the kernel (no zeroing).
///
/// # Panics
/// If the slices do not have those lengths.
pub(super) fn forward(cpu: Avx512, x: &[f32], w: &[f32], s: StridedShape) -> Vec<f32> {
    s.check(x, w);
    let (in_len, out_len) = (s.in_len(), s.out_len());
    let (ho, wo) = s.out();
    let grid = Grid::phases(cpu, ho, wo);
    let fwd = Forward::new(
        &grid,
        Taps::phases(grid.layout(), s.k),
        w.into(),
        s.ci,
        s.co,
    );
    let image = |buf: &mut AlignedPlanes, i, xi: &[f32], yi: &mut [MaybeUninit<f32>]| {
        s.fill_phases(&grid, xi, buf, s.ci);
        let ahead = Ahead::next(i, [(x, in_len), (&[], 0)]);
        fwd.image(buf.get(), yi, false, ahead);
    };
    let scratch = || grid.buffer(4 * s.ci);
    // SAFETY: `Forward::image` writes every element of each image's output.
    unsafe { forward_images(x, [s.n, in_len, out_len], scratch, image) }
}

/// The backward pass of [`forward`]: from `dy` the weight gradient (Co×Ci×k×k) and, if
/// `want_dx`, the input gradient; rayon over chunks of images, one per thread, the weight
/// gradient's partial sums added in chunk order.
///
/// # Panics
/// As [`forward`], and if `dy` does not hold N×Co×⌈H/2⌉×⌈W/2⌉ floats.
pub(super) fn backward(
    cpu: Avx512,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    s: StridedShape,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    s.check(x, w);
    let want_dx = dx.wanted();
    let (in_len, out_len) = (s.in_len(), s.out_len());
    assert_eq!(dy.len(), s.n * out_len, "direct kernel: gradient length");
    if s.n == 0 || in_len == 0 || out_len == 0 {
        return (
            matches!(dx, InputGrad::New).then(|| vec![0.0; s.n * in_len]),
            vec![0.0; w.len()],
        );
    }
    let (ho, wo) = s.out();
    let (xg, dg) = (Grid::phases(cpu, ho, wo), Grid::same(cpu, ho, wo));
    let xtaps = Taps::phases(xg.layout(), s.k);
    let phases = dx_phases(dg.layout(), w, [s.ci, s.co, s.k])
        .map(|(taps, wab)| Forward::new(&dg, taps, wab.into(), s.co, s.ci));
    let phase_len = s.ci * ho * wo;
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut wg = WeightGrad::new(&xg, &xtaps, s.ci, s.co);
        let mut xb = xg.buffer(if want_dw { 4 * s.ci } else { 0 });
        let mut db = dg.buffer(if want_dx { s.co } else { 0 });
        let mut tmp = vec![MaybeUninit::<f32>::uninit(); if want_dx { 4 * phase_len } else { 0 }];
        for (i, (xi, dyi)) in xc.chunks(in_len).zip(dyc.chunks(out_len)).enumerate() {
            if want_dw {
                s.fill_phases(&xg, xi, &mut xb, s.ci);
                wg.add_image(xb.get(), dyi);
            }
            if want_dx {
                dg.fill(dyi, &mut db, None);
                let ahead = Ahead::next(i, [(xc, in_len), (dyc, out_len)]);
                for (k, (f, t)) in phases.iter().zip(tmp.chunks_mut(phase_len)).enumerate() {
                    // The prefetches go with the last phase (of a 3×3 kernel, the one
                    // with the most taps).
                    let ahead = if k == 3 { ahead } else { Ahead::NONE };
                    f.image(db.get(), t, false, ahead);
                }
                let tmp = tmp.as_slice() as *const [MaybeUninit<f32>] as *const [f32];
                // SAFETY: `Forward::image` wrote every element of the four phases.
                let tmp = unsafe { &*tmp };
                interleave(cpu, tmp, &mut dxc[i * in_len..][..in_len], s, add);
            }
        }
        wg.into_dw()
    };
    // SAFETY: with a new input gradient `interleave` writes every element of each image of a
    // chunk; when adding, it stores only the sums of the floats it loads from the buffer and
    // the (initialised) phase results.
    unsafe { dx.run_chunked(s.n, [in_len, out_len], [x, dy], chunk) }
}

/// One image's input gradient from its four phases (`tmp`: phase (a, b) the `2a + b`-th run
/// of Ci planes of ⌈H/2⌉×⌈W/2⌉): `dx[c, 2r + a, 2q + b] = phase(a, b)[c, r, q]`, or with `add`
/// `dx[…] + phase(a, b)[…]` (`dx` then initialised). Writes every element of `dx` (Ci×H×W).
fn interleave(cpu: Avx512, tmp: &[f32], dx: &mut [MaybeUninit<f32>], s: StridedShape, add: bool) {
    let (ho, wo) = s.out();
    assert!(tmp.len() == 4 * s.ci * ho * wo && dx.len() == s.in_len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves the CPU has AVX-512F; the lengths were just checked.
    unsafe {
        avx512::interleave(cpu, tmp, dx, s.ci, (s.h, s.w), add)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cpu, tmp, dx, add);
        unreachable!("no `Avx512` token exists off x86-64");
    }
}

/// `StridedShape::fill_phases` with plain loops, for planes laid out as `g` (any vector
/// width): row y of plane p goes to phase planes 4p + 2(y mod 2) + b, row y/2 + 1, its even
/// (b = 0) and odd (b = 1) columns from column 1 on; unless `all`, only the even rows' even
/// columns. A copy: the AVX-512 version's result, element for element.
///
/// # Panics
/// If `src` does not hold `planes` H×W planes or `dst` 4·`planes` phase planes.
pub(super) fn fill_phases_plain(
    g: PlaneLayout,
    src: &[f32],
    dst: &mut [f32],
    planes: usize,
    (h, w): (usize, usize),
    all: bool,
) {
    let wo = w.div_ceil(2);
    assert!(src.len() == planes * h * w && dst.len() >= 4 * planes * g.plane);
    assert!(g.wp > wo && g.lead + (h.div_ceil(2) + 1) * g.wp <= g.plane);
    for p in 0..planes {
        for y in (0..h).step_by(if all { 1 } else { 2 }) {
            let from = &src[(p * h + y) * w..][..w];
            let row = g.lead + (y / 2 + 1) * g.wp + 1;
            for b in 0..if all { 2 } else { 1 } {
                let to = &mut dst[(4 * p + 2 * (y % 2) + b) * g.plane + row..][..wo];
                for (t, &v) in to.iter_mut().zip(from.iter().skip(b).step_by(2)) {
                    *t = v;
                }
            }
        }
    }
}

/// `interleave` with plain loops (any CPU): `dx[c, 2r + a, 2q + b] = phase(a, b)[c, r, q]`,
/// with `add` `dx[…] + phase(a, b)[…]`, one rounding, as the AVX-512 version.
///
/// # Safety
/// With `add`, `dx` is initialised.
///
/// # Panics
/// If `tmp` does not hold 4·Ci planes of ⌈H/2⌉×⌈W/2⌉ or `dx` Ci H×W planes.
pub(super) unsafe fn interleave_plain(
    tmp: &[f32],
    dx: &mut [MaybeUninit<f32>],
    ci: usize,
    (h, w): (usize, usize),
    add: bool,
) {
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let phase = ci * ho * wo;
    assert!(tmp.len() == 4 * phase && dx.len() == ci * h * w);
    for c in 0..ci {
        for y in 0..h {
            let to = &mut dx[(c * h + y) * w..][..w];
            for (x, d) in to.iter_mut().enumerate() {
                let v = tmp[(2 * (y % 2) + x % 2) * phase + (c * ho + y / 2) * wo + x / 2];
                let v = if add {
                    // SAFETY: when adding, `dx` is initialised (this function's contract).
                    let old = unsafe { d.assume_init() };
                    old + v
                } else {
                    v
                };
                d.write(v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::Grid;
    use crate::Avx512;

    /// The low `n` lanes (n ≤ 16).
    fn low(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    /// See `StridedShape::fill_phases`: row y of plane p goes to phase planes 4p + 2(y mod 2) + b,
    /// row y/2 + 1, its even (b = 0) and odd (b = 1) columns from column 1 on; unless `all`,
    /// only the even rows' even columns. No CPU check is needed: `g` holds the [`Avx512`]
    /// token.
    ///
    /// # Safety
    /// `src` holds `planes` H×W planes, `dst` 4·`planes` phase planes of `g`, with
    /// `g.h = ⌈H/2⌉`, `g.w = ⌈W/2⌉`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fill_phases(
        g: &Grid,
        src: &[f32],
        dst: &mut [f32],
        planes: usize,
        (h, w): (usize, usize),
        all: bool,
    ) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for p in 0..planes {
            for y in (0..h).step_by(if all { 1 } else { 2 }) {
                let from = src.as_ptr().wrapping_add((p * h + y) * w);
                let row = g.lead + (y / 2 + 1) * g.wp + 1;
                let to0 = dst
                    .as_mut_ptr()
                    .wrapping_add((4 * p + 2 * (y % 2)) * g.plane + row);
                let to1 = to0.wrapping_add(g.plane);
                for k in (0..w).step_by(32) {
                    let n = (w - k).min(32);
                    // SAFETY: the masks keep the lanes inside row y of plane p in `src`, and
                    // the n.div_ceil(2) even / n/2 odd columns inside the phase rows, which
                    // hold ⌈W/2⌉ elements from column 1.
                    unsafe {
                        let lo = _mm512_maskz_loadu_ps(low(n), from.wrapping_add(k));
                        let hi = _mm512_maskz_loadu_ps(
                            low(n.saturating_sub(16)),
                            from.wrapping_add(k + 16),
                        );
                        let (e, o) = (
                            _mm512_permutex2var_ps(lo, even, hi),
                            _mm512_permutex2var_ps(lo, odd, hi),
                        );
                        _mm512_mask_storeu_ps(to0.wrapping_add(k / 2), low(n.div_ceil(2)), e);
                        if all {
                            _mm512_mask_storeu_ps(to1.wrapping_add(k / 2), low(n / 2), o);
                        }
                    }
                }
            }
        }
    }

    /// See `interleave`; the token is the proof that the CPU has AVX-512F.
    ///
    /// # Safety
    /// `tmp` holds 4·`ci` planes of ⌈H/2⌉×⌈W/2⌉, `dx` `ci` H×W planes, initialised if `add`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn interleave(
        _: Avx512,
        tmp: &[f32],
        dx: &mut [MaybeUninit<f32>],
        ci: usize,
        (h, w): (usize, usize),
        add: bool,
    ) {
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let phase = ci * ho * wo;
        let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi_idx =
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for c in 0..ci {
            for y in 0..h {
                let row = (c * ho + y / 2) * wo;
                let from0 = tmp.as_ptr().wrapping_add(2 * (y % 2) * phase + row);
                let from1 = from0.wrapping_add(phase);
                let to = dx.as_mut_ptr().cast::<f32>().wrapping_add((c * h + y) * w);
                for k in (0..w).step_by(32) {
                    let n = (w - k).min(32);
                    // SAFETY: the masks keep the n.div_ceil(2) even / n/2 odd columns inside
                    // the phase rows (⌈W/2⌉ elements) and the n outputs inside row y of plane c.
                    unsafe {
                        let e =
                            _mm512_maskz_loadu_ps(low(n.div_ceil(2)), from0.wrapping_add(k / 2));
                        let o = _mm512_maskz_loadu_ps(low(n / 2), from1.wrapping_add(k / 2));
                        let (mut lo, mut hi) = (
                            _mm512_permutex2var_ps(e, lo_idx, o),
                            _mm512_permutex2var_ps(e, hi_idx, o),
                        );
                        if add {
                            let (m_lo, m_hi) = (low(n), low(n.saturating_sub(16)));
                            lo = _mm512_add_ps(_mm512_maskz_loadu_ps(m_lo, to.wrapping_add(k)), lo);
                            hi = _mm512_add_ps(
                                _mm512_maskz_loadu_ps(m_hi, to.wrapping_add(k + 16)),
                                hi,
                            );
                        }
                        _mm512_mask_storeu_ps(to.wrapping_add(k), low(n), lo);
                        _mm512_mask_storeu_ps(
                            to.wrapping_add(k + 16),
                            low(n.saturating_sub(16)),
                            hi,
                        );
                    }
                }
            }
        }
    }
}
