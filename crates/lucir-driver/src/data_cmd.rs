//! `lucir-driver data`: loads a dataset and prints its per-class counts and class order;
//! `lucir-driver data fetch` downloads one (see [`crate::fetch`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lucir_data::{load, ClassOrder, DatasetKind, FolderOptions};

/// Options of `lucir-driver data`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DataArgs {
    #[command(subcommand)]
    pub action: Option<DataAction>,
    /// fmnist, mnist, cifar10, cifar100 or folder.
    #[arg(long, default_value = "fmnist")]
    pub dataset: String,
    /// Folder holding the dataset files (Fashion-MNIST defaults to Debian's location).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the class-order shuffle (numpy's legacy shuffle).
    #[arg(long, default_value_t = 1993)]
    pub seed: u32,
    /// Explicit class order, e.g. 4,2,7,6,0,3,5,8,9,1 (overrides --seed).
    #[arg(long, value_delimiter = ',')]
    pub class_order: Option<Vec<usize>>,
    /// Image folders: the test transform's resized side.
    #[arg(long, default_value_t = 256)]
    pub resize: usize,
    /// Image folders: crop side seen by the network.
    #[arg(long, default_value_t = 224)]
    pub crop: usize,
    /// Image folders: use N of the folder's classes (chosen with --seed)
    #[arg(long, value_name = "N")]
    pub classes: Option<usize>,
}

/// What `lucir-driver data` does besides describing a dataset.
#[derive(Debug, Subcommand)]
pub enum DataAction {
    /// Download CIFAR-10 or CIFAR-100 (binary version), check and unpack it.
    Fetch(crate::fetch::FetchArgs),
}

/// Runs the sub-command.
pub fn run(args: &DataArgs) -> Result<()> {
    if let Some(DataAction::Fetch(f)) = &args.action {
        return crate::fetch::run(f);
    }
    let kind = crate::usage(DatasetKind::parse(&args.dataset).context("--dataset"))?;
    let folder = FolderOptions {
        resize: args.resize,
        crop: args.crop,
        classes: args.classes,
        class_seed: args.seed,
    };
    let ds = load(kind, args.data_dir.as_deref(), folder)
        .with_context(|| format!("loading the {} dataset", kind.name()))?;
    let order = match &args.class_order {
        Some(o) => ClassOrder::explicit(ds.classes, o.clone())?,
        None => ClassOrder::seeded(ds.classes, args.seed),
    };
    let [c, h, w] = ds.train.shape;
    println!(
        "dataset {} from {}: {} classes, {c}×{h}×{w} images, {} train / {} test",
        kind.name(),
        ds.dir.display(),
        ds.classes,
        ds.train.len(),
        ds.test.len()
    );
    let train = ds.train.class_counts(ds.classes);
    let test = ds.test.class_counts(ds.classes);
    println!(
        "{:>8} {:>6} {:>8} {:>8}  name",
        "position", "class", "train", "test"
    );
    for (p, &cls) in order.order().iter().enumerate() {
        println!(
            "{p:>8} {cls:>6} {:>8} {:>8}  {}",
            train[cls], test[cls], ds.class_names[cls]
        );
    }
    let list: Vec<String> = order.order().iter().map(|c| c.to_string()).collect();
    match &args.class_order {
        Some(_) => println!("class order (explicit): {}", list.join(",")),
        None => println!("class order (seed {}): {}", args.seed, list.join(",")),
    }
    Ok(())
}
