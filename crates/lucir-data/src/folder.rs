//! Image folders in the ImageNet layout: `ROOT/train/<class>/<image>` and `ROOT/val/<class>/…`
//! (or `test/`), PNG or JPEG. Classes are the sub-folder names in sorted order. Each image is
//! decoded to RGB, its shorter side resized to `resize` and centre-cropped to `resize`×`resize`
//! (the ImageNet test protocol's first step); training crops of `crop` are taken later by the
//! augmentation.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::{Error, Result};

/// How folder images are stored in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FolderOptions {
    /// Side of the stored square image (shorter side resized to this, then centre-cropped).
    pub resize: usize,
    /// Side of the crop the network sees (random in training, central in evaluation).
    pub crop: usize,
}

impl Default for FolderOptions {
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
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

/// Class folder names under `split_dir`, sorted.
pub(crate) fn class_names(split_dir: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = list_dir(split_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Err(Error::format(split_dir, "no class sub-folders"));
    }
    Ok(names)
}

/// Decodes one PNG/JPEG file's bytes and brings the image to `size`×`size` RGB, C×H×W.
pub fn decode_image(path: &Path, bytes: &[u8], size: usize) -> Result<Vec<u8>> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 || size == 0 {
        return Err(Error::format(path, "empty image"));
    }
    let s = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * s).round() as u32).max(size as u32),
        ((h as f64 * s).round() as u32).max(size as u32),
    );
    let rgb = img.resize_exact(nw, nh, FilterType::Triangle).to_rgb8();
    let (x0, y0) = ((nw as usize - size) / 2, (nh as usize - size) / 2);
    let mut out = vec![0u8; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let p = rgb.get_pixel((x0 + x) as u32, (y0 + y) as u32);
            for c in 0..3 {
                out[(c * size + y) * size + x] = p[c];
            }
        }
    }
    Ok(out)
}

/// Reads every image of one split folder; `classes` fixes the label of each sub-folder.
pub(crate) fn read_split(
    split_dir: &Path,
    classes: &[String],
    size: usize,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut files = Vec::new();
    for (label, name) in classes.iter().enumerate() {
        let dir = split_dir.join(name);
        let imgs: Vec<PathBuf> = list_dir(&dir)?
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        if imgs.is_empty() {
            return Err(Error::format(
                &dir,
                "class folder holds no image (empty class)",
            ));
        }
        files.extend(imgs.into_iter().map(|p| (p, label)));
    }
    if classes.len() > 256 {
        return Err(Error::format(split_dir, "more than 256 classes"));
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            decode_image(p, &bytes, size)
        })
        .collect::<Result<_>>()?;
    let labels = files.iter().map(|(_, l)| *l as u8).collect();
    Ok((decoded.concat(), labels))
}
