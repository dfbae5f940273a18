//! Handing a convolution to the direct kernels (`direct`): whether they run it, the f32 views
//! of its tensors and of an input map, the input gradient's mode, and the results back as
//! tensors. `None` from these sends the caller to the gemm path.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{conv3x3, direct, precision, winograd, Conv3x3, Dims, InputGrad, Precision};
use crate::{Avx2Fma, Avx512, Avx512Bf16, ChannelMap, Float, Result, Tensor};

/// Whether the convolutions run as on a CPU without AVX-512 ([`force_avx2_convolutions`]).
static AVX2_ONLY: AtomicBool = AtomicBool::new(false);

/// For tests on a CPU with AVX-512: from now on, for the whole process, the convolutions run
/// as where AVX-512 is missing — the layers the direct kernels take on the AVX2 ones, Winograd
/// and bf16 off — so that the AVX2 kernels can be compared with the AVX-512 ones on one machine.
/// Nothing else changes (the slice loops keep their version, and [`crate::kernel_path`] its
/// name).
#[doc(hidden)]
pub fn force_avx2_convolutions(on: bool) {
    AVX2_ONLY.store(on, Ordering::Relaxed);
}

/// Whether the direct kernels keep their position tiles where row tiles would run
/// ([`force_position_tiles`]).
static POSITION_TILES: AtomicBool = AtomicBool::new(false);

/// For tests: from now on, for the whole process, the direct kernels (f32 and bf16) run every
/// layer on their position tiles, none on the row tiles of small images, so that the two can
/// be compared on one machine (they give the same bits).
#[doc(hidden)]
pub fn force_position_tiles(on: bool) {
    POSITION_TILES.store(on, Ordering::Relaxed);
}

/// Whether [`force_position_tiles`] is on.
pub(super) fn position_tiles_forced() -> bool {
    POSITION_TILES.load(Ordering::Relaxed)
}

/// The kernels a convolution the direct kernels take runs on.
enum Direct {
    Avx512(Avx512),
    Avx2(Avx2Fma),
}

/// The fewest input channels for which Winograd runs a layer, chosen by measurement (`cargo
/// bench --bench layers`, docs/perf.md §36): every layer measured faster with it has 16 or
/// more, and the stems (1 and 3 input channels), whose transforms cost more than the few
/// products they save, ran 1.8–3.1× slower with it than with the direct kernels (forward and
/// weight gradient, batch 128, 1×28×28 and 3×32×32 on an AMD EPYC).
const WINOGRAD_MIN_CI: usize = 16;

/// The smallest image side on which [`Conv3x3::Winograd4`] takes 4×4 tiles, chosen by
/// measurement (docs/perf.md §37): on 28×28, 14×14 and 32×32 images F(4×4, 3×3) was faster
/// than F(2×2, 3×3) in most passes, on 7×7 and 8×8 ones (4 tiles an image, a quarter of a
/// vector, in its transforms) 0.67–0.95× the direct kernels' forward, so they keep 2×2 tiles.
const WINOGRAD4_MIN_SIDE: usize = 14;

impl Dims {
    /// Whether the f32 direct kernels run this convolution on this CPU, and then on which:
    /// they take its shape (3×3 with stride 1 and padding 1, or 3×3 / 1×1 with stride 2 and
    /// padding 1 / 0), it is not empty, and an input map (`mapped`) comes with stride 1; the
    /// AVX-512 kernels run them where the CPU has AVX-512 ([`Avx512::detect`]), else the AVX2
    /// ones where it has AVX2 and FMA ([`Avx2Fma::detect`]).
    fn runs_direct(&self, mapped: bool) -> Option<Direct> {
        let takes = direct::fits(self.kh, self.kw, self.stride, self.pad)
            && !self.empty()
            && (!mapped || self.stride == 1);
        if !takes {
            return None;
        }
        if !AVX2_ONLY.load(Ordering::Relaxed) {
            if let Some(cpu) = Avx512::detect() {
                return Some(Direct::Avx512(cpu));
            }
        }
        Avx2Fma::detect().map(Direct::Avx2)
    }

    /// Whether the Winograd kernels run this convolution (one the direct kernels run) rather
    /// than the direct ones, and then their output tile's side: a 3×3 stride-1 one with at
    /// least [`WINOGRAD_MIN_CI`] input channels, with [`Conv3x3::Winograd`] (2) or
    /// [`Conv3x3::Winograd4`] (4 on images of at least [`WINOGRAD4_MIN_SIDE`], else 2) set.
    fn runs_winograd(&self) -> Option<usize> {
        let tile = match conv3x3() {
            Conv3x3::Direct => return None,
            Conv3x3::Winograd => 2,
            Conv3x3::Winograd4 if self.h.min(self.w) >= WINOGRAD4_MIN_SIDE => 4,
            Conv3x3::Winograd4 => 2,
        };
        (self.stride == 1 && self.kh == 3 && self.ci >= WINOGRAD_MIN_CI).then_some(tile)
    }

    /// Whether the bf16 kernels run this convolution (one the direct kernels run), and then
    /// their token: with [`Precision::Bf16`] set, a 3×3 stride-1 one with at least
    /// [`WINOGRAD_MIN_CI`] input channels (the stems' products are too few to pay for their
    /// planes' conversion), on a CPU with AVX512-BF16. It takes precedence over Winograd.
    fn runs_bf16(&self) -> Option<Avx512Bf16> {
        let takes = precision() == Precision::Bf16
            && self.stride == 1
            && self.kh == 3
            && self.ci >= WINOGRAD_MIN_CI;
        takes.then(Avx512Bf16::detect).flatten()
    }

