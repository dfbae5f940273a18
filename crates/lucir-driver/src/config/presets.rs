//! The named presets a run starts from (docs/design.md §4).

use anyhow::{bail, Result};
use lucir_method::{Arch, MethodConfig};

use super::{cpu, direct, precision_f32, DataConfig, RunConfig};

/// The paper's CIFAR-100 class order (numpy seed 1993), docs/design.md §7.
pub const CIFAR100_ORDER: [usize; 100] = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85,
    19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31,
    54, 37, 95, 14, 71, 96, 98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18,
    94, 11, 12, 47, 25, 30, 46, 62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29,
    49, 57, 33,
];

/// The Fashion-MNIST presets' order (numpy's seed-1993 shuffle of 0..10).
pub const FMNIST_ORDER: [usize; 10] = [4, 2, 7, 6, 0, 3, 5, 8, 9, 1];

/// The preset used when neither `--preset` nor a config file names one.
pub const DEFAULT_PRESET: &str = "fmnist-quick";

/// Names of the presets.
pub const PRESETS: [&str; 6] = [
    "fmnist-quick",
    "fmnist",
    "cifar100-b50-inc10",
    "cifar100-b50-inc5",
    "cifar100-b50-inc2",
    "imagenet-subset-b50-inc10",
];

/// The settings of a named preset.
pub fn preset(name: &str) -> Result<RunConfig> {
    let run = |data, method| RunConfig {
        preset: name.to_string(),
        threads: 0,
        device: cpu(),
        conv: direct(),
        precision: precision_f32(),
        init_from: None,
        skip_base_training: false,
        data,
        method,
    };
    let fmnist = |per_class: Option<usize>, arch, epochs| {
        let data = DataConfig {
            dataset: "fmnist".into(),
            data_dir: None,
            train_per_class: per_class,
            test_per_class: None,
            class_order: Some(FMNIST_ORDER.to_vec()),
            class_order_seed: 1993,
            base: 5,
            inc: 1,
            resize: 256,
            crop: 224,
            classes: None,
        };
        // One new class per phase: the margin loss has one new class to rank, K = 1 (the
        // paper's K = 2 is for phases of ≥ 2 classes; the loss uses min(K, new) either way).
        let method = MethodConfig {
            k: 1,
            ..MethodConfig::lucir(arch, epochs)
        };
        run(data, method)
    };
    let cifar = |inc| {
        let data = DataConfig {
            dataset: "cifar100".into(),
            class_order: Some(CIFAR100_ORDER.to_vec()),
            base: 50,
            inc,
            train_per_class: None,
            ..fmnist(None, Arch::Resnet32, 1).data
        };
        run(data, MethodConfig::lucir(Arch::Resnet32, 160))
    };
    // docs/design.md §4: 100 classes of an ImageNet folder (the seed-1993 choice), ResNet-18,
    // 90 epochs with the rate ×0.1 after 30 and 60, weight decay 1e-4, λ_base 10, CBF on.
    let imagenet_subset = || {
        let data = DataConfig {
            dataset: "folder".into(),
            class_order: None,
            base: 50,
            inc: 10,
            classes: Some(100),
            ..cifar(10).data
        };
        let method = MethodConfig {
            milestones: Some(vec![30, 60]),
            weight_decay: 1e-4,
            lambda_base: 10.0,
            cbf: true,
            ..MethodConfig::lucir(Arch::Resnet18, 90)
        };
        run(data, method)
    };
    Ok(match name {
        "fmnist-quick" => fmnist(Some(1000), Arch::Resnet20, 12),
        "fmnist" => fmnist(None, Arch::Resnet32, 30),
        "cifar100-b50-inc10" => cifar(10),
        "cifar100-b50-inc5" => cifar(5),
        "cifar100-b50-inc2" => cifar(2),
        "imagenet-subset-b50-inc10" => imagenet_subset(),
        other => bail!("unknown preset {other:?}; presets: {}", PRESETS.join(", ")),
    })
}
