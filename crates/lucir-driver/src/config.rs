//! Run configuration: presets (docs/design.md §4), TOML files and command-line overrides, resolved
//! into one [`RunConfig`] that is written to the run folder as `config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use lucir_data::MemoryBudget;
use lucir_method::{Arch, Method, MethodConfig};
use serde::{Deserialize, Serialize};

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

fn cpu() -> String {
    "cpu".into()
}

/// The settings of a named preset.
pub fn preset(name: &str) -> Result<RunConfig> {
    let run = |data, method| RunConfig {
        preset: name.to_string(),
        threads: 0,
        device: cpu(),
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
            class_order: Some(FMNIST_ORDER.to_vec()),
            class_order_seed: 1993,
            base: 5,
            inc: 1,
            resize: 256,
            crop: 224,
            classes: None,
        };
        run(data, MethodConfig::lucir(arch, epochs))
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

/// Command-line settings of a run; each given one overrides the preset and the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Preset to start from [default: the config file's `preset`, else fmnist-quick].
    #[arg(long)]
    pub preset: Option<String>,
    /// TOML file: an optional `preset = "…"` and any of its settings (`threads`, `device`,
    /// `[data]` and `[method]` keys) to change; command-line flags override the file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the resolved configuration (TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Continue the run in this folder where it stopped.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// lucir, finetune or icarl.
    #[arg(long)]
    pub method: Option<String>,
    /// Linear instead of cosine classifier (ablation).
    #[arg(long)]
    pub no_cosine: bool,
    /// Drop the less-forget constraint (ablation).
    #[arg(long)]
    pub no_less_forget: bool,
    /// Constant λ = λ_base (ablation).
    #[arg(long)]
    pub no_adaptive_lambda: bool,
    /// Drop the margin-ranking loss (ablation).
    #[arg(long)]
    pub no_margin: bool,
    /// Random instead of imprinted new-class weights (ablation).
    #[arg(long)]
    pub no_imprint: bool,
    /// Class-balanced fine-tuning after each incremental phase.
    #[arg(long)]
    pub cbf: bool,
    /// resnet20, resnet32, resnet56 or resnet18.
    #[arg(long)]
    pub model: Option<String>,
    /// Epochs per phase (learning-rate milestones of the preset or config file scale with it)
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Classes of the base phase.
    #[arg(long)]
    pub base: Option<usize>,
    /// Classes per incremental phase.
    #[arg(long)]
    pub inc: Option<usize>,
    /// First N training images of each class only.
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Exemplars per class.
    #[arg(long)]
    pub memory: Option<usize>,
    /// Fixed total exemplar budget instead of a per-class number.
    #[arg(long)]
    pub memory_total: Option<usize>,
    /// λ_base of the less-forget constraint.
    #[arg(long)]
    pub lambda_base: Option<f64>,
    /// Margin of the ranking loss.
    #[arg(long)]
    pub margin: Option<f64>,
    /// Hard negatives per old-class sample.
    #[arg(long)]
    pub k: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Epochs after which the learning rate drops ×0.1, e.g. 80,120 [default: 1/2 and 3/4 of
    /// the epochs].
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<usize>>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Epochs of class-balanced fine-tuning.
    #[arg(long)]
    pub cbf_epochs: Option<usize>,
    /// Learning rate of class-balanced fine-tuning.
    #[arg(long)]
    pub cbf_lr: Option<f64>,
    /// Distillation temperature of the iCaRL-style baseline.
    #[arg(long)]
    pub kd_temperature: Option<f64>,
    /// Image folders: side test images are resized to before the central crop
    #[arg(long)]
    pub resize: Option<usize>,
    /// Image folders: side of the crop the network sees.
    #[arg(long)]
    pub crop: Option<usize>,
    /// Image folders: use N of the folder's classes (the class-order seed's choice)
    #[arg(long, value_name = "N")]
    pub classes: Option<usize>,
    /// Batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long)]
    pub seed: Option<u64>,
    /// A seed sweep: one run per seed in OUT/seed-N/, then their mean ± s.d. report
    /// (`1993..2000`, both ends included, or a list `1993,1995`).
    #[arg(long, value_parser = parse_seeds, conflicts_with = "seed")]
    pub seeds: Option<Seeds>,
    /// With --seeds: write a Slurm job-array script to FILE (one task per seed, each running
    /// this command for its seed into OUT/seed-N/) instead of running.
    #[arg(long, value_name = "FILE", requires = "seeds")]
    pub slurm: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, or cuda to run the LUCIR head ops on the GPU (a `--features cuda` build).
    #[arg(long)]
    pub device: Option<String>,
    /// Explicit class order, e.g. 4,2,7,6,0,3,5,8,9,1.
    #[arg(long, value_delimiter = ',')]
    pub class_order: Option<Vec<usize>>,
    /// Folder of the dataset.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// fmnist, mnist, cifar10, cifar100 or folder.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Run folder (default `runs/<date-time>-<preset>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// results.json of other runs to draw in accuracy.svg for comparison.
    #[arg(long)]
    pub baseline: Vec<PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Start the base phase from this safetensors model (PyTorch tensor names, e.g. a
    /// model-phase-0.safetensors of another run).
    #[arg(long, value_name = "FILE")]
    pub init_from: Option<PathBuf>,
    /// With --init-from: evaluate the given model as the base phase, without training it.
    #[arg(long)]
    pub skip_base_training: bool,
}

/// The seeds of a sweep.
pub type Seeds = Vec<u64>;

/// `A..B` (both included) or `a,b,c`.
pub fn parse_seeds(s: &str) -> std::result::Result<Seeds, String> {
    let bad = || format!("{s:?} is neither A..B nor a comma-separated list of seeds");
    let seeds: Seeds = match s.split_once("..") {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(format!("{s:?}: the range is empty"));
            }
            (a..=b).collect()
        }
        None => s
            .split(',')
            .map(|v| v.trim().parse().map_err(|_| bad()))
            .collect::<std::result::Result<_, _>>()?,
    };
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != seeds.len() {
        return Err(format!("{s:?} names a seed twice"));
    }
    Ok(seeds)
}

