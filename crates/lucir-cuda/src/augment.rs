//! The training transform on the device — the launcher of `kernels/augment.cu`: a batch
//! cropped, mirrored and normalised from a split's u8 images held on the device, with the
//! host renderer's roundings (lucir-data's `render` is its reference).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, PushKernelArg};

use crate::device::{driver, grid_stride, i32_of, load};
use crate::kernels::AUGMENT;
use crate::{Error, Gpu, Result};

/// The module's function, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    render: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [render] = load(ctx, &AUGMENT)?;
        Ok(Self { render })
    }
}

/// One image of a batch: its index among the images held, where its window starts in the
/// padded image, and whether it is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentPick {
    /// Index of the image in the buffer.
    pub index: usize,
    /// First row of the window in the padded image.
    pub dy: usize,
    /// First column of the window in the padded image.
    pub dx: usize,
    /// Mirrored left-right.
    pub flip: bool,
}

/// The transform's geometry and normalisation.
#[derive(Clone, Copy, Debug)]
pub struct AugmentArgs<'a> {
    /// Channels, height, width of every image held.
    pub shape: [usize; 3],
    /// Zero padding on each side before cropping.
    pub pad: usize,
    /// Output side.
    pub crop: usize,
    /// Mean per channel (on the [0, 1] scale).
    pub mean: &'a [f32],
    /// Standard deviation per channel.
    pub std: &'a [f32],
}

impl Gpu {
    /// The batch of `picks` from `images` (whole C×H×W u8 images, one after another): an
    /// n×C×crop×crop f32 buffer, `(px/255 − mean)/std`, and `−mean/std` on the padding.
    pub fn augment(
        &self,
        images: &CudaSlice<u8>,
        picks: &[AugmentPick],
        a: AugmentArgs<'_>,
    ) -> Result<CudaSlice<f32>> {
        let op = "augment";
        let [c, h, w] = a.shape;
        let per = c * h * w;
        let held = images.len().checked_div(per).unwrap_or(0);
        let shape_err = |detail: String| Error::Shape { op, detail };
        if a.mean.len() != c || a.std.len() != c {
            return Err(shape_err(format!(
                "{c} channels, {} means and {} deviations",
                a.mean.len(),
                a.std.len()
            )));
        }
        // Window offsets per axis (a central test window of a non-square image sits further
        // along its longer side than a square training window can).
        let span = |side: usize| (side + 2 * a.pad).saturating_sub(a.crop) + 1;
        let (rows, cols) = (span(h), span(w));
        let mut table = Vec::with_capacity(4 * picks.len());
        for p in picks {
            if p.index >= held || p.dy >= rows || p.dx >= cols {
                return Err(shape_err(format!(
                    "image {} at ({}, {}) of {held} images with {rows}×{cols} window offsets",
                    p.index, p.dy, p.dx
                )));
            }
            table.extend([
                i32_of(op, p.index)?,
                i32_of(op, p.dy)?,
                i32_of(op, p.dx)?,
                i32::from(p.flip),
            ]);
        }
        let total = picks.len() * c * a.crop * a.crop;
        let mut out = self.output::<f32>(total)?;
        if total == 0 {
            return Ok(out);
        }
        let (ni, ci, hi, wi) = (
            i32_of(op, picks.len())?,
            i32_of(op, c)?,
            i32_of(op, h)?,
            i32_of(op, w)?,
        );
        let (padi, cropi) = (i32_of(op, a.pad)?, i32_of(op, a.crop)?);
        let table = self.upload(&table)?;
        let norm = self.upload(&[a.mean, a.std].concat())?;
        let mut l = self.stream.launch_builder(&self.augment.render);
        l.arg(images)
            .arg(&table)
            .arg(&ni)
            .arg(&ci)
            .arg(&hi)
            .arg(&wi)
            .arg(&padi)
            .arg(&cropi)
            .arg(&norm)
            .arg(&mut out);
        // SAFETY: every pick's index is below the number of whole images held and its offsets
        // keep the window inside the padded image (checked; reads outside the image proper are
        // not made, the padding's value is computed); the table holds 4 i32 per pick, norm the C
        // means and C deviations (checked), out n·C·crop·crop floats, each written by one
        // thread.
        unsafe { l.launch(grid_stride(total)) }.map_err(driver(op))?;
        Ok(out)
    }
}
