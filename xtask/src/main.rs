//! `cargo xtask <task>`: project automation that is not a test.
//!
//! - `kernels [--check]`: compile `kernels/*.cu` to `kernels/ptx/*.ptx` with NVRTC (or, with
//!   `--check`, fail when a PTX is stale or a kernel does not compile), and print each kernel's
//!   registers and spills for sm_90.
//! - `bench [criterion args]`: run the criterion benchmarks and the `lucir-driver bench`
//!   throughput runs, and record the GPU head table in docs/perf.md when a GPU ran it.
//! - `gpu-check [--out DIR]`: build the CUDA test and bench binaries and the driver here and
//!   write the script that verifies them on a GPU machine (see `gpu_check.rs`).
//! - `tidy`: the house rules over the tracked files (module docs, `SAFETY:` comments, file
//!   length; the docs' paths into the tree exist; every package inherits `rust-version`; see
//!   `tidy.rs`).

mod bench;
mod gpu_check;
mod kernels;
mod tidy;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("kernels") => kernels::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("tidy") => tidy::run(&args[1..]),
        Some("gpu-check") => gpu_check::run(&args[1..]),
        Some(other) => {
            bail!("unknown task `{other}`; tasks: kernels [--check], bench, tidy, gpu-check")
        }
        None => {
            bail!("usage: cargo xtask <task>; tasks: kernels [--check], bench, tidy, gpu-check")
        }
    }
}

/// The workspace root (xtask's parent folder).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}
