//! Winograd F(2×2, 3×3) for the 3×3 stride-1 "same" convolutions (padding 1) of f32 NCHW
//! images with AVX-512: forward, input gradient and weight gradient, in 16 multiplications per
//! 2×2 outputs and channel pair where the direct kernels (`super::direct`) do 36. Selected by
//! [`crate::Conv3x3::Winograd`]; the direct kernels stay the default (docs/design.md §6).
//!
//! The maths, for one 2×2 output tile `Y` of output channel `o`, its 4×4 input patch `d` of
//! channel `c` (rows and columns `2t − 1 … 2t + 2` of the zero-padded image) and the 3×3 kernel
//! `g = w[o, c]`:
//!
//! ```text
//! Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A          Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//!                                                G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//!                                                Aᵀ = [1 1 1 0; 0 1 −1 −1]
//! ```
//!
//! so a convolution is an input transform `V = Bᵀ d B` per tile and channel, 16 matrix
//! products `M_ξ = U_ξ · V_ξ` (`U = G g Gᵀ`, one product per entry ξ of the 4×4 transforms,
//! Co × Ci times Ci × tiles) and an output transform `Y = Aᵀ M A`. The input gradient is the
//! same convolution of `dy` with the flipped, transposed kernel (as for the direct kernels).
//! The weight gradient is `dw[o, c] = Gᵀ [ Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B) ] G`: the same input
//! transform, a transform `Z = A dY Aᵀ` of each output-gradient tile and 16 products
//! `S_ξ = Σ_tiles Z_ξ V_ξᵀ` summed over the tiles of every image in order.
//!
//! **Layout.** Each input plane is split into its even and odd rows of the zero-bordered
//! image ([`Tiles`]): rows of `wp` floats, W + 2 (even W) or W + 1 (odd W, see [`Tiles::wp`]).
//! Tile `t = ty·(wp/2) + tx` then reads row `i` of its patch at `2t + j` (`j < 4`) of the even
//! (`i` = 0, 2) or odd (`i` = 1, 3) rows, from row `ty + i/2`: sixteen consecutive tiles are
//! four loads and four even/odd lane selections per row, for any image width. For an even W
//! the one tile column past the image (`tx = W/2`) is computed and thrown away. `V` and `M` hold the
//! tiles of a *group* of images side by side (16 rows of channels × tiles, one per ξ), the
//! group chosen so the tiles fill whole vectors and the buffers stay in L2 ([`Tiles::new`]);
//! the output transform writes the even and odd output rows the same way and copies them into
//! the NCHW output.
//!
//! **Sums.** Each `M_ξ` entry sums its Ci terms in channel order; each `S_ξ` entry is a running
//! sum over the tiles of a group in order, added to the chunk's sum group by group; the chunks
//! (one per rayon thread, [`crate::reduction_chunks`]) are added in order. A result depends on
//! the inputs and the thread count only. Its error against the exact convolution is larger than
//! the direct kernels' (the transforms add and halve before the products); docs/perf.md gives
//! the measured bound per layer shape.
//!
//! The reference is [`super::conv2d_ref`] / [`super::conv2d_bwd_ref`].

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::direct::{checked_bwd, AlignedPlanes, Map};
use super::InputGrad;

use crate::tensor::filled_vec;
use crate::Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;

use kernel::{finish_weight_grad, transform_kernel, transform_kernel4};

/// The tiles of one H×W image and the buffers' sizes for a group of images.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiles {
    /// The side of an output tile: 2 for F(2×2, 3×3), 4 for F(4×4, 3×3).
    pub(super) m: usize,
    /// Entries of a transformed tile, `(m + 2)²`: the products per tile and channel pair.
    pub(super) xis: usize,
    /// Image rows.
    pub(super) h: usize,
    /// Image columns.
    pub(super) w: usize,
    /// Tile rows, ⌈H/m⌉.
    pub(super) th: usize,
    /// Floats per row of the row planes, `wp/m` tiles per tile row: `m·⌈(W + 1)/m⌉`, the
    /// smallest multiple of `m` above W. With `m = 2`: W + 2 for an even W (the last tile past
    /// the image), W + 1 for an odd W. Where `wp` is W + 1 (or more), the zero after the
    /// image's last column in the bordered image is the next row's first float (its left
    /// border) or a zero of the row itself, and a tile's last input column, the next row's
    /// second float, reaches only the outputs past the image.
    pub(super) wp: usize,
    /// Tiles of one image, `th·wp/m`.
    pub(super) per_image: usize,
    /// Images per group.
    pub(super) group: usize,
    /// Floats per row of `V` and `M`: a group's tiles and a vector of slack, an odd multiple of
    /// 16.
    pub(super) row: usize,
    /// Floats per input channel of an image's row planes: the rows `≡ 0 mod m` of the bordered
    /// image (`th + 1` of them), then those `≡ 1`, …, then slack for the last vector's reads;
    /// a multiple of 16.
    pub(super) plane: usize,
}

