//! 2-D convolution without bias: `y[n,o] = Σ_i w[o,i] ⋆ x[n,i]`, as im2col + gemm per image.
//!
//! Shapes: `x` N×Ci×H×W, `w` Co×Ci×KH×KW, `y` N×Co×Ho×Wo with
//! `Ho = (H + 2·pad − KH)/stride + 1` (same for W). Per image, the im2col matrix is
//! `(Ci·KH·KW) × (Ho·Wo)` and `y_n = W (Co × Ci·KH·KW) · col_n`. A 1×1 convolution with stride 1
//! and no padding uses the image itself as its column matrix.

use rayon::prelude::*;

use crate::gemm::gemm_unchecked;
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

/// im2col of a "same" stride-1 convolution: per (channel, ki, kj) one block copy of the image
/// shifted by (ki − pad)·W + (kj − pad), then zeros where the shift left the image.
fn im2col_same<T: Float>(d: &Dims, x: &[T], col: &mut [T]) {
    let (h, w) = (d.h, d.w);
    let hw = h * w;
    for c in 0..d.ci {
        let plane = &x[c * hw..(c + 1) * hw];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = &mut col[((c * d.kh + ki) * d.kw + kj) * hw..][..hw];
                let dy = ki as isize - d.pad as isize;
                let dx = kj as isize - d.pad as isize;
                let off = dy * w as isize + dx;
                // Destination positions t with 0 ≤ t + off < H·W.
                let lo = (-off).clamp(0, hw as isize) as usize;
                let hi = (hw as isize - off).clamp(0, hw as isize) as usize;
                row[..lo].fill(T::zero());
                row[hi.max(lo)..].fill(T::zero());
                if lo < hi {
                    let s = (lo as isize + off) as usize;
                    row[lo..hi].copy_from_slice(&plane[s..s + hi - lo]);
                }
                // Columns that wrapped around a row edge are padding.
                if dx != 0 {
                    let (c0, c1) = if dx < 0 {
                        (0, ((-dx) as usize).min(w))
                    } else {
                        (w.saturating_sub(dx as usize), w)
                    };
                    for oy in 0..h {
                        for v in &mut row[oy * w + c0..oy * w + c1] {
                            *v = T::zero();
                        }
                    }
                }
            }
        }
    }
}

/// Unfolds one image (Ci×H×W) into its column matrix ((Ci·KH·KW) × (Ho·Wo)).
fn im2col<T: Float>(d: &Dims, x: &[T], col: &mut [T]) {
    if d.same_shape() {
        return im2col_same(d, x, col);
    }
    let hw = d.hw_out();
    for c in 0..d.ci {
        let plane = &x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = ((c * d.kh + ki) * d.kw + kj) * hw;
                let (lo, hi) = d.valid_range(kj, d.w, d.wo);
                for oy in 0..d.ho {
                    let dst = &mut col[row + oy * d.wo..row + (oy + 1) * d.wo];
                    let Some(iy) = d.src(oy, ki, d.h) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    if lo == hi {
                        continue;
                    }
                    let first = iy * d.w + lo * d.stride + kj - d.pad;
                    if d.stride == 1 {
                        dst[lo..hi].copy_from_slice(&plane[first..first + hi - lo]);
                    } else {
                        for (j, v) in dst[lo..hi].iter_mut().enumerate() {
                            *v = plane[first + j * d.stride];
                        }
                    }
                }
            }
        }
    }
}

