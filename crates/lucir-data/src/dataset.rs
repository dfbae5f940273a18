//! Datasets in memory and the loaders of each supported kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cifar::{self, CifarKind};
use crate::folder::{self, FolderOptions};
use crate::{idx, Augment, Error, Normalization, Result};

/// Where Debian's `dataset-fashion-mnist` package puts the Fashion-MNIST files.
pub const FMNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The dataset formats lucir-rs reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// Fashion-MNIST (IDX files).
    Fmnist,
    /// MNIST (IDX files).
    Mnist,
    /// CIFAR-10 binary version.
    Cifar10,
    /// CIFAR-100 binary version.
    Cifar100,
    /// One sub-folder per class (ImageNet-Subset style).
    Folder,
}

impl DatasetKind {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Fmnist => "fmnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "fmnist" | "fashion-mnist" => DatasetKind::Fmnist,
            "mnist" => DatasetKind::Mnist,
            "cifar10" => DatasetKind::Cifar10,
            "cifar100" => DatasetKind::Cifar100,
            "folder" => DatasetKind::Folder,
            other => {
                return Err(Error::Config(format!(
                    "unknown dataset {other:?}; expected fmnist, mnist, cifar10, cifar100 or folder"
                )))
            }
        })
    }
}

/// Where a split's pixels are.
#[derive(Clone, Debug)]
pub enum Pixels {
    /// Decoded `u8` C×H×W images, one after another.
    Memory(Vec<u8>),
    /// Image files, decoded batch by batch by the loader (image folders).
    Files(Arc<[PathBuf]>),
}

impl From<Vec<u8>> for Pixels {
    fn from(v: Vec<u8>) -> Self {
        Pixels::Memory(v)
    }
}

/// One set of images (train or test): the pixels, or the files holding them, and a class id
/// per image.
#[derive(Clone, Debug)]
pub struct Split {
    /// Pixels, image after image, or one file per image.
    pub images: Pixels,
    /// Class id (the dataset's own numbering) of each image.
    pub labels: Vec<usize>,
    /// Channels, height, width of every image in memory; for files, of the test transform's
    /// resized square (its central crop is what the network sees).
    pub shape: [usize; 3],
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes per image in memory.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }
    /// The pixels of image `i`; `None` when the split reads its images from files.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.image_len();
        match &self.images {
            Pixels::Memory(v) => Some(&v[i * n..(i + 1) * n]),
            Pixels::Files(_) => None,
        }
    }
    /// The file of image `i`, when the split reads its images from files.
    pub fn file(&self, i: usize) -> Option<&Path> {
        match &self.images {
            Pixels::Memory(_) => None,
            Pixels::Files(f) => Some(&f[i]),
        }
    }
    /// Number of images of each class id `0..classes`.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut c = vec![0; classes];
        for &l in &self.labels {
            if l < classes {
                c[l] += 1;
            }
        }
        c
    }
    /// The first `per_class` images of each class, in file order (for quick presets).
    pub fn first_per_class(&self, classes: usize, per_class: usize) -> Split {
        let mut taken = vec![0usize; classes];
        let mut keep = Vec::new();
        for (i, &l) in self.labels.iter().enumerate() {
            if l < classes && taken[l] < per_class {
                taken[l] += 1;
                keep.push(i);
            }
        }
        self.subset(&keep)
    }
    /// The images at `ids`, in that order.
    pub fn subset(&self, ids: &[usize]) -> Split {
        let images = match &self.images {
            Pixels::Memory(v) => {
                let n = self.image_len();
                let mut out = Vec::with_capacity(ids.len() * n);
                for &i in ids {
                    out.extend_from_slice(&v[i * n..(i + 1) * n]);
                }
                Pixels::Memory(out)
            }
            Pixels::Files(f) => Pixels::Files(ids.iter().map(|&i| f[i].clone()).collect()),
        };
        Split {
            images,
            labels: ids.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
        }
    }
}

/// A dataset (in memory, or for image folders its file lists), with the transforms its
/// protocol uses.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Which kind it is.
    pub kind: DatasetKind,
    /// The folder it was read from.
    pub dir: PathBuf,
    /// Number of classes.
    pub classes: usize,
    /// Class names, when the format has them.
    pub class_names: Vec<String>,
    /// Training images.
    pub train: Split,
    /// Test images.
    pub test: Split,
    /// Normalisation constants.
    pub norm: Normalization,
    /// Training augmentation.
    pub augment: Augment,
}

