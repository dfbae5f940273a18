//! `lucir-driver report RUN…`: the mean ± s.d. over seeds of runs grouped by method variant
//! and preset, as a markdown table on standard output (optionally with the per-seed values),
//! and an SVG of the CNN accuracy per phase with a ±1 s.d. band per group.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use lucir_nn::write_atomic;

use crate::report::{read_results, Chart, RunResults, COLOURS};
use crate::usage;

/// Arguments of `lucir-driver report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Run folders (or their results.json files); runs of the same variant and preset are
    /// aggregated over their seeds.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Legend labels, one per group in order of first appearance (default: variant and preset).
    #[arg(long, value_delimiter = ',')]
    pub label: Vec<String>,
    /// Also print each seed's average incremental accuracy.
    #[arg(long)]
    pub per_seed: bool,
    /// Where to write the chart.
    #[arg(long, default_value = "report.svg")]
    pub svg: PathBuf,
}

/// Runs of one variant on one preset.
#[derive(Debug)]
struct Group {
    label: String,
    runs: Vec<RunResults>,
}

/// Mean and sample standard deviation (0 for a single value).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn pm(v: &[f64]) -> String {
    let (m, s) = mean_sd(v);
    format!("{m:.2} ± {s:.2}")
}

fn load(path: &Path) -> Result<RunResults> {
    let file = if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    };
    read_results(&file)
}

/// Groups runs by (variant, preset) in order of first appearance.
fn group(runs: Vec<RunResults>, labels: &[String]) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    let presets: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.preset.as_str()).collect();
    let several_presets = presets.len() > 1;
    let mut keyed: Vec<((String, String), Vec<RunResults>)> = Vec::new();
    for r in runs {
        let key = (r.variant.clone(), r.preset.clone());
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => keyed.push((key, vec![r])),
        }
    }
    if !labels.is_empty() && labels.len() != keyed.len() {
        return usage(Err(format!(
            "--label gives {} labels for {} groups ({})",
            labels.len(),
            keyed.len(),
            keyed
                .iter()
                .map(|((v, p), _)| format!("{v} on {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for (i, ((variant, preset), mut runs)) in keyed.into_iter().enumerate() {
        runs.sort_by_key(|r| r.seed);
        if let Some(w) = runs.windows(2).find(|w| w[0].seed == w[1].seed) {
            return usage(Err(format!(
                "two runs of {variant} on {preset} have the same seed {}",
                w[0].seed
            )));
        }
        let label = match labels.get(i) {
            Some(l) => l.clone(),
            None if several_presets => format!("{variant} ({preset})"),
            None => variant,
        };
        groups.push(Group { label, runs });
    }
    Ok(groups)
}

/// The markdown report of `groups`.
fn markdown(groups: &[Group], per_seed: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| runs | seeds | avg. inc. acc. CNN | avg. inc. acc. NME | last phase CNN | last phase NME | forgetting (CNN, last phase) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for g in groups {
        let col = |f: &dyn Fn(&RunResults) -> f64| -> Vec<f64> { g.runs.iter().map(f).collect() };
        let last = |f: &dyn Fn(&lucir_method::PhaseResult) -> f64| -> Vec<f64> {
            g.runs
                .iter()
                .filter_map(|r| r.phases.last().map(f))
                .collect()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            g.label,
            g.runs.len(),
            pm(&col(&|r| r.avg_inc_acc_cnn)),
            pm(&col(&|r| r.avg_inc_acc_nme)),
            pm(&last(&|p| p.acc_cnn)),
            pm(&last(&|p| p.acc_nme)),
            pm(&last(&|p| p.forgetting_cnn)),
        );
    }
    if per_seed {
        let mut seeds: Vec<u64> = groups
            .iter()
            .flat_map(|g| g.runs.iter().map(|r| r.seed))
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        let _ = writeln!(s, "\nAverage incremental accuracy per seed (CNN / NME):\n");
        let names: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
        let _ = writeln!(s, "| seed | {} |", names.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(groups.len()));
        for seed in seeds {
            let cells: Vec<String> = groups
                .iter()
                .map(|g| match g.runs.iter().find(|r| r.seed == seed) {
                    Some(r) => format!("{:.2} / {:.2}", r.avg_inc_acc_cnn, r.avg_inc_acc_nme),
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(s, "| {seed} | {} |", cells.join(" | "));
        }
    }
    s
}

/// CNN accuracy per phase: each group's mean as a line and mean ± s.d. as a band.
fn band_svg(groups: &[Group]) -> String {
    let classes = groups.iter().flat_map(|g| {
        g.runs
            .iter()
            .flat_map(|r| r.phases.iter().map(|p| p.classes_seen))
    });
    let chart = Chart::new(760.0, 420.0, 240.0, classes.collect::<Vec<_>>());
    let (x, y) = (|c: f64| chart.x(c), |a: f64| chart.y(a));
    let mut s = chart.frame("CNN accuracy per phase, mean ± s.d. over seeds");
    let colours = COLOURS;
    for (i, g) in groups.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let phases = g.runs.iter().map(|r| r.phases.len()).min().unwrap_or(0);
        let stats: Vec<(f64, f64, f64)> = (0..phases)
            .map(|p| {
                let accs: Vec<f64> = g.runs.iter().map(|r| r.phases[p].acc_cnn).collect();
                let (m, sd) = mean_sd(&accs);
                (g.runs[0].phases[p].classes_seen as f64, m, sd)
            })
            .collect();
        let upper = stats
            .iter()
            .map(|(c, m, sd)| format!("{:.1},{:.1}", x(*c), y(m + sd)));
        let lower = stats
            .iter()
            .rev()
            .map(|(c, m, sd)| format!("{:.1},{:.1}", x(*c), y(m - sd)));
        let band: Vec<String> = upper.chain(lower).collect();
        let line: Vec<String> = stats
            .iter()
            .map(|(c, m, _)| format!("{:.1},{:.1}", x(*c), y(*m)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polygon fill="{colour}" fill-opacity="0.18" stroke="none" points="{}"/>
<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            band.join(" "),
            line.join(" ")
        );
        let avg: Vec<f64> = g.runs.iter().map(|r| r.avg_inc_acc_cnn).collect();
        let label = format!("{} ({}, n={})", g.label, pm(&avg), g.runs.len());
        let _ = writeln!(s, "{}", chart.legend(i, colour, "", &label));
    }
    s.push_str("</svg>\n");
    s
}

/// Runs the command.
pub fn run(args: &ReportArgs) -> Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>>>()?;
    let groups = group(runs, &args.label)?;
    print!("{}", markdown(&groups, args.per_seed));
    write_atomic(&args.svg, band_svg(&groups).as_bytes())
        .with_context(|| format!("writing {}", args.svg.display()))?;
    println!("\nchart: {}", args.svg.display());
    Ok(())
}
