//! IDX files (MNIST, Fashion-MNIST), raw or gzipped: big-endian magic `0x00000803` (u8 images,
//! 3 dims) or `0x00000801` (u8 labels, 1 dim), then the dims as big-endian u32, then the data.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::{Error, Result};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Reads a whole file, gunzipping when it starts with the gzip magic. `limit` bounds the
/// decompressed size (a corrupt header must not make us allocate without bound).
pub(crate) fn read_maybe_gz(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    gunzip_if_needed(path, bytes, limit)
}

/// Gunzips `bytes` when they start with the gzip magic (at most `limit` bytes out); otherwise
/// returns them unchanged.
pub fn gunzip_if_needed(path: &Path, bytes: Vec<u8>, limit: u64) -> Result<Vec<u8>> {
    if bytes.len() < 2 || bytes[..2] != [0x1f, 0x8b] {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    GzDecoder::new(bytes.as_slice())
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Error::format(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn header(path: &Path, bytes: &[u8], magic: u32, dims: usize, what: &str) -> Result<Vec<usize>> {
    let head = 4 + 4 * dims;
    if bytes.len() < head {
        return Err(Error::format(
            path,
            format!(
                "file is {} bytes, shorter than the {head}-byte IDX header",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(Error::format(
            path,
            format!("wrong magic 0x{found:08x}, expected 0x{magic:08x} (IDX {what})"),
        ));
    }
    let d: Vec<usize> = (0..dims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let want = d.iter().try_fold(1usize, |a, b| a.checked_mul(*b));
    let have = bytes.len() - head;
    match want {
        Some(w) if w == have => Ok(d),
        Some(w) if w > have => Err(Error::format(
            path,
            format!("truncated: expected {w} bytes after the {head}-byte header, found {have}"),
        )),
        Some(w) => Err(Error::format(
            path,
            format!(
                "expected {w} bytes after the {head}-byte header, found {have} ({} extra)",
                have - w
            ),
        )),
        None => Err(Error::format(path, format!("impossible dimensions {d:?}"))),
    }
}

/// Parses an IDX image file's bytes (already gunzipped): returns `(n, h, w, pixels)`.
pub fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    let d = header(
        path,
        bytes,
        IMAGES_MAGIC,
        3,
        "unsigned-byte images, 3 dimensions",
    )?;
    if d[1] == 0 || d[2] == 0 {
        return Err(Error::format(
            path,
            format!("empty image size {}×{}", d[1], d[2]),
        ));
    }
    Ok((d[0], d[1], d[2], bytes[16..].to_vec()))
}

/// Parses an IDX label file's bytes (already gunzipped).
pub fn parse_idx_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    header(
        path,
        bytes,
        LABELS_MAGIC,
        1,
        "unsigned-byte labels, 1 dimension",
    )?;
    Ok(bytes[8..].to_vec())
}

/// Reads an IDX image file (raw or gzipped).
pub(crate) fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gz(path, 1 << 32)?;
    parse_idx_images(path, &bytes)
}

/// Reads an IDX label file (raw or gzipped).
pub(crate) fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path, 1 << 28)?;
    parse_idx_labels(path, &bytes)
}
