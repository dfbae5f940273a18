//! `cargo xtask <task>`: project automation that is not a test.
//!
//! Tasks: `bench` runs the criterion benchmarks in release mode.

use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => bench(&args[1..]),
        Some(other) => bail!("unknown task `{other}`; tasks: bench"),
        None => bail!("usage: cargo xtask <task>; tasks: bench"),
    }
}

/// Runs every criterion bench of the workspace; extra arguments go to criterion (e.g. a filter).
fn bench(extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["bench", "--workspace", "--"])
        .args(extra)
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed: {status}");
    }
    Ok(())
}
