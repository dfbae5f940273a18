//! Run configuration: presets (docs/design.md §4), TOML files and command-line overrides, resolved
//! into one [`RunConfig`] that is written to the run folder as `config.toml`.
//!
//! - [`presets`]: the named starting points;
//! - [`cli`]: the command-line flags of a run ([`RunArgs`]);
//! - [`resolve`]: TOML files and flags over a preset, checked into a [`RunConfig`].

mod cli;
mod presets;
mod resolve;

use std::path::PathBuf;

use lucir_method::MethodConfig;
use serde::{Deserialize, Serialize};

pub use cli::{parse_seeds, RunArgs, Seeds};
pub use presets::{preset, CIFAR100_ORDER, DEFAULT_PRESET, FMNIST_ORDER, PRESETS};
pub use resolve::{parse_arch, parse_config, read_config_file, resolve};

/// What data a run uses and how it is split into phases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// fmnist, mnist, cifar10, cifar100 or folder.
    pub dataset: String,
    /// Folder of the dataset files (default: Debian's Fashion-MNIST location).
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training images of each class, in file order.
    pub train_per_class: Option<usize>,
    /// Explicit class order; without it, numpy's shuffle with `class_order_seed`.
    pub class_order: Option<Vec<usize>>,
    /// Seed of the class-order shuffle when no explicit order is given.
    pub class_order_seed: u32,
    /// Classes of the base phase.
    pub base: usize,
    /// Classes per incremental phase.
    pub inc: usize,
    /// Image folders: the test transform's resized side (then the central `crop`).
    pub resize: usize,
    /// Image folders: crop side.
    pub crop: usize,
    /// Image folders: use this many of the folder's classes, the first of numpy's shuffle of
    /// all class ids with `class_order_seed` (ImageNet-Subset: 100 of 1000); default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
}

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The preset this configuration started from.
    pub preset: String,
    /// rayon threads (0 = one per core).
    pub threads: usize,
    /// `cpu`, or `cuda` to run the LUCIR head ops on the GPU.
    #[serde(default = "cpu")]
    pub device: String,
    /// A safetensors model (PyTorch tensor names) the base phase starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// With `init_from`: evaluate the given model as the base phase instead of training it.
    #[serde(default)]
    pub skip_base_training: bool,
    /// Data and phases.
    pub data: DataConfig,
    /// Method and hyper-parameters.
    pub method: MethodConfig,
}

pub(crate) fn cpu() -> String {
    "cpu".into()
}

