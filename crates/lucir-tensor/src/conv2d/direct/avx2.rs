//! The direct 3×3 stride-1 kernels on CPUs with AVX2 and FMA but without AVX-512 (AMD's Zen 3
//! and earlier, Intel's client cores): the parent module's bordered planes, taps and tiles
//! with vectors of 8 lanes.
//!
//! - **Forward and input gradient**: a tile of [`NB`] = 2 output channels × [`V`] = 6 vectors
//!   (48 positions) in 12 of the 16 ymm registers; per input channel and tap, 2 broadcast
//!   weights and 6 input loads, each used for both channels, feed 12 FMAs (15 registers live;
//!   4×3 tiles need all 16 and spill, 4×2 and 3×4 measured no faster). The AVX-512 kernels
//!   pack each vector's real lanes with `vcompressps`; here a lane permutation (`vpermps`,
//!   the table made once per plane shape) and a masked store do the same.
//! - **Weight gradient**: 8 output channels in the lanes and the nine taps of one input
//!   channel, 9 accumulators; `dy` is transposed to rows of Co (rounded up to 8) floats per
//!   position by plain loops.
//!
//! Every output sums the same terms in the same order, with the same fused multiply-adds, as
//! the AVX-512 kernels (input channel, then tap; a weight gradient entry one running sum over
//! the positions of the images in order, the chunks added in order), so the two give the same
//! bits; the tests compare them where both run. The stride-2 layers, Winograd and the bf16
//! products need AVX-512: on these CPUs they run the gemm path.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::grid::{stores, stores_tile};
use super::weight_grad::unpack_sums;
use super::{checked_bwd, pack, AlignedPlanes, Map};
use crate::conv2d::gemm_path::flip_kernel;
use crate::conv2d::InputGrad;
use crate::simd::affine;
use crate::tensor::filled_vec;
use crate::Avx2Fma;

/// Lanes of a vector.
const L: usize = 8;

/// Output channels per forward tile.
const NB: usize = 2;

/// Vectors of [`L`] positions per forward tile.
const V: usize = 6;

/// Floats of zeros after each plane: the last vector of positions runs at most 9 floats past
/// the bottom border row.
const SLACK: usize = 32;

/// Where one vector's real lanes go: the permutation that packs them into the low lanes, the
/// mask of that many low lanes (all bits set in a lane that is stored) and the NCHW index of
/// the first.
#[derive(Clone, Copy, Debug)]
struct Store {
    perm: [i32; L],
    low: [i32; L],
    at: usize,
}

/// The bordered planes of an H×W image for a 3×3 "same" convolution and the vectors of 8
/// output positions over them (as the parent module's `Grid::same`, with 8 lanes). Holds the
/// [`Avx2Fma`] token its kernels need.
struct Planes {
    cpu: Avx2Fma,
    h: usize,
    w: usize,
    /// Row length, W + 2.
    wp: usize,
    /// Floats from the start of a plane's stride to the plane (position `wp + 1` then sits on a
    /// 64-byte boundary).
    lead: usize,
    /// Floats from one plane to the next, a multiple of 16.
    plane: usize,
    /// Vectors of 8 output positions covering the H·(W + 2) positions.
    nvec: usize,
    /// Per vector, where its real lanes go; they tile the H×W output plane exactly (checked
    /// with `stores_tile`), so every output is written once.
    stores: Vec<Store>,
    /// The nine taps' offsets from an output position, `lead + ky·wp + kx`.
    offs: [usize; 9],
}

