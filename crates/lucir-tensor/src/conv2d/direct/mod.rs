//! Direct 3×3 "same" convolution (stride 1, padding 1) of f32 NCHW images with AVX-512 (and,
//! through the same kernels, the stride-2 layers of [`strided`]):
//! forward, input gradient and weight gradient, with no im2col, no column buffer and no zeroing
//! of outputs.
//!
//! Each image is first copied into *bordered planes*: every channel an (H+2)×(W+2) plane whose
//! one-pixel border (and a little slack after it) is zero. On such a plane the nine taps of a
//! 3×3 kernel are plain offsets: output position `q = r·(W+2) + col` reads input `q + ky·(W+2) +
//! kx` for every tap, so a run of 16 consecutive positions is one unaligned load per tap, with no
//! masks and no edge branches. The positions with `col ∈ {W, W+1}` are computed and thrown away
//! (2 of every W+2); the kept lanes are packed together (`vcompressps`) and stored into the NCHW
//! output. A 7×7 image is 63 positions — four vectors, where one vector per row would take seven.
//!
//! - **Forward** ([`conv3x3`]): a tile of 8 output channels × 3 vectors (48 positions) lives in
//!   24 zmm accumulators; per input channel and tap, 3 input loads and 8 broadcast weights feed
//!   24 FMAs. Each output sums its terms in the order (input channel, ky, kx), the order of the
//!   gemm path's column matrix.
//! - **Input gradient**: the same kernel on the bordered `dy` with the flipped, transposed kernel
//!   (`dx = wf ⋆ dy`, `wf[c, o, a, b] = w[o, c, 2−a, 2−b]`).
//! - **Weight gradient** ([`conv3x3_bwd`], [`WeightGrad`]): `dw[o, c, ky, kx] = Σ_p dy[o, p] ·
//!   x[c, p + ky·(W+2) + kx]` with the output channels in the lanes: each image's `dy` is
//!   transposed (16×16 blocks in registers) to rows of Co floats per position, and per position
//!   one aligned `dy` row meets the nine tap values of `x`, broadcast from the bordered planes
//!   (scalar loads: nothing splits a cache line). A tile is 16 output channels × 2 input
//!   channels × 9 taps, or 32 × 1 × 9: 18 accumulators. Each `dw` entry is one running sum over
//!   the positions of the images in order, kept between images; each rayon chunk of images (one
//!   per thread, as [`crate::reduction_chunks`] decides) has its own, and the chunks are added
//!   in order, so the result depends on the thread count only.
//!
//! The kernels take a list of taps (offsets from the output position, [`Taps`]), so the same
//! tiles also run the stride-2 3×3 and 1×1 layers on phase planes ([`strided`]).
//!
//! On images with rows of 7, 8 or 14 outputs, where the position vectors waste the most lanes,
//! the 3×3 forward and input-gradient passes run [`lanes`]' row tiles instead: output channels
//! in the lanes, every lane a real output, each output the same running sum (same bits).
//!
//! Every entry point takes an [`Avx512`] token and every [`Grid`] holds one, so no kernel can be
//! reached on a CPU without AVX-512F: the `unsafe` blocks that run AVX-512 code rely on the
//! token at hand, not on a check made by some caller.
//!
//! On CPUs with AVX2 and FMA but without AVX-512, `avx2` runs the same layers (3×3 stride 1,
//! and the stride-2 ones on phase planes) with 8-lane vectors, in the same order, so with the
//! same bits.
//!
//! The reference is [`super::conv2d_ref`] / [`super::conv2d_bwd_ref`]; the gemm path stays for
//! every other shape, for f64 and for CPUs without AVX2.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{chunk_slices, sum_in_order, InputGrad};
use crate::tensor::filled_vec;
use crate::{Avx2Fma, Avx512};

mod avx2;
mod bf16;
mod forward;
mod grid;
mod lanes;
mod strided;
mod weight_grad;

pub(super) use bf16::{backward as bf16_backward, forward as bf16_forward};
use forward::{pack, Forward, NB, V};
use grid::{Ahead, Grid, Taps};
pub(super) use grid::{AlignedPlanes, Map};
#[cfg(target_arch = "x86_64")]
pub(super) use weight_grad::transpose_dy;
use weight_grad::WeightGrad;

