//! `lucir-driver`: the command-line program of lucir-rs.
//!
//! `lucir-driver data` describes a dataset (per-class counts, class order). The experiment
//! runner (presets, phases, results) is not built yet; without a sub-command the program says so
//! and exits with a runtime error instead of pretending to run an experiment.

mod data_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Class-incremental learning with LUCIR.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a dataset's per-class train/test counts and its class order.
    Data(data_cmd::DataArgs),
}

fn main() -> ExitCode {
    // Usage errors exit with 2 (clap), runtime errors with 1, each as one line.
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Data(args)) => data_cmd::run(&args),
        None => Err(anyhow::anyhow!(
            "the LUCIR experiment runner is not implemented yet in this version of lucir-driver; \
             `lucir-driver data` describes a dataset"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