impl Planes {
    fn new(cpu: Avx2Fma, h: usize, w: usize) -> Self {
        let wp = w + 2;
        let table = stores(h, w, wp, L);
        debug_assert!(
            stores_tile(&table, [h, w, wp, L]),
            "the stores of a {h}×{w} plane do not tile its outputs"
        );
        let stores = table
            .iter()
            .map(|&(keep, low, at)| {
                let mut perm = [0i32; L];
                for (slot, lane) in (0..L).filter(|l| keep >> l & 1 == 1).enumerate() {
                    perm[slot] = lane as i32;
                }
                let low = std::array::from_fn(|l| if low >> l & 1 == 1 { -1 } else { 0 });
                Store { perm, low, at }
            })
            .collect();
        let lead = (16 - (wp + 1) % 16) % 16;
        Self {
            cpu,
            h,
            w,
            wp,
            lead,
            plane: (lead + (h + 2) * wp + SLACK).next_multiple_of(16),
            nvec: (h * wp).div_ceil(L),
            stores,
            offs: std::array::from_fn(|t| lead + t / 3 * wp + t % 3),
        }
    }

    /// A zeroed buffer for `planes` bordered planes.
    fn buffer(&self, planes: usize) -> AlignedPlanes {
        AlignedPlanes::zeroed(planes * self.plane)
    }

    /// Copies H×W planes from `src` into the interiors of the bordered planes of `dst`, each
    /// through `map` (plane p is channel p) when one is given: the batch norm's own
    /// `simd::affine` (`x·scale + shift`, two roundings, then `max(·, 0)`, 0 for NaN and −0, if
    /// `relu`), the AVX-512 fill's bits. The borders keep their zeros.
    fn fill(&self, src: &[f32], dst: &mut AlignedPlanes, map: Option<Map<'_>>) {
        let hw = self.h * self.w;
        let planes = src.len() / hw.max(1);
        let dst = dst.get_mut();
        assert!(src.len() == planes * hw && dst.len() >= planes * self.plane);
        assert!(map.is_none_or(|m| m.scale.len() >= planes && m.shift.len() >= planes));
        for (p, from) in src.chunks_exact(hw.max(1)).enumerate() {
            let plane = &mut dst[p * self.plane + self.lead..][..(self.h + 2) * self.wp];
            for (r, row) in from.chunks_exact(self.w.max(1)).enumerate() {
                let to = &mut plane[(r + 1) * self.wp + 1..][..self.w];
                match map {
                    None => to.copy_from_slice(row),
                    Some(m) => {
                        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and `affine`
                        // writes an initialised float into every element, so `to` is still a
                        // valid `[f32]` afterwards.
                        let out = unsafe { &mut *(to as *mut [f32] as *mut [MaybeUninit<f32>]) };
                        affine(row, out, m.scale[p], m.shift[p], m.relu);
                    }
                }
            }
        }
    }
}

/// The forward kernel's view of one convolution: `ci` input channels' planes → `co` NCHW
/// output planes, `w` Co × Ci × 3 × 3 (packed for the tiles as the AVX-512 kernel's, [`NB`]
/// channels per block).
struct Forward<'a> {
    p: &'a Planes,
    packed: Vec<f32>,
    w: Cow<'a, [f32]>,
    ci: usize,
    co: usize,
}

impl<'a> Forward<'a> {
    fn new(p: &'a Planes, w: Cow<'a, [f32]>, ci: usize, co: usize) -> Self {
        assert_eq!(w.len(), co * ci * 9, "direct kernel: weight length");
        let packed = pack::<NB>(&w, ci, co, 9);
        Self {
            p,
            packed,
            w,
            ci,
            co,
        }
    }

