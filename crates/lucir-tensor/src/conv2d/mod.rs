//! 2-D convolution without bias: `y[n,o] = Σ_i w[o,i] ⋆ x[n,i]`: the public entry points,
//! which hand each call to the direct kernels (`direct`, through `dispatch`) or to the im2col +
//! gemm path (`gemm_path`).
//!
//! Shapes: `x` N×Ci×H×W, `w` Co×Ci×KH×KW, `y` N×Co×Ho×Wo with
//! `Ho = (H + 2·pad − KH)/stride + 1` (same for W). Per image, the im2col matrix is
//! `(Ci·KH·KW) × (Ho·Wo)` and `y_n = W (Co × Ci·KH·KW) · col_n`; small outputs put the column
//! matrices of a few images side by side in one gemm (see `images_per_gemm`). A 1×1 convolution
//! with stride 1 and no padding uses the image itself as its column matrix.
//!
//! In f32 on a CPU with AVX-512, 3×3 stride-1 "same" convolutions and the stride-2 3×3
//! (padding 1) and 1×1 (no padding) ones go to the direct kernels of `direct` instead, forward
//! and backward: no column matrices at all. On a CPU with AVX2 and FMA but not AVX-512, the
//! 3×3 stride-1 ones go to their 8-lane version, which gives the same bits. With [`Conv3x3::Winograd`] set, the 3×3 stride-1
//! ones with 16 or more input channels go to `winograd` (F(2×2, 3×3)) instead.

mod direct;
mod dispatch;
mod gemm_path;
mod im2col;
mod mapped;
mod reference;
mod winograd;

use crate::cuda_ops;
use crate::device::{common, Device};
use std::sync::atomic::{AtomicU8, Ordering};

use dispatch::{direct_backward, direct_forward};
#[doc(hidden)]
pub use dispatch::{force_avx2_convolutions, force_position_tiles};
pub use mapped::{conv2d_mapped, conv2d_mapped_bwd};
pub use reference::{conv2d_bwd_ref, conv2d_ref};

use crate::{Error, Float, Result, Tensor};

/// How the f32 3×3 stride-1 "same" convolutions run on a CPU with AVX-512 (elsewhere, and in
/// f64, the gemm path runs them either way). One setting for the process, [`set_conv3x3`]:
/// the two give different bits, so a run keeps one from start to end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conv3x3 {
    /// The direct kernels: 9 multiplications per output and channel pair, sums in the gemm
    /// path's order.
    #[default]
    Direct,
    /// Winograd F(2×2, 3×3) for the layers with 16 or more input channels (the stems stay
    /// direct): 4 multiplications per output and channel pair, other rounding (measured no
    /// larger; docs/perf.md gives it per layer shape).
    Winograd,
    /// Winograd F(4×4, 3×3) for the same layers on images of side 14 or more (F(2×2, 3×3) on
    /// smaller ones): 2.25 multiplications per output and channel pair, larger transforms and
    /// a larger rounding error, still within the direct kernels' (docs/perf.md §37).
    Winograd4,
}

impl Conv3x3 {
    /// All of them, the default first.
    pub const ALL: [Conv3x3; 3] = [Conv3x3::Direct, Conv3x3::Winograd, Conv3x3::Winograd4];

    /// `direct`, `winograd` or `winograd4`.
    pub fn name(self) -> &'static str {
        match self {
            Conv3x3::Direct => "direct",
            Conv3x3::Winograd => "winograd",
            Conv3x3::Winograd4 => "winograd4",
        }
    }

    /// The one called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether this CPU runs it: the Winograd kernels need AVX-512F ([`crate::Avx512`]).
    pub fn available(self) -> bool {
        self == Conv3x3::Direct || crate::Avx512::detect().is_some()
    }
}

static CONV3X3: AtomicU8 = AtomicU8::new(0);

/// Sets how the 3×3 stride-1 convolutions run from now on, for the whole process (see
/// [`Conv3x3`]); [`Conv3x3::Winograd`] where it is not [`Conv3x3::available`] leaves them
/// direct.
pub fn set_conv3x3(c: Conv3x3) {
    CONV3X3.store(c as u8, Ordering::Relaxed);
}

/// How the 3×3 stride-1 convolutions run now ([`set_conv3x3`]).
pub fn conv3x3() -> Conv3x3 {
    match CONV3X3.load(Ordering::Relaxed) {
        0 => Conv3x3::Direct,
        1 => Conv3x3::Winograd,
        _ => Conv3x3::Winograd4,
    }
}