/// Bytes of `V` (or `M`) a group may take: they stay in L2 beside the other's.
const GROUP_BYTES: usize = 384 * 1024;

impl Tiles {
    /// The `m`×`m` tiles of an H×W image, grouped for `channels` (the larger of Ci, Co) and a
    /// batch of `n`: the group of at most 8 (and at most `n`) images whose tiles fill their
    /// vectors best within [`GROUP_BYTES`], the smallest of equals.
    pub(super) fn new(m: usize, h: usize, w: usize, channels: usize, n: usize) -> Self {
        // No tile column past the image where W + 1 is not a multiple of m: its right border
        // is the next row's left one (see `Tiles::wp`).
        let (th, wp) = (h.div_ceil(m), (w + 1).div_ceil(m) * m);
        let per_image = th * wp / m;
        let xis = (m + 2) * (m + 2);
        let bytes = |g: usize| xis * channels * g * per_image * 4;
        let fill = |g: usize| (g * per_image) as f64 / (g * per_image).next_multiple_of(16) as f64;
        let mut group = 1;
        for g in 2..=n.clamp(1, 8) {
            if bytes(g) <= GROUP_BYTES && fill(g) > fill(group) + 1e-9 {
                group = g;
            }
        }
        Self {
            m,
            xis,
            h,
            w,
            th,
            wp,
            per_image,
            group,
            row: {
                // An odd number of vectors: rows a power-of-two multiple of 64 bytes apart
                // (8 KiB for 128 floats and 16 channels) put the 16 or 36 rows one pass reads
                // into the same L1 set, which holds 8 lines.
                let row = (group * per_image).next_multiple_of(16) + 16;
                if (row / 16).is_multiple_of(2) {
                    row + 16
                } else {
                    row
                }
            },
            // The last vector's reads end (m + 2)·16 + 2 floats past the start of its row.
            plane: (m * (th + 1) * wp + 16 * m + 48).next_multiple_of(16),
        }
    }

    /// Floats per output row phase in `Work::out`: `th` rows of `wp` and a vector's slack.
    pub(super) fn out_phase(&self) -> usize {
        self.th * self.wp + 16 * self.m
    }

    /// Vectors of 16 tiles covering `images` images' tiles.
    fn vectors(&self, images: usize) -> usize {
        (images * self.per_image).div_ceil(16)
    }
}

/// `U = G g Gᵀ` of every kernel of `w` (Co × Ci × 3×3), laid out for the products.
struct Weights {
    /// Entries per transformed kernel, [`Tiles::xis`].
    xis: usize,
    co: usize,
    ci: usize,
    /// `U_ξ` in blocks of [`NB`] output channels: entry `((ξ·blocks + b)·Ci + c)·NB + k` is
    /// `U_ξ[b·NB + k, c]`, so one channel's NB weights sit together.
    packed: Vec<f32>,
    /// `U_ξ[o, c]` at `(ξ·Co + o)·Ci + c`, for the channels past the last full block.
    plain: Vec<f32>,
}

/// Output channels per register tile of the products.
const NB: usize = 8;

