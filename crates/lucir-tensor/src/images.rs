//! A split's u8 images held on a device, and the training transform (random crop with zero
//! padding, horizontal flip, per-channel normalisation) rendered there from them: the images
//! cross to the device once, and each batch is a table of picks instead of a rendered f32
//! batch (`kernels/augment.cu`). The host renderer (lucir-data's `render`) is the reference:
//! the same picks give the same bits. The draws themselves stay on the host (lucir-data's
//! loader), so a run draws the same crops on either device.

use crate::{cuda_ops, Device, Error, Result, Tensor};

/// One image of a batch: its index among the images held, where its window starts in the
/// padded image, and whether it is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImagePick {
    /// Index of the image.
    pub index: usize,
    /// First row of the window in the padded image.
    pub dy: usize,
    /// First column of the window in the padded image.
    pub dx: usize,
    /// Mirrored left-right.
    pub flip: bool,
}

/// How a batch is rendered: zero padding, output side, and the normalisation per channel.
#[derive(Clone, Copy, Debug)]
pub struct RenderArgs<'a> {
    /// Zero padding on each side before cropping.
    pub pad: usize,
    /// Output side.
    pub crop: usize,
    /// Mean per channel (on the [0, 1] scale).
    pub mean: &'a [f32],
    /// Standard deviation per channel.
    pub std: &'a [f32],
}

/// u8 C×H×W images, one after another, on a CUDA device.
#[derive(Clone, Debug)]
pub struct DeviceImages {
    pub(crate) shape: [usize; 3],
    pub(crate) count: usize,
    pub(crate) storage: cuda_ops::ByteStorage,
}

impl DeviceImages {
    /// Uploads `pixels` (whole C×H×W images of `shape`) to `device`, a CUDA device.
    pub fn upload(device: &Device, pixels: &[u8], shape: [usize; 3]) -> Result<Self> {
        let per: usize = shape.iter().product();
        if per == 0 || !pixels.len().is_multiple_of(per) {
            return Err(Error::shape(
                "DeviceImages::upload",
                format!("{} bytes are not whole images of {shape:?}", pixels.len()),
            ));
        }
        match device {
            Device::Cpu => Err(Error::Device {
                op: "DeviceImages::upload",
                detail: "the cpu renders from host memory; there is nothing to upload".into(),
            }),
            Device::Cuda(gpu) => Ok(Self {
                shape,
                count: pixels.len() / per,
                storage: cuda_ops::upload_bytes(gpu, pixels)?,
            }),
        }
    }

    /// Number of images held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no image is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Channels, height, width of each image.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The batch of `picks` as an n×C×crop×crop device tensor: the window at (dy, dx) of each
    /// image padded by `pad` zeros, mirrored when asked, `(px/255 − mean)/std` (and
    /// `−mean/std` on the padding).
    pub fn render(&self, picks: &[ImagePick], args: RenderArgs<'_>) -> Result<Tensor<f32>> {
        cuda_ops::render_images(self, picks, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_that_cannot_be_are_errors_naming_the_op() {
        let e = DeviceImages::upload(&Device::Cpu, &[0; 12], [3, 2, 2]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Device {
                    op: "DeviceImages::upload",
                    ..
                }
            ),
            "{e}"
        );
        let e = DeviceImages::upload(&Device::Cpu, &[0; 13], [3, 2, 2]).unwrap_err();
        assert!(
            e.to_string().contains("13 bytes are not whole images"),
            "{e}"
        );
    }
}
