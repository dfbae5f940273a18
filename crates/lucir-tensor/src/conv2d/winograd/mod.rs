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

use super::direct::{AlignedPlanes, Map};
use super::{chunk_slices, sum_in_order, InputGrad};
use crate::tensor::filled_vec;
use crate::Avx512;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// The tiles of one H×W image and the buffers' sizes for a group of images.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tiles {
    /// Image rows.
    pub(super) h: usize,
    /// Image columns.
    pub(super) w: usize,
    /// Tile rows, ⌈H/2⌉.
    pub(super) th: usize,
    /// Floats per row of the even and odd row planes, `wp/2` tiles per tile row: W + 2 for an
    /// even W (the last tile past the image), W + 1 for an odd W (the zero after the image's
    /// last column is the next row's first, the left border; the last tile's fourth column,
    /// the next row's second float, reaches only the output past the image).
    pub(super) wp: usize,
    /// Tiles of one image, `th·wp/2`.
    pub(super) per_image: usize,
    /// Images per group.
    pub(super) group: usize,
    /// Floats per row of `V` and `M`: a group's tiles and a vector of slack, a multiple of 16.
    pub(super) row: usize,
    /// Floats per input channel of an image's row planes: the even rows (`th + 1` of them),
    /// then the odd rows, then slack for the last vector's reads; a multiple of 16.
    pub(super) plane: usize,
}

/// Bytes of `V` (or `M`) a group may take: they stay in L2 beside the other's.
const GROUP_BYTES: usize = 384 * 1024;

impl Tiles {
    /// The tiles of an H×W image, grouped for `channels` (the larger of Ci, Co) and a batch of
    /// `n`: the group of at most 8 (and at most `n`) images whose tiles fill their vectors best
    /// within [`GROUP_BYTES`], the smallest of equals.
    pub(super) fn new(h: usize, w: usize, channels: usize, n: usize) -> Self {
        // An odd W needs no tile column past the image: its right border is the next row's
        // left one (see `Tiles::wp`).
        let (th, wp) = (h.div_ceil(2), if w % 2 == 1 { w + 1 } else { w + 2 });
        let per_image = th * wp / 2;
        let bytes = |g: usize| 16 * channels * g * per_image * 4;
        let fill = |g: usize| (g * per_image) as f64 / (g * per_image).next_multiple_of(16) as f64;
        let mut group = 1;
        for g in 2..=n.clamp(1, 8) {
            if bytes(g) <= GROUP_BYTES && fill(g) > fill(group) + 1e-9 {
                group = g;
            }
        }
        Self {
            h,
            w,
            th,
            wp,
            per_image,
            group,
            row: (group * per_image).next_multiple_of(16) + 16,
            plane: (2 * (th + 1) * wp + 48).next_multiple_of(16),
        }
    }

    /// Vectors of 16 tiles covering `images` images' tiles.
    fn vectors(&self, images: usize) -> usize {
        (images * self.per_image).div_ceil(16)
    }
}

