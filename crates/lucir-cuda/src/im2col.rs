//! Convolutions without cuDNN — the launchers of `kernels/im2col.cu` and the cuBLAS products
//! around them (docs/design.md §5): the fallback where cuDNN cannot be loaded, or where
//! [`Gpu::use_im2col_convolutions`] asks for it. Slower than cuDNN (a column matrix written
//! and read per pass), deterministic (no atomics), true f32 products.
//!
//! Per chunk of images (at most [`COL_FLOATS`] floats of column matrix at a time, by default):
//! - forward: `col = im2col(x)`, then per image `y_i = W · col_i` (one strided batched
//!   `sgemm`, `W` shared);
//! - input gradient: per image `dcol_i = Wᵀ · dy_i`, then `dx = col2im(dcol)` (a gather; added
//!   to `dx` when accumulating);
//! - weight gradient: per image `P_i = dy_i · col_iᵀ`, then `dW = Σ_i P_i` over the images in
//!   order, chunk after chunk.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, PushKernelArg};

use crate::conv2d::ConvShape;
use crate::device::{driver, grid_stride, i32_of, load};
use crate::kernels::IM2COL;
use crate::{Gpu, Result};

/// Most floats of column matrix (and of per-image weight-gradient products) one chunk of
/// images holds, unless [`Gpu::set_im2col_chunk_floats`] says otherwise: 64 Mi floats, 256 MiB.
/// The weight gradient holds both at once, so up to twice that.
pub(crate) const COL_FLOATS: usize = 64 << 20;

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    im2col: CudaFunction,
    col2im: CudaFunction,
    sum_batches: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [im2col, col2im, sum_batches] = load(ctx, &IM2COL)?;
        Ok(Self {
            im2col,
            col2im,
            sum_batches,
        })
    }
}

/// A shape's sizes as the kernels and products take them.
struct Sizes {
    /// Floats of one image's input (Ci·H·W) and output (Co·Ho·Wo).
    x_len: usize,
    y_len: usize,
    /// Rows (Ci·KH·KW) and columns (Ho·Wo) of one image's column matrix.
    rows: usize,
    cols: usize,
    /// Images per chunk.
    chunk: usize,
    /// `c, h, w, kh, kw, stride, pad, ho, wo` as kernel arguments.
    args: [i32; 9],
}

impl Sizes {
    fn new(op: &'static str, s: ConvShape, chunk_floats: usize) -> Result<Self> {
        let [ho, wo] = s.out_hw();
        let (rows, cols) = (s.ci * s.kh * s.kw, ho * wo);
        let per_image = (rows * cols).max(s.co * rows).max(1);
        let mut args = [0; 9];
        for (a, v) in args
            .iter_mut()
            .zip([s.ci, s.h, s.w, s.kh, s.kw, s.stride, s.pad, ho, wo])
        {
            *a = i32_of(op, v)?;
        }
        Ok(Self {
            x_len: s.ci * s.h * s.w,
            y_len: s.co * cols,
            rows,
            cols,
            chunk: (chunk_floats / per_image).clamp(1, s.n.max(1)),
            args,
        })
    }

    /// The first image and the image count of each chunk of `n` images.
    fn chunks(&self, n: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..n)
            .step_by(self.chunk)
            .map(move |i| (i, self.chunk.min(n - i)))
    }
}

impl Gpu {
    /// Whether the convolutions run through im2col and cuBLAS instead of cuDNN from now on
    /// (they do anyway where cuDNN cannot be loaded): for tests and comparisons.
    pub fn use_im2col_convolutions(&self, on: bool) {
        self.im2col_forced.store(on, Ordering::Relaxed);
    }

    /// The most floats of column matrix the im2col convolutions hold at a time (at least one
    /// image's; default 64 Mi floats): a batch larger than that goes in chunks of images.
    /// Small values make the chunks that tests check.
    pub fn set_im2col_chunk_floats(&self, floats: usize) {
        self.im2col_chunk.store(floats, Ordering::Relaxed);
    }

    /// The sizes of shape `s` for `op`, chunked as set.
    fn im2col_sizes(&self, op: &'static str, s: ConvShape) -> Result<Sizes> {
        Sizes::new(op, s, self.im2col_chunk.load(Ordering::Relaxed))
    }