/// The number format of the f32 convolutions' products on the CPU. One setting for the
/// process, [`set_precision`]; the two give different bits, so a run keeps one from start to
/// end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 products and sums everywhere.
    #[default]
    F32,
    /// The 3×3 stride-1 "same" convolutions with 16 or more input channels (forward, input
    /// gradient and weight gradient) multiply bf16 roundings of their two operands and sum the
    /// products in f32 (`vdpbf16ps`, [`crate::Avx512Bf16`]): two products per f32 lane and
    /// instruction. Everything else — the stems, the stride-2 layers, the classifier, batch
    /// norm and the activations it reads, the losses, the weights and the optimiser — stays
    /// f32 (PyTorch's CPU autocast puts every convolution and linear layer in bf16, and the
    /// activations between them). bf16 keeps 8 significant bits: each operand carries a
    /// relative rounding error of at most 2⁻⁸, each product at most 2⁻⁷ + 2⁻¹⁶
    /// (`tests/conv2d_bf16.rs` holds the kernels to that bound).
    Bf16,
}

impl Precision {
    /// Both, the default first.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Bf16];

    /// `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The one called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this CPU runs it: bf16 needs AVX512-BF16 ([`crate::Avx512Bf16`]).
    pub fn available(self) -> bool {
        self == Precision::F32 || crate::Avx512Bf16::detect().is_some()
    }
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the convolutions' precision from now on, for the whole process (see [`Precision`]);
/// [`Precision::Bf16`] where it is not [`Precision::available`] leaves them f32.
pub fn set_precision(p: Precision) {
    PRECISION.store(p as u8, Ordering::Relaxed);
}

/// The convolutions' precision now ([`set_precision`]).
pub fn precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        0 => Precision::F32,
        _ => Precision::Bf16,
    }
}

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

    /// `[N, Ci, H, W, Co, KH, KW, stride, pad]`, for the CUDA arm.
    fn sizes(&self) -> [usize; 9] {
        let d = self;
        [d.n, d.ci, d.h, d.w, d.co, d.kh, d.kw, d.stride, d.pad]
    }
}

/// Forward convolution, rayon over groups of images (see `images_per_gemm`), one im2col
/// buffer per worker.
pub fn conv2d<T: Float>(x: &Tensor<T>, w: &Tensor<T>, g: Conv2dGeometry) -> Result<Tensor<T>> {
    let d = Dims::new("conv2d", x, w, g)?;
    if common("conv2d", &[x, w])? != Device::Cpu {
        return cuda_ops::conv2d(d.sizes(), x, w);
    }
    if let Some(y) = direct_forward(&d, x, w, None)? {
        return Ok(y);
    }
    Ok(gemm_path::forward(&d, x, w))
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
    let (dx, dw) = conv2d_bwd_impl("conv2d_bwd", x, w, dy, g, (InputGrad::New, true))?;
    Ok((dx.expect("the input gradient was asked for"), dw))
}

/// [`conv2d_bwd`] without the input gradient (for a first layer, whose input needs none).
pub fn conv2d_bwd_weight<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<Tensor<T>> {
    Ok(conv2d_bwd_impl("conv2d_bwd_weight", x, w, dy, g, (InputGrad::Skip, true))?.1)
}

/// [`conv2d_bwd`] without the weight gradient: the input gradient alone, the same bits as
/// `conv2d_bwd`'s (for timing the two passes apart; training needs both).
pub fn conv2d_bwd_data<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<Tensor<T>> {
    let (dx, _) = conv2d_bwd_impl("conv2d_bwd_data", x, w, dy, g, (InputGrad::New, false))?;
    Ok(dx.expect("the input gradient was asked for"))
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
    if common(op, &[x, w, dy, &acc])? != Device::Cpu {
        let (_, dw) =
            cuda_ops::conv2d_bwd(d.sizes(), [x, w, dy], InputGrad::AddTo(&mut acc), true)?;
        return Ok((acc, dw));
    }
    if let Some((_, dw)) =
        direct_backward(&d, [x, w, dy], None, (InputGrad::AddTo(&mut acc), true))?
    {
        return Ok((acc, dw));
    }
    let (dx, dw) = conv2d_bwd(x, w, dy, g)?;
    acc.add_assign(&dx)?;
    Ok((acc, dw))
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
    (want, want_dw): (InputGrad<'_, Tensor<T>>, bool),
) -> Result<(Option<Tensor<T>>, Tensor<T>)> {
    let want_dx = want.wanted();
    let d = Dims::new(op, x, w, g)?;
    dy.expect_shape(op, &[d.n, d.co, d.ho, d.wo])?;
    if common(op, &[x, w, dy])? != Device::Cpu {
        return cuda_ops::conv2d_bwd(d.sizes(), [x, w, dy], want, want_dw);
    }
    if let Some(grads) = direct_backward(&d, [x, w, dy], None, (want, want_dw))? {
        return Ok(grads);
    }
    Ok(gemm_path::backward(&d, [x, w, dy], (want_dx, want_dw)))
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
