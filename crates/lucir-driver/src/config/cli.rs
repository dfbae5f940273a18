//! The command-line flags of a run ([`RunArgs`]) and the seed lists of sweeps.

use std::path::PathBuf;

use clap::Args;

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
    /// With --resume: continue even where the thread count, the CPU kernels or the device
    /// differ from the checkpoint's (the run's later bits then differ from an uninterrupted
    /// run's; run.json records each segment's).
    #[arg(long, requires = "resume")]
    pub allow_different_threads: bool,
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
    /// First N test images of each class only (a quick evaluation; recorded in config.toml
    /// and kept apart by `report`).
    #[arg(long, value_name = "N")]
    pub test_per_class: Option<usize>,
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
    /// Write a Slurm job-array script to FILE instead of running: one task per seed of
    /// --seeds (or the one seed of --seed or of the settings), each running the sweep's
    /// settings (OUT/sweep.toml) for its seed into OUT/seed-N/.
    #[arg(long, value_name = "FILE")]
    pub slurm: Option<PathBuf>,
    /// Worker threads; 0 (the presets' value) means one per core. The thread count decides
    /// the summation order, so a run's bits hold for one count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, or cuda to train and evaluate on the GPU (a `--features cuda` build).
    #[arg(long)]
    pub device: Option<String>,
    /// How the 3×3 stride-1 convolutions run on the CPU: direct (the default), winograd
    /// (F(2×2, 3×3)) or winograd4 (F(4×4, 3×3)): fewer multiplications, other bits; AVX-512
    /// only. docs/perf.md compares their speed and accuracy.
    #[arg(long, value_name = "direct|winograd|winograd4")]
    pub conv: Option<String>,
    /// f32 (the default), or bf16: the 3×3 stride-1 layers with 16 or more input channels
    /// multiply bf16 roundings and sum in f32 (CPUs with AVX512-BF16 only; other bits, about
    /// twice the products per instruction). docs/perf.md compares speed and accuracy.
    #[arg(long, value_name = "f32|bf16")]
    pub precision: Option<String>,
    /// Explicit class order, e.g. 4,2,7,6,0,3,5,8,9,1.
    #[arg(long, value_delimiter = ',')]
    pub class_order: Option<Vec<usize>>,
    /// Class order drawn by numpy's legacy shuffle with this seed (the paper's order is seed
    /// 1993), replacing the preset's explicit order.
    #[arg(long, value_name = "S", conflicts_with = "class_order")]
    pub class_order_seed: Option<u32>,
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

/// The most seeds a sweep takes.
pub const MAX_SEEDS: usize = 1000;

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
            if b - a >= MAX_SEEDS as u64 {
                return Err(format!(
                    "{s:?} is {} seeds; a sweep takes at most {MAX_SEEDS} (a Slurm array's usual \
                     limit)",
                    u128::from(b - a) + 1
                ));
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
