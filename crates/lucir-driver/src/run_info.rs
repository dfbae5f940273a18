//! `run.json`: what a run folder needs to be reproduced — the build (version, git commit,
//! features), the machine (CPU model, the CPU kernels it runs, threads) and every segment of the
//! run (start, end, seconds; a resumed run adds one), written atomically at each segment's start
//! and end.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use lucir_nn::write_atomic;
use serde::{Deserialize, Serialize};

/// One uninterrupted stretch of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, RFC 3339 UTC.
    pub start: String,
    /// End, RFC 3339 UTC (`None` while running or when the segment was killed).
    pub end: Option<String>,
    /// The command line.
    pub command: Vec<String>,
    /// Threads, CPU kernels and device of the segment (what decides the bits besides the
    /// settings; a resume with others is refused unless asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<crate::checkpoint::Machine>,
}

/// The content of `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// lucir-driver's version.
    pub version: String,
    /// The git commit it was built from (`-dirty`: with uncommitted changes).
    pub git_commit: String,
    /// Cargo features of the build.
    pub features: Vec<String>,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Version of the memory-bound CPU loops in use: avx512, avx2-fma or baseline.
    pub cpu_kernels: String,
    /// Worker threads (resolved: never 0).
    pub threads: usize,
    /// Wall seconds over all segments (at the last checkpoint or end).
    pub wall_seconds: f64,
    /// Every segment, the first one the start of the run.
    pub segments: Vec<Segment>,
}

/// Now, as RFC 3339 UTC to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl RunInfo {
    /// The info of this process, with `earlier` segments (of a resumed run) before a new one
    /// starting now.
    pub fn start(
        earlier: Vec<Segment>,
        wall_seconds: f64,
        machine: &crate::checkpoint::Machine,
    ) -> Self {
        let mut segments = earlier;
        segments.push(Segment {
            start: now(),
            end: None,
            command: std::env::args().collect(),
            machine: Some(machine.clone()),
        });
        Self {
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("LUCIR_GIT_COMMIT").into(),
            features: if cfg!(feature = "cuda") {
                vec!["cuda".into()]
            } else {
                Vec::new()
            },
            cpu_model: cpu_model(),
            cpu_kernels: lucir_tensor::kernel_path(),
            threads: rayon::current_num_threads(),
            wall_seconds,
            segments,
        }
    }

    /// The segments of the run in `dir` so far (none for a new run or an unreadable file).
    pub fn earlier(dir: &Path) -> Vec<Segment> {
        std::fs::read_to_string(dir.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<RunInfo>(&t).ok())
            .map(|r| r.segments)
            .unwrap_or_default()
    }

    /// Marks the current segment finished after a run total of `wall_seconds`.
    pub fn finish(&mut self, wall_seconds: f64) {
        self.wall_seconds = wall_seconds;
        if let Some(s) = self.segments.last_mut() {
            s.end = Some(now());
        }
    }

    /// Writes `dir/run.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("encoding run.json")?;
        Ok(write_atomic(&dir.join("run.json"), json.as_bytes())?)
    }
}