/// `U = G g Gᵀ` of every kernel of `w` (Co × Ci × 3×3), laid out for the products.
struct Weights {
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

/// `G g Gᵀ` of a 3×3 kernel (row-major), row-major 4×4.
fn transform_kernel(g: &[f32]) -> [f32; 16] {
    // G g: rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2 of the kernel's rows.
    let mut gg = [[0.0f32; 3]; 4];
    for k in 0..3 {
        let (a, b, c) = (g[k], g[3 + k], g[6 + k]);
        gg[0][k] = a;
        gg[1][k] = (a + b + c) * 0.5;
        gg[2][k] = (a - b + c) * 0.5;
        gg[3][k] = c;
    }
    let mut u = [0.0f32; 16];
    for (i, r) in gg.iter().enumerate() {
        let (a, b, c) = (r[0], r[1], r[2]);
        u[4 * i] = a;
        u[4 * i + 1] = (a + b + c) * 0.5;
        u[4 * i + 2] = (a - b + c) * 0.5;
        u[4 * i + 3] = c;
    }
    u
}

impl Weights {
    fn new(w: &[f32], ci: usize, co: usize) -> Self {
        assert_eq!(w.len(), co * ci * 9, "winograd: weight length");
        let mut plain = vec![0.0f32; 16 * co * ci];
        for o in 0..co {
            for c in 0..ci {
                let u = transform_kernel(&w[(o * ci + c) * 9..][..9]);
                for (xi, v) in u.into_iter().enumerate() {
                    plain[(xi * co + o) * ci + c] = v;
                }
            }
        }
        let blocks = co / NB;
        let mut packed = Vec::with_capacity(16 * blocks * ci * NB);
        for xi in 0..16 {
            for b in 0..blocks {
                for c in 0..ci {
                    packed.extend((0..NB).map(|k| plain[(xi * co + b * NB + k) * ci + c]));
                }
            }
        }
        Self {
            co,
            ci,
            packed,
            plain,
        }
    }
}

/// `dw[o, c] = Gᵀ S G` of the summed products, `S_ξ[c, o]` at `(ξ·Ci + c)·co16 + o`: Co × Ci
/// × 3×3.
fn finish_weight_grad(s: &[f32], ci: usize, co: usize, co16: usize) -> Vec<f32> {
    let mut dw = vec![0.0f32; co * ci * 9];
    for o in 0..co {
        for c in 0..ci {
            let m: [f32; 16] = std::array::from_fn(|xi| s[(xi * ci + c) * co16 + o]);
            // Gᵀ m: rows m0 + (m1 + m2)/2, (m1 − m2)/2, (m1 + m2)/2 + m3 of m's rows.
            let mut t = [[0.0f32; 4]; 3];
            for j in 0..4 {
                let (a, b, c, d) = (m[j], m[4 + j], m[8 + j], m[12 + j]);
                t[0][j] = a + (b + c) * 0.5;
                t[1][j] = (b - c) * 0.5;
                t[2][j] = (b + c) * 0.5 + d;
            }
            let out = &mut dw[(o * ci + c) * 9..][..9];
            for (k, r) in t.iter().enumerate() {
                let (a, b, c, d) = (r[0], r[1], r[2], r[3]);
                out[3 * k] = a + (b + c) * 0.5;
                out[3 * k + 1] = (b - c) * 0.5;
                out[3 * k + 2] = (b + c) * 0.5 + d;
            }
        }
    }
    dw
}

/// One worker's buffers, for convolutions of up to `channels` channels on these tiles.
struct Work {
    /// A group's row planes, image-major then channel.
    planes: AlignedPlanes,
    /// `V_ξ`: 16 × channels rows of `row` floats.
    v: AlignedPlanes,
    /// `M_ξ`: 16 × channels rows of `row` floats.
    m: AlignedPlanes,
    /// One output channel's even and odd output rows, `2 × th·wp` floats and slack.
    out: AlignedPlanes,
    /// The weight gradient's: one image's `dy` transposed (H·W × co16), `Z_ξ` (16 × a group's
    /// tiles × co16) and the chunk's `S_ξ` (16 × Ci × co16).
    dyt: AlignedPlanes,
    z: AlignedPlanes,
    s: AlignedPlanes,
}

impl Work {
    /// Buffers for convolutions of up to `channels` channels; with `wg = Some((ci, co))` also
    /// for the weight gradient of Ci → Co.
    fn new(t: &Tiles, channels: usize, wg: Option<(usize, usize)>) -> Self {
        let (ci, co16) = wg.map_or((0, 0), |(ci, co)| (ci, co.next_multiple_of(16)));
        let tiles = t.group * t.per_image;
        Self {
            planes: AlignedPlanes::zeroed(t.group * channels * t.plane),
            v: AlignedPlanes::zeroed(16 * channels * t.row),
            m: AlignedPlanes::zeroed(16 * channels * t.row),
            out: AlignedPlanes::zeroed(2 * (t.th * t.wp + 32)),
            dyt: AlignedPlanes::zeroed(t.h * t.w * co16),
            z: AlignedPlanes::zeroed(16 * tiles * co16),
            s: AlignedPlanes::zeroed(16 * ci * co16),
        }
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
    let images = x.len() / (ci * hw);
    assert!(x.len() == images * ci * hw && y.len() == images * co * hw && images <= t.group);
    assert!(map.is_none_or(|m| m.scale.len() >= ci && m.shift.len() >= ci));
    assert!(work.v.len >= 16 * ci * t.row && work.m.len >= 16 * co * t.row);
    assert!(work.planes.len >= images * ci * t.plane);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves the CPU has AVX-512F; the lengths were just checked, and the
    // buffers were sized by `Work::new` for these tiles.
    unsafe {
        avx512::fill(cpu, t, x, (images * ci, ci), work.planes.get_mut(), map);
        avx512::input_transform(cpu, t, work.planes.get(), images, ci, work.v.get_mut());
        let vecs = t.vectors(images);
        avx512::products(cpu, t, u, work.v.get(), vecs, work.m.get_mut());
        avx512::output_transform(cpu, t, work.m.get(), images, co, work.out.get_mut(), y, add);
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
    let images = x.len() / (ci * hw);
    let co16 = co.next_multiple_of(16);
    assert!(x.len() == images * ci * hw && dy.len() == images * co * hw && images <= t.group);
    assert!(map.is_none_or(|m| m.scale.len() >= ci && m.shift.len() >= ci));
    assert!(work.v.len >= 16 * ci * t.row && work.planes.len >= images * ci * t.plane);
    assert!(work.dyt.len >= hw * co16 && work.s.len >= 16 * ci * co16);
    assert!(work.z.len >= 16 * t.group * t.per_image * co16);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cpu` proves the CPU has AVX-512F; the lengths were just checked.
    unsafe {
        avx512::fill(cpu, t, x, (images * ci, ci), work.planes.get_mut(), map);
        avx512::input_transform(cpu, t, work.planes.get(), images, ci, work.v.get_mut());
        for (i, dyi) in dy.chunks(co * hw).enumerate() {
            super::direct::transpose_dy(cpu, dyi, co, hw, co16, work.dyt.get_mut());
            avx512::gradient_transform(cpu, t, work.dyt.get(), co16, i, work.z.get_mut());
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
    x: &[f32],
    w: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map<'_>>,
) -> Vec<f32> {
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    assert_eq!(x.len(), n * in_len, "winograd: input length");
    let u = Weights::new(w, ci, co);
    if n == 0 || in_len == 0 || out_len == 0 {
        return vec![0.0; n * out_len];
    }
    let t = Tiles::new(h, wd, ci.max(co), n);
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
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map<'_>>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    let want_dx = dx.wanted();
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    assert_eq!(x.len(), n * in_len, "winograd: input length");
    assert_eq!(w.len(), co * ci * 9, "winograd: weight length");
    assert_eq!(dy.len(), n * out_len, "winograd: gradient length");
    if n == 0 || in_len == 0 || out_len == 0 {
        return (
            matches!(dx, InputGrad::New).then(|| vec![0.0; n * in_len]),
            vec![0.0; co * ci * 9],
        );
    }
    let t = Tiles::new(h, wd, ci.max(co), n);
    let wf = want_dx.then(|| Weights::new(&super::gemm_path::flip_kernel(w, [ci, co, 9]), co, ci));
    let co16 = co.next_multiple_of(16);
    let per = n.div_ceil(crate::reduction_chunks(n));
    let fill = |dx: &mut [MaybeUninit<f32>], add: bool| {
        let partials: Vec<Vec<f32>> = chunk_slices(dx, per * in_len, n.div_ceil(per))
            .into_par_iter()
            .zip(x.par_chunks(per * in_len))
            .zip(dy.par_chunks(per * out_len))
            .map(|((dxc, xc), dyc)| {
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
                    finish_weight_grad(work.s.get(), ci, co, co16)
                } else {
                    vec![0.0; co * ci * 9]
                }
            })
            .collect();
        sum_in_order(partials)
    };
    // SAFETY: with a new input gradient the chunks cover all n images and `group_forward`
    // writes every element of each group's; when adding, it stores only the sums of the floats
    // it loads from the buffer and its own (initialised) results.
    unsafe { dx.run(n * in_len, fill) }
}

#[cfg(test)]
mod tests {
    use super::{finish_weight_grad, transform_kernel, Tiles};
    use crate::conv2d::{direct, InputGrad};
    use crate::Avx512;

    /// The kernels compute the direct kernels' convolution (to within rounding) by another
    /// summation: the two agree to 1e-5 but not bit for bit, forward and backward. (The test
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
            assert!(
                a.iter()
                    .zip(b)
                    .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())),
                "{what}"
            );
            assert!(a != b, "{what}: the same bits as the direct kernels");
        };
        let y = super::forward(cpu, &x, &k, [n, ci, co, h, w], None);
        let yd = direct::forward(cpu, &x, &k, [n, ci, co, h, w, 3, 1], None);
        close(&y, &yd, "forward");
        let (dx, dw) = super::backward(
            cpu,
            &x,
            &k,
            &dy,
            [n, ci, co, h, w],
            None,
            (InputGrad::New, true),
        );
        let grads = (InputGrad::New, true);
        let (dxd, dwd) = direct::backward(cpu, &x, &k, &dy, [n, ci, co, h, w, 3, 1], None, grads);
        close(&dx.unwrap(), &dxd.unwrap(), "input gradient");
        close(&dw, &dwd, "weight gradient");
    }

    /// The groups the layers of the ResNets get: whole vectors where a few images make them,
    /// one image where one fills the buffers.
    #[test]
    fn groups_fill_their_vectors() {
        // 28×28, 16 channels: 14 tile rows of 15; one image (210 tiles, 224 lanes).
        let t = Tiles::new(28, 28, 16, 128);
        assert_eq!((t.per_image, t.group), (210, 1));
        // 14×14, 32 channels: 7 × 8 = 56 tiles, two images fill 7 vectors.
        assert_eq!(Tiles::new(14, 14, 32, 128).group, 2);
        // 8×8, 64 channels: 4 × 5 = 20 tiles, four images fill 5 vectors.
        assert_eq!(Tiles::new(8, 8, 64, 128).group, 4);
        // 7×7: 4 × 4 tiles (no column past an odd side), one vector per image.
        let t = Tiles::new(7, 7, 64, 128);
        assert_eq!((t.wp, t.per_image, t.group), (8, 16, 1));
        // Never more images than the batch has.
        assert_eq!(Tiles::new(14, 14, 32, 1).group, 1);
    }

    /// `G g Gᵀ` then `Gᵀ (·) G` of a one-hot 4×4 matrix are the transforms' definitions, checked
    /// entry by entry against the matrices written out.
    #[test]
    fn kernel_transforms_match_their_matrices() {
        let gm = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let g: Vec<f32> = (0..9).map(|i| (i as f32 * 0.37).sin()).collect();
        let u = transform_kernel(&g);
        for i in 0..4 {
            for j in 0..4 {
                let mut want = 0.0f64;
                for k in 0..3 {
                    for l in 0..3 {
                        want += gm[i][k] * f64::from(g[3 * k + l]) * gm[j][l];
                    }
                }
                assert!((f64::from(u[4 * i + j]) - want).abs() < 1e-6, "U[{i}][{j}]");
            }
        }
        let s: Vec<f32> = (0..16).map(|i| (i as f32 * 0.61).cos()).collect();
        let dw = finish_weight_grad(&s, 1, 1, 1);
        for k in 0..3 {
            for l in 0..3 {
                let mut want = 0.0f64;
                for i in 0..4 {
                    for j in 0..4 {
                        want += gm[i][k] * f64::from(s[4 * i + j]) * gm[j][l];
                    }
                }
                assert!(
                    (f64::from(dw[3 * k + l]) - want).abs() < 1e-6,
                    "dw[{k}][{l}]"
                );
            }
        }
    }
}