/// Whether a convolution is one the kernels take: 3×3 with stride 1 and padding 1, or one of
/// the stride-2 kernels of [`strided`].
pub(super) fn fits(kh: usize, kw: usize, stride: usize, pad: usize) -> bool {
    (kh == 3 && kw == 3 && stride == 1 && pad == 1) || strided::fits(kh, kw, stride, pad)
}

/// Sizes of a convolution that [`fits`]: N, Ci, Co, H, W (input), k (kernel side), stride.
pub(super) type Shape = [usize; 7];

/// The forward pass of a convolution that [`fits`]: `x` N×Ci×H×W, `w` Co×Ci×k×k; the input
/// read through `map` if one is given (stride 1 only).
///
/// # Panics
/// If the slices do not have those lengths or a map comes with stride 2; callers check first.
pub(super) fn forward(
    cpu: Avx512,
    x: &[f32],
    w: &[f32],
    shape: Shape,
    map: Option<Map<'_>>,
) -> Vec<f32> {
    by_stride(
        shape,
        map.is_some(),
        (),
        |s, ()| conv3x3(cpu, x, w, s, map),
        |s, ()| strided::forward(cpu, x, w, s),
    )
}

/// Hands a convolution that [`fits`], and `arg`, to `one` (3×3 stride 1: N, Ci, Co, H, W) or
/// `two` (the stride-2 kernels), after checking that a 3×3 kernel comes with stride 1 and an
/// input map (`mapped`) with stride 1 only.
fn by_stride<A, R>(
    shape: Shape,
    mapped: bool,
    arg: A,
    one: impl FnOnce([usize; 5], A) -> R,
    two: impl FnOnce(strided::StridedShape, A) -> R,
) -> R {
    let [n, ci, co, h, wd, k, stride] = shape;
    if stride == 1 {
        assert_eq!(k, 3, "direct kernel: stride 1 takes 3×3 kernels");
        return one([n, ci, co, h, wd], arg);
    }
    assert!(!mapped, "direct kernel: no input map with stride 2");
    two(shape.into(), arg)
}

/// [`forward`] on the AVX2 kernels (CPUs without AVX-512): the same shapes, the same bits.
pub(super) fn avx2_forward(
    cpu: Avx2Fma,
    x: &[f32],
    w: &[f32],
    shape: Shape,
    map: Option<Map<'_>>,
) -> Vec<f32> {
    by_stride(
        shape,
        map.is_some(),
        (),
        |s, ()| avx2::forward(cpu, x, w, s, map),
        |s, ()| avx2::strided_forward(cpu, x, w, s),
    )
}

