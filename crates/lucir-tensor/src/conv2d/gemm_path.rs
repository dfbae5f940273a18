//! The im2col + gemm path of the convolutions: every shape in f64, and in f32 every shape the
//! direct kernels do not take (or every shape on a CPU without AVX-512). Forward: per image the
//! column matrix times the kernel, a few images side by side per gemm. Backward: the weight
//! gradient summed per chunk of images and the partials added in chunk order; the input
//! gradient by `Wᵀ · dy` (1×1), through col2im, or — stride-1 "same" convolutions — as the
//! flipped kernel times the im2col of `dy`, which also gives the weight gradient.

use rayon::prelude::*;

use super::im2col::{col2im, im2col};
use super::{chunk_slices, sum_in_order, Dims};
use crate::gemm::{gemm_strided, gemm_unchecked, StridedMatrix, StridedMatrixMut};
use crate::{reduction_chunks, Float, Tensor, Transpose};

/// How many images share one gemm: the fewest whose pixels add up to a multiple of 16.
///
/// The `gemm` crate computes `W · col` as `colᵀ · Wᵀ`, with the pixels as its M dimension, and
/// reads the column matrix in place only when M is a multiple of its vector width (16 `f32`
/// lanes, 8 `f64`); otherwise it first copies the whole matrix into a packed buffer. A 14×14
/// output therefore goes four images to a gemm, a 7×7 one sixteen, a 28×28 one alone.
fn images_per_gemm(pixels: usize) -> usize {
    16 >> pixels.trailing_zeros().min(4)
}

/// `out_i = a · cols_i` (`a` M×K, `cols_i` K×P, `out_i` M×P) for the `nb` images of a group
/// whose column matrices sit side by side in `cols` (row stride `nb·P`): one gemm into `tmp`,
/// then each image's rows copied out. A single image is written in place.
fn gemm_images<T: Float>(
    [m, p, k]: [usize; 3],
    a: &[T],
    cols: &[T],
    nb: usize,
    tmp: &mut Vec<T>,
    out: &mut [T],
) {
    let ld = nb * p;
    let dst = if nb == 1 {
        &mut *out
    } else {
        tmp.resize(m * ld, T::zero());
        &mut tmp[..]
    };
    let cols = &cols[..k * ld];
    gemm_unchecked(
        [m, ld, k],
        a,
        Transpose::No,
        cols,
        Transpose::No,
        dst,
        false,
    );
    if nb == 1 {
        return;
    }
    for (i, oi) in out.chunks_mut(m * p).enumerate() {
        for (r, dst) in oi.chunks_mut(p).enumerate() {
            dst.copy_from_slice(&tmp[r * ld + i * p..][..p]);
        }
    }
}

/// The im2col + gemm forward pass (see [`super::conv2d`]): rayon over groups of images (see
/// `images_per_gemm`), one im2col buffer per worker.
pub(super) fn forward<T: Float>(d: &Dims, x: &Tensor<T>, w: &Tensor<T>) -> Tensor<T> {
    let mut y = Tensor::zeros(&[d.n, d.co, d.ho, d.wo]);
    if d.empty() {
        return y;
    }
    let wv = w.as_slice();
    let hw = d.hw_out();
    let group = if d.pointwise() {
        1
    } else {
        images_per_gemm(hw)
    };
    let col_len = if d.pointwise() {
        0
    } else {
        group * d.ckk() * hw
    };
    y.as_slice_mut()
        .par_chunks_mut(group * d.out_len())
        .zip(x.as_slice().par_chunks(group * d.in_len()))
        .for_each_init(
            || (vec![T::zero(); col_len], Vec::new()),
            |(col, tmp), (yg, xg)| {
                if d.pointwise() {
                    let shape = [d.co, hw, d.ckk()];
                    return gemm_unchecked(shape, wv, Transpose::No, xg, Transpose::No, yg, false);
                }
                let nb = xg.len() / d.in_len();
                for (i, xi) in xg.chunks(d.in_len()).enumerate() {
                    im2col(d, xi, &mut col[i * hw..], nb * hw);
                }
                gemm_images([d.co, hw, d.ckk()], wv, col, nb, tmp, yg);
            },
        );
    y
}

/// How the input gradient of one image is formed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DxPath {
    /// `Wᵀ · dy_n` straight into `dx_n`.
    Pointwise,
    /// im2col of `dy_n` (geometry `Dims::transposed`) times the flipped kernel.
    Flipped,
    /// `Wᵀ · dy_n` into a column matrix, folded with [`col2im`].
    Col2im,
}