impl Dataset {
    /// The image files of an image-folder dataset, training split then test split (empty for
    /// a dataset held in memory): what [`crate::check_images`] and [`crate::image_sizes`] take.
    pub fn image_files(&self) -> Vec<PathBuf> {
        [&self.train, &self.test]
            .into_iter()
            .filter_map(|split| match &split.images {
                Pixels::Files(f) => Some(f.iter().cloned()),
                Pixels::Memory(_) => None,
            })
            .flatten()
            .collect()
    }
}

fn wrap_labels(path: &Path, labels: Vec<u8>, classes: usize) -> Result<Vec<usize>> {
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= classes)
    {
        return Err(Error::format(
            path,
            format!("label {l} of item {i} is outside 0–{}", classes - 1),
        ));
    }
    Ok(labels.into_iter().map(usize::from).collect())
}

fn check_classes(path: &Path, split: &Split, classes: usize) -> Result<()> {
    if let Some(c) = split.class_counts(classes).iter().position(|n| *n == 0) {
        return Err(Error::format(
            path,
            format!("class {c} has no image (empty class)"),
        ));
    }
    Ok(())
}

/// Finds `name` or `name.gz` in `dir`.
fn idx_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    if gz.is_file() {
        Ok(gz)
    } else if raw.is_file() {
        Ok(raw)
    } else {
        Err(Error::Missing(format!(
            "{}: file not found (nor {})",
            gz.display(),
            raw.display()
        )))
    }
}

fn idx_split(dir: &Path, prefix: &str, classes: usize) -> Result<Split> {
    let ip = idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (n, h, w, images) = idx::read_images(&ip)?;
    let labels = idx::read_labels(&lp)?;
    if labels.len() != n {
        return Err(Error::format(
            &lp,
            format!(
                "{} labels but {} has {n} images",
                labels.len(),
                ip.display()
            ),
        ));
    }
    let split = Split {
        images: images.into(),
        labels: wrap_labels(&lp, labels, classes)?,
        shape: [1, h, w],
    };
    check_classes(&lp, &split, classes)?;
    Ok(split)
}

fn fmnist_names() -> Vec<String> {
    [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    .map(String::from)
    .to_vec()
}

/// lucir-rs's own data folder: `$XDG_DATA_HOME/lucir`, else `~/.local/share/lucir` (`None`
/// without a home folder).
pub fn data_home() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty());
    match xdg {
        Some(d) => Some(PathBuf::from(d).join("lucir")),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".local/share/lucir")),
    }
}

/// Where a dataset is looked for without `--data-dir`: Debian's Fashion-MNIST, and the CIFAR
/// binary versions where `lucir-driver data fetch` puts them ([`data_home`]`/cifar-10-batches-bin`,
/// `…/cifar-100-binary`).
pub fn default_dir(kind: DatasetKind) -> Option<PathBuf> {
    match kind {
        DatasetKind::Fmnist => Some(PathBuf::from(FMNIST_DEFAULT_DIR)),
        DatasetKind::Cifar10 => data_home().map(|d| d.join("cifar-10-batches-bin")),
        DatasetKind::Cifar100 => data_home().map(|d| d.join("cifar-100-binary")),
        DatasetKind::Mnist | DatasetKind::Folder => None,
    }
}

/// Why a CIFAR folder lacks its binary files, when the layout says: the archive's parent
/// folder, or the python version.
fn cifar_layout_hint(kind: DatasetKind, dir: &Path) -> String {
    let (sub, python, files) = match kind {
        DatasetKind::Cifar10 => (
            "cifar-10-batches-bin",
            "cifar-10-batches-py",
            "data_batch_1.bin … data_batch_5.bin and test_batch.bin",
        ),
        _ => (
            "cifar-100-binary",
            "cifar-100-python",
            "train.bin and test.bin",
        ),
    };
    if dir.join(sub).is_dir() {
        return format!(
            "; the files are one level down: --data-dir {}",
            dir.join(sub).display()
        );
    }
    let py_files = ["data_batch_1", "train", "meta"];
    if dir.join(python).is_dir() || py_files.iter().any(|f| dir.join(f).is_file()) {
        return format!(
            "; this is the python version of {}, lucir-rs reads the binary version ({files}; \
             `lucir-driver data fetch {}`)",
            kind.name(),
            kind.name()
        );
    }
    format!(
        "; expected {files} of the binary version (`lucir-driver data fetch {}`)",
        kind.name()
    )
}

