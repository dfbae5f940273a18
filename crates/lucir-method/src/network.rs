//! The trained model: a ResNet backbone and a classifier head that grows phase by phase.

use std::collections::HashMap;
use std::path::Path;

use lucir_autograd::{Param, ParamGroup, Tape, Var};
use lucir_nn::{
    prefixed, CosineLinear, HeadOut, Init, Linear, Mode, Module, ResNet, SplitCosineLinear,
};
use lucir_tensor::{Device, Float, Tensor};

use crate::{Arch, Error, Result};

/// The classifier head. A cosine head becomes [`Head::Split`] during an incremental phase (old
/// block frozen, new block trained, shared σ) and is merged back afterwards.
#[derive(Clone, Debug)]
pub enum Head<T: Float = f32> {
    /// Cosine classifier over all classes seen.
    Cosine(CosineLinear<T>),
    /// Cosine classifier split into old and new blocks.
    Split(SplitCosineLinear<T>),
    /// Linear classifier (baselines and the no-cosine ablation).
    Linear(Linear<T>),
}

impl<T: Float> Head<T> {
    /// Records the head on features `f` (B×D).
    pub fn forward(&self, tape: &mut Tape<T>, f: Var) -> Result<HeadOut> {
        Ok(match self {
            Head::Cosine(h) => h.forward(tape, f)?,
            Head::Split(h) => h.forward(tape, f)?,
            Head::Linear(h) => h.forward(tape, f)?,
        })
    }

    /// For cosine heads, the nodes of all class embeddings (old block then new) and of σ.
    pub fn theta_sigma(&self, tape: &mut Tape<T>) -> Result<Option<(Var, Var)>> {
        Ok(match self {
            Head::Cosine(h) => Some(h.theta_sigma(tape)),
            Head::Split(h) => Some(h.theta_sigma(tape)?),
            Head::Linear(_) => None,
        })
    }

    /// Number of classes scored.
    pub fn classes(&self) -> usize {
        match self {
            Head::Cosine(h) => h.weight.value.shape()[0],
            Head::Split(h) => h.old.value.shape()[0] + h.new.value.shape()[0],
            Head::Linear(h) => h.weight.value.shape()[0],
        }
    }

    /// σ of a cosine head.
    pub fn sigma(&self) -> Option<f64> {
        match self {
            Head::Cosine(h) => h.sigma.value.item().ok().map(T::as_f64),
            Head::Split(h) => h.sigma.value.item().ok().map(T::as_f64),
            Head::Linear(_) => None,
        }
    }

    /// Adds `new` classes: a cosine head splits (old block copied), a linear head gets fresh
    /// rows after its old ones.
    pub fn grow(&mut self, init: &mut Init, new: usize, dim: usize) -> Result<()> {
        self.on_cpu(|h| h.grow_here(init, new, dim))
    }

    /// Runs the structural edit `edit` (grow, merge, imprint) on the CPU and puts the head back
    /// where it lives: the edits are host code, once a phase, on a few thousand numbers.
    fn on_cpu(&mut self, edit: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let device = self.device();
        if device != Device::Cpu {
            self.to_device(&Device::Cpu)?;
        }
        let done = edit(self);
        if device != Device::Cpu {
            self.to_device(&device)?;
        }
        done
    }

    fn grow_here(&mut self, init: &mut Init, new: usize, dim: usize) -> Result<()> {
        self.merge_here()?;
        *self = match &*self {
            Head::Cosine(h) => Head::Split(SplitCosineLinear::grow(h, init, new)?),
            Head::Linear(h) => {
                let fresh = Linear::<T>::new(init, dim, new);
                let mut w = h.weight.value.as_slice().to_vec();
                w.extend_from_slice(fresh.weight.value.as_slice());
                let mut b = h.bias.value.as_slice().to_vec();
                b.extend_from_slice(fresh.bias.value.as_slice());
                let c = self.classes() + new;
                Head::Linear(Linear {
                    weight: Param::new(Tensor::from_vec(&[c, dim], w)?),
                    bias: Param::new(Tensor::from_vec(&[c], b)?),
                })
            }
            Head::Split(_) => {
                return Err(Error::Internal(
                    "a split head must be merged before it grows",
                ))
            }
        };
        Ok(())
    }

    /// Merges a split head back into one cosine head (no-op otherwise).
    pub fn merge(&mut self) -> Result<()> {
        self.on_cpu(Self::merge_here)
    }

    fn merge_here(&mut self) -> Result<()> {
        if let Head::Split(h) = self {
            *self = Head::Cosine(h.merge()?);
        }
        Ok(())
    }

    /// Replaces the new-class rows of a split head (imprinting), on the head's device.
    pub fn set_new_rows(&mut self, rows: Tensor<T>) -> Result<()> {
        let device = self.device();
        match self {
            Head::Split(h) => {
                rows.expect_shape("imprint", h.new.value.shape())?;
                h.new.value = rows.to_device(&device)?;
                Ok(())
            }
            _ => Err(Error::Internal("only a split cosine head can be imprinted")),
        }
    }