    /// The sizes the Winograd kernels take.
    fn winograd_shape(&self) -> [usize; 5] {
        [self.n, self.ci, self.co, self.h, self.w]
    }

    /// The sizes the direct kernels take.
    fn direct_shape(&self) -> direct::Shape {
        [
            self.n,
            self.ci,
            self.co,
            self.h,
            self.w,
            self.kh,
            self.stride,
        ]
    }
}

/// The f32 view of an optional map: `Some(None)` without one, `None` if `T` is not f32.
fn f32_map<T: Float>(map: Option<&ChannelMap<T>>) -> Option<Option<direct::Map<'_>>> {
    let Some(map) = map else {
        return Some(None);
    };
    Some(Some(direct::Map {
        scale: T::f32_slice(&map.scale)?,
        shift: T::f32_slice(&map.shift)?,
        relu: map.relu,
    }))
}

/// The direct kernels' forward pass, the input read through `map` if one is given, when they
/// run this convolution ([`Dims::runs_direct`]) and `T` is f32; `None` sends the caller to the
/// gemm path.
pub(super) fn direct_forward<T: Float>(
    d: &Dims,
    x: &Tensor<T>,
    w: &Tensor<T>,
    map: Option<&ChannelMap<T>>,
) -> Result<Option<Tensor<T>>> {
    let Some(cpu) = d.runs_direct(map.is_some()) else {
        return Ok(None);
    };
    let (Some(xs), Some(ws), Some(map)) = (
        T::f32_slice(x.as_slice()),
        T::f32_slice(w.as_slice()),
        f32_map(map),
    ) else {
        return Ok(None);
    };
    let y = match cpu {
        Direct::Avx2(cpu) => direct::avx2_forward(cpu, xs, ws, d.direct_shape(), map),
        Direct::Avx512(cpu) => {
            if let Some(b) = d.runs_bf16() {
                direct::bf16_forward(b, xs, ws, d.winograd_shape(), map)
            } else if let Some(m) = d.runs_winograd() {
                winograd::forward(cpu, m, xs, ws, d.winograd_shape(), map)
            } else {
                direct::forward(cpu, xs, ws, d.direct_shape(), map)
            }
        }
    };
    let y = T::from_f32_vec(y).expect("T is f32: its slices were");
    Ok(Some(Tensor::from_vec(&[d.n, d.co, d.ho, d.wo], y)?))
}

/// A backward pass's input gradient (if one was returned) and weight gradient.
type Grads<T> = (Option<Tensor<T>>, Tensor<T>);

/// The direct kernels' backward pass of `[x, w, dy]` (see [`direct_forward`]): the input
/// gradient as `want` asks (`None` unless [`InputGrad::New`]) and the weight gradient (zeros
/// unless `want_dw`).
pub(super) fn direct_backward<T: Float>(
    d: &Dims,
    [x, w, dy]: [&Tensor<T>; 3],
    map: Option<&ChannelMap<T>>,
    (want, want_dw): (InputGrad<'_, Tensor<T>>, bool),
) -> Result<Option<Grads<T>>> {
    let Some(cpu) = d.runs_direct(map.is_some()) else {
        return Ok(None);
    };
    let (Some(xs), Some(ws), Some(dys), Some(map)) = (
        T::f32_slice(x.as_slice()),
        T::f32_slice(w.as_slice()),
        T::f32_slice(dy.as_slice()),
        f32_map(map),
    ) else {
        return Ok(None);
    };
    let dx = match want {
        InputGrad::Skip => InputGrad::Skip,
        InputGrad::New => InputGrad::New,
        InputGrad::AddTo(acc) => match T::f32_slice_mut(acc.as_slice_mut()) {
            Some(buf) => InputGrad::AddTo(buf),
            None => return Ok(None),
        },
    };
    let (dx, dw) = match cpu {
        Direct::Avx2(cpu) => {
            let shape = d.direct_shape();
            direct::avx2_backward(cpu, [xs, ws, dys], shape, map, (dx, want_dw))
        }
        Direct::Avx512(cpu) => avx512_backward(cpu, d, [xs, ws, dys], map, (dx, want_dw)),
    };
    let f32_vec = |v| T::from_f32_vec(v).expect("T is f32: its slices were");
    let dx = dx
        .map(|v| Tensor::from_vec(x.shape(), f32_vec(v)))
        .transpose()?;
    Ok(Some((dx, Tensor::from_vec(w.shape(), f32_vec(dw))?)))
}

/// The AVX-512 kernels' backward pass: bf16, Winograd or direct, as the settings and the
/// shape decide.
fn avx512_backward(
    cpu: Avx512,
    d: &Dims,
    [xs, ws, dys]: [&[f32]; 3],
    map: Option<direct::Map<'_>>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    if let Some(b) = d.runs_bf16() {
        direct::bf16_backward(b, xs, ws, dys, d.winograd_shape(), map, (dx, want_dw))
    } else if let Some(m) = d.runs_winograd() {
        winograd::backward(cpu, m, xs, ws, dys, d.winograd_shape(), map, (dx, want_dw))
    } else {
        direct::backward(cpu, xs, ws, dys, d.direct_shape(), map, (dx, want_dw))
    }
}