impl Weights {
    fn new(w: &[f32], ci: usize, co: usize, m: usize) -> Self {
        assert_eq!(w.len(), co * ci * 9, "winograd: weight length");
        let xis = (m + 2) * (m + 2);
        let mut plain = vec![0.0f32; xis * co * ci];
        for o in 0..co {
            for c in 0..ci {
                let g = &w[(o * ci + c) * 9..][..9];
                let mut put = |xi: usize, v: f32| plain[(xi * co + o) * ci + c] = v;
                match m {
                    2 => transform_kernel(g)
                        .into_iter()
                        .enumerate()
                        .for_each(|(xi, v)| put(xi, v)),
                    _ => transform_kernel4(g)
                        .into_iter()
                        .enumerate()
                        .for_each(|(xi, v)| put(xi, v)),
                }
            }
        }
        let blocks = co / NB;
        let mut packed = Vec::with_capacity(xis * blocks * ci * NB);
        for xi in 0..xis {
            for b in 0..blocks {
                for c in 0..ci {
                    packed.extend((0..NB).map(|k| plain[(xi * co + b * NB + k) * ci + c]));
                }
            }
        }
        Self {
            xis,
            co,
            ci,
            packed,
            plain,
        }
    }
}

/// One worker's buffers, for convolutions of up to `channels` channels on these tiles.
struct Work {
    /// A group's row planes, image-major then channel.
    planes: AlignedPlanes,
    /// `V_ξ`: `xis` × channels rows of `row` floats.
    v: AlignedPlanes,
    /// `M_ξ`: `xis` × channels rows of `row` floats.
    m: AlignedPlanes,
    /// Two output channels' output rows by phase (2 slots of `m` × [`Tiles::out_phase`]
    /// floats).
    out: AlignedPlanes,
    /// The weight gradient's: one image's `dy` transposed (H·W × co16), `Z_ξ` (`xis` × a
    /// group's tiles × co16) and the chunk's `S_ξ` (`xis` × Ci × co16).
    dyt: AlignedPlanes,
    z: AlignedPlanes,
    s: AlignedPlanes,
}

impl Work {
    /// Buffers for convolutions of up to `channels` channels; with `wg = Some((ci, co))` also
    /// for the weight gradient of Ci → Co.
    fn new(t: &Tiles, channels: usize, wg: Option<(usize, usize)>) -> Self {
        let (ci, co16) = wg.map_or((0, 0), |(ci, co)| (ci, co.next_multiple_of(16)));
        let (tiles, xis) = (t.group * t.per_image, t.xis);
        Self {
            planes: AlignedPlanes::zeroed(t.group * channels * t.plane),
            v: AlignedPlanes::zeroed(xis * channels * t.row),
            m: AlignedPlanes::zeroed(xis * channels * t.row),
            out: AlignedPlanes::zeroed(2 * t.m * t.out_phase()),
            dyt: AlignedPlanes::zeroed(t.h * t.w * co16),
            z: AlignedPlanes::zeroed(xis * tiles * co16),
            s: AlignedPlanes::zeroed(xis * ci * co16),
        }
    }
}