    /// One image: `src` its input planes, `y` its `co·H·W` outputs, every one written (with
    /// `add`, added to the value `y` holds, which must be initialised).
    fn image(&self, src: &[f32], y: &mut [MaybeUninit<f32>], add: bool) {
        let p = self.p;
        // The furthest float a tile reads: its last position plus the largest offset.
        let reach = L * p.nvec + p.offs[8];
        assert!(
            (self.ci == 0 || src.len() >= (self.ci - 1) * p.plane + reach)
                && y.len() >= self.co * p.h * p.w
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the planes' `Avx2Fma` token proves the CPU has AVX2 and FMA; the lengths were
        // just checked.
        unsafe {
            match add {
                false => kernels::forward_image::<false>(p.cpu, self, src, y),
                true => kernels::forward_image::<true>(p.cpu, self, src, y),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (src, y);
            unreachable!("no `Avx2Fma` token exists off x86-64");
        }
    }
}

/// The weight gradient of one chunk of images, summed image by image: `dw[o, c, tap] = Σ_p
/// dy[o, p] · x[c, p + tap offset]` with 8 output channels in the lanes, one running sum per
/// entry over the positions of every image in order (as the AVX-512 kernel's).
struct WeightGrad<'a> {
    p: &'a Planes,
    ci: usize,
    co: usize,
    /// Co rounded up to a multiple of 8.
    co8: usize,
    /// The current image's `dy`, H·W rows of `co8` floats (the extra channels zero).
    dyt: AlignedPlanes,
    /// `acc[(c·9 + tap)·co8 + o]`, the running sums.
    acc: AlignedPlanes,
}

impl<'a> WeightGrad<'a> {
    fn new(p: &'a Planes, ci: usize, co: usize) -> Self {
        let co8 = co.next_multiple_of(L);
        Self {
            p,
            ci,
            co,
            co8,
            dyt: AlignedPlanes::zeroed(p.h * p.w * co8),
            acc: AlignedPlanes::zeroed(ci * 9 * co8),
        }
    }

