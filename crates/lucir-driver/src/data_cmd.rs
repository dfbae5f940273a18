//! `lucir-driver data`: loads a dataset and prints its per-class counts and class order (for an
//! image folder also the range of image sizes on disk, from every file's header);
//! `data --check` decodes every image of a folder once and lists those that fail;
//! `lucir-driver data fetch` downloads a dataset (see [`crate::fetch`]).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::outln;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use lucir_data::{
    check_images, image_sizes, load, ClassOrder, Dataset, DatasetKind, FolderOptions,
};

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
    /// Image folders: decode every image once, in parallel, before any training needs it, and
    /// list each file that cannot be read or decoded with the reason; exits with 1 when any
    /// is bad, else prints a summary. Without it only the headers are read, and a corrupt
    /// image shows only when a batch reaches it. (The other readers check every record when
    /// they load.)
    #[arg(long)]
    pub check: bool,
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
    if kind == DatasetKind::Folder {
        describe_folder(&ds)?;
    } else {
        let [c, h, w] = ds.train.shape;
        outln!(
            "dataset {} from {}: {} classes, {c}×{h}×{w} images, {} train / {} test",
            kind.name(),
            ds.dir.display(),
            ds.classes,
            ds.train.len(),
            ds.test.len()
        )?;
    }
    let train = ds.train.class_counts(ds.classes);
    let test = ds.test.class_counts(ds.classes);
    outln!(
        "{:>8} {:>6} {:>8} {:>8}  name",
        "position",
        "class",
        "train",
        "test"
    )?;
    for (p, &cls) in order.order().iter().enumerate() {
        outln!(
            "{p:>8} {cls:>6} {:>8} {:>8}  {}",
            train[cls],
            test[cls],
            ds.class_names[cls]
        )?;
    }
    let list: Vec<String> = order.order().iter().map(|c| c.to_string()).collect();
    match &args.class_order {
        Some(_) => outln!("class order (explicit): {}", list.join(","))?,
        None => outln!("class order (seed {}): {}", args.seed, list.join(","))?,
    }
    if !args.check {
        Ok(())
    } else if kind == DatasetKind::Folder {
        check_folder(&ds)
    } else {
        outln!(
            "check: the {} reader checked all {} images while loading",
            kind.name(),
            ds.train.len() + ds.test.len()
        )?;
        Ok(())
    }
}

/// Files done in a pass over `total` files, shown on stderr: a bar on a terminal, else (when
/// `lines`) a count line at every tenth.
struct Tally {
    bar: Option<ProgressBar>,
    lines: bool,
    done: AtomicUsize,
    total: usize,
    what: &'static str,
}

impl Tally {
    fn new(total: usize, what: &'static str, lines: bool) -> Result<Self> {
        let bar = std::io::stderr()
            .is_terminal()
            .then(|| crate::progress::count_bar(total, what.to_string()))
            .transpose()?;
        Ok(Self {
            bar,
            lines,
            done: AtomicUsize::new(0),
            total,
            what,
        })
    }

    /// One more file done (called from the worker threads).
    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            b.inc(1);
        } else if self.lines && done * 10 / self.total > (done - 1) * 10 / self.total {
            eprintln!("{}: {done}/{} files", self.what, self.total);
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// The first lines of `data` for an image folder: the counts, and the range of image sizes
/// read from every file's header (cheap beside decoding: a few kilobytes a file, in
/// parallel), with the crop the network is fed.
fn describe_folder(ds: &Dataset) -> Result<()> {
    outln!(
        "dataset folder from {}: {} classes, {} train / {} test images",
        ds.dir.display(),
        ds.classes,
        ds.train.len(),
        ds.test.len()
    )?;
    let files = ds.image_files();
    let tally = Tally::new(files.len(), "reading headers", false)?;
    let sizes = image_sizes(&files, || tally.tick());
    tally.finish();
    let size = |(w, h): (u32, u32)| format!("{w}×{h}");
    let range = match (sizes.smallest, sizes.largest) {
        (Some(a), Some(b)) if a == b => size(a),
        (Some(a), Some(b)) => format!("{} to {}", size(a), size(b)),
        _ => "of unknown size".to_string(),
    };
    let crop = ds.augment.crop;
    let mut line = format!(
        "images {range} on disk (read from the headers), fed to the network as 3×{crop}×{crop} \
         crops"
    );
    if sizes.unreadable > 0 {
        line += &format!(
            "; {} of {} headers unreadable (`--check` lists the bad files)",
            sizes.unreadable,
            files.len()
        );
    }
    outln!("{line}")?;
    Ok(())
}

/// `data --check` for an image folder: decodes every file once and lists the bad ones on
/// stdout, `PATH: REASON` a line; an error (exit 1) when there is any.
fn check_folder(ds: &Dataset) -> Result<()> {
    let files = ds.image_files();
    let tally = Tally::new(files.len(), "checking", true)?;
    let bad = check_images(&files, || tally.tick());
    tally.finish();
    for b in &bad {
        outln!("{}: {}", b.path.display(), b.reason)?;
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} image files cannot be used (listed above)",
            bad.len(),
            files.len()
        );
    }
    outln!(
        "check: all {} images decode ({} train, {} test)",
        files.len(),
        ds.train.len(),
        ds.test.len()
    )?;
    Ok(())
}
