//! 2-D convolution without bias: `y[n,o] = Σ_i w[o,i] ⋆ x[n,i]`, as im2col + gemm.
//!
//! Shapes: `x` N×Ci×H×W, `w` Co×Ci×KH×KW, `y` N×Co×Ho×Wo with
//! `Ho = (H + 2·pad − KH)/stride + 1` (same for W). Per image, the im2col matrix is
//! `(Ci·KH·KW) × (Ho·Wo)` and `y_n = W (Co × Ci·KH·KW) · col_n`; small outputs put the column
//! matrices of a few images side by side in one gemm (see `images_per_gemm`). A 1×1 convolution
//! with stride 1 and no padding uses the image itself as its column matrix.
//!
//! In f32 on a CPU with AVX-512, 3×3 stride-1 "same" convolutions and the stride-2 3×3
//! (padding 1) and 1×1 (no padding) ones go to the direct kernels of `direct` instead, forward
//! and backward: no column matrices at all.

use rayon::prelude::*;

mod direct;
mod dispatch;
mod im2col;
mod mapped;
mod reference;

use dispatch::{direct_backward, direct_forward};
use im2col::{col2im, im2col};
pub use mapped::{conv2d_mapped, conv2d_mapped_bwd};
pub use reference::{conv2d_bwd_ref, conv2d_ref};

use crate::gemm::{gemm_strided, gemm_unchecked, StridedMatrix, StridedMatrixMut};
use crate::{reduction_chunks, Error, Float, Result, Tensor, Transpose};

/// Stride and zero padding of a convolution (the same on both spatial axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Step between output positions, ≥ 1.
    pub stride: usize,
    /// Zeros added on each border.
    pub pad: usize,
}

/// All sizes of one convolution, validated.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    stride: usize,
    pad: usize,
}

impl Dims {
    fn new<T: Float>(
        op: &'static str,
        x: &Tensor<T>,
        w: &Tensor<T>,
        g: Conv2dGeometry,
    ) -> Result<Self> {
        let [n, ci, h, wd] = x.dims4(op)?;
        let [co, wci, kh, kw] = w.dims4(op)?;
        if wci != ci {
            return Err(Error::shape(
                op,
                format!(
                    "input has {ci} channels but weight {:?} expects {wci}",
                    w.shape()
                ),
            ));
        }
        if g.stride == 0 {
            return Err(Error::arg(op, "stride must be at least 1"));
        }
        if h + 2 * g.pad < kh || wd + 2 * g.pad < kw || kh == 0 || kw == 0 {
            return Err(Error::shape(
                op,
                format!(
                    "kernel {kh}×{kw} does not fit input {h}×{wd} with padding {}",
                    g.pad
                ),
            ));
        }
        Ok(Self {
            n,
            ci,
            h,
            w: wd,
            co,
            kh,
            kw,
            ho: (h + 2 * g.pad - kh) / g.stride + 1,
            wo: (wd + 2 * g.pad - kw) / g.stride + 1,
            stride: g.stride,
            pad: g.pad,
        })
    }

    fn in_len(&self) -> usize {
        self.ci * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.co * self.ho * self.wo
    }
    fn ckk(&self) -> usize {
        self.ci * self.kh * self.kw
    }
    fn hw_out(&self) -> usize {
        self.ho * self.wo
    }
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    fn empty(&self) -> bool {
        self.n == 0 || self.in_len() == 0 || self.out_len() == 0
    }
    /// Input coordinate of output coordinate `o` at kernel offset `k`, if inside the image.
    #[inline(always)]
    fn src(&self, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride + k)
            .checked_sub(self.pad)
            .filter(|&i| i < size)
    }

    /// Output columns `lo..hi` whose input column `ox·stride + k − pad` lies inside `0..size`.
    #[inline(always)]
    fn valid_range(&self, k: usize, size: usize, out: usize) -> (usize, usize) {
        // ox·s + k ≥ pad  ⇔  ox ≥ ⌈(pad − k)/s⌉;   ox·s + k − pad ≤ size − 1.
        let lo = self.pad.saturating_sub(k).div_ceil(self.stride).min(out);
        let hi = if size + self.pad > k {
            ((size - 1 + self.pad - k) / self.stride + 1).min(out)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// A stride-1 "same" convolution (Ho = H, Wo = W): each im2col row is the image shifted by
    /// a constant offset, so it can be copied as one block.
    fn same_shape(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }
}

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

/// Forward convolution, rayon over groups of images (see `images_per_gemm`), one im2col
/// buffer per worker.
pub fn conv2d<T: Float>(x: &Tensor<T>, w: &Tensor<T>, g: Conv2dGeometry) -> Result<Tensor<T>> {
    let d = Dims::new("conv2d", x, w, g)?;
    if let Some(y) = direct_forward(&d, x, w, None)? {
        return Ok(y);
    }
    let mut y = Tensor::zeros(&[d.n, d.co, d.ho, d.wo]);
    if d.empty() {
        return Ok(y);
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
                    im2col(&d, xi, &mut col[i * hw..], nb * hw);
                }
                gemm_images([d.co, hw, d.ckk()], wv, col, nb, tmp, yg);
            },
        );
    Ok(y)
}

