//! The direct kernels on CPUs with AVX2 and FMA but without AVX-512 (AMD's Zen 3 and earlier,
//! Intel's client cores): the parent module's planes, taps and tiles with vectors of 8 lanes,
//! for the 3×3 stride-1 layers here and the stride-2 ones (3×3 and 1×1, on phase planes) in
//! [`strided`].
//!
//! - **Forward and input gradient**: a tile of [`NB`] = 2 output channels × [`V`] = 6 vectors
//!   (48 positions) in 12 of the 16 ymm registers; per input channel and tap, 2 broadcast
//!   weights and 6 input loads, each used for both channels, feed 12 FMAs (15 registers live;
//!   4×3 tiles need all 16 and spill, 4×2 and 3×4 measured no faster). The AVX-512 kernels
//!   pack each vector's real lanes with `vcompressps`; here a lane permutation (`vpermps`,
//!   the table made once per plane shape) and a masked store do the same.
//! - **Weight gradient**: 8 output channels in the lanes; one input channel's nine taps (9
//!   accumulators), or eight input channels of a 1×1 kernel; `dy` is transposed to rows of Co
//!   (rounded up to 8) floats per position by plain loops.
//!
//! Every output sums the same terms in the same order, with the same fused multiply-adds, as
//! the AVX-512 kernels (input channel, then tap; a weight gradient entry one running sum over
//! the positions of the images in order, the chunks added in order), so the two give the same
//! bits; the tests (`conv2d_order`, `conv2d_order_strided`) hold both to one scalar model of
//! that order. Winograd and the bf16 products need AVX-512.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::grid::{stores, stores_tile, with_tap_count, PlaneLayout};
use super::weight_grad::unpack_sums;
use super::{checked_bwd, forward_images, pack, AlignedPlanes, Map, Taps};
use crate::conv2d::gemm_path::flip_kernel;
use crate::conv2d::InputGrad;
use crate::simd::affine;
use crate::Avx2Fma;

/// Lanes of a vector.
const L: usize = 8;

/// Output channels per forward tile.
const NB: usize = 2;

/// Vectors of [`L`] positions per forward tile.
const V: usize = 6;

mod strided;

pub(in crate::conv2d) use strided::{backward as strided_backward, forward as strided_forward};

/// Where one vector's real lanes go: the permutation that packs them into the low lanes, the
/// mask of that many low lanes (all bits set in a lane that is stored) and the NCHW index of
/// the first.
#[derive(Clone, Copy, Debug)]
struct Store {
    perm: [i32; L],
    low: [i32; L],
    at: usize,
}

/// The planes of an image and the vectors of 8 output positions over them, as the parent
/// module's `Grid` with 8 lanes: bordered planes for a 3×3 "same" convolution
/// ([`Planes::same`]) or phase planes for a stride-2 one ([`Planes::phases`]). Holds the
/// [`Avx2Fma`] token its kernels need.
struct Planes {
    cpu: Avx2Fma,
    /// Output rows.
    h: usize,
    /// Output columns.
    w: usize,
    /// Row length: W + 2 for bordered planes, Wo + 1 for phase planes.
    wp: usize,
    /// Floats from the start of a plane's stride to the plane (position `wp + 1` then sits on a
    /// 64-byte boundary).
    lead: usize,
    /// Floats from one plane to the next, a multiple of 16.
    plane: usize,
    /// Vectors of 8 output positions covering the h·wp positions.
    nvec: usize,
    /// Per vector, where its real lanes go; they tile the h×w output plane exactly (checked
    /// with `stores_tile`), so every output is written once.
    stores: Vec<Store>,
}

impl Planes {
    /// Bordered planes of an H×W image, (H+2)×(W+2); the outputs are H×W.
    fn same(cpu: Avx2Fma, h: usize, w: usize) -> Self {
        Self::new(cpu, h, w, w + 2, h + 2)
    }

    /// Phase planes of a stride-2 convolution with Ho×Wo outputs, (Ho+1)×(Wo+1) each (as the
    /// parent module's `Grid::phases`).
    fn phases(cpu: Avx2Fma, ho: usize, wo: usize) -> Self {
        Self::new(cpu, ho, wo, wo + 1, ho + 1)
    }

    fn new(cpu: Avx2Fma, h: usize, w: usize, wp: usize, rows: usize) -> Self {
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
        let PlaneLayout { lead, wp, plane } = PlaneLayout::new(wp, rows);
        Self {
            cpu,
            h,
            w,
            wp,
            lead,
            plane,
            nvec: (h * wp).div_ceil(L),
            stores,
        }
    }