fn require_dir(kind: DatasetKind, dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match (dir, default_dir(kind)) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => d,
        (None, None) => {
            return Err(Error::Missing(format!(
                "the {} dataset has no default location: pass --data-dir DIR",
                kind.name()
            )))
        }
    };
    if !dir.is_dir() {
        let hint = match kind {
            DatasetKind::Fmnist => {
                " (install Fashion-MNIST with `apt-get install dataset-fashion-mnist`, or pass \
                 --data-dir DIR holding the four IDX files)"
            }
            DatasetKind::Mnist => " (pass --data-dir DIR holding the four MNIST IDX files)",
            DatasetKind::Cifar10 => {
                " (download it with `lucir-driver data fetch cifar10`, or pass --data-dir DIR \
                 holding data_batch_1.bin … data_batch_5.bin and test_batch.bin of the CIFAR-10 \
                 binary version)"
            }
            DatasetKind::Cifar100 => {
                " (download it with `lucir-driver data fetch cifar100`, or pass --data-dir DIR \
                 holding train.bin and test.bin of the CIFAR-100 binary version)"
            }
            DatasetKind::Folder => " (pass --data-dir DIR with train/<class>/ and val/<class>/)",
        };
        return Err(Error::Missing(format!(
            "{} dataset folder {} does not exist{hint}",
            kind.name(),
            dir.display()
        )));
    }
    Ok(dir)
}

/// Loads a dataset of `kind` from `dir` (Fashion-MNIST defaults to [`FMNIST_DEFAULT_DIR`]).
pub fn load(kind: DatasetKind, dir: Option<&Path>, folder: FolderOptions) -> Result<Dataset> {
    let dir = require_dir(kind, dir)?;
    let grey_aug = Augment {
        crop: 28,
        pad: 4,
        flip: true,
    };
    let cifar_aug = Augment {
        crop: 32,
        pad: 4,
        flip: true,
    };
    match kind {
        DatasetKind::Fmnist | DatasetKind::Mnist => {
            let train = idx_split(&dir, "train", 10)?;
            let test = idx_split(&dir, "t10k", 10)?;
            let (norm, names) = if kind == DatasetKind::Fmnist {
                (Normalization::fmnist(), fmnist_names())
            } else {
                (
                    Normalization::mnist(),
                    (0..10).map(|d| d.to_string()).collect(),
                )
            };
            let augment = Augment {
                crop: train.shape[1].min(train.shape[2]),
                ..grey_aug
            };
            Ok(Dataset {
                kind,
                dir,
                classes: 10,
                class_names: names,
                train,
                test,
                norm,
                augment,
            })
        }
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let ck = if kind == DatasetKind::Cifar10 {
                CifarKind::Cifar10
            } else {
                CifarKind::Cifar100
            };
            let (train_files, test_files) = if ck == CifarKind::Cifar10 {
                (
                    (1..=5)
                        .map(|i| dir.join(format!("data_batch_{i}.bin")))
                        .collect::<Vec<_>>(),
                    vec![dir.join("test_batch.bin")],
                )
            } else {
                (vec![dir.join("train.bin")], vec![dir.join("test.bin")])
            };
            for f in train_files.iter().chain(&test_files) {
                if !f.is_file() {
                    return Err(Error::Missing(format!(
                        "{}: file not found{}",
                        f.display(),
                        cifar_layout_hint(kind, &dir)
                    )));
                }
            }
            let classes = ck.classes();
            let mk = |files: &[PathBuf]| -> Result<Split> {
                let (images, labels) = cifar::read_files(files, ck)?;
                let split = Split {
                    images: images.into(),
                    labels: labels.into_iter().map(usize::from).collect(),
                    shape: [3, 32, 32],
                };
                check_classes(&files[0], &split, classes)?;
                Ok(split)
            };
            Ok(Dataset {
                kind,
                classes,
                class_names: cifar::class_names(&dir, ck),
                train: mk(&train_files)?,
                test: mk(&test_files)?,
                dir,
                norm: Normalization::cifar(),
                augment: cifar_aug,
            })
        }
        DatasetKind::Folder => folder::load(dir, folder),
    }
}
