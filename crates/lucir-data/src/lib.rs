//! Data for lucir-rs: dataset readers, class order and incremental phases, augmentation, the
//! batch loader and the exemplar memory (docs/design.md §2–§4).
//!
//! Images are kept as `u8` in C×H×W order (one [`Split`] per train/test set; image folders keep
//! only their file lists and decode per batch) and turned into normalised N×C×H×W f32 tensors
//! batch by batch. Class ids are the dataset's own; the
//! [`ClassOrder`] maps them to positions 0..C, which is what the method and the metrics use.
//! Every reader returns an [`Error`] naming the file and the fault; none panics on any bytes.

mod augment;
mod cifar;
mod dataset;
mod error;
mod folder;
mod folder_check;
mod idx;
mod loader;
mod memory;
mod order;

pub use augment::{Augment, Crop, Normalization};
pub use cifar::{parse_cifar, CifarKind};
pub use dataset::{
    data_home, default_dir, load, Dataset, DatasetKind, Pixels, Split, FMNIST_DEFAULT_DIR,
};
pub use error::{Error, Result};
pub use folder::{decode_image, random_resized_crop, FolderOptions};
pub use folder_check::{check_images, image_sizes, BadImage, ImageSizes};
pub use idx::{gunzip_if_needed, parse_idx_images, parse_idx_labels};
pub use loader::{Batch, EpochDraws, EpochIter, Loader, Sample};
pub use memory::{ExemplarMemory, MemoryBudget};
pub use order::{numpy_shuffle, ClassOrder, Phases};