/// [`backward`] on the AVX2 kernels (CPUs without AVX-512): the same shapes, the same bits.
pub(super) fn avx2_backward(
    cpu: Avx2Fma,
    [x, w, dy]: [&[f32]; 3],
    shape: Shape,
    map: Option<Map<'_>>,
    grads: (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    by_stride(
        shape,
        map.is_some(),
        grads,
        |s, g| avx2::backward(cpu, [x, w, dy], s, map, g),
        |s, g| avx2::strided_backward(cpu, [x, w, dy], s, g),
    )
}

/// A forward pass over the `n` images of `x` (`in_len` floats each) into a new buffer of `n`
/// outputs of `out_len` floats, one rayon task per image: the loop of every forward driver here
/// (f32 and bf16, AVX-512 and AVX2, stride 1 and 2), as [`InputGrad::run_chunked`] is the
/// backward passes'. `image(scratch, i, xi, yi)` gets a scratch buffer (`scratch()` makes one per rayon split,
/// reused by its images), the image's index, its input and its output to write. The buffer is
/// allocated without zeroing; with no input or no output floats per image it is zeros.
///
/// # Safety
/// `image` writes every element of `yi`.
pub(super) unsafe fn forward_images<B>(
    x: &[f32],
    [n, in_len, out_len]: [usize; 3],
    scratch: impl Fn() -> B + Sync + Send,
    image: impl Fn(&mut B, usize, &[f32], &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    if in_len == 0 || out_len == 0 {
        return vec![0.0; n * out_len];
    }
    assert_eq!(x.len(), n * in_len, "direct kernel: input length");
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(out_len)
            .zip(x.par_chunks(in_len))
            .enumerate()
            .for_each_init(&scratch, |buf, (i, (yi, xi))| image(buf, i, xi, yi));
    };
    // SAFETY: the n images' outputs cover the buffer and `image` writes every element of each
    // (this function's contract).
    unsafe { filled_vec(n * out_len, fill) }.0
}

impl InputGrad<'_, [f32]> {
    /// Runs `f` on the input gradient's buffer as asked — a new one of `len` floats, allocated
    /// without zeroing; the given one, with `f`'s second argument true (add, do not
    /// overwrite); or an empty one — and returns the new buffer, if any, and `f`'s result.
    ///
    /// # Safety
    /// For [`InputGrad::New`], `f` writes every element of the buffer. For [`InputGrad::AddTo`], `f` writes
    /// only initialised floats into the buffer (which it is handed initialised): the caller's
    /// `&mut [f32]` is lent to `f` as `MaybeUninit<f32>`, and a `MaybeUninit::uninit()` stored
    /// there would leave that `f32` slice holding an uninitialised value.
    pub(in crate::conv2d) unsafe fn run<R>(
        self,
        len: usize,
        f: impl FnOnce(&mut [MaybeUninit<f32>], bool) -> R,
    ) -> (Option<Vec<f32>>, R) {
        match self {
            InputGrad::Skip => (None, f(&mut [], false)),
            InputGrad::New => {
                // SAFETY: this function's contract.
                let (dx, r) = unsafe { filled_vec(len, |buf| f(buf, false)) };
                (Some(dx), r)
            }
            InputGrad::AddTo(buf) => {
                assert_eq!(buf.len(), len, "direct kernel: gradient buffer length");
                // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the buffer is
                // initialised, and `f` writes only initialised floats into it (this function's
                // contract), so it is still a valid `[f32]` afterwards.
                let view = unsafe { &mut *(buf as *mut [f32] as *mut [MaybeUninit<f32>]) };
                (None, f(view, true))
            }
        }
    }

    /// A backward pass over chunks of `n` images, one rayon task per chunk (as many as
    /// [`crate::reduction_chunks`] decides): `per_chunk(dx, [x, dy], add)` gets a chunk's
    /// images of `x` (`in_len` floats each) and `dy` (`out_len` each) and its part of the input
    /// gradient's buffer (see [`InputGrad::run`]; empty when none is wanted), and returns the
    /// chunk's weight gradient. The chunks' weight gradients are added in order, so the result
    /// depends on the thread count only.
    ///
    /// # Safety
    /// As [`InputGrad::run`], for each chunk: with a new input gradient `per_chunk` writes
    /// every element of its part; when adding, only initialised floats.
    pub(in crate::conv2d) unsafe fn run_chunked(
        self,
        n: usize,
        [in_len, out_len]: [usize; 2],
        [x, dy]: [&[f32]; 2],
        per_chunk: impl Fn(&mut [MaybeUninit<f32>], [&[f32]; 2], bool) -> Vec<f32> + Sync,
    ) -> (Option<Vec<f32>>, Vec<f32>) {
        let per = n.div_ceil(crate::reduction_chunks(n));
        let fill = |dx: &mut [MaybeUninit<f32>], add: bool| {
            let partials: Vec<Vec<f32>> = chunk_slices(dx, per * in_len, n.div_ceil(per))
                .into_par_iter()
                .zip(x.par_chunks(per * in_len))
                .zip(dy.par_chunks(per * out_len))
                .map(|((dxc, xc), dyc)| per_chunk(dxc, [xc, dyc], add))
                .collect();
            sum_in_order(partials)
        };
        // SAFETY: this function's contract: the chunks cover the buffer, and each is written
        // as `InputGrad::run` requires.
        unsafe { self.run(n * in_len, fill) }
    }
}

/// The backward pass of [`forward`]: the input gradient as `dx` asks, and the weight gradient.
///
/// # Panics
/// As [`forward`], and if `dy` does not hold N×Co×Ho×Wo floats.
pub(super) fn backward(
    cpu: Avx512,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    shape: Shape,
    map: Option<Map<'_>>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    by_stride(
        shape,
        map.is_some(),
        (dx, want_dw),
        |s, g| conv3x3_bwd(cpu, x, w, dy, s, map, g),
        |s, g| strided::backward(cpu, x, w, dy, s, g),
    )
}