impl Work {
    /// `V` of a group's images `x` (`ci` channels each, read through `map` if one is given):
    /// copied into the row planes, then the input transform. Returns the number of images.
    fn transform_input(
        &mut self,
        cpu: Avx512,
        t: &Tiles,
        x: &[f32],
        ci: usize,
        map: Option<Map<'_>>,
    ) -> usize {
        let hw = t.h * t.w;
        let images = x.len() / (ci * hw);
        assert!(x.len() == images * ci * hw && images <= t.group);
        assert!(map.is_none_or(|m| m.scale.len() >= ci && m.shift.len() >= ci));
        assert!(self.v.len >= t.xis * ci * t.row && self.planes.len >= images * ci * t.plane);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `cpu` proves the CPU has AVX-512F; the lengths were just checked.
        unsafe {
            avx512::fill(cpu, t, x, (images * ci, ci), self.planes.get_mut(), map);
            let (planes, v) = (self.planes.get(), self.v.get_mut());
            match t.m {
                2 => avx512::input_transform(cpu, t, planes, images, ci, v),
                _ => avx512::input_transform4(cpu, t, planes, images, ci, v),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (cpu, map);
            unreachable!("no `Avx512` token exists off x86-64");
        }
        images
    }
}

/// One group's convolution: `x` its images (`images` × `ci` × H×W), read through `map` if one
/// is given, into `y` (`images` × `co` × H×W), every element written (with `add`, added to the
/// initialised value `y` holds).
#[allow(clippy::too_many_arguments)]
fn group_forward(
    cpu: Avx512,
    t: &Tiles,
    u: &Weights,
    x: &[f32],
    map: Option<Map<'_>>,
    y: &mut [MaybeUninit<f32>],
    add: bool,
    work: &mut Work,
) {
    let (ci, co, hw) = (u.ci, u.co, t.h * t.w);
    let images = work.transform_input(cpu, t, x, ci, map);
    assert!(y.len() == images * co * hw && u.xis == t.xis);
    assert!(work.m.len >= t.xis * co * t.row && work.out.len >= 2 * t.m * t.out_phase());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves the CPU has AVX-512F; the lengths were just checked, and the
    // buffers were sized by `Work::new` for these tiles.
    unsafe {
        let vecs = t.vectors(images);
        avx512::products(cpu, t, u, work.v.get(), vecs, work.m.get_mut());
        let (m, out) = (work.m.get(), work.out.get_mut());
        match t.m {
            2 => avx512::output_transform(cpu, t, m, images, co, out, y, add),
            _ => avx512::output_transform4(cpu, t, m, images, co, out, y, add),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cpu, y, add);
        unreachable!("no `Avx512` token exists off x86-64");
    }
}

/// One group's share of the weight gradient, added into `work.s`: `x` its images (read
/// through `map`), `dy` their output gradients.
#[allow(clippy::too_many_arguments)]
fn group_weight_grad(
    cpu: Avx512,
    t: &Tiles,
    (ci, co): (usize, usize),
    x: &[f32],
    map: Option<Map<'_>>,
    dy: &[f32],
    work: &mut Work,
) {
    let hw = t.h * t.w;
    let co16 = co.next_multiple_of(16);
    let images = work.transform_input(cpu, t, x, ci, map);
    assert!(dy.len() == images * co * hw);
    assert!(work.dyt.len >= hw * co16 && work.s.len >= t.xis * ci * co16);
    assert!(work.z.len >= t.xis * t.group * t.per_image * co16);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves the CPU has AVX-512F; the lengths were just checked.
    unsafe {
        for (i, dyi) in dy.chunks(co * hw).enumerate() {
            super::direct::transpose_dy(cpu, dyi, co, hw, co16, work.dyt.get_mut());
            let (dyt, z) = (work.dyt.get(), work.z.get_mut());
            match t.m {
                2 => avx512::gradient_transform(cpu, t, dyt, co16, i, z),
                _ => avx512::gradient_transform4(cpu, t, dyt, co16, i, z),
            }
        }
        let tiles = images * t.per_image;
        let z = work.z.get();
        avx512::weight_products(cpu, t, z, work.v.get(), (ci, co16, tiles), work.s.get_mut());
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (cpu, map);
        unreachable!("no `Avx512` token exists off x86-64");
    }
}

/// `y = w ⋆ x` for a batch (see [`super::direct::forward`] for the arguments), rayon over
/// groups of images.
pub(super) fn forward(
    cpu: Avx512,
    m: usize,
    x: &[f32],
    w: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map<'_>>,
) -> Vec<f32> {
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    assert_eq!(x.len(), n * in_len, "winograd: input length");
    let u = Weights::new(w, ci, co, m);
    if n == 0 || in_len == 0 || out_len == 0 {
        return vec![0.0; n * out_len];
    }
    let t = Tiles::new(m, h, wd, ci.max(co), n);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(t.group * out_len)
            .zip(x.par_chunks(t.group * in_len))
            .for_each_init(
                || Work::new(&t, ci.max(co), None),
                |work, (yg, xg)| group_forward(cpu, &t, &u, xg, map, yg, false, work),
            );
    };
    // SAFETY: the groups' outputs cover the buffer and `group_forward` writes every element of
    // each.
    unsafe { filled_vec(n * out_len, fill) }.0
}