impl Dims {
    /// The geometry of the transposed convolution of a "same" stride-1 convolution: `dy`
    /// (Co channels) convolved with the flipped kernel gives `dx` (Ci channels).
    fn transposed(&self) -> Self {
        Self {
            ci: self.co,
            co: self.ci,
            ..*self
        }
    }
}

/// The kernel of the transposed convolution, `Ci × (Co·KH·KW)` (`kk` = KH·KW):
/// `wf[i, (o, a, b)] = w[o, i, KH−1−a, KW−1−b]`.
pub(super) fn flip_kernel<T: Copy>(w: &[T], [ci, co, kk]: [usize; 3]) -> Vec<T> {
    let mut wf = Vec::with_capacity(ci * co * kk);
    for i in 0..ci {
        for o in 0..co {
            let src = &w[(o * ci + i) * kk..(o * ci + i + 1) * kk];
            wf.extend(src.iter().rev());
        }
    }
    wf
}

/// The im2col + gemm backward pass of `[x, w, dy]` (see [`super::conv2d_bwd`]): the input
/// gradient if `want_dx`, and the weight gradient (zeros unless `want_dw`).
pub(super) fn backward<T: Float>(
    d: &Dims,
    [x, w, dy]: [&Tensor<T>; 3],
    (want_dx, want_dw): (bool, bool),
) -> (Option<Tensor<T>>, Tensor<T>) {
    let path = match () {
        _ if !want_dx => None,
        _ if d.pointwise() => Some(DxPath::Pointwise),
        _ if d.same_shape() => Some(DxPath::Flipped),
        _ => Some(DxPath::Col2im),
    };
    let mut dx = Tensor::zeros(if want_dx { x.shape() } else { &[0] });
    let mut dw = Tensor::zeros(w.shape());
    if d.empty() {
        return (want_dx.then_some(dx), dw);
    }
    // The flipped path multiplies by the im2col of `dy` a group of images at a time, as the
    // forward pass does; chunks hold whole groups.
    let group = if path == Some(DxPath::Flipped) {
        images_per_gemm(d.h * d.w)
    } else {
        1
    };
    let per = d.n.div_ceil(reduction_chunks(d.n)).next_multiple_of(group);
    let chunks = d.n.div_ceil(per);
    let mut partials = vec![vec![T::zero(); w.len()]; chunks];
    let wv = w.as_slice();
    let wf = if path == Some(DxPath::Flipped) {
        flip_kernel(wv, [d.ci, d.co, d.kh * d.kw])
    } else {
        Vec::new()
    };
    // The other paths: the im2col of `x` for `dw`, and `Wᵀ·dy_n` before col2im.
    let col_len = if d.pointwise() {
        0
    } else {
        d.ckk() * d.hw_out()
    };
    let dcol_len = if path == Some(DxPath::Col2im) {
        col_len
    } else {
        0
    };
    chunk_slices(dx.as_slice_mut(), per * d.in_len(), chunks)
        .into_par_iter()
        .zip(x.as_slice().par_chunks(per * d.in_len()))
        .zip(dy.as_slice().par_chunks(per * d.out_len()))
        .zip(partials.par_iter_mut())
        .for_each(|(((dxc, xc), dyc), dw_part)| {
            if path == Some(DxPath::Flipped) {
                let dw_part = want_dw.then_some(dw_part.as_mut_slice());
                return flipped_chunk(d, &wf, group, (dxc, xc, dyc), dw_part);
            }
            let mut col = vec![T::zero(); col_len];
            let mut dcol = vec![T::zero(); dcol_len];
            for (i, (xi, dyi)) in xc
                .chunks(d.in_len())
                .zip(dyc.chunks(d.out_len()))
                .enumerate()
            {
                if want_dw {
                    let cols: &[T] = if d.pointwise() {
                        xi
                    } else {
                        im2col(d, xi, &mut col, d.hw_out());
                        &col
                    };
                    gemm_unchecked(
                        [d.co, d.ckk(), d.hw_out()],
                        dyi,
                        Transpose::No,
                        cols,
                        Transpose::Yes,
                        dw_part,
                        true,
                    );
                }
                let Some(path) = path else {
                    continue;
                };
                let dxi = &mut dxc[i * d.in_len()..(i + 1) * d.in_len()];
                match path {
                    DxPath::Pointwise => gemm_unchecked(
                        [d.ckk(), d.hw_out(), d.co],
                        wv,
                        Transpose::Yes,
                        dyi,
                        Transpose::No,
                        dxi,
                        false,
                    ),
                    DxPath::Col2im => {
                        gemm_unchecked(
                            [d.ckk(), d.hw_out(), d.co],
                            wv,
                            Transpose::Yes,
                            dyi,
                            Transpose::No,
                            &mut dcol,
                            false,
                        );
                        col2im(d, &dcol, dxi);
                    }
                    DxPath::Flipped => unreachable!("handled by flipped_chunk"),
                }
            }
        });
    let sum = sum_in_order(partials);
    if path == Some(DxPath::Flipped) {
        FlippedDw::unflip(d, &sum, dw.as_slice_mut());
    } else {
        dw.as_slice_mut().copy_from_slice(&sum);
    }
    (want_dx.then_some(dx), dw)
}

