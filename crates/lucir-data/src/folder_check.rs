//! Whole-folder checks of image files, before training reaches them: [`check_images`] decodes
//! every file once, as the loader would, and lists those that fail; [`image_sizes`] reads only
//! the headers, for the range of sizes on disk. Both work in parallel (rayon) and report each
//! file done to a callback, so the caller can show progress.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::folder::decode;
use crate::Error;

/// A file that cannot be used as an image, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadImage {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it ("cannot decode image: …", "cannot read: …").
    pub reason: String,
}

/// What is wrong with the image file `path`, if anything: the reason the loader would fail on
/// it.
fn fault(path: &Path) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Some(format!("cannot read: {e}")),
    };
    match decode(path, &bytes) {
        Ok(_) => None,
        Err(Error::Format { detail, .. }) => Some(detail),
        Err(e) => Some(e.to_string()),
    }
}

/// Reads and decodes each of `files` once, in parallel, and returns those that cannot be read
/// or decoded, in the order given. `done` is called once per file, after its check, from the
/// worker threads.
pub fn check_images(files: &[PathBuf], done: impl Fn() + Sync) -> Vec<BadImage> {
    files
        .par_iter()
        .filter_map(|path| {
            let bad = fault(path).map(|reason| BadImage {
                path: path.clone(),
                reason,
            });
            done();
            bad
        })
        .collect()
}

/// The sizes of a set of image files, as their headers give them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageSizes {
    /// Files whose header was read.
    pub read: usize,
    /// Files whose header could not be read (unreadable, or not an image).
    pub unreadable: usize,
    /// Width and height of the image with the fewest pixels (ties: the narrower).
    pub smallest: Option<(u32, u32)>,
    /// Width and height of the image with the most pixels (ties: the wider).
    pub largest: Option<(u32, u32)>,
}

impl ImageSizes {
    fn of(size: Option<(u32, u32)>) -> Self {
        match size {
            Some(s) => Self {
                read: 1,
                unreadable: 0,
                smallest: Some(s),
                largest: Some(s),
            },
            None => Self {
                unreadable: 1,
                ..Self::default()
            },
        }
    }

    fn merge(self, other: Self) -> Self {
        let area = |&(w, h): &(u32, u32)| (u64::from(w) * u64::from(h), w, h);
        Self {
            read: self.read + other.read,
            unreadable: self.unreadable + other.unreadable,
            smallest: self
                .smallest
                .into_iter()
                .chain(other.smallest)
                .min_by_key(area),
            largest: self
                .largest
                .into_iter()
                .chain(other.largest)
                .max_by_key(area),
        }
    }
}

/// Width and height of an image file from its header (the format guessed from the first bytes,
/// as decoding does), without decoding its pixels.
fn header_size(path: &Path) -> Option<(u32, u32)> {
    image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// The range of sizes of `files`, from every file's header (a few kilobytes each, read in
/// parallel; no pixel is decoded). `done` is called once per file, from the worker threads.
pub fn image_sizes(files: &[PathBuf], done: impl Fn() + Sync) -> ImageSizes {
    files
        .par_iter()
        .map(|path| {
            let size = ImageSizes::of(header_size(path));
            done();
            size
        })
        .reduce(ImageSizes::default, ImageSizes::merge)
}