/// The backward pass of [`forward`]: the input gradient as `dx` asks and the weight gradient
/// (zeros unless `want_dw`). Rayon over chunks of images, one per thread, each in groups.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    cpu: Avx512,
    m: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map<'_>>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    let want_dx = dx.wanted();
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    if let Some(empty) = checked_bwd("winograd", [x, w, dy], [n, ci, co, h, wd], &dx) {
        return empty;
    }
    let t = Tiles::new(m, h, wd, ci.max(co), n);
    let flipped = |w| Weights::new(&super::gemm_path::flip_kernel(w, [ci, co, 9]), co, ci, m);
    let wf = want_dx.then(|| flipped(w));
    let co16 = co.next_multiple_of(16);
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut work = Work::new(&t, ci.max(co), want_dw.then_some((ci, co)));
        let (xs, dys) = (xc.chunks(t.group * in_len), dyc.chunks(t.group * out_len));
        for (g, (xg, dyg)) in xs.zip(dys).enumerate() {
            if let Some(wf) = &wf {
                let dxg = &mut dxc[g * t.group * in_len..][..xg.len()];
                group_forward(cpu, &t, wf, dyg, None, dxg, add, &mut work);
            }
            if want_dw {
                group_weight_grad(cpu, &t, (ci, co), xg, map, dyg, &mut work);
            }
        }
        if want_dw {
            finish_weight_grad(work.s.get(), ci, co, co16, m)
        } else {
            vec![0.0; co * ci * 9]
        }
    };
    // SAFETY: with a new input gradient `group_forward` writes every element of each group of
    // a chunk; when adding, it stores only the sums of the floats it loads from the buffer and
    // its own (initialised) results.
    unsafe { dx.run_chunked(n, [in_len, out_len], [x, dy], chunk) }
}

#[cfg(test)]
mod tests {
    use super::Tiles;
    use crate::conv2d::{direct, InputGrad};
    use crate::Avx512;

    /// The kernels (both tile sizes) compute the direct kernels' convolution (to within
    /// rounding) by another summation: the two agree to 1e-5 of the largest value but not bit
    /// for bit, forward and backward. (The test
    /// binary `conv2d_winograd` checks them against the f64 reference on every layer shape.)
    #[test]
    fn winograd_and_direct_kernels_agree_but_sum_differently() {
        let Some(cpu) = Avx512::detect() else {
            eprintln!("skipped: no AVX-512");
            return;
        };
        let [n, ci, co, h, w] = [3, 16, 24, 8, 7];
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let x: Vec<f32> = (0..n * ci * h * w).map(val).collect();
        let k: Vec<f32> = (0..co * ci * 9).map(|i| val(3 * i + 1)).collect();
        let dy: Vec<f32> = (0..n * co * h * w).map(|i| val(5 * i + 2)).collect();
        let close = |a: &[f32], b: &[f32], what: &str| {
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(b)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
                / scale;
            assert!(err <= 1e-5, "{what}: {err:e}");
            assert!(a != b, "{what}: the same bits as the direct kernels");
        };
        let yd = direct::forward(cpu, &x, &k, [n, ci, co, h, w, 3, 1], None);
        let grads = (InputGrad::New, true);
        let (dxd, dwd) = direct::backward(cpu, &x, &k, &dy, [n, ci, co, h, w, 3, 1], None, grads);
        for m in [2, 4] {
            let y = super::forward(cpu, m, &x, &k, [n, ci, co, h, w], None);
            close(&y, &yd, &format!("F({m}×{m}) forward"));
            let grads = (InputGrad::New, true);
            let (dx, dw) = super::backward(cpu, m, &x, &k, &dy, [n, ci, co, h, w], None, grads);
            close(
                &dx.unwrap(),
                dxd.as_ref().unwrap(),
                &format!("F({m}×{m}) input gradient"),
            );
            close(&dw, &dwd, &format!("F({m}×{m}) weight gradient"));
        }
    }

    /// The groups the layers of the ResNets get: whole vectors where a few images make them,
    /// one image where one fills the buffers.
    #[test]
    fn groups_fill_their_vectors() {
        // 28×28, 16 channels: 14 tile rows of 15; one image (210 tiles, 224 lanes).
        let t = Tiles::new(2, 28, 28, 16, 128);
        assert_eq!((t.per_image, t.group), (210, 1));
        // 14×14, 32 channels: 7 × 8 = 56 tiles, two images fill 7 vectors.
        assert_eq!(Tiles::new(2, 14, 14, 32, 128).group, 2);
        // 8×8, 64 channels: 4 × 5 = 20 tiles, four images fill 5 vectors.
        assert_eq!(Tiles::new(2, 8, 8, 64, 128).group, 4);
        // 7×7: 4 × 4 tiles (no column past an odd side), one vector per image.
        let t = Tiles::new(2, 7, 7, 64, 128);
        assert_eq!((t.wp, t.per_image, t.group), (8, 16, 1));
        // Never more images than the batch has.
        assert_eq!(Tiles::new(2, 14, 14, 32, 1).group, 1);
    }
}