/// `y = w ⋆ x` for a batch: `x` N×Ci×H×W, `w` Co×Ci×3×3, `y` N×Co×H×W, rayon over the
/// images. The output is allocated without zeroing: the kernel writes every element.
///
/// # Panics
/// If the slices do not have those lengths; callers check first.
fn conv3x3(
    cpu: Avx512,
    x: &[f32],
    w: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map>,
) -> Vec<f32> {
    assert_eq!(x.len(), n * ci * h * wd, "direct kernel: input length");
    let grid = Grid::same(cpu, h, wd);
    let fwd = Forward::new(&grid, grid.taps3x3(), w.into(), ci, co);
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    let image = |buf: &mut AlignedPlanes, i, xi: &[f32], yi: &mut [MaybeUninit<f32>]| {
        grid.fill(xi, buf, map);
        let ahead = Ahead::next(i, [(x, in_len), (&[], 0)]);
        fwd.image(buf.get(), yi, false, ahead);
    };
    // SAFETY: `Forward::image` writes every element of each image's output.
    unsafe { forward_images(x, [n, in_len, out_len], || grid.buffer(ci), image) }
}

/// Checks the lengths of a 3×3 backward pass's slices (`kernel` names the kernels in the
/// message), and gives its result when there is nothing to compute: zeros, and a new input
/// gradient of zeros if one is asked for.
///
/// # Panics
/// If `x`, `w` or `dy` does not hold N×Ci×H×W, Co×Ci×3×3 or N×Co×H×W floats.
pub(super) fn checked_bwd(
    kernel: &str,
    [x, w, dy]: [&[f32]; 3],
    [n, ci, co, h, wd]: [usize; 5],
    dx: &InputGrad<'_, [f32]>,
) -> Option<(Option<Vec<f32>>, Vec<f32>)> {
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    assert_eq!(x.len(), n * in_len, "{kernel} kernel: input length");
    assert_eq!(w.len(), co * ci * 9, "{kernel} kernel: weight length");
    assert_eq!(dy.len(), n * out_len, "{kernel} kernel: gradient length");
    (n == 0 || in_len == 0 || out_len == 0).then(|| {
        (
            matches!(dx, InputGrad::New).then(|| vec![0.0; n * in_len]),
            vec![0.0; co * ci * 9],
        )
    })
}

/// The backward pass: from `dy` (N×Co×H×W) the weight gradient (Co×Ci×3×3) and the input
/// gradient (N×Ci×H×W) as `dx` asks. Rayon over chunks of images, one per thread.
///
/// # Panics
/// As [`conv3x3`], and if `dy` does not hold N×Co×H×W floats.
fn conv3x3_bwd(
    cpu: Avx512,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    [n, ci, co, h, wd]: [usize; 5],
    map: Option<Map>,
    (dx, want_dw): (InputGrad<'_, [f32]>, bool),
) -> (Option<Vec<f32>>, Vec<f32>) {
    let want_dx = dx.wanted();
    let (in_len, out_len) = (ci * h * wd, co * h * wd);
    if let Some(empty) = checked_bwd("direct", [x, w, dy], [n, ci, co, h, wd], &dx) {
        return empty;
    }
    let grid = Grid::same(cpu, h, wd);
    let taps = grid.taps3x3();
    let bwd = Forward::new(
        &grid,
        taps.clone(),
        super::gemm_path::flip_kernel(w, [ci, co, 9]).into(),
        co,
        ci,
    );
    let chunk = |dxc: &mut [MaybeUninit<f32>], [xc, dyc]: [&[f32]; 2], add: bool| {
        let mut wg = WeightGrad::new(&grid, &taps, ci, co);
        let mut xb = grid.buffer(if want_dw { ci } else { 0 });
        let mut db = grid.buffer(if want_dx { co } else { 0 });
        for (i, (xi, dyi)) in xc.chunks(in_len).zip(dyc.chunks(out_len)).enumerate() {
            if want_dw {
                grid.fill(xi, &mut xb, map);
            }
            if want_dx {
                grid.fill(dyi, &mut db, None);
                let ahead = Ahead::next(i, [(xc, in_len), (dyc, out_len)]);
                bwd.image(db.get(), &mut dxc[i * in_len..][..in_len], add, ahead);
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
