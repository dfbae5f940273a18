//! ResNets: the CIFAR ResNet-(6n+2) family (ResNet-20/32/56) and ResNet-18 (ImageNet layout),
//! both ending in global average pooling and both with **no ReLU after the last block**
//! (LUCIR's feature extractor; docs/design.md §3), so features may be negative.

use lucir_autograd::{Tape, Var};
use lucir_tensor::{Float, MaxPoolGeometry};

use crate::{prefixed, BatchNorm2d, Conv2d, Error, Init, Mode, Module, Param, Result, Tensor};

/// Two 3×3 convolutions with batch norm, plus the shortcut (identity, or 1×1 conv + BN where
/// the shape changes).
#[derive(Clone, Debug)]
pub struct BasicBlock<T: Float> {
    conv1: Conv2d<T>,
    bn1: BatchNorm2d<T>,
    conv2: Conv2d<T>,
    bn2: BatchNorm2d<T>,
    shortcut: Option<(Conv2d<T>, BatchNorm2d<T>)>,
    /// Whether the block ends with a ReLU (false for the network's last block).
    pub final_relu: bool,
}

impl<T: Float> BasicBlock<T> {
    fn new(init: &mut Init, ci: usize, co: usize, stride: usize, final_relu: bool) -> Self {
        let shortcut = (stride != 1 || ci != co).then(|| {
            (
                Conv2d::new(init, ci, co, 1, stride, 0),
                BatchNorm2d::new(co),
            )
        });
        Self {
            conv1: Conv2d::new(init, ci, co, 3, stride, 1),
            bn1: BatchNorm2d::new(co),
            conv2: Conv2d::new(init, co, co, 3, 1, 1),
            bn2: BatchNorm2d::new(co),
            shortcut,
            final_relu,
        }
    }

    fn forward(&mut self, tape: &mut Tape<T>, x: Var, mode: Mode) -> Result<Var> {
        let h = self.conv1.forward(tape, x)?;
        // bn1's output feeds conv2 only, bn2's the add only: two nodes that store neither.
        let h = self.bn1.forward_conv(tape, h, mode, true, &self.conv2)?;
        let s = match &mut self.shortcut {
            Some((conv, bn)) => {
                let s = conv.forward(tape, x)?;
                bn.forward(tape, s, mode, false)?
            }
            None => x,
        };
        self.bn2.forward_add(tape, h, mode, s, self.final_relu)
    }
}

impl<T: Float> Module<T> for BasicBlock<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        let mut v = prefixed("conv1", self.conv1.params());
        v.extend(prefixed("bn1", self.bn1.params()));
        v.extend(prefixed("conv2", self.conv2.params()));
        v.extend(prefixed("bn2", self.bn2.params()));
        if let Some((c, b)) = &self.shortcut {
            v.extend(prefixed("shortcut.conv", c.params()));
            v.extend(prefixed("shortcut.bn", b.params()));
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        let mut v = prefixed("conv1", self.conv1.params_mut());
        v.extend(prefixed("bn1", self.bn1.params_mut()));
        v.extend(prefixed("conv2", self.conv2.params_mut()));
        v.extend(prefixed("bn2", self.bn2.params_mut()));
        if let Some((c, b)) = &mut self.shortcut {
            v.extend(prefixed("shortcut.conv", c.params_mut()));
            v.extend(prefixed("shortcut.bn", b.params_mut()));
        }
        v
    }
    fn buffers(&self) -> Vec<(String, &Tensor<T>)> {
        let mut v = prefixed("bn1", self.bn1.buffers());
        v.extend(prefixed("bn2", self.bn2.buffers()));
        if let Some((_, b)) = &self.shortcut {
            v.extend(prefixed("shortcut.bn", b.buffers()));
        }
        v
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        let mut v = prefixed("bn1", self.bn1.buffers_mut());
        v.extend(prefixed("bn2", self.bn2.buffers_mut()));
        if let Some((_, b)) = &mut self.shortcut {
            v.extend(prefixed("shortcut.bn", b.buffers_mut()));
        }
        v
    }
}

/// Which ResNet a [`ResNet`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetKind {
    /// CIFAR-style ResNet-(6n+2) with `n` blocks per stage (3 → ResNet-20, 5 → 32, 9 → 56).
    Cifar { n: usize },
    /// ResNet-18 in the ImageNet layout.
    ResNet18,
}

/// A ResNet feature extractor: images N×Ci×H×W → features N×D.
#[derive(Clone, Debug)]
pub struct ResNet<T: Float> {
    /// Which network this is.
    pub kind: ResNetKind,
    stem: Conv2d<T>,
    stem_bn: BatchNorm2d<T>,
    stem_pool: Option<MaxPoolGeometry>,
    blocks: Vec<BasicBlock<T>>,
    feature_dim: usize,
}

