//! Saving and loading a module's parameters and buffers, bit-exactly, in a versioned
//! serde format (postcard-encoded [`StateDict`]). Files are written atomically: a temporary file
//! in the same folder, flushed to disk, then renamed over the target.

use std::io::Write;
use std::path::{Path, PathBuf};

use lucir_tensor::{Float, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Module, Result};

/// Magic string at the start of every state file.
pub const STATE_FORMAT: &str = "lucir-state";
/// Current version of the state format.
pub const STATE_VERSION: u32 = 1;

/// Element data of one entry, in the module's own precision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StateData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
}

/// One named tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Dotted name (`block3.conv1.weight`, `block3.bn1.running_mean`…).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: StateData,
}

/// Everything needed to restore a module: parameters then buffers, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateDict {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// The format version ([`STATE_VERSION`] when written by this build).
    pub version: u32,
    /// The tensors.
    pub entries: Vec<StateEntry>,
}

/// The elements of `t` (read back from a device first).
fn encode<T: Float>(t: &Tensor<T>) -> Result<StateData> {
    let t = t.host()?;
    // f32 → f64 → f32 and f64 → f64 are exact, so the round trip is bit-exact.
    Ok(if T::NAME == "f32" {
        StateData::F32(t.as_slice().iter().map(|v| v.as_f64() as f32).collect())
    } else {
        StateData::F64(t.as_slice().iter().map(|v| v.as_f64()).collect())
    })
}

impl StateDict {
    /// Captures a module's parameters and buffers (read back from a device if they live on
    /// one).
    pub fn of<T: Float, M: Module<T>>(module: &M) -> Result<Self> {
        let params = module.params().into_iter().map(|(n, p)| (n, &p.value));
        let entries = params
            .chain(module.buffers())
            .map(|(name, t)| {
                Ok(StateEntry {
                    name,
                    shape: t.shape().to_vec(),
                    data: encode(t)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            entries,
        })
    }

    /// Decodes the bytes of a state file written by [`save_state`]; `path` names it in errors.
    /// Nothing is allocated beyond a fixed multiple of `bytes.len()`: postcard offers a
    /// sequence's stated length as a size hint only when that many bytes remain, serde caps
    /// any preallocation at 1 MiB, and every element takes at least one byte.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        postcard::from_bytes(bytes).map_err(|e| Error::State {
            path: path.to_path_buf(),
            detail: format!("not a readable lucir state file ({e})"),
        })
    }

    /// Copies the entries into a module whose names, shapes and precision match exactly.
    /// Nothing is changed unless every entry fits.
    pub fn apply<T: Float, M: Module<T>>(&self, module: &mut M, path: &Path) -> Result<()> {
        let bad = |detail: String| Error::State {
            path: path.to_path_buf(),
            detail,
        };
        if self.format != STATE_FORMAT {
            return Err(bad(format!(
                "not a lucir state file (format {:?})",
                self.format
            )));
        }
        if self.version != STATE_VERSION {
            return Err(bad(format!(
                "state format version {} is not supported (this build reads {STATE_VERSION})",
                self.version
            )));
        }
        let mut decoded = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let len = match &e.data {
                StateData::F32(v) => v.len(),
                StateData::F64(v) => v.len(),
            };
            let elements = e.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if elements != Some(len) {
                return Err(bad(format!(
                    "entry {} of shape {:?} needs {} elements, the file has {len}",
                    e.name,
                    e.shape,
                    elements.map_or("more".to_string(), |n| n.to_string())
                )));
            }
            let values: Vec<T> = match (&e.data, T::NAME) {
                (StateData::F32(v), "f32") => v.iter().map(|x| T::of(*x as f64)).collect(),
                (StateData::F64(v), "f64") => v.iter().map(|x| T::of(*x)).collect(),
                _ => {
                    return Err(bad(format!(
                        "entry {} has a different precision than the {} model",
                        e.name,
                        T::NAME
                    )))
                }
            };
            let t = Tensor::from_vec(&e.shape, values)
                .map_err(|err| bad(format!("entry {}: {err}", e.name)))?;
            decoded.push((e.name.as_str(), t));
        }
        let expected = module.shapes();
        if expected.len() != decoded.len() {
            return Err(bad(format!(
                "file has {} tensors, the model has {}",
                decoded.len(),
                expected.len()
            )));
        }
        for ((name, shape), (fname, t)) in expected.iter().zip(&decoded) {
            if name != fname || shape.as_slice() != t.shape() {
                return Err(bad(format!(
                    "model expects {name} {shape:?}, file has {fname} {:?}",
                    t.shape()
                )));
            }
        }
        module.assign(decoded.into_iter().map(|(_, t)| t).collect());
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tmp.set_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        // A full disk (ENOSPC, EDQUOT) or a file-size limit (EFBIG) leaves no half-written
        // file behind; the file under the final name, if any, is the previous complete one.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename is durable once the folder's entry is: a crash right after it keeps the new
    // file, not an empty name. (A folder that cannot be opened or synced is not an error.)
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Saves a module's state to `path`.
pub fn save_state<T: Float, M: Module<T>>(module: &M, path: &Path) -> Result<()> {
    let bytes = postcard::to_stdvec(&StateDict::of(module)?).map_err(|e| Error::State {
        path: path.to_path_buf(),
        detail: format!("cannot encode state: {e}"),
    })?;
    write_atomic(path, &bytes)
}

/// Loads a state saved by [`save_state`] into a module of the same architecture.
pub fn load_state<T: Float, M: Module<T>>(module: &mut M, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    StateDict::from_bytes(&bytes, path)?.apply(module, path)
}
