//! The planes the direct kernels read: an image's channels copied into zero-bordered planes
//! (or, for stride 2, phase planes, see `super::strided`), the vectors of output positions over
//! them, and the taps' offsets.

use crate::simd::{prefetch, Level};
use crate::Avx512;

/// Floats of zeros after each plane: the last vector of positions may run up to 17 floats past
/// the bottom border row of a bordered plane with 16 lanes (see [`Grid`]), 9 with 8, less on
/// phase planes.
const SLACK: usize = 32;

/// The planes an image is copied into and the vectors of output positions over them.
///
/// Output position `q = r·wp + col` (`r < h`, `col < wp`) is a real output when `col < w`; the
/// positions are taken 16 at a time. A kernel tap reads its input at `q` plus a fixed offset
/// ([`Taps`]), so every tap of a run of 16 positions is one unaligned load.
///
/// A grid holds the [`Avx512`] token its kernels need: one is built only on a CPU with
/// AVX-512F, and so is everything built on one ([`super::Forward`], [`super::WeightGrad`]).
#[derive(Clone, Debug)]
pub(super) struct Grid {
    /// Proof that the CPU runs the AVX-512 code of [`Grid::fill`] and the kernels.
    pub(super) cpu: Avx512,
    /// Output rows.
    pub(super) h: usize,
    /// Output columns.
    pub(super) w: usize,
    /// Row length of a plane: W + 2 for bordered planes, Wo + 1 for phase planes.
    pub(super) wp: usize,
    /// Floats from the start of a plane's stride to the plane: position `wp + 1` of the plane
    /// (the centre tap of output 0 on a bordered plane) then sits on a 64-byte boundary.
    pub(super) lead: usize,
    /// Floats from one plane to the next: `lead` + the plane's rows·`wp` + [`SLACK`], a
    /// multiple of 16.
    pub(super) plane: usize,
    /// Vectors of 16 output positions covering the h·wp positions.
    pub(super) nvec: usize,
    /// Per vector: the lanes that are real outputs, the same number of low lanes, and where the
    /// first of them goes in an NCHW output plane.
    ///
    /// The stores tile the h·w output plane exactly: vector `v`'s real lanes, packed in lane
    /// order, are the outputs `at_v..at_v + count_v`, `at_0 = 0`, `at_{v+1} = at_v + count_v`,
    /// and the last ends at h·w (see [`stores_tile`]). The kernels write their outputs into
    /// uninitialised buffers on the strength of this: every element is stored exactly once.
    pub(super) stores: Vec<(u16, u16, usize)>,
}

/// Per vector of `lanes` positions (16 or 8) of an h×w output on planes with rows of
/// `wp ≥ w`: the real lanes, as many low lanes, and the NCHW index of the first real output
/// (see [`Grid::stores`]).
pub(super) fn stores(h: usize, w: usize, wp: usize, lanes: usize) -> Vec<(u16, u16, usize)> {
    let outs = h * wp;
    (0..outs.div_ceil(lanes))
        .map(|v| {
            let mut keep = 0u16;
            for l in 0..lanes {
                let q = lanes * v + l;
                if q < outs && q % wp < w {
                    keep |= 1 << l;
                }
            }
            let low = ((1u32 << keep.count_ones()) - 1) as u16;
            let q0 = lanes * v;
            (keep, low, q0 / wp * w + (q0 % wp).min(w))
        })
        .collect()
}

/// Whether `stores` (of an h×w output on rows of `wp`, vectors of `lanes`) tile the output
/// plane exactly: each vector's real lanes, in lane order, are real positions whose NCHW
/// indices run on from where the previous vector's ended (from 0), `low` has as many lanes,
/// and the last ends at h·w — so the packed stores write every output once and nothing past
/// the plane.
pub(super) fn stores_tile(stores: &[(u16, u16, usize)], [h, w, wp, lanes]: [usize; 4]) -> bool {
    let mut next = 0;
    for (v, &(keep, low, at)) in stores.iter().enumerate() {
        if at != next || u32::from(low) != (1u32 << keep.count_ones()) - 1 {
            return false;
        }
        for l in (0..lanes).filter(|l| keep >> l & 1 == 1) {
            let q = lanes * v + l;
            if q >= h * wp || q % wp >= w || q / wp * w + q % wp != next {
                return false;
            }
            next += 1;
        }
    }
    next == h * w
}