impl<T: Float> ResNet<T> {
    /// CIFAR ResNet-(6n+2) on `in_channels`-channel images: 3×3 conv 16 → BN → ReLU →
    /// 3 stages × n blocks (16/32/64 channels, strides 1/2/2) → global average pool; D = 64.
    pub fn cifar(n: usize, in_channels: usize, seed: u64) -> Result<Self> {
        if n == 0 || in_channels == 0 {
            return Err(Error::Config(format!(
                "CIFAR ResNet needs n ≥ 1 blocks per stage and ≥ 1 input channel, got n = {n}, \
                 {in_channels} channels"
            )));
        }
        let mut init = Init::new(seed);
        let stem = Conv2d::new(&mut init, in_channels, 16, 3, 1, 1);
        let blocks = Self::stages(&mut init, 16, &[(16, 1), (32, 2), (64, 2)], n);
        Ok(Self {
            kind: ResNetKind::Cifar { n },
            stem,
            stem_bn: BatchNorm2d::new(16),
            stem_pool: None,
            blocks,
            feature_dim: 64,
        })
    }

    /// ResNet-18: 7×7/2 conv 64 → BN → ReLU → 3×3/2 max pool → 4 stages × 2 blocks
    /// (64/128/256/512 channels, strides 1/2/2/2) → global average pool; D = 512.
    pub fn resnet18(in_channels: usize, seed: u64) -> Result<Self> {
        if in_channels == 0 {
            return Err(Error::Config("ResNet-18 needs ≥ 1 input channel".into()));
        }
        let mut init = Init::new(seed);
        let stem = Conv2d::new(&mut init, in_channels, 64, 7, 2, 3);
        let blocks = Self::stages(&mut init, 64, &[(64, 1), (128, 2), (256, 2), (512, 2)], 2);
        Ok(Self {
            kind: ResNetKind::ResNet18,
            stem,
            stem_bn: BatchNorm2d::new(64),
            stem_pool: Some(MaxPoolGeometry {
                kernel: 3,
                stride: 2,
                pad: 1,
            }),
            blocks,
            feature_dim: 512,
        })
    }

    fn stages(
        init: &mut Init,
        mut ci: usize,
        stages: &[(usize, usize)],
        n: usize,
    ) -> Vec<BasicBlock<T>> {
        let total = stages.len() * n;
        let mut blocks = Vec::with_capacity(total);
        for &(co, stride) in stages {
            for i in 0..n {
                let last = blocks.len() + 1 == total;
                blocks.push(BasicBlock::new(
                    init,
                    ci,
                    co,
                    if i == 0 { stride } else { 1 },
                    !last,
                ));
                ci = co;
            }
        }
        blocks
    }

    /// Convolution FLOPs (2 per multiply-add) of one forward pass on an `h`×`w` image; a
    /// training step costs about three times this (forward, input and weight gradients).
    pub fn forward_flops(&self, h: usize, w: usize) -> u64 {
        let (mut h, mut w, mut total) = self.stem.flops(h, w);
        if let Some(g) = self.stem_pool {
            h = (h + 2 * g.pad - g.kernel) / g.stride + 1;
            w = (w + 2 * g.pad - g.kernel) / g.stride + 1;
        }
        for b in &self.blocks {
            let (h1, w1, f1) = b.conv1.flops(h, w);
            let (_, _, f2) = b.conv2.flops(h1, w1);
            let fs = b.shortcut.as_ref().map_or(0, |(c, _)| c.flops(h, w).2);
            total += f1 + f2 + fs;
            (h, w) = (h1, w1);
        }
        total
    }

    /// Blocks per stage (`n` of a CIFAR ResNet-(6n+2), 2 for ResNet-18): what maps block
    /// indices to PyTorch's `layer{s}.{j}` names.
    pub fn blocks_per_stage(&self) -> usize {
        match self.kind {
            ResNetKind::Cifar { n } => n,
            ResNetKind::ResNet18 => 2,
        }
    }

    /// Width D of the features.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// Records the network on images `x` (N×Ci×H×W) and returns the features (N×D).
    pub fn forward(&mut self, tape: &mut Tape<T>, x: Var, mode: Mode) -> Result<Var> {
        let h = self.stem.forward(tape, x)?;
        let mut h = self.stem_bn.forward(tape, h, mode, true)?;
        if let Some(g) = self.stem_pool {
            h = tape.max_pool2d(h, g)?;
        }
        for b in &mut self.blocks {
            h = b.forward(tape, h, mode)?;
        }
        Ok(tape.global_avg_pool(h)?)
    }
}

impl<T: Float> Module<T> for ResNet<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        let mut v = prefixed("stem", self.stem.params());
        v.extend(prefixed("stem_bn", self.stem_bn.params()));
        for (i, b) in self.blocks.iter().enumerate() {
            v.extend(prefixed(&format!("block{i}"), b.params()));
        }
        v
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        let mut v = prefixed("stem", self.stem.params_mut());
        v.extend(prefixed("stem_bn", self.stem_bn.params_mut()));
        for (i, b) in self.blocks.iter_mut().enumerate() {
            v.extend(prefixed(&format!("block{i}"), b.params_mut()));
        }
        v
    }
    fn buffers(&self) -> Vec<(String, &Tensor<T>)> {
        let mut v = prefixed("stem_bn", self.stem_bn.buffers());
        for (i, b) in self.blocks.iter().enumerate() {
            v.extend(prefixed(&format!("block{i}"), b.buffers()));
        }
        v
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        let mut v = prefixed("stem_bn", self.stem_bn.buffers_mut());
        for (i, b) in self.blocks.iter_mut().enumerate() {
            v.extend(prefixed(&format!("block{i}"), b.buffers_mut()));
        }
        v
    }
}