    /// Class embeddings of the old block of a split head.
    pub fn old_rows(&self) -> Option<&Tensor<T>> {
        match self {
            Head::Split(h) => Some(&h.old.value),
            _ => None,
        }
    }

    /// Optimizer groups: everything trainable at `lr`/`wd`, except a split head's old block,
    /// which is frozen (lr 0, no decay) as LUCIR prescribes. With `embeddings_only`, only class
    /// embeddings train (class-balanced fine-tuning: σ frozen).
    pub fn groups(&mut self, lr: f64, wd: f64, embeddings_only: bool) -> Vec<ParamGroup<'_, T>> {
        fn group<T>(params: Vec<&mut Param<T>>, lr: f64, wd: f64) -> ParamGroup<'_, T> {
            ParamGroup {
                lr,
                weight_decay: wd,
                params,
            }
        }
        match self {
            Head::Cosine(h) => {
                if embeddings_only {
                    vec![group(vec![&mut h.weight], lr, wd)]
                } else {
                    vec![group(vec![&mut h.weight, &mut h.sigma], lr, wd)]
                }
            }
            Head::Split(h) => vec![
                group(vec![&mut h.old], 0.0, 0.0),
                group(vec![&mut h.new, &mut h.sigma], lr, wd),
            ],
            Head::Linear(h) => vec![group(vec![&mut h.weight, &mut h.bias], lr, wd)],
        }
    }
}

impl<T: Float> Module<T> for Head<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        match self {
            Head::Cosine(h) => h.params(),
            Head::Split(h) => h.params(),
            Head::Linear(h) => h.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        match self {
            Head::Cosine(h) => h.params_mut(),
            Head::Split(h) => h.params_mut(),
            Head::Linear(h) => h.params_mut(),
        }
    }
}

/// Backbone + head, in f32 for training runs (f64 for reference computations).
#[derive(Clone, Debug)]
pub struct Network<T: Float = f32> {
    /// Feature extractor.
    pub backbone: ResNet<T>,
    /// Classifier.
    pub head: Head<T>,
}

impl<T: Float> Network<T> {
    /// A fresh network for `classes` base classes on `in_channels`-channel images.
    pub fn new(
        arch: Arch,
        in_channels: usize,
        classes: usize,
        cosine: bool,
        seed: u64,
    ) -> Result<Self> {
        let backbone = match arch {
            Arch::Resnet20 => ResNet::cifar(3, in_channels, seed)?,
            Arch::Resnet32 => ResNet::cifar(5, in_channels, seed)?,
            Arch::Resnet56 => ResNet::cifar(9, in_channels, seed)?,
            Arch::Resnet18 => ResNet::resnet18(in_channels, seed)?,
        };
        let d = backbone.feature_dim();
        let mut init = Init::new(seed ^ 0x4ead);
        let head = if cosine {
            Head::Cosine(CosineLinear::new(&mut init, d, classes))
        } else {
            Head::Linear(Linear::new(&mut init, d, classes))
        };
        Ok(Self { backbone, head })
    }

    /// Features (B×D) and head output for images `x`.
    pub fn forward(&mut self, tape: &mut Tape<T>, x: Var, mode: Mode) -> Result<(Var, HeadOut)> {
        let f = self.backbone.forward(tape, x, mode)?;
        let out = self.head.forward(tape, f)?;
        Ok((f, out))
    }

    /// Writes the network to `path` as safetensors with PyTorch's tensor names
    /// (`conv1.weight`, `layer1.0.bn1.running_mean`, …, `fc.sigma`; docs/design.md §8), with
    /// `metadata` as the file's `__metadata__`.
    pub fn save_safetensors(&self, metadata: HashMap<String, String>, path: &Path) -> Result<()> {
        let n = self.backbone.blocks_per_stage();
        Ok(lucir_nn::save_safetensors(self, n, metadata, path)?)
    }

    /// Loads a safetensors file with PyTorch's tensor names into this network, whose
    /// architecture and head shape it must match tensor for tensor; returns its metadata.
    pub fn load_safetensors(&mut self, path: &Path) -> Result<HashMap<String, String>> {
        let n = self.backbone.blocks_per_stage();
        Ok(lucir_nn::load_safetensors(self, n, path)?)
    }

    /// Whether every parameter is finite (read back from a device first).
    pub fn all_finite(&self) -> Result<bool> {
        for (_, p) in self.params() {
            if !p.value.host()?.all_finite() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves the network to `device` (parameters and batch-norm statistics).
    pub fn set_device(&mut self, device: &Device) -> Result<()> {
        Ok(self.to_device(device)?)
    }
}

impl<T: Float> Module<T> for Network<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        let mut v = prefixed("backbone", self.backbone.params());
        v.extend(prefixed("head", self.head.params()));
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        let mut v = prefixed("backbone", self.backbone.params_mut());
        v.extend(prefixed("head", self.head.params_mut()));
        v
    }
    fn buffers(&self) -> Vec<(String, &Tensor<T>)> {
        prefixed("backbone", self.backbone.buffers())
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        prefixed("backbone", self.backbone.buffers_mut())
    }
}
