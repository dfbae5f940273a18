//! Layers and networks of lucir-rs: Conv2d, BatchNorm2d, Linear, the cosine heads, CIFAR
//! ResNet-(6n+2) and ResNet-18, with bit-exact state save/load.
//!
//! Layers hold [`Param`]s; a forward pass records onto a [`Tape`]. Every module lists its
//! parameters and buffers by dotted name ([`Module`]), which is what the optimizer groups and
//! the state files key on.

mod error;
mod head;
mod init;
mod layers;
mod resnet;
mod safetensors_io;
mod state;

pub use error::{Error, Result};
pub use head::{CosineLinear, HeadOut, Linear, SplitCosineLinear};
pub use init::Init;
pub use layers::{BatchNorm2d, Conv2d, Mode};
pub use lucir_autograd::{Param, Tape, Var};
pub use lucir_tensor::{Float, Tensor};
pub use resnet::{BasicBlock, ResNet, ResNetKind};
pub use safetensors_io::{
    apply_tensor_file, load_safetensors, save_safetensors, torch_name, TensorFile,
};
pub use state::{
    load_state, save_state, write_atomic, StateData, StateDict, StateEntry, STATE_FORMAT,
    STATE_VERSION,
};

/// Something with named parameters and buffers.
pub trait Module<T: Float> {
    /// Parameters by dotted name, in a fixed order.
    fn params(&self) -> Vec<(String, &Param<T>)>;
    /// Parameters by dotted name, mutably, in the same order.
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)>;
    /// Non-trained state (BatchNorm running statistics) by dotted name.
    fn buffers(&self) -> Vec<(String, &Tensor<T>)> {
        Vec::new()
    }
    /// Non-trained state, mutably, in the same order.
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        Vec::new()
    }
    /// Names and shapes of the parameters then the buffers, in listing order.
    fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let params = self.params().into_iter().map(|(n, p)| (n, p.value.shape()));
        params
            .chain(self.buffers().into_iter().map(|(n, t)| (n, t.shape())))
            .map(|(n, s)| (n, s.to_vec()))
            .collect()
    }
    /// Replaces the parameters then the buffers, in listing order, by `values` (whose shapes the
    /// caller has checked against [`Module::shapes`]).
    fn assign(&mut self, values: Vec<Tensor<T>>) {
        let mut values = values.into_iter();
        for ((_, p), t) in self.params_mut().into_iter().zip(values.by_ref()) {
            p.value = t;
        }
        for ((_, b), t) in self.buffers_mut().into_iter().zip(values) {
            *b = t;
        }
    }
    /// Where the parameters live (those of the first; the CPU for a module without any).
    fn device(&self) -> lucir_tensor::Device {
        self.params()
            .first()
            .map(|(_, p)| p.value.device())
            .unwrap_or_default()
    }
    /// Moves the parameters and buffers to `device` (in place: each parameter keeps its
    /// identity, so optimiser state keyed on it stays attached).
    fn to_device(&mut self, device: &lucir_tensor::Device) -> Result<()> {
        for (_, p) in self.params_mut() {
            p.value = p.value.to_device(device)?;
        }
        for (_, b) in self.buffers_mut() {
            *b = b.to_device(device)?;
        }
        Ok(())
    }
    /// Number of trainable scalars.
    fn num_params(&self) -> usize {
        self.params().iter().map(|(_, p)| p.value.len()).sum()
    }
}

/// Prepends `prefix.` to each name (for composing [`Module`] listings).
pub fn prefixed<V>(prefix: &str, items: Vec<(String, V)>) -> Vec<(String, V)> {
    items
        .into_iter()
        .map(|(n, v)| (format!("{prefix}.{n}"), v))
        .collect()
}
