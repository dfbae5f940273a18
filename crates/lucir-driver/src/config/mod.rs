//! Run configuration: presets (docs/design.md §4), TOML files and command-line overrides, resolved
//! into one [`RunConfig`] that is written to the run folder as `config.toml`.
//!
//! - `presets`: the named starting points;
//! - `cli`: the command-line flags of a run ([`RunArgs`]);
//! - [`resolve`]: TOML files and flags over a preset, checked into a [`RunConfig`].

mod cli;
mod keys;
mod presets;
mod resolve;

use std::path::PathBuf;

use lucir_method::MethodConfig;
use serde::{Deserialize, Serialize};

pub use cli::{parse_seeds, RunArgs, Seeds};
pub use presets::{preset, CIFAR100_ORDER, DEFAULT_PRESET, FMNIST_ORDER, PRESETS};
pub use resolve::{
    apply, conv3x3, method_name, parse_arch, parse_config, precision, read_config_file, resolve,
    validate,
};

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
    /// Use only the first N test images of each class, in file order (quick evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_per_class: Option<usize>,
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
    /// `cpu`, or `cuda` to train and evaluate on the GPU.
    #[serde(default = "cpu")]
    pub device: String,
    /// How the 3×3 stride-1 convolutions run on the CPU: `direct`, `winograd` or `winograd4`
    /// (`lucir_tensor::Conv3x3`). Written only when not `direct`, so configurations from before
    /// the setting existed read and print as they did.
    #[serde(default = "direct", skip_serializing_if = "is_direct")]
    pub conv: String,
    /// The number format of the CPU convolutions' products: `f32`, or `bf16` for the 3×3
    /// stride-1 layers (`lucir_tensor::Precision`). Written only when not `f32`, so
    /// configurations from before the setting existed read and print as they did.
    #[serde(default = "precision_f32", skip_serializing_if = "is_f32")]
    pub precision: String,
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

pub(crate) fn direct() -> String {
    "direct".into()
}

fn is_direct(conv: &str) -> bool {
    conv == "direct"
}

pub(crate) fn precision_f32() -> String {
    "f32".into()
}

fn is_f32(precision: &str) -> bool {
    precision == "f32"
}

/// One setting that differs between two configurations.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Its name as a configuration file writes it, e.g. `method.epochs`.
    pub key: String,
    /// The value before (`None`: not set).
    pub from: Option<String>,
    /// The value after.
    pub to: Option<String>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(not set)".into());
        write!(f, "{} {} → {}", self.key, v(&self.from), v(&self.to))
    }
}

/// The settings in which `b` differs from `a`, by their dotted names, except those named in
/// `ignore` (e.g. `method.seed` between the runs of one sweep).
pub fn changes(a: &RunConfig, b: &RunConfig, ignore: &[&str]) -> Vec<Change> {
    let (fa, fb) = (settings(a), settings(b));
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter(|k| !ignore.contains(&k.as_str()))
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| Change {
            key: k.clone(),
            from: fa.get(k).cloned(),
            to: fb.get(k).cloned(),
        })
        .collect()
}

/// Every setting of `c` by its dotted name (`method.epochs`), its value as TOML writes it.
pub fn settings(c: &RunConfig) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(table) = toml::Table::try_from(c) else {
        return out;
    };
    for (k, v) in table {
        match v {
            toml::Value::Table(t) => {
                for (k2, v2) in t {
                    out.insert(format!("{k}.{k2}"), v2.to_string());
                }
            }
            v => {
                out.insert(k, v.to_string());
            }
        }
    }
    out
}
