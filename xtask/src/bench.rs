//! `cargo xtask bench`: the criterion benchmarks, the end-to-end training throughput, and the
//! GPU head table (when a `--features cuda` build found a GPU), recorded in docs/perf.md.

use std::process::Command;

use anyhow::{bail, Context, Result};

const BEGIN: &str = "<!-- gpu-heads:begin -->";
const END: &str = "<!-- gpu-heads:end -->";

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs every benchmark; extra arguments go to criterion (e.g. a filter).
pub fn run(extra: &[String]) -> Result<()> {
    // `cargo xtask bench -- FILTER` arrives as ["--", "FILTER"].
    let extra = match extra.first().map(String::as_str) {
        Some("--") => &extra[1..],
        _ => extra,
    };
    let cuda = std::env::var_os("LUCIR_BENCH_CUDA").is_some();
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace"]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    let out = cmd
        .arg("--")
        .args(extra)
        .output()
        .context("running cargo bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("cargo bench failed: {}", out.status);
    }
    for model in ["resnet32", "resnet20"] {
        let status = cargo()
            .args([
                "run",
                "--release",
                "-q",
                "-p",
                "lucir-driver",
                "--",
                "bench",
                "--model",
                model,
            ])
            .status()
            .context("running lucir-driver bench")?;
        if !status.success() {
            bail!("lucir-driver bench --model {model} failed: {status}");
        }
    }
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("HEAD|")).collect();
    if rows.is_empty() {
        println!(
            "no GPU head rows (no GPU, or not a --features cuda build): docs/perf.md unchanged"
        );
        return Ok(());
    }
    let mut table =
        String::from("| launcher | shape | time | transfers alone / ratio |\n|---|---|---|---|\n");
    for r in rows {
        let cells: Vec<&str> = r
            .trim_start_matches("HEAD|")
            .trim_end_matches('|')
            .split('|')
            .collect();
        table.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    let path = crate::root().join("docs/perf.md");
    let doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let new = match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{BEGIN}\n{table}{}", &doc[..a], &doc[b..]),
        _ => format!("{doc}\n## GPU heads (cargo xtask bench)\n\n{BEGIN}\n{table}{END}\n"),
    };
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    println!("GPU head table written to {}", path.display());
    Ok(())
}