/// Backward convolution: from `dy` (N×Co×Ho×Wo) returns `(dx, dw)`.
///
/// The weight gradient is summed per chunk of images (one chunk per rayon thread) and the
/// partial sums are added in chunk order. For a stride-1 "same" convolution both gradients come
/// from `dcol_n`, the im2col of `dy_n` with the flipped kernel's offsets: `dx_n` is the flipped,
/// transposed kernel times `dcol_n` (a gemm with `Co·KH·KW`-long dot products, like the forward
/// pass) and `dw` is accumulated from `dcol_n` and `x_n` (see `FlippedDw`). Otherwise
/// `dw = Σ_n dy_n · col_nᵀ` and `dx_n` is `Wᵀ · dy_n` (1×1) or `col2im(Wᵀ · dy_n)`.
pub fn conv2d_bwd<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let (dx, dw) = conv2d_bwd_impl("conv2d_bwd", x, w, dy, g, InputGrad::New)?;
    Ok((dx.expect("the input gradient was asked for"), dw))
}

/// [`conv2d_bwd`] without the input gradient (for a first layer, whose input needs none).
pub fn conv2d_bwd_weight<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<Tensor<T>> {
    Ok(conv2d_bwd_impl("conv2d_bwd_weight", x, w, dy, g, InputGrad::Skip)?.1)
}

/// [`conv2d_bwd`] adding the input gradient into `acc`, the gradient `x` has gathered so far
/// (N×Ci×H×W): returns `(acc + dx, dw)`, the bits of adding the two afterwards. The direct
/// kernels add as they store, so `dx` is never stored on its own.
pub fn conv2d_bwd_add<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
    mut acc: Tensor<T>,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let op = "conv2d_bwd_add";
    let d = Dims::new(op, x, w, g)?;
    dy.expect_shape(op, &[d.n, d.co, d.ho, d.wo])?;
    acc.expect_shape(op, x.shape())?;
    if let Some((_, dw)) = direct_backward(&d, [x, w, dy], None, InputGrad::AddTo(&mut acc))? {
        return Ok((acc, dw));
    }
    let (dx, dw) = conv2d_bwd(x, w, dy, g)?;
    acc.add_assign(&dx)?;
    Ok((acc, dw))
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
fn flip_kernel<T: Copy>(w: &[T], [ci, co, kk]: [usize; 3]) -> Vec<T> {
    let mut wf = Vec::with_capacity(ci * co * kk);
    for i in 0..ci {
        for o in 0..co {
            let src = &w[(o * ci + i) * kk..(o * ci + i + 1) * kk];
            wf.extend(src.iter().rev());
        }
    }
    wf
}

/// What a backward pass does with the input gradient, whatever holds it: `B` is a tensor at
/// the public entry points and an f32 slice in the direct kernels (with an input map, the
/// gradient with respect to the mapped input).
pub(crate) enum InputGrad<'a, B: ?Sized> {
    /// Nothing: it is not wanted.
    Skip,
    /// Returns it as a new tensor or buffer.
    New,
    /// Adds it into this one (the gradient the input has gathered so far): `buf[i] + dx[i]`,
    /// the sum a separate addition would give, without storing `dx` first.
    AddTo(&'a mut B),
}

impl<B: ?Sized> InputGrad<'_, B> {
    /// Whether the input gradient is computed at all.
    pub(crate) fn wanted(&self) -> bool {
        !matches!(self, InputGrad::Skip)
    }
}