    /// `col` of images `first..first + count` of `x`.
    fn fill_columns(
        &self,
        s: &Sizes,
        x: &CudaSlice<f32>,
        (first, count): (usize, usize),
        col: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let op = "im2col";
        let xs = x.slice(first * s.x_len..(first + count) * s.x_len);
        let n = i32_of(op, count)?;
        let mut l = self.stream.launch_builder(&self.im2col.im2col);
        l.arg(&xs).arg(col).arg(&n);
        for a in &s.args {
            l.arg(a);
        }
        // SAFETY: `xs` holds `count` images and `col` (sized by the caller for a chunk) their
        // column matrices; each thread writes its own element.
        unsafe { l.launch(grid_stride(count * s.rows * s.cols)) }.map_err(driver(op))?;
        Ok(())
    }

    /// The forward pass of shape `sh` through im2col and one batched product per chunk.
    pub(crate) fn conv2d_fwd_im2col(
        &self,
        sh: ConvShape,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let s = self.im2col_sizes("conv2d_fwd", sh)?;
        let mut col = self.output::<f32>(s.chunk * s.rows * s.cols)?;
        for (first, count) in s.chunks(sh.n) {
            self.fill_columns(&s, x, (first, count), &mut col)?;
            let mut ys = y.slice_mut(first * s.y_len..(first + count) * s.y_len);
            self.gemm_batched(
                [sh.co, s.cols, s.rows],
                (w, false, 0),
                (&col, false, s.rows * s.cols),
                (&mut ys, s.y_len),
                count,
            )?;
        }
        Ok(())
    }

    /// The input gradient of shape `sh`: per chunk, the columns' gradient by one batched
    /// product, then gathered into `dx` (added when `accumulate`).
    pub(crate) fn conv2d_bwd_data_im2col(
        &self,
        sh: ConvShape,
        w: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let op = "col2im";
        let s = self.im2col_sizes("conv2d_bwd_data", sh)?;
        let mut dcol = self.output::<f32>(s.chunk * s.rows * s.cols)?;
        let acc = i32::from(accumulate);
        for (first, count) in s.chunks(sh.n) {
            let dys = dy.slice(first * s.y_len..(first + count) * s.y_len);
            self.gemm_batched(
                [s.rows, s.cols, sh.co],
                (w, true, 0),
                (&dys, false, s.y_len),
                (&mut dcol, s.rows * s.cols),
                count,
            )?;
            let mut dxs = dx.slice_mut(first * s.x_len..(first + count) * s.x_len);
            let n = i32_of(op, count)?;
            let mut l = self.stream.launch_builder(&self.im2col.col2im);
            l.arg(&dcol).arg(&mut dxs).arg(&n);
            for a in &s.args {
                l.arg(a);
            }
            l.arg(&acc);
            // SAFETY: `dcol` holds the chunk's column gradients, `dxs` its images (initialised
            // when accumulating: the caller's gradient); each thread writes its own element.
            unsafe { l.launch(grid_stride(count * s.x_len)) }.map_err(driver(op))?;
        }
        Ok(())
    }

    /// The weight gradient of shape `sh` into `dw`: per chunk, one product per image by one
    /// batched call, then the products summed over the images in order into `dw`.
    pub(crate) fn conv2d_bwd_filter_im2col(
        &self,
        sh: ConvShape,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dw: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let op = "sum_batches";
        let s = self.im2col_sizes("conv2d_bwd_filter", sh)?;
        let w_len = sh.co * s.rows;
        let mut col = self.output::<f32>(s.chunk * s.rows * s.cols)?;
        let mut parts = self.output::<f32>(s.chunk * w_len)?;
        let len = i64::try_from(w_len).map_err(|_| crate::Error::Shape {
            op,
            detail: format!("{w_len} weights"),
        })?;
        for (first, count) in s.chunks(sh.n) {
            self.fill_columns(&s, x, (first, count), &mut col)?;
            let dys = dy.slice(first * s.y_len..(first + count) * s.y_len);
            self.gemm_batched(
                [sh.co, s.rows, s.cols],
                (&dys, false, s.y_len),
                (&col, true, s.rows * s.cols),
                (&mut parts, w_len),
                count,
            )?;
            let (n, acc) = (i32_of(op, count)?, i32::from(first > 0));
            let mut l = self.stream.launch_builder(&self.im2col.sum_batches);
            l.arg(&parts).arg(&mut *dw).arg(&n).arg(&len).arg(&acc);
            // SAFETY: `parts` holds `count` products of `w_len` floats and `dw` `w_len`
            // (initialised from the first chunk on, which writes without reading).
            unsafe { l.launch(grid_stride(w_len)) }.map_err(driver(op))?;
        }
        Ok(())
    }
}
