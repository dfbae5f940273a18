//! Training augmentation (random crop with zero padding, horizontal flip) and per-channel
//! normalisation, turning stored `u8` C×H×W images into f32. The random crops are drawn by the
//! loader (one generator per epoch, see [`crate::loader`]), so they do not depend on thread
//! count.

/// Per-channel mean and standard deviation on the [0, 1] scale (docs/design.md §4).
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Fashion-MNIST: mean 0.2860, std 0.3530.
    pub fn fmnist() -> Self {
        Self {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }
    /// MNIST: mean 0.1307, std 0.3081.
    pub fn mnist() -> Self {
        Self {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }
    /// CIFAR-10/100 (docs/design.md §4).
    pub fn cifar() -> Self {
        Self {
            mean: vec![0.5071, 0.4866, 0.4409],
            std: vec![0.2009, 0.1984, 0.2023],
        }
    }
    /// ImageNet.
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }
}

/// What the training transform does: a `crop`×`crop` window from the image padded by `pad`
/// zeros on each side, mirrored left-right with probability ½ when `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Output side.
    pub crop: usize,
    /// Zero padding before cropping.
    pub pad: usize,
    /// Random horizontal flip.
    pub flip: bool,
}

/// One sample's training transform: where its window starts in the padded image and whether
/// it is mirrored. The test transform is the central window. Images read from files take their
/// window from `seed` instead, once the file's size is known (torchvision's random resized
/// crop, `crate::folder`); `dy` and `dx` are then 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    /// First row of the window in the padded image.
    pub dy: usize,
    /// First column of the window in the padded image.
    pub dx: usize,
    /// Mirrored left-right.
    pub flip: bool,
    /// Files: seed of the random resized crop's draws; 0 for images in memory and in testing.
    pub seed: u64,
}

impl Augment {
    /// Number of window offsets along a side of `size` pixels: `size + 2·pad − crop + 1`.
    pub(crate) fn span(&self, size: usize) -> usize {
        (size + 2 * self.pad).saturating_sub(self.crop) + 1
    }
}

/// Writes one normalised image into `out` (C×crop×crop): the window at (dy, dx) of the padded
/// image, optionally mirrored. The test transform is the central window without flip.
pub(crate) fn render(
    src: &[u8],
    [c, h, w]: [usize; 3],
    pad: usize,
    crop: usize,
    Crop { dy, dx, flip, .. }: Crop,
    norm: &Normalization,
    out: &mut [f32],
) {
    for ch in 0..c {
        let (m, s) = (norm.mean[ch], norm.std[ch]);
        let zero = -m / s;
        for y in 0..crop {
            let sy = (y + dy).checked_sub(pad).filter(|v| *v < h);
            let row = &mut out[(ch * crop + y) * crop..(ch * crop + y + 1) * crop];
            for (x, o) in row.iter_mut().enumerate() {
                let xx = if flip { crop - 1 - x } else { x };
                let sx = (xx + dx).checked_sub(pad).filter(|v| *v < w);
                *o = match (sy, sx) {
                    (Some(sy), Some(sx)) => (src[(ch * h + sy) * w + sx] as f32 / 255.0 - m) / s,
                    _ => zero,
                };
            }
        }
    }
}