impl Grid {
    /// Bordered planes of an H×W image for a 3×3 "same" convolution: (H+2)×(W+2) with the
    /// image in the interior; the outputs are H×W.
    pub(super) fn same(cpu: Avx512, h: usize, w: usize) -> Self {
        Self::new(cpu, h, w, w + 2, h + 2)
    }

    /// Phase planes for a stride-2 convolution with Ho×Wo outputs: each input plane is split
    /// into four (even/odd rows × even/odd columns), each (Ho+1)×(Wo+1) with its elements
    /// shifted one row and one column in (a zero top row and left column); see [`Taps::phases`].
    pub(super) fn phases(cpu: Avx512, ho: usize, wo: usize) -> Self {
        Self::new(cpu, ho, wo, wo + 1, ho + 1)
    }

    fn new(cpu: Avx512, h: usize, w: usize, wp: usize, rows: usize) -> Self {
        let nvec = (h * wp).div_ceil(16);
        let stores = stores(h, w, wp, 16);
        debug_assert!(
            stores_tile(&stores, [h, w, wp, 16]),
            "the stores of a {h}×{w} grid (rows of {wp}) do not tile its outputs"
        );
        let PlaneLayout { lead, wp, plane } = PlaneLayout::new(wp, rows);
        Self {
            cpu,
            h,
            w,
            wp,
            lead,
            plane,
            nvec,
            stores,
        }
    }

    /// Where the planes' elements sit.
    pub(super) fn layout(&self) -> PlaneLayout {
        PlaneLayout {
            lead: self.lead,
            wp: self.wp,
            plane: self.plane,
        }
    }

    /// The nine taps of a 3×3 kernel on these planes as bordered planes, one per channel.
    pub(super) fn taps3x3(&self) -> Taps {
        Taps::same3x3(self.layout())
    }

    /// A zeroed buffer for `planes` bordered planes.
    pub(super) fn buffer(&self, planes: usize) -> AlignedPlanes {
        AlignedPlanes::zeroed(planes * self.plane)
    }

    /// Copies H×W planes from `src` into the interiors of the bordered planes of `dst`, each
    /// through `map` (plane p is channel p) when one is given; the borders keep their zeros.
    /// Rows are a few dozen floats: they are copied with vector loads and stores in line, not a
    /// `memcpy` call each.
    pub(super) fn fill(&self, src: &[f32], dst: &mut AlignedPlanes, map: Option<Map<'_>>) {
        let hw = self.h * self.w;
        let planes = src.len() / hw.max(1);
        let dst = dst.get_mut();
        assert!(src.len() == planes * hw && dst.len() >= planes * self.plane);
        assert!(map.is_none_or(|m| m.scale.len() >= planes && m.shift.len() >= planes));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `self.cpu` proves the CPU has AVX-512F; the lengths were just checked.
        unsafe {
            avx512::fill(self, src, dst, planes, map)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = dst;
            unreachable!("no `Avx512` token exists off x86-64");
        }
    }
}

/// A per-channel map applied to a convolution's input as it is copied into the planes:
/// `x·scale + shift`, then `max(·, 0)` if `relu` (see `crate::ChannelMap`).
#[derive(Clone, Copy, Debug)]
pub(in crate::conv2d) struct Map<'a> {
    pub(in crate::conv2d) scale: &'a [f32],
    pub(in crate::conv2d) shift: &'a [f32],
    pub(in crate::conv2d) relu: bool,
}

/// Zeroed floats starting on a 64-byte boundary (a `Vec<f32>` is only 4-byte aligned: the
/// buffer holds 15 floats more and starts at the first aligned one).
pub(in crate::conv2d) struct AlignedPlanes {
    pub(in crate::conv2d) buf: Vec<f32>,
    pub(in crate::conv2d) start: usize,
    pub(in crate::conv2d) len: usize,
}

