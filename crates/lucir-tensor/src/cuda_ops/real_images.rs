//! The CUDA arm of [`crate::DeviceImages`] (a build with the `cuda` feature): a split's u8
//! images uploaded once, and batches rendered from them by `lucir-cuda`'s augment launcher.

use crate::device::{CudaStorage, Gpu};
use crate::{Result, Tensor};

/// A device's bytes: a split's u8 images (shared between clones).
#[derive(Clone, Debug)]
pub struct ByteStorage {
    gpu: Gpu,
    buf: std::sync::Arc<lucir_cuda::ByteBuffer>,
}

/// `pixels` in a new device buffer.
pub(crate) fn upload_bytes(gpu: &Gpu, pixels: &[u8]) -> Result<ByteStorage> {
    Ok(ByteStorage {
        gpu: gpu.clone(),
        buf: std::sync::Arc::new(gpu.upload(pixels)?),
    })
}

/// A batch rendered on the device from images held there.
pub(crate) fn render_images(
    images: &crate::DeviceImages,
    picks: &[crate::ImagePick],
    a: crate::RenderArgs<'_>,
) -> Result<Tensor<f32>> {
    let ByteStorage { gpu, buf } = &images.storage;
    let picks: Vec<lucir_cuda::AugmentPick> = picks
        .iter()
        .map(|p| lucir_cuda::AugmentPick {
            index: p.index,
            dy: p.dy,
            dx: p.dx,
            flip: p.flip,
        })
        .collect();
    let args = lucir_cuda::AugmentArgs {
        shape: images.shape,
        pad: a.pad,
        crop: a.crop,
        mean: a.mean,
        std: a.std,
    };
    let out = gpu.augment(buf, &picks, args)?;
    let [c, _, _] = images.shape;
    Ok(Tensor::from_cuda(
        &[picks.len(), c, a.crop, a.crop],
        CudaStorage::new(gpu.clone(), out),
    ))
}