/// The flipped path over one chunk of images (`dx`, `x`, `dy` of those images), a group at a
/// time: the im2col of each `dy_n` with the flipped kernel's offsets, side by side in `dcol`;
/// `dw` (when given) accumulated from each image's block (see [`FlippedDw`]), so `x` needs no
/// im2col; then `dx` of the whole group in one gemm with the flipped kernel `wf`.
fn flipped_chunk<T: Float>(
    d: &Dims,
    wf: &[T],
    group: usize,
    (dxc, xc, dyc): (&mut [T], &[T], &[T]),
    mut dw_part: Option<&mut [T]>,
) {
    let dt = d.transposed();
    let hw = d.h * d.w;
    let mut dcol = vec![T::zero(); group * dt.ckk() * hw];
    let mut tmp = Vec::new();
    for ((dxg, xg), dyg) in dxc
        .chunks_mut(group * d.in_len())
        .zip(xc.chunks(group * d.in_len()))
        .zip(dyc.chunks(group * d.out_len()))
    {
        let nb = xg.len() / d.in_len();
        for (i, (xi, dyi)) in xg
            .chunks(d.in_len())
            .zip(dyg.chunks(d.out_len()))
            .enumerate()
        {
            im2col(&dt, dyi, &mut dcol[i * hw..], nb * hw);
            if let Some(dw_part) = dw_part.as_deref_mut() {
                FlippedDw::accumulate(d, xi, &dcol[i * hw..], nb * hw, dw_part);
            }
        }
        // Here (f64 or no AVX-512) the column matrices built for `dw` are at hand, so `dx` is
        // one gemm over them (docs/perf.md §20).
        gemm_images([d.ci, hw, dt.ckk()], wf, &dcol, nb, &mut tmp, dxg);
    }
}

/// The weight gradient of a "same" stride-1 convolution from the im2col of `dy` with the
/// flipped kernel's offsets (`dcol`, built for the input gradient anyway):
/// `dw[o, c, i, j] = Σ_p x[c, p] · dy[o, p − off(i, j)] = Σ_p x[c, p] · dcol[(o, KH−1−i, KW−1−j), p]`.
///
/// Accumulated as `G = Σ_n dcol_n · x_nᵀ`, a `(Co·KH·KW) × Ci` matrix, with `Ci` as the gemm's M
/// dimension: `x_n` is the small operand to pack and `dcol_n` is read in place, which saves the
/// im2col of `x` and the transposing pack of a `(Ci·KH·KW) × (H·W)` column matrix.
struct FlippedDw;

impl FlippedDw {
    /// `g += dcol · xᵀ`, `g` stored `(Co·KH·KW) × Ci` row-major (column-major as the M×N = Ci ×
    /// Co·KH·KW product the gemm computes); row `r` of `dcol` starts at `dcol[r·ld]`.
    fn accumulate<T: Float>(d: &Dims, x: &[T], dcol: &[T], ld: usize, g: &mut [T]) {
        let hw = d.h * d.w;
        gemm_strided(
            [d.ci, d.co * d.kh * d.kw, hw],
            StridedMatrix::new(x, (hw, 1)),
            StridedMatrix::new(dcol, (1, ld)),
            StridedMatrixMut::new(g, (1, d.ci)),
            true,
        );
    }

    /// `dw[o, c, i, j] = g[(o, KH−1−i, KW−1−j), c]`.
    fn unflip<T: Float>(d: &Dims, g: &[T], dw: &mut [T]) {
        let (kh, kw) = (d.kh, d.kw);
        for o in 0..d.co {
            for c in 0..d.ci {
                for i in 0..kh {
                    for j in 0..kw {
                        let row = (o * kh + kh - 1 - i) * kw + kw - 1 - j;
                        dw[((o * d.ci + c) * kh + i) * kw + j] = g[row * d.ci + c];
                    }
                }
            }
        }
    }
}