impl AlignedPlanes {
    pub(in crate::conv2d) fn zeroed(len: usize) -> Self {
        let buf = vec![0.0f32; len + 15];
        let start = buf.as_ptr().align_offset(64).min(15);
        Self { buf, start, len }
    }
    pub(in crate::conv2d) fn get(&self) -> &[f32] {
        &self.buf[self.start..][..self.len]
    }
    pub(in crate::conv2d) fn get_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..][..self.len]
    }
}

/// The next image's inputs (one or two), asked into L2 a share at a time while the kernels
/// compute the current image, so that its copy into the planes reads L2 instead of waiting on
/// the last-level cache. Only a hint: nothing is read, and no result depends on it. (Asking
/// for the next image's output lines as well measured no faster.)
#[derive(Clone, Copy)]
pub(super) struct Ahead<'a>([&'a [f32]; 2]);

impl<'a> Ahead<'a> {
    /// Nothing to prefetch.
    pub(super) const NONE: Ahead<'static> = Ahead([&[], &[]]);

    /// Image `i + 1` of each `(images, floats per image)`; none after the last.
    pub(super) fn next(i: usize, inputs: [(&'a [f32], usize); 2]) -> Self {
        Ahead(inputs.map(|(images, per)| images.get((i + 1) * per..(i + 2) * per).unwrap_or(&[])))
    }

    /// Prefetches share `i` of `n` of the cache lines of both inputs.
    #[inline]
    pub(super) fn share(&self, i: usize, n: usize) {
        for part in self.0 {
            let lines = part.len().div_ceil(16);
            let (first, last) = (i * lines / n.max(1), (i + 1) * lines / n.max(1));
            let at = part.as_ptr().wrapping_add(16 * first);
            prefetch(at, 64 * (last - first), Level::L2);
        }
    }
}

/// Where a plane's elements sit, whatever the vector width of the kernels that read it: the
/// floats before the plane in its stride (`lead`), its row length (`wp`) and the floats from
/// one plane to the next (`plane`).
#[derive(Clone, Copy, Debug)]
pub(super) struct PlaneLayout {
    pub(super) lead: usize,
    pub(super) wp: usize,
    pub(super) plane: usize,
}

impl PlaneLayout {
    /// Planes of `rows` rows of `wp` floats: `lead` puts position `wp + 1` of each (the centre
    /// tap of output 0 on a bordered plane) on a 64-byte boundary, and `plane` is `lead` + the
    /// rows + [`SLACK`], a multiple of 16.
    pub(super) fn new(wp: usize, rows: usize) -> Self {
        let lead = (16 - (wp + 1) % 16) % 16;
        Self {
            lead,
            wp,
            plane: (lead + rows * wp + SLACK).next_multiple_of(16),
        }
    }
}

/// Where a kernel's taps read: input channel `c`'s planes start `c·stride` floats into an
/// image's buffer, and tap `t` of output position `q` reads the float `q + offs[t]` from there.
#[derive(Clone, Debug)]
pub(super) struct Taps {
    pub(super) stride: usize,
    pub(super) offs: Vec<usize>,
}

impl Taps {
    /// The nine taps of a 3×3 kernel on bordered planes laid out as `l`, one per channel.
    pub(super) fn same3x3(l: PlaneLayout) -> Self {
        Taps {
            stride: l.plane,
            offs: (0..9).map(|t| l.lead + t / 3 * l.wp + t % 3).collect(),
        }
    }

    /// Whether these are [`Taps::same3x3`]'s pattern on rows of `wp`: then two neighbouring
    /// positions share their middle columns of `x`, which the weight gradients slide over.
    pub(super) fn is_3x3_same(&self, wp: usize) -> bool {
        self.offs.len() == 9 && (0..9).all(|t| self.offs[t] == self.offs[0] + t / 3 * wp + t % 3)
    }
}

/// `$run!(T)` with `$taps`, the number of a forward kernel's taps, as a constant: 9 (3×3), 4,
/// 2, 1 or 0 (the stride-2 input gradient's phases; 1 also the 1×1 kernels), the counts
/// [`Taps::same3x3`], [`Taps::phases`] and the input gradient's phases give.
macro_rules! with_tap_count {
    ($taps:expr, $run:ident) => {
        match $taps {
            9 => $run!(9),
            4 => $run!(4),
            2 => $run!(2),
            1 => $run!(1),
            0 => $run!(0),
            n => unreachable!("no kernel has {n} taps"),
        }
    };
}
pub(super) use with_tap_count;

#[cfg(target_arch = "x86_64")]
pub(super) use avx512::channel_map;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Grid, Map};