    /// Adds one image: `xb` its `ci` channels' bordered planes, `dy` its Co×H×W gradient.
    fn add_image(&mut self, xb: &[f32], dy: &[f32]) {
        let p = self.p;
        let hw = p.h * p.w;
        // The furthest float read: the last real position plus the largest offset.
        let reach = (p.h.max(1) - 1) * p.wp + p.w + p.offs[8];
        assert!(
            (self.ci == 0 || xb.len() >= (self.ci - 1) * p.plane + reach)
                && dy.len() == self.co * hw
        );
        let dyt = self.dyt.get_mut();
        for (o, plane) in dy.chunks_exact(hw.max(1)).enumerate() {
            for (q, &v) in plane.iter().enumerate() {
                dyt[q * self.co8 + o] = v;
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the planes' `Avx2Fma` token proves the CPU has AVX2 and FMA; the lengths were
        // just checked and `dyt`, `acc` were sized by `new` for these planes and channel counts.
        unsafe {
            kernels::weight_grad(p.cpu, self, xb)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = xb;
            unreachable!("no `Avx2Fma` token exists off x86-64");
        }
    }

    /// The sums as a Co×Ci×3×3 weight gradient.
    fn into_dw(self) -> Vec<f32> {
        unpack_sums(self.acc.get(), self.co, self.ci * 9, self.co8)
    }
}

/// `y = w ⋆ x` for a batch of 3×3 "same" convolutions: `x` N×Ci×H×W (read through `map` if one
/// is given), `w` Co×Ci×3×3, `y` N×Co×H×W, rayon over the images. The output is allocated
/// without zeroing: the kernel writes every element.
///
/// # Panics
/// If the slices do not have those lengths; callers check first.
pub(in crate::conv2d) fn forward(
    cpu: Avx2Fma,
    x: &[f32],
    w: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map<'_>>,
) -> Vec<f32> {
    assert_eq!(x.len(), n * ci * h * wd, "direct kernel: input length");
    let p = Planes::new(cpu, h, wd);
    let fwd = Forward::new(&p, w.into(), ci, co);
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    if in_len == 0 || out_len == 0 {
        return vec![0.0; n * out_len];
    }
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(out_len)
            .zip(x.par_chunks(in_len))
            .for_each_init(
                || p.buffer(ci),
                |buf, (yi, xi)| {
                    p.fill(xi, buf, map);
                    fwd.image(buf.get(), yi, false);
                },
            );
    };
    // SAFETY: the n images' outputs cover the buffer and `Forward::image` writes every element
    // of each.
    unsafe { filled_vec(n * out_len, fill) }.0
}

/// The backward pass of [`forward`]: from `dy` (N×Co×H×W) the weight gradient (Co×Ci×3×3,
/// zeros unless `want_dw`) and the input gradient as `dx` asks. Rayon over chunks of images,
/// one per thread.
///
/// # Panics
/// As [`forward`], and if `dy` does not hold N×Co×H×W floats.
pub(in crate::conv2d) fn backward(
    cpu: Avx2Fma,
    [x, w, dy]: [&[f32]; 3],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map<'_>>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    let want_dx = dx.wanted();
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    if let Some(empty) = checked_bwd("direct", [x, w, dy], [n, ci, co, h, wd], &dx) {
        return empty;
    }
    let p = Planes::new(cpu, h, wd);
    let bwd = Forward::new(&p, flip_kernel(w, [ci, co, 9]).into(), co, ci);
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut wg = WeightGrad::new(&p, ci, co);
        let mut xb = p.buffer(if want_dw { ci } else { 0 });
        let mut db = p.buffer(if want_dx { co } else { 0 });
        for (i, (xi, dyi)) in xc.chunks(in_len).zip(dyc.chunks(out_len)).enumerate() {
            if want_dw {
                p.fill(xi, &mut xb, map);
            }
            if want_dx {
                p.fill(dyi, &mut db, None);
                bwd.image(db.get(), &mut dxc[i * in_len..][..in_len], add);
            }
            if want_dw {
                wg.add_image(xb.get(), dyi);
            }
        }
        wg.into_dw()
    };
    // SAFETY: with a new input gradient `Forward::image` writes every element of each image of
    // a chunk; when adding, it stores only the sums of the floats it loads from the buffer and
    // the kernel's (initialised) accumulators.
    unsafe { dx.run_chunked(n, [in_len, out_len], [x, dy], chunk) }
}

#[cfg(target_arch = "x86_64")]
mod kernels {
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
    /// `src` holds `f.ci` channels' planes, so that every tap of every position vector reads
    /// inside it (as `Forward::image` checks), and `y` at least `f.co·H·W` floats, initialised
    /// if `ADD`. Every one of those `y` elements is written, since the stores tile the plane.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward_image<const ADD: bool>(
        _: Avx2Fma,
        f: &Forward<'_>,
        src: &[f32],
        y: &mut [MaybeUninit<f32>],
    ) {
        let full = f.co / NB * NB;
        let nvec = f.p.nvec;
        let tiled = nvec / V * V;
        let per = f.ci * 9;
        for o in (0..full).step_by(NB) {
            let wts = &f.packed[o * per..(o + NB) * per];
            for v in (0..tiled).step_by(V) {
                // SAFETY: this function's contract; o + NB ≤ Co, v + V ≤ nvec.
                unsafe { tile::<NB, V, ADD>(f, src, wts, (o, v), y) };
            }
            let rest = (o, tiled);
            // SAFETY: as above, tiled + the rest = nvec.
            unsafe {
                match nvec - tiled {
                    5 => tile::<NB, 5, ADD>(f, src, wts, rest, y),
                    4 => tile::<NB, 4, ADD>(f, src, wts, rest, y),
                    3 => tile::<NB, 3, ADD>(f, src, wts, rest, y),
                    2 => tile::<NB, 2, ADD>(f, src, wts, rest, y),
                    1 => tile::<NB, 1, ADD>(f, src, wts, rest, y),
                    0 => {}
                    r => unreachable!("{r} vectors left after tiles of {V}"),
                }
            }
        }
        for o in full..f.co {
            let wts = &f.w[o * per..(o + 1) * per];
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
    /// over (input channel, tap), then the real lanes packed and stored.
    ///
    /// # Safety
    /// As [`forward_image`], with `wts` the `ci·9·B` weights of the block (tap-major, `B` per
    /// tap), `o + B ≤ Co` and `v + K ≤ nvec`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const B: usize, const K: usize, const ADD: bool>(
        f: &Forward<'_>,
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
            let chan = base.wrapping_add(c * p.plane);
            for (t, &off) in p.offs.iter().enumerate() {
                let at = chan.wrapping_add(off);
                let k = (c * 9 + t) * B;
                let wb: [__m256; B] = std::array::from_fn(|b| {
                    // SAFETY: k + b < ci·9·B = wts.len().
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

    /// One image into the running sums: for each input channel and vector of 8 output
    /// channels, the nine taps' sums over every position of the image.
    ///
    /// The token is the proof that the CPU has AVX2 and FMA.
    ///
    /// # Safety
    /// `xb` holds `wg.ci` channels' planes, so that every tap of every real position reads
    /// inside it (as `WeightGrad::add_image` checks); `wg.dyt` holds this image's transposed
    /// `dy`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad(_: Avx2Fma, wg: &mut WeightGrad<'_>, xb: &[f32]) {
        for c in 0..wg.ci {
            for v in 0..wg.co8 / L {
                // SAFETY: this function's contract; c < Ci, 8·(v + 1) ≤ co8.
                unsafe { wg_tile(wg, xb, (v, c)) };
            }
        }
    }

    /// Output channels `8v..8v + 8`, input channel `c`, all nine taps: the running sums
    /// loaded, every position of the image added in order, the sums stored back. Two
    /// neighbouring positions share their middle columns of `x`: tap (ky, kx) of position
    /// p + 1 reads what tap (ky, kx + 1) of p reads, so each kernel row takes four `x` values
    /// for two positions; each sum still adds position p before p + 1.
    ///
    /// # Safety
    /// As [`weight_grad`], with `8·(v + 1) ≤ co8` and `c < Ci`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn wg_tile(wg: &mut WeightGrad<'_>, xb: &[f32], (v, c): (usize, usize)) {
        let p = wg.p;
        let co8 = wg.co8;
        let acc_ptr = wg.acc.get_mut().as_mut_ptr();
        let at = |t: usize| (c * 9 + t) * co8 + L * v;
        let mut acc: [__m256; 9] = std::array::from_fn(|t| {
            // SAFETY: entry (c, t) < (Ci, 9) and channels 8v + 8 ≤ co8: inside `acc`
            // (Ci·9·co8 floats).
            unsafe { _mm256_loadu_ps(acc_ptr.wrapping_add(at(t))) }
        });
        let dyt = wg.dyt.get().as_ptr().wrapping_add(L * v);
        let load = |q: usize| {
            // SAFETY: called for positions q < H·W; channels 8v + 8 ≤ co8: inside `dyt`.
            unsafe { _mm256_loadu_ps(dyt.wrapping_add(q * co8)) }
        };
        let x0 = xb.as_ptr().wrapping_add(c * p.plane + p.offs[0]);
        for r in 0..p.h {
            let mut col = 0;
            while col + 1 < p.w {
                let q = r * p.w + col;
                let (d0, d1) = (load(q), load(q + 1));
                let x = x0.wrapping_add(r * p.wp + col);
                for ky in 0..3 {
                    let row = x.wrapping_add(ky * p.wp);
                    let xv: [__m256; 4] = std::array::from_fn(|k| {
                        // SAFETY: columns kx ≤ 2 of position q + 1's row ky taps, which read
                        // inside `xb` (the contract).
                        _mm256_set1_ps(unsafe { *row.wrapping_add(k) })
                    });
                    for (d, shift) in [(d0, 0), (d1, 1)] {
                        for kx in 0..3 {
                            let a = &mut acc[ky * 3 + kx];
                            *a = _mm256_fmadd_ps(d, xv[kx + shift], *a);
                        }
                    }
                }
                col += 2;
            }
            for col in col..p.w {
                let d = load(r * p.w + col);
                let x = x0.wrapping_add(r * p.wp + col);
                for (t, a) in acc.iter_mut().enumerate() {
                    // SAFETY: a real position's taps read inside `xb` (the contract).
                    let xv = _mm256_set1_ps(unsafe { *x.wrapping_add(t / 3 * p.wp + t % 3) });
                    *a = _mm256_fmadd_ps(d, xv, *a);
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            // SAFETY: as the loads above.
            unsafe { _mm256_storeu_ps(acc_ptr.wrapping_add(at(t)), *a) };
        }
    }
}