fn parse_method(s: &str) -> Result<Method> {
    Ok(match s {
        "lucir" => Method::Lucir,
        "finetune" => Method::Finetune,
        "icarl" => Method::Icarl,
        o => bail!("unknown method {o:?}; expected lucir, finetune or icarl"),
    })
}

/// A model name: resnet20, resnet32, resnet56 or resnet18.
pub fn parse_arch(s: &str) -> Result<Arch> {
    Ok(match s {
        "resnet20" => Arch::Resnet20,
        "resnet32" => Arch::Resnet32,
        "resnet56" => Arch::Resnet56,
        "resnet18" => Arch::Resnet18,
        o => bail!("unknown model {o:?}; expected resnet20, resnet32, resnet56 or resnet18"),
    })
}

/// Reads a TOML run configuration (see [`parse_config`]).
pub fn read_config_file(path: &Path, preset_name: Option<&str>) -> Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&text, preset_name).with_context(|| format!("{}", path.display()))
}

/// Parses a TOML run configuration: the preset `preset_name` (else the file's `preset`, else
/// fmnist-quick) with the file's settings over it — top-level keys replace the preset's, and
/// keys inside `[data]` and `[method]` replace those of the preset's tables one by one. An
/// unknown key is an error naming it and the nearest valid one. A complete configuration (a
/// run folder's `config.toml`) reads back as itself.
pub fn parse_config(text: &str, preset_name: Option<&str>) -> Result<RunConfig> {
    let file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", one_line(&e.to_string())))?;
    let name = match (preset_name, file.get("preset")) {
        (Some(n), _) => n.to_string(),
        (None, Some(toml::Value::String(n))) => n.clone(),
        (None, Some(v)) => bail!("preset must be a string naming a preset, got {v}"),
        (None, None) => DEFAULT_PRESET.to_string(),
    };
    let base = preset(&name)?;
    let mut merged = toml::Table::try_from(&base).context("encoding the preset")?;
    for (key, value) in file {
        match (merged.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(over))
                if key == "data" || key == "method" =>
            {
                section.extend(over);
            }
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    merged.insert("preset".into(), toml::Value::String(name));
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", suggest(&one_line(&e.to_string()))))
}

fn one_line(s: &str) -> String {
    s.trim().replace('\n', " ")
}

/// Adds "did you mean …?" to serde's unknown-field message (which lists the valid fields).
fn suggest(msg: &str) -> String {
    let Some(rest) = msg.split("unknown field `").nth(1) else {
        return msg.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|f| (strsim::damerau_levenshtein(unknown, f), f))
        .min();
    match best {
        Some((d, f)) if d <= 3.max(unknown.len() / 3) => format!("{msg}; did you mean `{f}`?"),
        _ => msg.to_string(),
    }
}

/// Preset (or config file), then the command-line overrides.
pub fn resolve(args: &RunArgs) -> Result<RunConfig> {
    let mut c = match &args.config {
        Some(path) => read_config_file(path, args.preset.as_deref())?,
        None => preset(args.preset.as_deref().unwrap_or(DEFAULT_PRESET))?,
    };
    let m = &mut c.method;
    if let Some(s) = &args.method {
        m.method = parse_method(s)?;
    }
    if let Some(s) = &args.model {
        m.arch = parse_arch(s)?;
    }
    m.cosine &= !args.no_cosine;
    m.less_forget &= !args.no_less_forget;
    m.adaptive_lambda &= !args.no_adaptive_lambda;
    m.margin_rank &= !args.no_margin;
    m.imprint &= !args.no_imprint;
    m.cbf |= args.cbf;
    if let Some(v) = args.epochs {
        // Milestones from the preset or file keep their place in the schedule (90 epochs with
        // drops after 30 and 60 → 9 epochs with drops after 3 and 6); --milestones overrides.
        if let (Some(ms), None) = (&m.milestones, &args.milestones) {
            let old = m.epochs.max(1);
            let scaled = ms.iter().map(|&x| x * v / old).filter(|&x| x > 0 && x < v);
            m.milestones = Some(scaled.collect());
        }
        m.epochs = v;
    }
    if let Some(v) = args.memory {
        m.memory = MemoryBudget::PerClass(v);
    }
    if let Some(v) = args.memory_total {
        m.memory = MemoryBudget::Total(v);
    }
    if let Some(v) = args.lambda_base {
        m.lambda_base = v;
    }
    if let Some(v) = args.margin {
        m.margin = v;
    }
    if let Some(v) = args.k {
        m.k = v;
    }
    if let Some(v) = args.lr {
        m.lr = v;
    }
    if let Some(v) = &args.milestones {
        m.milestones = Some(v.clone());
    }
    if let Some(v) = args.momentum {
        m.momentum = v;
    }
    if let Some(v) = args.weight_decay {
        m.weight_decay = v;
    }
    if let Some(v) = args.cbf_epochs {
        m.cbf_epochs = v;
    }
    if let Some(v) = args.cbf_lr {
        m.cbf_lr = v;
    }
    if let Some(v) = args.kd_temperature {
        m.kd_temperature = v;
    }
    if let Some(v) = args.batch {
        m.batch = v;
    }
    if let Some(v) = args.seed {
        m.seed = v;
    }
    let d = &mut c.data;
    if let Some(v) = args.base {
        d.base = v;
    }
    if let Some(v) = args.inc {
        d.inc = v;
    }
    if let Some(v) = args.train_per_class {
        d.train_per_class = Some(v);
    }
    if let Some(v) = &args.class_order {
        d.class_order = Some(v.clone());
    }
    if let Some(v) = &args.data_dir {
        d.data_dir = Some(v.clone());
    }
    if let Some(v) = &args.dataset {
        d.dataset = v.clone();
    }
    if let Some(v) = args.resize {
        d.resize = v;
    }
    if let Some(v) = args.crop {
        d.crop = v;
    }
    if let Some(v) = args.classes {
        d.classes = Some(v);
    }
    if let Some(v) = args.threads {
        c.threads = v;
    }
    if let Some(v) = &args.device {
        c.device = v.clone();
    }
    if let Some(v) = &args.init_from {
        c.init_from = Some(v.clone());
    }
    c.skip_base_training |= args.skip_base_training;
    if c.skip_base_training && c.init_from.is_none() {
        bail!("--skip-base-training needs --init-from FILE (the model to use as the base phase)");
    }
    if c.device != "cpu" && c.device != "cuda" {
        bail!("device {:?} is neither cpu nor cuda", c.device);
    }
    c.method.validate()?;
    // Written out, so the run folder's config.toml says when the rate dropped.
    c.method.milestones = Some(c.method.lr_milestones());
    if c.data.train_per_class == Some(0) {
        bail!("train_per_class must be at least 1");
    }
    if c.data.classes == Some(0) {
        bail!("classes must be at least 1, got 0");
    }
    if c.data.crop == 0 || c.data.crop > c.data.resize {
        bail!(
            "crop must be in 1..={} (resize), got {}",
            c.data.resize,
            c.data.crop
        );
    }
    Ok(c)
}