    /// Channel `p`'s map as a function of 16 floats: `x·scale + shift` as two roundings and
    /// `max(v, 0)` (0 for NaN and −0), the bits of `crate::channel_map`.
    ///
    /// # Panics
    /// If the map has no channel `p`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in crate::conv2d) fn channel_map(m: Map<'_>, p: usize) -> impl Fn(__m512) -> __m512 {
        let (s, t) = (_mm512_set1_ps(m.scale[p]), _mm512_set1_ps(m.shift[p]));
        move |v: __m512| {
            let v = _mm512_add_ps(_mm512_mul_ps(v, s), t);
            if m.relu {
                _mm512_max_ps(v, _mm512_setzero_ps())
            } else {
                v
            }
        }
    }

    /// See [`Grid::fill`]; no CPU check is needed, `g` holds the [`crate::Avx512`] token.
    ///
    /// # Safety
    /// `src` holds `planes` H×W planes and `dst` `planes` bordered planes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fill(
        g: &Grid,
        src: &[f32],
        dst: &mut [f32],
        planes: usize,
        map: Option<Map<'_>>,
    ) {
        let (hw, w) = (g.h * g.w, g.w);
        for p in 0..planes {
            let affine = map.map(|m| channel_map(m, p));
            for r in 0..g.h {
                let from = src.as_ptr().wrapping_add(p * hw + r * w);
                let to = dst
                    .as_mut_ptr()
                    .wrapping_add(p * g.plane + g.lead + (r + 1) * g.wp + 1);
                for k in (0..w).step_by(16) {
                    let m = ((1u32 << (w - k).min(16)) - 1) as __mmask16;
                    // SAFETY: the mask keeps the lanes inside row r of plane p in both `src`
                    // and the interior of bordered plane p in `dst`.
                    unsafe {
                        let mut v = _mm512_maskz_loadu_ps(m, from.wrapping_add(k));
                        if let Some(f) = &affine {
                            v = f(v);
                        }
                        _mm512_mask_storeu_ps(to.wrapping_add(k), m, v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{stores, stores_tile};

    /// The packed stores of every grid shape the kernels build (bordered planes: rows of w + 2;
    /// phase planes: rows of w + 1; vectors of 16 and of 8 lanes) write each output of the
    /// plane exactly once, and a broken table (a vector's start moved, a lane dropped) is
    /// caught.
    #[test]
    fn stores_tile_the_output_plane() {
        for lanes in [16, 8] {
            for h in 1..=40 {
                for w in 1..=40 {
                    for wp in [w + 1, w + 2] {
                        let dims = [h, w, wp, lanes];
                        let s = stores(h, w, wp, lanes);
                        assert!(
                            stores_tile(&s, dims),
                            "{h}×{w}, rows of {wp}, {lanes} lanes"
                        );
                        let mut moved = s.clone();
                        moved[s.len() - 1].2 += 1;
                        assert!(!stores_tile(&moved, dims), "{h}×{w}: moved start");
                        let mut dropped = s.clone();
                        let (keep, _, at) = dropped[0];
                        let keep = keep & (keep - 1);
                        dropped[0] = (keep, ((1u32 << keep.count_ones()) - 1) as u16, at);
                        assert!(!stores_tile(&dropped, dims), "{h}×{w}: dropped lane");
                    }
                }
            }
        }
    }
}
