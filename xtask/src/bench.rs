//! `cargo xtask bench`: the criterion benchmarks, the end-to-end training throughput, and the
//! GPU head table (when a `--features cuda` build found a GPU), recorded in docs/perf.md.

use std::process::Command;

use anyhow::{bail, Context, Result};

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The CPU's model name (`/proc/cpuinfo`, as `lscpu` reports it).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Runs every benchmark; extra arguments go to criterion (e.g. a filter). Every table printed
/// or written says the CPU it was measured on.
pub fn run(extra: &[String]) -> Result<()> {
    let cpu = cpu_model();
    println!(
        "CPU: {cpu}, {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
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
        println!("training step, {model}, CPU {cpu}:");
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
    let path = crate::root().join("docs/perf.md");
    let mut doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let peak: Vec<&str> = text.lines().filter(|l| l.starts_with("PEAK|")).collect();
    let layers: Vec<&str> = text.lines().filter(|l| l.starts_with("LAYER|")).collect();
    if !layers.is_empty() {
        let header = "| input | convolution (count in ResNet-32) | forward GFLOP/s (% of peak) \
                      | backward GFLOP/s (% of peak) | input gradient alone \
                      | weight gradient alone | ms per step, all of them |";
        doc = with_table(
            &doc,
            "layers",
            "Convolutions against the peak",
            header,
            &peak,
            &layers,
        );
    }
    let winograd: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("WINOGRAD|"))
        .collect();
    if !winograd.is_empty() {
        let header = "| input | convolution (count in ResNet-32) \
                      | forward ms, direct → F(2×2) / F(4×4) | backward | input gradient alone \
                      | weight gradient alone \
                      | error, direct: forward / input gradient / weight gradient \
                      | error, F(2×2) | error, F(4×4) |";
        doc = with_table(
            &doc,
            "winograd",
            "Winograd against the direct kernels",
            header,
            &peak,
            &winograd,
        );
    }
    let bf16: Vec<&str> = text.lines().filter(|l| l.starts_with("BF16|")).collect();
    if !bf16.is_empty() {
        let peak16: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("PEAK_BF16|"))
            .collect();
        let header = "| input | convolution (count in ResNet-32) \
                      | forward ms, f32 → bf16 (speed-up, % of bf16 peak) | backward \
                      | input gradient alone | weight gradient alone \
                      | error: forward / input gradient / weight gradient |";
        doc = with_table(
            &doc,
            "bf16",
            "bf16 products against the direct kernels",
            header,
            &peak16,
            &bf16,
        );
    }
    let heads: Vec<&str> = text.lines().filter(|l| l.starts_with("HEAD|")).collect();
    if heads.is_empty() {
        println!("no GPU head rows (no GPU, or not a --features cuda build)");
    } else {
        let header = "| launcher | shape | time | transfers alone / ratio |";
        let machine = format!("MACHINE|CPU {}|", cpu_model());
        doc = with_table(&doc, "gpu-heads", "GPU heads", header, &[&machine], &heads);
    }
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    println!("tables written to {}", path.display());
    Ok(())
}

/// `doc` with the table between `<!-- {key}:begin -->` and `<!-- {key}:end -->` replaced (or
/// appended under a `## {title} (cargo xtask bench)` heading): `lead` rows as lines above it
/// (`PEAK|…` or `PEAK_BF16|…` → "Peak: …"), then `header` and one row per `KIND|a|b|…|` line.
fn with_table(
    doc: &str,
    key: &str,
    title: &str,
    header: &str,
    lead: &[&str],
    rows: &[&str],
) -> String {
    let (begin, end) = (
        format!("<!-- {key}:begin -->"),
        format!("<!-- {key}:end -->"),
    );
    let cells = |r: &str| -> Vec<String> {
        let body = r
            .split_once('|')
            .map_or("", |(_, b)| b)
            .trim_end_matches('|');
        body.split('|').map(str::to_string).collect()
    };
    let mut table = String::new();
    for l in lead {
        let what = if l.starts_with("PEAK") {
            "Peak"
        } else {
            "Machine"
        };
        table.push_str(&format!("{what}: {}\n\n", cells(l).join(", ")));
    }
    let columns = header.matches('|').count() - 1;
    table.push_str(header);
    table.push('\n');
    table.push_str(&"|---".repeat(columns));
    table.push_str("|\n");
    for r in rows {
        table.push_str(&format!("| {} |\n", cells(r).join(" | ")));
    }
    match (doc.find(&begin), doc.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{begin}\n{table}{}", &doc[..a], &doc[b..]),
        _ => format!("{doc}\n## {title} (cargo xtask bench)\n\n{begin}\n{table}{end}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_table;

    #[test]
    fn tables_replace_their_markers_or_are_appended() {
        let rows = ["LAYER|a|b|", "LAYER|c|d|"];
        let doc = with_table("# perf\n", "t", "T", "| x | y |", &["PEAK|cpu|9|"], &rows);
        assert!(doc.contains("## T (cargo xtask bench)"), "{doc}");
        assert!(doc.contains("Peak: cpu, 9\n\n| x | y |\n|---|---|\n| a | b |\n| c | d |\n"));
        let again = with_table(&doc, "t", "T", "| x | y |", &[], &["LAYER|e|f|"]);
        assert_eq!(again.matches("<!-- t:begin -->").count(), 1);
        assert!(
            again.contains("| e | f |") && !again.contains("| a | b |"),
            "{again}"
        );
    }
}
