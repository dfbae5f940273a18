//! Running a network over a loader without gradients: features, logits and labels.

use lucir_autograd::Tape;
use lucir_data::Loader;
use lucir_nn::{Mode, Module, ResNet};
use lucir_tensor::{l2_normalize_rows, with_workers_awake_on, Tensor};

use crate::{Network, Result};

/// Row-major B×D features (or B×C logits) with the labels of their samples.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// Width of a row.
    pub dim: usize,
    /// Rows, one per sample.
    pub data: Vec<f32>,
    /// Class position of each row.
    pub labels: Vec<usize>,
}

impl Features {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
    /// Scales every row to unit L2 norm (`lucir_tensor::l2_normalize_rows`; zero rows stay zero).
    pub fn normalized(&self) -> Features {
        let rows = Tensor::from_vec(&[self.rows(), self.dim], self.data.clone())
            .and_then(|t| l2_normalize_rows(&t))
            .map(|(t, _)| t.into_vec())
            .expect("the data holds rows × dim values by construction");
        Features {
            dim: self.dim,
            data: rows,
            labels: self.labels.clone(),
        }
    }
}

/// Backbone features of every sample of `loader`, in evaluation mode.
pub fn backbone_features(backbone: &mut ResNet<f32>, loader: &Loader) -> Result<Features> {
    let device = backbone.device();
    let mut out = Features {
        dim: backbone.feature_dim(),
        ..Features::default()
    };
    for batch in loader.epoch(0) {
        let batch = batch?;
        // A forward pass is a few hundred short parallel regions: see `with_workers_awake`.
        with_workers_awake_on(&device, || -> Result<()> {
            let mut tape = Tape::no_grad();
            let x = tape.constant(batch.images.into_device(&device)?);
            let f = backbone.forward(&mut tape, x, Mode::Eval)?;
            out.data.extend_from_slice(tape.value(f).host()?.as_slice());
            Ok(())
        })?;
        out.labels.extend(batch.labels);
    }
    Ok(out)
}

/// Features and logits of every sample of `loader`, in evaluation mode; `progress(done, total)`
/// is called after each batch with the images done so far.
pub fn features_and_logits(
    net: &mut Network,
    loader: &Loader,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<(Features, Features)> {
    let device = net.device();
    let mut feats = Features {
        dim: net.backbone.feature_dim(),
        ..Features::default()
    };
    let mut logits = Features {
        dim: net.head.classes(),
        ..Features::default()
    };
    for batch in loader.epoch(0) {
        let batch = batch?;
        with_workers_awake_on(&device, || -> Result<()> {
            let mut tape = Tape::no_grad();
            let x = tape.constant(batch.images.into_device(&device)?);
            let (f, out) = net.forward(&mut tape, x, Mode::Eval)?;
            feats
                .data
                .extend_from_slice(tape.value(f).host()?.as_slice());
            logits
                .data
                .extend_from_slice(tape.value(out.logits).host()?.as_slice());
            Ok(())
        })?;
        feats.labels.extend(batch.labels.iter().copied());
        logits.labels.extend(batch.labels);
        progress(feats.labels.len(), loader.len())?;
    }
    Ok((feats, logits))
}