fn conv2d_bwd_impl<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
    want: InputGrad<'_, Tensor<T>>,
) -> Result<(Option<Tensor<T>>, Tensor<T>)> {
    let want_dx = want.wanted();
    let d = Dims::new(op, x, w, g)?;
    dy.expect_shape(op, &[d.n, d.co, d.ho, d.wo])?;
    let path = match () {
        _ if !want_dx => None,
        _ if d.pointwise() => Some(DxPath::Pointwise),
        _ if d.same_shape() => Some(DxPath::Flipped),
        _ => Some(DxPath::Col2im),
    };
    if let Some(grads) = direct_backward(&d, [x, w, dy], None, want)? {
        return Ok(grads);
    }
    let mut dx = Tensor::zeros(if want_dx { x.shape() } else { &[0] });
    let mut dw = Tensor::zeros(w.shape());
    if d.empty() {
        return Ok((want_dx.then_some(dx), dw));
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
                return flipped_chunk(&d, &wf, group, (dxc, xc, dyc), dw_part);
            }
            let mut col = vec![T::zero(); col_len];
            let mut dcol = vec![T::zero(); dcol_len];
            for (i, (xi, dyi)) in xc
                .chunks(d.in_len())
                .zip(dyc.chunks(d.out_len()))
                .enumerate()
            {
                let cols: &[T] = if d.pointwise() {
                    xi
                } else {
                    im2col(&d, xi, &mut col, d.hw_out());
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
                        col2im(&d, &dcol, dxi);
                    }
                    DxPath::Flipped => unreachable!("handled by flipped_chunk"),
                }
            }
        });
    let sum = sum_in_order(partials);
    if path == Some(DxPath::Flipped) {
        FlippedDw::unflip(&d, &sum, dw.as_slice_mut());
    } else {
        dw.as_slice_mut().copy_from_slice(&sum);
    }
    Ok((want_dx.then_some(dx), dw))
}

/// The input gradient's buffer cut into `chunks` slices of `len` elements (the last may be
/// shorter), one per chunk of images; without an input gradient (`dx` empty) each chunk gets
/// an empty slice.
fn chunk_slices<E>(dx: &mut [E], len: usize, chunks: usize) -> Vec<&mut [E]> {
    if dx.is_empty() {
        std::iter::repeat_with(Default::default)
            .take(chunks)
            .collect()
    } else {
        dx.chunks_mut(len).collect()
    }
}

/// The per-chunk partial sums of a weight gradient added in chunk order, `((p0 + p1) + p2) + …`
/// (so the result depends on the thread count only, see [`crate::reduction_chunks`]); at least
/// one partial.
fn sum_in_order<T: Float>(partials: Vec<Vec<T>>) -> Vec<T> {
    let mut parts = partials.into_iter();
    let mut sum = parts.next().expect("at least one partial");
    for part in parts {
        for (a, b) in sum.iter_mut().zip(&part) {
            *a += *b;
        }
    }
    sum
}

/// The flipped path over one chunk of images (`dx`, `x`, `dy` of those images), a group at a
/// time: the im2col of each `dy_n` with the flipped kernel's offsets, side by side in `dcol`;
/// `dw` accumulated from each image's block (see [`FlippedDw`]), so `x` needs no im2col; then
/// `dx` of the whole group in one gemm with the flipped kernel `wf`.
fn flipped_chunk<T: Float>(
    d: &Dims,
    wf: &[T],
    group: usize,
    (dxc, xc, dyc): (&mut [T], &[T], &[T]),
    dw_part: &mut [T],
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
            FlippedDw::accumulate(d, xi, &dcol[i * hw..], nb * hw, dw_part);
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

#[cfg(test)]
mod tests {
    use super::sum_in_order;

    /// Four partials whose sum depends on the order of the additions (1e8 + 1 rounds to 1e8 in
    /// f32): the result is the left-to-right fold `((p0 + p1) + p2) + p3`, element by element.
    #[test]
    fn sum_in_order_adds_the_partials_left_to_right() {
        let partials: Vec<Vec<f32>> = vec![
            vec![1e8, 1.0, -1e8],
            vec![1.0, 1e8, 1.0],
            vec![-1e8, -1e8, 1e8],
            vec![0.5, 3.0, 1.0],
        ];
        let fold: Vec<f32> = (0..3)
            .map(|j| ((partials[0][j] + partials[1][j]) + partials[2][j]) + partials[3][j])
            .collect();
        // Another order (here 0, 3, 1, 2) gives other bits in every element.
        let other: Vec<f32> = (0..3)
            .map(|j| ((partials[0][j] + partials[3][j]) + partials[1][j]) + partials[2][j])
            .collect();
        assert!(fold.iter().zip(&other).all(|(a, b)| a != b));
        assert_eq!(sum_in_order(partials), fold);
    }
}
