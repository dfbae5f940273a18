//! CIFAR-10/100 binary format: fixed-size records of label byte(s) then 3072 pixel bytes
//! (1024 red, 1024 green, 1024 blue, each 32×32 row-major). CIFAR-10 records have one label
//! byte (0..10); CIFAR-100 records have a coarse (0..20) then a fine (0..100) label byte, and the
//! fine label is the class. The class names come from the archive's text file beside the
//! records (`batches.meta.txt`, `fine_label_names.txt`), one name a line.

use std::path::Path;

use crate::{Error, Result};

/// Which CIFAR variant a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    /// 10 classes, one label byte.
    Cifar10,
    /// 100 fine classes (20 coarse), two label bytes.
    Cifar100,
}

const PIXELS: usize = 3 * 32 * 32;

impl CifarKind {
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }
    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }
}

/// Parses one CIFAR binary file into `(pixels, labels)`.
pub fn parse_cifar(path: &Path, bytes: &[u8], kind: CifarKind) -> Result<(Vec<u8>, Vec<u8>)> {
    let rec = kind.label_bytes() + PIXELS;
    if bytes.is_empty() {
        return Err(Error::format(path, "empty file"));
    }
    if !bytes.len().is_multiple_of(rec) {
        return Err(Error::format(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte records ({} complete, {} bytes \
                 left over: truncated or not a {kind:?} file)",
                bytes.len(),
                bytes.len() / rec,
                bytes.len() % rec
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        if kind == CifarKind::Cifar100 && r[0] >= 20 {
            return Err(Error::format(
                path,
                format!("record {i}: coarse label {} is outside 0–19", r[0]),
            ));
        }
        let label = r[kind.label_bytes() - 1];
        if label as usize >= kind.classes() {
            return Err(Error::format(
                path,
                format!(
                    "record {i}: label {label} is outside 0–{}",
                    kind.classes() - 1
                ),
            ));
        }
        labels.push(label);
        pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok((pixels, labels))
}

/// Reads and concatenates CIFAR files.
pub(crate) fn read_files(
    paths: &[std::path::PathBuf],
    kind: CifarKind,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut px, mut lb) = (Vec::new(), Vec::new());
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        let (a, b) = parse_cifar(p, &bytes, kind)?;
        px.extend(a);
        lb.extend(b);
    }
    Ok((px, lb))
}

/// The class names of the CIFAR folder `dir`, from `batches.meta.txt` (CIFAR-10) or
/// `fine_label_names.txt` (CIFAR-100), one a line; the class ids as text when that file is
/// missing or does not hold one name per class (names are only shown, never computed with).
pub(crate) fn class_names(dir: &Path, kind: CifarKind) -> Vec<String> {
    let file = match kind {
        CifarKind::Cifar10 => "batches.meta.txt",
        CifarKind::Cifar100 => "fine_label_names.txt",
    };
    let names: Vec<String> = std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() == kind.classes() {
        names
    } else {
        (0..kind.classes()).map(|c| c.to_string()).collect()
    }
}
