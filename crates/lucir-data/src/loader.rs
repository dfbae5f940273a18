//! The batch loader: shuffles samples per epoch, renders each batch (augmentation +
//! normalisation) in parallel with rayon, and prepares the next batch on a background thread
//! while the caller trains on the current one. Each batch is a fresh N×C×H×W f32 tensor that is
//! dropped after use, so memory stays flat across epochs.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use lucir_tensor::Tensor;
use rayon::prelude::*;

use crate::augment::{choice, render, splitmix64};
use crate::{Augment, Normalization, Split};

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

/// Tiny SplitMix64 stream for the per-epoch shuffle.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }
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

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.samples.len()).collect();
        if self.transform == Transform::Train {
            let mut s = Stream(splitmix64(self.seed ^ splitmix64(epoch)));
            for i in (1..idx.len()).rev() {
                let j = (s.next() % (i as u64 + 1)) as usize;
                idx.swap(i, j);
            }
        }
        idx
    }

    /// Renders the samples at positions `which` (of this loader's list) for `epoch`.
    pub fn render(&self, which: &[usize], epoch: u64) -> Batch {
        let [c, h, w] = self.split.shape;
        let crop = self.augment.crop;
        let per = c * crop * crop;
        let mut data = vec![0f32; which.len() * per];
        let samples: Vec<Sample> = which.iter().map(|&i| self.samples[i]).collect();
        if per > 0 {
            data.par_chunks_mut(per)
                .zip(samples.par_iter())
                .for_each(|(out, s)| {
                    let (pad, pick) = match self.transform {
                        Transform::Train => (
                            self.augment.pad,
                            choice(&self.augment, h.min(w), self.seed, epoch, s.id as u64),
                        ),
                        Transform::Test { mirrored } => {
                            let (dy, dx) = ((h - crop.min(h)) / 2, (w - crop.min(w)) / 2);
                            (0, (dy, dx, mirrored))
                        }
                    };
                    render(
                        self.split.image(s.id),
                        [c, h, w],
                        pad,
                        crop,
                        pick,
                        &self.norm,
                        out,
                    );
                });
        }
        Batch {
            images: Tensor::from_vec(&[which.len(), c, crop, crop], data)
                .expect("buffer sized from the batch shape"),
            labels: samples.iter().map(|s| s.label).collect(),
            ids: samples.iter().map(|s| s.id).collect(),
        }
    }

    /// The batches of `epoch`, each prepared on a background thread one step ahead.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let (tx, rx) = sync_channel(1);
        let me = self.clone();
        let handle = std::thread::spawn(move || {
            let order = me.order(epoch);
            for chunk in order.chunks(me.batch) {
                if tx.send(me.render(chunk, epoch)).is_err() {
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

/// Iterator over one epoch's batches (see [`Loader::epoch`]).
#[derive(Debug)]
pub struct EpochIter {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
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
