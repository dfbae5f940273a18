//! Image folders in the ImageNet layout: `ROOT/train/<class>/<image>` and `ROOT/val/<class>/…`
//! (or `test/`). Classes are the sub-folder names in sorted order. The images stay on disk
//! (ImageNet-Subset's 130 000 would not fit in memory): a split is the list of files, and each
//! batch decodes its own on the loader's worker threads with torchvision's transforms —
//! `RandomResizedCrop(crop)` + flip for training, shorter side resized to `resize` then the
//! central `crop`×`crop` for testing (docs/design.md §4).
//!
//! What counts: a class is a sub-folder of `train/` (and of `val/`) whose name does not start
//! with `.`; an image is a file of a class folder whose name does not start with `.` and whose
//! extension, in any case, names a format the `image` crate is built to decode (with the
//! workspace's `png` and `jpeg` features: `.png`, `.apng`, `.jpg`, `.jpeg`, `.jfif`). Everything
//! else is skipped: hidden files and folders (`.DS_Store`, `.ipynb_checkpoints/`), other files
//! (`README.txt`, `labels.csv`), loose files beside the class folders and folders inside a
//! class folder. A file with an image extension that does not decode is an error when a batch
//! reaches it; [`crate::check_images`] finds every such file up front.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::DynamicImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Augment, Dataset, DatasetKind, Error, Normalization, Pixels, Result, Split};

/// How folder images are brought to the network's size, and which classes are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Test transform: the shorter side is resized to this, then the central `crop` is taken.
    pub resize: usize,
    /// Side of the square the network sees.
    pub crop: usize,
    /// Use only this many of the folder's classes: the first of numpy's shuffle of all class
    /// ids with `class_seed` (ImageNet-Subset's 100 of 1000). `None`: every class.
    pub classes: Option<usize>,
    /// Seed of that choice.
    pub class_seed: u32,
}

impl Default for FolderOptions {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            classes: None,
            class_seed: 1993,
        }
    }
}

fn list_dir(path: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(path, err)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Whether the file or folder's name starts with `.` (`.DS_Store`, `.ipynb_checkpoints`).
fn hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

/// Whether `path` is an image file of a class folder: not hidden, and its extension (any case)
/// names a format this build of the `image` crate decodes.
pub(crate) fn is_image_file(path: &Path) -> bool {
    let known = path
        .extension()
        .and_then(image::ImageFormat::from_extension)
        .is_some_and(|f| f.reading_enabled());
    known && !hidden(path) && path.is_file()
}

/// Class folder names under `split_dir`, sorted; hidden folders are not classes.
pub(crate) fn class_names(split_dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = list_dir(split_dir)?
        .into_iter()
        .filter(|p| p.is_dir() && !hidden(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Err(Error::format(split_dir, "no class sub-folders"));
    }
    Ok(names)
}

/// The image files of one split folder, with the label of each (`classes[label]` is its
/// sub-folder), class after class in sorted file order. Nothing is decoded; files that are not
/// images (see the module doc) are skipped.
pub(crate) fn list_split(
    split_dir: &Path,
    classes: &[String],
) -> Result<(Vec<PathBuf>, Vec<usize>)> {
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for (label, name) in classes.iter().enumerate() {
        let dir = split_dir.join(name);
        let imgs: Vec<PathBuf> = list_dir(&dir)?
            .into_iter()
            .filter(|p| is_image_file(p))
            .collect();
        if imgs.is_empty() {
            return Err(Error::format(
                &dir,
                "class folder holds no image (empty class; images are .png or .jpg/.jpeg files)",
            ));
        }
        labels.extend(std::iter::repeat_n(label, imgs.len()));
        files.extend(imgs);
    }
    Ok((files, labels))
}

/// `names` quoted, at most five of them, then how many more.
fn listed(names: &[&String]) -> String {
    let mut s: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
    if names.len() > 5 {
        s.push(format!("and {} more", names.len() - 5));
    }
    s.join(", ")
}

/// Which class folders only one of the two splits has, e.g. "val/ has `dgo` that train/
/// lacks; train/ has `dog` that val/ lacks".
fn class_difference(
    train_dir: &Path,
    test_dir: &Path,
    train: &[String],
    test: &[String],
) -> String {
    let label = |d: &Path| {
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned());
        format!("{}/", name.unwrap_or_default())
    };
    let (tr, te) = (label(train_dir), label(test_dir));
    fn only<'a>(a: &'a [String], b: &[String]) -> Vec<&'a String> {
        a.iter().filter(|n| !b.contains(n)).collect()
    }
    let mut parts = Vec::new();
    for (side, other, names) in [(&te, &tr, only(test, train)), (&tr, &te, only(train, test))] {
        if !names.is_empty() {
            parts.push(format!("{side} has {} that {other} lacks", listed(&names)));
        }
    }
    format!("class folders differ: {}", parts.join("; "))
}

