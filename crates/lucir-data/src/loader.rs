//! The batch loader: shuffles samples per epoch, renders each batch (augmentation +
//! normalisation) in parallel with rayon, and prepares the next batch on a background thread
//! while the caller trains on the current one. Each batch is a fresh N×C×H×W f32 tensor that is
//! dropped after use, so memory stays flat across epochs. Image-folder splits are decoded here,
//! file by file, in the same parallel pass (`crate::folder`).
//!
//! An epoch's random draws — the shuffle, then each position's crop offsets and flip, in visit
//! order, as a PyTorch data loader draws them — come from one ChaCha8 generator keyed by the
//! loader's seed and the epoch (docs/design.md §4). They depend on nothing else: not on the
//! thread count, and not on earlier epochs, so a run resumed at an epoch boundary draws what an
//! uninterrupted one does.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use lucir_tensor::{Device, DeviceImages, ImagePick, RenderArgs, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::render;
use crate::folder::{self, decode_image, random_resized_crop};
use crate::{Augment, Crop, Normalization, Pixels, Result, Split};

/// One training or test sample: its index in the split and its class position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Index of the image in its [`Split`].
    pub id: usize,
    /// Class position (in the class order).
    pub label: usize,
}

/// A mini-batch.
#[derive(Debug)]
pub struct Batch {
    /// Normalised images, N×C×crop×crop.
    pub images: Tensor<f32>,
    /// Class positions.
    pub labels: Vec<usize>,
    /// Split indices of the images.
    pub ids: Vec<usize>,
}

/// How images are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transform {
    /// Random crop/flip from the dataset's augmentation.
    Train,
    /// Central crop, optionally mirrored (NME averages plain and mirrored features).
    Test { mirrored: bool },
}

/// Batches over a fixed list of samples of one split.
#[derive(Clone, Debug)]
pub struct Loader {
    split: Arc<Split>,
    samples: Arc<Vec<Sample>>,
    batch: usize,
    norm: Arc<Normalization>,
    augment: Augment,
    transform: Transform,
    seed: u64,
}

/// One epoch's draws: the order the samples are visited in and, position by position, the
/// crop each visit renders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochDraws {
    /// Positions in the loader's sample list, in visit order.
    pub order: Vec<usize>,
    /// `crops[i]` is the transform of the sample visited `i`-th.
    pub crops: Vec<Crop>,
}

impl Loader {
    /// A training loader: shuffled every epoch, augmented with `augment`.
    pub fn train(
        split: Arc<Split>,
        samples: Vec<Sample>,
        batch: usize,
        norm: Normalization,
        augment: Augment,
        seed: u64,
    ) -> Self {
        Self::new(
            split,
            samples,
            (batch, norm, augment),
            Transform::Train,
            seed,
        )
    }

    /// An evaluation loader: samples in order, central crop of side `augment.crop`, mirrored
    /// when `mirrored`.
    pub fn test(
        split: Arc<Split>,
        samples: Vec<Sample>,
        batch: usize,
        norm: Normalization,
        augment: Augment,
        mirrored: bool,
    ) -> Self {
        let transform = Transform::Test { mirrored };
        Self::new(split, samples, (batch, norm, augment), transform, 0)
    }

    fn new(
        split: Arc<Split>,
        samples: Vec<Sample>,
        (batch, norm, augment): (usize, Normalization, Augment),
        transform: Transform,
        seed: u64,
    ) -> Self {
        Self {
            split,
            samples: Arc::new(samples),
            batch: batch.max(1),
            norm: Arc::new(norm),
            augment,
            transform,
            seed,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Batches per epoch (the last one may be smaller).
    pub fn batches(&self) -> usize {
        self.samples.len().div_ceil(self.batch)
    }

    /// The draws of `epoch`. A training loader shuffles with Fisher–Yates and then draws, for
    /// each position in the new order, the crop row, the crop column and the flip (in that
    /// order) from a ChaCha8 generator keyed by (seed, epoch); an evaluation loader visits the
    /// samples in order with the central window.
    pub fn draws(&self, epoch: u64) -> EpochDraws {
        let n = self.samples.len();
        let mut order: Vec<usize> = (0..n).collect();
        let [_, h, w] = self.split.shape;
        let crops = match self.transform {
            Transform::Train => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&self.seed.to_le_bytes());
                key[8..16].copy_from_slice(&epoch.to_le_bytes());
                let mut rng = ChaCha8Rng::from_seed(key);
                order.shuffle(&mut rng);
                let span = self.augment.span(h.min(w));
                let files = matches!(self.split.images, Pixels::Files(_));
                (0..n)
                    .map(|_| {
                        if files {
                            // The window is drawn from `seed` once the file's size is known.
                            let seed = rng.random::<u64>();
                            let flip = rng.random_bool(0.5);
                            return Crop {
                                dy: 0,
                                dx: 0,
                                flip: flip && self.augment.flip,
                                seed,
                            };
                        }
                        let dy = rng.random_range(0..span);
                        let dx = rng.random_range(0..span);
                        let flip = rng.random_bool(0.5);
                        Crop {
                            dy,
                            dx,
                            flip: flip && self.augment.flip,
                            seed: 0,
                        }
                    })
                    .collect()
            }
            Transform::Test { mirrored } => {
                let crop = self.augment.crop;
                let central = Crop {
                    dy: (h - crop.min(h)) / 2,
                    dx: (w - crop.min(w)) / 2,
                    flip: mirrored,
                    seed: 0,
                };
                vec![central; n]
            }
        };
        EpochDraws { order, crops }
    }