    /// Where the planes' elements sit.
    fn layout(&self) -> PlaneLayout {
        PlaneLayout {
            lead: self.lead,
            wp: self.wp,
            plane: self.plane,
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

/// The forward kernel's view of one convolution: `ci` input channels' planes, read at `taps`,
/// → `co` NCHW output planes, `w` Co × Ci × taps (packed for the tiles as the AVX-512 kernel's,
/// [`NB`] channels per block).
struct Forward<'a> {
    p: &'a Planes,
    taps: Taps,
    packed: Vec<f32>,
    w: Cow<'a, [f32]>,
    ci: usize,
    co: usize,
}

impl<'a> Forward<'a> {
    fn new(p: &'a Planes, taps: Taps, w: Cow<'a, [f32]>, ci: usize, co: usize) -> Self {
        let t = taps.offs.len();
        assert_eq!(w.len(), co * ci * t, "direct kernel: weight length");
        let packed = pack::<NB>(&w, ci, co, t);
        Self {
            p,
            taps,
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
        let offs = &self.taps.offs;
        // The furthest float a tile reads: its last position plus the largest offset.
        let reach = L * p.nvec + offs.iter().max().unwrap_or(&0);
        assert!(
            (self.ci == 0 || src.len() >= (self.ci - 1) * self.taps.stride + reach)
                && y.len() >= self.co * p.h * p.w
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the planes' `Avx2Fma` token proves the CPU has AVX2 and FMA; the lengths were
        // just checked.
        unsafe {
            macro_rules! run {
                ($t:literal) => {
                    match add {
                        false => kernels::forward_image::<$t, false>(
                            p.cpu,
                            self,
                            offs[..].try_into().unwrap(),
                            src,
                            y,
                        ),
                        true => kernels::forward_image::<$t, true>(
                            p.cpu,
                            self,
                            offs[..].try_into().unwrap(),
                            src,
                            y,
                        ),
                    }
                };
            }
            with_tap_count!(offs.len(), run)
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
    taps: &'a Taps,
    /// Whether the taps are a 3×3 kernel's on bordered planes: then two neighbouring positions
    /// share their middle columns of `x` (see `kernels::wg_tile`).
    slide: bool,
    ci: usize,
    co: usize,
    /// Co rounded up to a multiple of 8.
    co8: usize,
    /// The current image's `dy`, H·W rows of `co8` floats (the extra channels zero).
    dyt: AlignedPlanes,
    /// `acc[(c·T + tap)·co8 + o]` (`T` taps), the running sums.
    acc: AlignedPlanes,
}

impl<'a> WeightGrad<'a> {
    fn new(p: &'a Planes, taps: &'a Taps, ci: usize, co: usize) -> Self {
        let co8 = co.next_multiple_of(L);
        Self {
            p,
            taps,
            slide: taps.is_3x3_same(p.wp),
            ci,
            co,
            co8,
            dyt: AlignedPlanes::zeroed(p.h * p.w * co8),
            acc: AlignedPlanes::zeroed(ci * taps.offs.len() * co8),
        }
    }

    /// Adds one image: `xb` its `ci` channels' bordered planes, `dy` its Co×H×W gradient.
    fn add_image(&mut self, xb: &[f32], dy: &[f32]) {
        let p = self.p;
        let hw = p.h * p.w;
        let offs = &self.taps.offs;
        // The furthest float read: the last real position plus the largest offset.
        let reach = (p.h.max(1) - 1) * p.wp + p.w + offs.iter().max().unwrap_or(&0);
        assert!(
            (self.ci == 0 || xb.len() >= (self.ci - 1) * self.taps.stride + reach)
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
            match offs.len() {
                9 => kernels::weight_grad::<9>(p.cpu, self, xb),
                1 => kernels::weight_grad::<1>(p.cpu, self, xb),
                n => unreachable!("no kernel has {n} taps"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = xb;
            unreachable!("no `Avx2Fma` token exists off x86-64");
        }
    }

    /// The sums as a Co×Ci×taps weight gradient.
    fn into_dw(self) -> Vec<f32> {
        unpack_sums(
            self.acc.get(),
            self.co,
            self.ci * self.taps.offs.len(),
            self.co8,
        )
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
    let p = Planes::same(cpu, h, wd);
    let fwd = Forward::new(&p, Taps::same3x3(p.layout()), w.into(), ci, co);
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    let image = |buf: &mut AlignedPlanes, _, xi: &[f32], yi: &mut [MaybeUninit<f32>]| {
        p.fill(xi, buf, map);
        fwd.image(buf.get(), yi, false);
    };
    // SAFETY: `Forward::image` writes every element of each image's output.
    unsafe { forward_images(x, [n, in_len, out_len], || p.buffer(ci), image) }
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
    let p = Planes::same(cpu, h, wd);
    let taps = Taps::same3x3(p.layout());
    let bwd = Forward::new(&p, taps.clone(), flip_kernel(w, [ci, co, 9]).into(), co, ci);
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut wg = WeightGrad::new(&p, &taps, ci, co);
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
mod kernels;