/// Reads an image folder's file lists (see the module doc and [`crate::load`]).
pub(crate) fn load(dir: PathBuf, folder: FolderOptions) -> Result<Dataset> {
    if folder.crop == 0 || folder.crop > folder.resize {
        return Err(Error::Config(format!(
            "image folder crop {} must be between 1 and the stored size {}",
            folder.crop, folder.resize
        )));
    }
    let train_dir = dir.join("train");
    let test_dir = ["val", "test"]
        .iter()
        .map(|d| dir.join(d))
        .find(|d| d.is_dir())
        .ok_or_else(|| Error::Missing(format!("{}: no val/ or test/ sub-folder", dir.display())))?;
    if !train_dir.is_dir() {
        return Err(Error::Missing(format!(
            "{}: no train/ sub-folder",
            dir.display()
        )));
    }
    let all = class_names(&train_dir)?;
    let test_names = class_names(&test_dir)?;
    if test_names != all {
        let why = class_difference(&train_dir, &test_dir, &all, &test_names);
        return Err(Error::format(&test_dir, why));
    }
    let names = match folder.classes {
        Some(n) if n > all.len() => {
            return Err(Error::Config(format!(
                "{}: {n} classes asked for, the folder has {}",
                train_dir.display(),
                all.len()
            )))
        }
        Some(0) => return Err(Error::Config("classes must be at least 1".into())),
        Some(n) if n < all.len() => {
            // The first n of numpy's shuffle of all ids, kept in name order.
            let mut ids = crate::numpy_shuffle(all.len(), folder.class_seed);
            ids.truncate(n);
            ids.sort_unstable();
            ids.into_iter().map(|i| all[i].clone()).collect()
        }
        _ => all,
    };
    let mk = |d: &Path| -> Result<Split> {
        let (files, labels) = list_split(d, &names)?;
        Ok(Split {
            images: Pixels::Files(files.into()),
            labels,
            shape: [3, folder.resize, folder.resize],
        })
    };
    Ok(Dataset {
        kind: DatasetKind::Folder,
        classes: names.len(),
        train: mk(&train_dir)?,
        test: mk(&test_dir)?,
        class_names: names,
        dir,
        norm: Normalization::imagenet(),
        augment: Augment {
            crop: folder.crop,
            pad: 0,
            flip: true,
        },
    })
}

/// Decodes an image file's bytes.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::format(path, "empty image"));
    }
    Ok(img)
}

/// `img` as RGB `u8`, C×H×W.
fn chw(img: &DynamicImage) -> Vec<u8> {
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut out = vec![0u8; 3 * w * h];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = p[c];
        }
    }
    out
}

/// Decodes one PNG/JPEG file's bytes, resizes its shorter side to `size` (bilinear) and takes
/// the central `size`×`size` square: RGB, C×H×W. The test transform's first step.
pub fn decode_image(path: &Path, bytes: &[u8], size: usize) -> Result<Vec<u8>> {
    if size == 0 {
        return Err(Error::format(path, "resize side is 0"));
    }
    let img = decode(path, bytes)?;
    let (w, h) = (img.width() as f64, img.height() as f64);
    let s = size as f64 / w.min(h);
    let (nw, nh) = (
        ((w * s).round() as u32).max(size as u32),
        ((h * s).round() as u32).max(size as u32),
    );
    let resized = img.resize_exact(nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    Ok(chw(&resized.crop_imm(x0, y0, size as u32, size as u32)))
}

/// A crop window: first row, first column, height, width.
pub(crate) type Window = (usize, usize, usize, usize);

/// torchvision's `RandomResizedCrop.get_params` (scale 0.08–1, aspect ratio 3/4–4/3) for an
/// image of `h`×`w`: up to ten tries of a random area and log-uniform aspect ratio whose window
/// fits, placed uniformly; else the central window of the nearest allowed aspect ratio.
pub(crate) fn random_resized_window(h: usize, w: usize, rng: &mut impl Rng) -> Window {
    let area = (h * w) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..1.0);
        let ratio = rng.random_range(lo..hi).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let i = rng.random_range(0..=h - ch);
            let j = rng.random_range(0..=w - cw);
            return (i, j, ch, cw);
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < 3.0 / 4.0 {
        (((w as f64) / (3.0 / 4.0)).round() as usize, w)
    } else if in_ratio > 4.0 / 3.0 {
        (h, ((h as f64) * (4.0 / 3.0)).round() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// The training transform's crop of one file: decoded, a random window (drawn from a ChaCha8
/// generator seeded with `seed`, as torchvision draws it) resized to `size`×`size`
/// (bilinear): RGB, C×H×W. The flip is applied later, with the normalisation.
pub fn random_resized_crop(path: &Path, bytes: &[u8], size: usize, seed: u64) -> Result<Vec<u8>> {
    if size == 0 {
        return Err(Error::format(path, "crop side is 0"));
    }
    let img = decode(path, bytes)?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (i, j, ch, cw) = random_resized_window(h, w, &mut ChaCha8Rng::seed_from_u64(seed));
    let window = img.crop_imm(j as u32, i as u32, cw as u32, ch as u32);
    Ok(chw(&window.resize_exact(
        size as u32,
        size as u32,
        FilterType::Triangle,
    )))
}

/// Reads a file for [`decode_image`] or [`random_resized_crop`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window fits the image; over many draws the areas span 8–100% of it and the
    /// aspect ratios 3/4–4/3 (up to rounding), and an extreme image falls back to a central
    /// window of the nearest allowed ratio.
    #[test]
    fn random_resized_windows_follow_torchvision() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (h, w) = (375, 500);
        let (mut min_a, mut max_a) = (f64::MAX, 0.0f64);
        for _ in 0..5000 {
            let (i, j, ch, cw) = random_resized_window(h, w, &mut rng);
            assert!(ch >= 1 && cw >= 1 && i + ch <= h && j + cw <= w);
            let a = (ch * cw) as f64 / (h * w) as f64;
            min_a = min_a.min(a);
            max_a = max_a.max(a);
            let r = cw as f64 / ch as f64;
            assert!((0.7..=1.43).contains(&r), "ratio {r}");
        }
        assert!(min_a < 0.1 && max_a > 0.9, "areas {min_a}..{max_a}");
        // 1×100: no window of ratio ≥ 3/4 fits ten tries' worth; the central 1×1… is the
        // fallback (ratio clamped to 4/3 → width round(1·4/3) = 1).
        let (i, j, ch, cw) = random_resized_window(1, 100, &mut rng);
        assert_eq!((ch, cw), (1, 1));
        assert_eq!((i, j), (0, 49));
    }
}