    /// Renders the samples at positions `which` (of this loader's list) with `crops[i]` for
    /// `which[i]`. Images in files are read and decoded here, in parallel; a file that cannot
    /// be read or decoded is an error naming it.
    ///
    /// # Panics
    /// If the two slices differ in length.
    pub fn render(&self, which: &[usize], crops: &[Crop]) -> Result<Batch> {
        assert_eq!(which.len(), crops.len(), "one crop per rendered sample");
        let [c, h, w] = self.split.shape;
        let crop = self.augment.crop;
        let per = c * crop * crop;
        let per_image = self.split.image_len();
        let train = self.transform == Transform::Train;
        let pad = if train { self.augment.pad } else { 0 };
        let mut data = vec![0f32; which.len() * per];
        let samples: Vec<Sample> = which.iter().map(|&i| self.samples[i]).collect();
        if per > 0 {
            data.par_chunks_mut(per)
                .zip(samples.par_iter().zip(crops))
                .try_for_each(|(out, (s, &pick))| -> Result<()> {
                    match &self.split.images {
                        Pixels::Memory(v) => {
                            let px = &v[s.id * per_image..(s.id + 1) * per_image];
                            render(px, [c, h, w], pad, crop, pick, &self.norm, out);
                        }
                        Pixels::Files(files) => {
                            let path = &files[s.id];
                            let bytes = folder::read(path)?;
                            if train {
                                let px = random_resized_crop(path, &bytes, crop, pick.seed)?;
                                let at = Crop {
                                    dy: 0,
                                    dx: 0,
                                    ..pick
                                };
                                render(&px, [c, crop, crop], 0, crop, at, &self.norm, out);
                            } else {
                                let px = decode_image(path, &bytes, h)?;
                                render(&px, [c, h, w], 0, crop, pick, &self.norm, out);
                            }
                        }
                    }
                    Ok(())
                })?;
        }
        Ok(Batch {
            images: Tensor::from_vec(&[which.len(), c, crop, crop], data)?,
            labels: samples.iter().map(|s| s.label).collect(),
            ids: samples.iter().map(|s| s.id).collect(),
        })
    }

    /// The batches of `epoch`, each prepared on a background thread one step ahead; the
    /// iteration ends after the first error (an unreadable image file).
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on: the same batches as [`Loader::epoch`]
    /// gives after its first `first`, without rendering those (a run resumed mid-epoch).
    pub fn epoch_from(&self, epoch: u64, first: usize) -> EpochIter {
        let (tx, rx) = sync_channel(1);
        let me = self.clone();
        let handle = std::thread::spawn(move || {
            let draws = me.draws(epoch);
            let batches = draws.order.chunks(me.batch);
            for (which, crops) in batches.zip(draws.crops.chunks(me.batch)).skip(first) {
                let batch = me.render(which, crops);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        EpochIter {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

impl Loader {
    /// This loader's split's pixels on `device`, for [`Loader::epoch_on`]: `None` on the CPU,
    /// and for a split of image files (decoded on the host, batch by batch).
    pub fn upload_pixels(&self, device: &Device) -> Result<Option<DeviceImages>> {
        match (&self.split.images, device) {
            (Pixels::Memory(v), Device::Cuda(_)) => {
                Ok(Some(DeviceImages::upload(device, v, self.split.shape)?))
            }
            _ => Ok(None),
        }
    }

    /// The batches of `epoch` from batch `first` on, rendered on the device from `images`
    /// (this loader's split, from [`Loader::upload_pixels`]): the draws of
    /// [`Loader::epoch_from`] and the same bits, with the host drawing and the device
    /// rendering.
    pub fn epoch_on<'a>(
        &'a self,
        images: &'a DeviceImages,
        epoch: u64,
        first: usize,
    ) -> impl Iterator<Item = Result<Batch>> + 'a {
        let draws = self.draws(epoch);
        let (n, b) = (draws.order.len(), self.batch);
        (first * b..n).step_by(b).map(move |start| {
            let end = (start + b).min(n);
            self.render_on(images, &draws.order[start..end], &draws.crops[start..end])
        })
    }

    /// [`Loader::render`] on the device, from `images`.
    fn render_on(&self, images: &DeviceImages, which: &[usize], crops: &[Crop]) -> Result<Batch> {
        if images.len() != self.split.len() || images.shape() != self.split.shape {
            return Err(crate::Error::Config(format!(
                "the device holds {} images of {:?}; this loader's split has {} of {:?}",
                images.len(),
                images.shape(),
                self.split.len(),
                self.split.shape
            )));
        }
        let samples: Vec<Sample> = which.iter().map(|&i| self.samples[i]).collect();
        let picks: Vec<ImagePick> = samples
            .iter()
            .zip(crops)
            .map(|(s, c)| ImagePick {
                index: s.id,
                dy: c.dy,
                dx: c.dx,
                flip: c.flip,
            })
            .collect();
        let args = RenderArgs {
            pad: match self.transform {
                Transform::Train => self.augment.pad,
                Transform::Test { .. } => 0,
            },
            crop: self.augment.crop,
            mean: &self.norm.mean,
            std: &self.norm.std,
        };
        Ok(Batch {
            images: images.render(&picks, args)?,
            labels: samples.iter().map(|s| s.label).collect(),
            ids: samples.iter().map(|s| s.id).collect(),
        })
    }
}

/// Iterator over one epoch's batches (see [`Loader::epoch`]).
#[derive(Debug)]
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref().and_then(|rx| rx.recv().ok())
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Closing the channel stops the producer at its next send.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