/// Folds a column matrix back onto one image, summing overlaps (the adjoint of [`im2col`]).
/// `x` must hold zeros on entry.
fn col2im<T: Float>(d: &Dims, col: &[T], x: &mut [T]) {
    let hw = d.hw_out();
    for c in 0..d.ci {
        let plane = &mut x[c * d.h * d.w..(c + 1) * d.h * d.w];
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = ((c * d.kh + ki) * d.kw + kj) * hw;
                let (lo, hi) = d.valid_range(kj, d.w, d.wo);
                if lo == hi {
                    continue;
                }
                for oy in 0..d.ho {
                    let Some(iy) = d.src(oy, ki, d.h) else {
                        continue;
                    };
                    let src = &col[row + oy * d.wo + lo..row + oy * d.wo + hi];
                    let first = iy * d.w + lo * d.stride + kj - d.pad;
                    if d.stride == 1 {
                        for (o, v) in plane[first..first + hi - lo].iter_mut().zip(src) {
                            *o += *v;
                        }
                    } else {
                        for (j, v) in src.iter().enumerate() {
                            plane[first + j * d.stride] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// Forward convolution, rayon over images, one im2col buffer per worker.
pub fn conv2d<T: Float>(x: &Tensor<T>, w: &Tensor<T>, g: Conv2dGeometry) -> Result<Tensor<T>> {
    let d = Dims::new("conv2d", x, w, g)?;
    let mut y = Tensor::zeros(&[d.n, d.co, d.ho, d.wo]);
    if d.empty() {
        return Ok(y);
    }
    let wv = w.as_slice();
    let col_len = if d.pointwise() {
        0
    } else {
        d.ckk() * d.hw_out()
    };
    y.as_slice_mut()
        .par_chunks_mut(d.out_len())
        .zip(x.as_slice().par_chunks(d.in_len()))
        .for_each_init(
            || vec![T::zero(); col_len],
            |col, (yi, xi)| {
                let cols: &[T] = if d.pointwise() {
                    xi
                } else {
                    im2col(&d, xi, col);
                    col
                };
                gemm_unchecked(
                    [d.co, d.hw_out(), d.ckk()],
                    wv,
                    Transpose::No,
                    cols,
                    Transpose::No,
                    yi,
                    false,
                );
            },
        );
    Ok(y)
}

/// Backward convolution: from `dy` (N×Co×Ho×Wo) returns `(dx, dw)`.
///
/// `dw = Σ_n dy_n · col_nᵀ` is summed per chunk of images (one chunk per rayon thread) and the
/// partial sums are added in chunk order; `dx_n = col2im(Wᵀ · dy_n)`.
pub fn conv2d_bwd<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let d = Dims::new("conv2d_bwd", x, w, g)?;
    dy.expect_shape("conv2d_bwd", &[d.n, d.co, d.ho, d.wo])?;
    let mut dx = Tensor::zeros(x.shape());
    let mut dw = Tensor::zeros(w.shape());
    if d.empty() {
        return Ok((dx, dw));
    }
    let per = d.n.div_ceil(reduction_chunks(d.n));
    let chunks = d.n.div_ceil(per);
    let mut partials = vec![vec![T::zero(); w.len()]; chunks];
    let wv = w.as_slice();
    let col_len = d.ckk() * d.hw_out();
    dx.as_slice_mut()
        .par_chunks_mut(per * d.in_len())
        .zip(x.as_slice().par_chunks(per * d.in_len()))
        .zip(dy.as_slice().par_chunks(per * d.out_len()))
        .zip(partials.par_iter_mut())
        .for_each(|(((dxc, xc), dyc), dw_part)| {
            let mut col = vec![T::zero(); if d.pointwise() { 0 } else { col_len }];
            let mut dcol = col.clone();
            for ((dxi, xi), dyi) in dxc
                .chunks_mut(d.in_len())
                .zip(xc.chunks(d.in_len()))
                .zip(dyc.chunks(d.out_len()))
            {
                let cols: &[T] = if d.pointwise() {
                    xi
                } else {
                    im2col(&d, xi, &mut col);
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
                if d.pointwise() {
                    gemm_unchecked(
                        [d.ckk(), d.hw_out(), d.co],
                        wv,
                        Transpose::Yes,
                        dyi,
                        Transpose::No,
                        dxi,
                        false,
                    );
                } else {
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
            }
        });
    let dws = dw.as_slice_mut();
    for part in &partials {
        for (a, b) in dws.iter_mut().zip(part) {
            *a += *b;
        }
    }
    Ok((dx, dw))
}

/// Direct 7-loop convolution; the reference for [`conv2d`].
pub fn conv2d_ref<T: Float>(x: &Tensor<T>, w: &Tensor<T>, g: Conv2dGeometry) -> Result<Tensor<T>> {
    let d = Dims::new("conv2d_ref", x, w, g)?;
    let (xv, wv) = (x.as_slice(), w.as_slice());
    let mut y = Tensor::zeros(&[d.n, d.co, d.ho, d.wo]);
    let yv = y.as_slice_mut();
    for n in 0..d.n {
        for o in 0..d.co {
            for oy in 0..d.ho {
                for ox in 0..d.wo {
                    let mut acc = T::zero();
                    for i in 0..d.ci {
                        for ki in 0..d.kh {
                            for kj in 0..d.kw {
                                if let (Some(iy), Some(ix)) =
                                    (d.src(oy, ki, d.h), d.src(ox, kj, d.w))
                                {
                                    acc += wv[((o * d.ci + i) * d.kh + ki) * d.kw + kj]
                                        * xv[((n * d.ci + i) * d.h + iy) * d.w + ix];
                                }
                            }
                        }
                    }
                    yv[((n * d.co + o) * d.ho + oy) * d.wo + ox] = acc;
                }
            }
        }
    }
    Ok(y)
}

/// Direct-loop backward; the reference for [`conv2d_bwd`].
pub fn conv2d_bwd_ref<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let d = Dims::new("conv2d_bwd_ref", x, w, g)?;
    dy.expect_shape("conv2d_bwd_ref", &[d.n, d.co, d.ho, d.wo])?;
    let (xv, wv, dyv) = (x.as_slice(), w.as_slice(), dy.as_slice());
    let mut dx = Tensor::zeros(x.shape());
    let mut dw = Tensor::zeros(w.shape());
    let (dxv, dwv) = (dx.as_slice_mut(), dw.as_slice_mut());
    for n in 0..d.n {
        for o in 0..d.co {
            for oy in 0..d.ho {
                for ox in 0..d.wo {
                    let g = dyv[((n * d.co + o) * d.ho + oy) * d.wo + ox];
                    for i in 0..d.ci {
                        for ki in 0..d.kh {
                            for kj in 0..d.kw {
                                if let (Some(iy), Some(ix)) =
                                    (d.src(oy, ki, d.h), d.src(ox, kj, d.w))
                                {
                                    let wi = ((o * d.ci + i) * d.kh + ki) * d.kw + kj;
                                    let xi = ((n * d.ci + i) * d.h + iy) * d.w + ix;
                                    dwv[wi] += g * xv[xi];
                                    dxv[xi] += g * wv[wi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((dx, dw))
}
