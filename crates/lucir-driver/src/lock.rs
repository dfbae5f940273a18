//! One writer per run folder: an advisory `flock` on `RUN/lock`, held while a run writes its
//! folder and released by the kernel when the process ends, however it ends. A second process
//! on the same folder — a requeued job while the old one still runs, a second `--resume` —
//! is refused by name (exit 2) with the holder's pid and host, which the holder writes into
//! the file.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{anyhow, Result};

use crate::usage;

/// The lock of a run folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// This machine's host name.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname writes at most that many
    // and the result is read only up to its first NUL (or the whole buffer).
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match ok {
        true => String::from_utf8_lossy(&buf[..end]).into_owned(),
        false => "unknown host".into(),
    }
}

/// Takes the lock of run folder `dir` (which exists), or says who holds it.
pub fn lock(dir: &Path) -> Result<RunLock> {
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns for the call's duration.
    let held = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0;
    if held {
        let err = std::io::Error::last_os_error();
        if matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP)
        ) {
            // A file system without locks (Lustre mounted without `flock`, some NFS setups):
            // run unguarded rather than not at all.
            eprintln!(
                "warning: {} cannot be locked ({err}); make sure no other process writes this run \
                 folder",
                path.display()
            );
            return Ok(RunLock { _file: file });
        }
        if err.kind() != std::io::ErrorKind::WouldBlock {
            return Err(anyhow!("locking {}: {err}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another process".to_string(),
            h => h.to_string(),
        };
        return usage(Err(format!(
            "{} is in use by {holder}; one process at a time writes a run folder (wait for it \
             to end, or stop it)",
            dir.display()
        )));
    }
    let me = format!(
        "lucir-driver pid {} on host {}\n",
        std::process::id(),
        host()
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()))
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(RunLock { _file: file })
}

/// Removes the temporary files that a killed process left half-written in run folder `dir`
/// (`.NAME.PID.tmp`, see `lucir_nn::write_atomic`): with the folder locked no other process
/// writes them, and none was renamed into place, so none holds anything the run needs.
pub fn remove_stale_temporaries(dir: &Path) {
    for folder in [dir.to_path_buf(), dir.join("checkpoints")] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
