//! Checkpoint files: a postcard-encoded [`LearnerState`] followed by the SHA-256 of those bytes,
//! written atomically after every training epoch and every phase. The newest is
//! `checkpoints/latest.ckpt`; the one before it is kept as `checkpoints/previous.ckpt`, and a
//! damaged newest file falls back to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lucir_method::LearnerState;
use lucir_nn::write_atomic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const FORMAT: &str = "lucir-checkpoint";
/// 2: the wall time of the run so far is stored; training draws come from lucir-data's
/// per-epoch ChaCha8 streams (a version-1 run would continue with other draws).
/// 3: a preempted epoch's position (`LearnerState::mid_epoch`) and the [`Machine`] are stored.
const VERSION: u32 = 3;

#[derive(Serialize, Deserialize)]
struct File {
    format: String,
    version: u32,
    state: LearnerState,
    /// Wall seconds of the run up to this checkpoint, over all its segments.
    wall_seconds: f64,
    machine: Machine,
}

/// What decides a run's bits besides its settings: the summation order follows the thread
/// count, the CPU kernels (AVX-512 direct convolutions or the gemm path) and the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// rayon worker threads (resolved: never 0).
    pub threads: usize,
    /// The CPU kernels in use (`lucir_tensor::kernel_path`).
    pub cpu_kernels: String,
    /// `cpu` or `cuda`.
    pub device: String,
}

impl Machine {
    /// This process's, for a run on `device`.
    pub fn current(device: &str) -> Self {
        Self {
            threads: rayon::current_num_threads(),
            cpu_kernels: lucir_tensor::kernel_path(),
            device: device.into(),
        }
    }

    /// How `now` differs from `self`, by name (empty: the same bits).
    pub fn differences(&self, now: &Machine) -> Vec<String> {
        let mut d = Vec::new();
        if self.threads != now.threads {
            d.push(format!("{} threads, now {}", self.threads, now.threads));
        }
        if self.cpu_kernels != now.cpu_kernels {
            d.push(format!(
                "CPU kernels {}, now {}",
                self.cpu_kernels, now.cpu_kernels
            ));
        }
        if self.device != now.device {
            d.push(format!("device {}, now {}", self.device, now.device));
        }
        d
    }
}

/// A checkpoint's contents.
#[derive(Debug)]
pub struct Checkpoint {
    /// The learner.
    pub state: LearnerState,
    /// Wall seconds of the run up to the checkpoint, over all its segments.
    pub wall_seconds: f64,
    /// What the run's bits were made with.
    pub machine: Machine,
}

/// Paths of the newest and the previous checkpoint of a run folder.
pub fn paths(run: &Path) -> (PathBuf, PathBuf) {
    let d = run.join("checkpoints");
    (d.join("latest.ckpt"), d.join("previous.ckpt"))
}

/// The bytes of a checkpoint file: the encoded state, then the SHA-256 of the encoding.
pub fn encode(state: &LearnerState, machine: &Machine, wall_seconds: f64) -> Result<Vec<u8>> {
    let mut bytes = postcard::to_stdvec(&File {
        format: FORMAT.into(),
        version: VERSION,
        state: state.clone(),
        wall_seconds,
        machine: machine.clone(),
    })
    .context("encoding a checkpoint")?;
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    Ok(bytes)
}

/// Writes a checkpoint, keeping the former newest one as the previous.
pub fn save(run: &Path, state: &LearnerState, machine: &Machine, wall_seconds: f64) -> Result<()> {
    let bytes = encode(state, machine, wall_seconds)?;
    let (latest, previous) = paths(run);
    // The new file is complete on disk before the old one moves; a kill between the two
    // renames leaves `previous.ckpt` only, which `load` falls back to.
    let staged = latest.with_extension("ckpt.new");
    write_atomic(&staged, &bytes)?;
    if latest.is_file() {
        std::fs::rename(&latest, &previous)
            .with_context(|| format!("keeping {} as {}", latest.display(), previous.display()))?;
    }
    std::fs::rename(&staged, &latest)
        .with_context(|| format!("moving {} to {}", staged.display(), latest.display()))?;
    Ok(())
}

/// Reads and verifies one checkpoint file.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode(&bytes, path)
}

/// Verifies and decodes the bytes of a checkpoint file; `path` names it in errors. Nothing is
/// allocated beyond a fixed multiple of `bytes.len()`: postcard offers a sequence's stated
/// length as a size hint only when that many bytes remain, serde caps any preallocation at
/// 1 MiB, and every element of the state takes at least one byte.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
    if bytes.len() < 32 {
        bail!(
            "{}: truncated checkpoint ({} bytes)",
            path.display(),
            bytes.len()
        );
    }
    let (payload, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(payload).as_slice() != digest {
        bail!(
            "{}: checksum mismatch (truncated or corrupt checkpoint)",
            path.display()
        );
    }
    // The format name and version come first, so an older file is recognised before its
    // state fails to decode.
    let (format, version): (String, u32) = postcard::take_from_bytes(payload)
        .map(|(head, _)| head)
        .with_context(|| format!("{}: unreadable checkpoint", path.display()))?;
    if format != FORMAT || version != VERSION {
        bail!(
            "{}: a {format} version {version} file, this build reads version {VERSION}; it was \
             written by another build of lucir-rs, which must finish it",
            path.display()
        );
    }
    let file: File = postcard::from_bytes(payload)
        .with_context(|| format!("{}: unreadable checkpoint", path.display()))?;
    Ok(Checkpoint {
        state: file.state,
        wall_seconds: file.wall_seconds,
        machine: file.machine,
    })
}

/// The newest good checkpoint of a run folder; a damaged newest one is reported through
/// `warn` and the previous one is used.
pub fn load(run: &Path, warn: &mut dyn FnMut(String)) -> Result<(Checkpoint, PathBuf)> {
    let (latest, previous) = paths(run);
    match read(&latest) {
        Ok(s) => Ok((s, latest)),
        Err(e) if previous.is_file() => {
            warn(format!("{e:#}; using {}", previous.display()));
            Ok((read(&previous)?, previous))
        }
        Err(e) => Err(e.context(format!("no usable checkpoint in {}", run.display()))),
    }
}
