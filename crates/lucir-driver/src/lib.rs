//! `lucir-driver`, the command-line program of lucir-rs, as a library: the binary's `main.rs`
//! only installs the allocator and calls [`main`], so that tests can drive every part of the
//! program (runs, sweeps, reports, checkpoints, configuration) as functions as well as as a
//! process.
//!
//! Without a sub-command it runs one class-incremental experiment (default preset
//! `fmnist-quick`); `lucir-driver data` describes a dataset and `lucir-driver bench` measures
//! training throughput. Usage errors exit with 2, runtime errors with 1, an interrupted run
//! (Ctrl-C) with 130, a preempted one (SIGTERM, SIGUSR1) with 75, each reported on one line.

pub mod bench_cmd;
pub mod checkpoint;
pub mod config;
pub mod data_cmd;
pub mod eta;
pub mod eval_cmd;
pub mod fetch;
pub mod lock;
pub mod output;
pub mod progress;
pub mod report;
pub mod report_cmd;
pub mod run;
pub mod run_info;
pub mod signals;
pub mod sweep;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Class-incremental learning with LUCIR.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: config::RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a dataset's per-class train/test counts and its class order.
    Data(data_cmd::DataArgs),
    /// Measure training-step throughput on random data (one JSON line).
    Bench(bench_cmd::BenchArgs),
    /// Mean ± s.d. over seeds of finished runs: a markdown table and an SVG chart.
    Report(report_cmd::ReportArgs),
    /// Evaluate a run's model after a phase: accuracies, per class, confusion matrices.
    Eval(eval_cmd::EvalArgs),
}

/// The program: parses the command line, runs the sub-command or the experiment, reports an
/// error on one line, and says which exit code to end with.
pub fn main() -> ExitCode {
    // Output piped into a program that stops reading (`| head`) ends this one quietly, as it
    // does any Unix tool, instead of failing the next print.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of SIGPIPE before any thread is started; no
    // handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // SAFETY: the first thing the program does, before any other thread is started.
    unsafe {
        lucir_tensor::retain_freed_memory();
    }
    let result = match cli.command {
        Some(Command::Data(args)) => data_cmd::run(&args),
        Some(Command::Bench(args)) => bench_cmd::run(&args),
        Some(Command::Report(args)) => report_cmd::run(&args),
        Some(Command::Eval(args)) => eval_cmd::run(&args),
        None => sweep::run(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Usage>().is_none() && signals::preempted().is_some() => {
            // Not a failure: the run stopped where it can continue.
            eprintln!("stopped: {}", once_each(&format!("{e:#}")));
            ExitCode::from(signals::PREEMPTED_EXIT)
        }
        Err(e) => {
            // A failure to write the error itself (stderr closed or full) leaves only the
            // exit code to say it; it must not become a panic.
            let _ = writeln!(std::io::stderr(), "error: {}", once_each(&format!("{e:#}")));
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else if signals::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                // 128 + SIGINT, as shells report a program stopped by Ctrl-C.
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A usage error (bad setting, configuration file or phase split): exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Marks an error as a usage error.
pub fn usage<T, E: std::fmt::Display>(r: Result<T, E>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::Error::new(Usage(once_each(&format!("{e:#}")))))
}

/// An error chain as `context: cause`, each cause said once: an error whose message already
/// ends with its source's (`x.sh: No such file or directory`) is not followed by that source
/// again.
pub fn once_each(chain: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in chain.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_said_once() {
        assert_eq!(
            super::once_each(
                "writing s.sh: nodir/s.sh: No such file (os error 2): No such file (os error 2)"
            ),
            "writing s.sh: nodir/s.sh: No such file (os error 2)"
        );
        assert_eq!(super::once_each("a: b: a"), "a: b: a");
    }
}
