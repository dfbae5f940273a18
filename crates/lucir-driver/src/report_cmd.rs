//! `lucir-driver report RUN…`: the mean ± s.d. over seeds of comparable runs, as a markdown
//! table (optionally with the per-seed values) and an SVG of the accuracy per phase with a
//! ±1 s.d. band per group, written beside the runs (or to `--out`).
//!
//! Runs are comparable when every setting that changes results is the same: the run folders'
//! `config.toml` less the seed, the thread count, the device and the data folder's path (runs
//! without one — a bare `results.json` — are grouped by method variant, preset and phase
//! structure). Runs of one method with other settings become separate rows labelled by what
//! differs. Unfinished runs are counted (`3 of 4 finished`) and left out of the means.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{read_config_file, settings, RunConfig};
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use lucir_nn::write_atomic;

use crate::report::{read_results, Chart, RunResults, COLOURS};
use crate::usage;
use crate::{out, outln};

/// Which accuracy the chart shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Metric {
    /// The CNN classifier's.
    Cnn,
    /// The nearest-mean-of-exemplars classifier's.
    Nme,
    /// Both, side by side.
    #[default]
    Both,
}

/// Arguments of `lucir-driver report`.
#[derive(Debug, Clone, Default, Args)]
pub struct ReportArgs {
    /// Run folders, their results.json files, or sweep folders (their seed-N/ runs).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Legend labels, one per group in order of first appearance (default: the variant, and
    /// the settings that tell groups apart).
    #[arg(long, value_delimiter = ',')]
    pub label: Vec<String>,
    /// Also print each seed's average incremental accuracy.
    #[arg(long)]
    pub per_seed: bool,
    /// The accuracy the chart shows.
    #[arg(long, value_enum, default_value_t = Metric::Both)]
    pub metric: Metric,
    /// Folder for report.md and report.svg [default: the folder holding all the runs].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Settings that do not change what a run measures, only how fast or where it ran (the
/// thread count changes the summation order: other single runs, the same distribution).
const NOT_COMPARED: [&str; 4] = ["method.seed", "threads", "device", "data.data_dir"];

/// What makes runs comparable: `(setting, value)` pairs, sorted.
type Key = Vec<(String, String)>;

/// One run given to the report.
#[derive(Debug)]
struct Run {
    /// Its folder (or results.json).
    path: PathBuf,
    /// Its results so far (`None`: no phase has finished).
    results: Option<RunResults>,
    /// Its settings, where its folder has a config.toml.
    config: Option<RunConfig>,
}

impl Run {
    /// All phases done: the last one saw every class of the order.
    fn finished(&self) -> bool {
        self.results.as_ref().is_some_and(|r| {
            r.phases
                .last()
                .is_some_and(|p| p.classes_seen == r.class_order.len())
        })
    }

    /// What makes runs comparable, as `key = value` lines.
    fn key(&self) -> Key {
        match (&self.config, &self.results) {
            (Some(c), _) => settings(c)
                .into_iter()
                .filter(|(k, _)| !NOT_COMPARED.contains(&k.as_str()))
                .collect(),
            (None, Some(r)) => vec![
                ("variant".into(), r.variant.clone()),
                ("preset".into(), r.preset.clone()),
                ("classes".into(), r.class_order.len().to_string()),
            ],
            (None, None) => Vec::new(),
        }
    }

    fn seed(&self) -> Option<u64> {
        self.results
            .as_ref()
            .map(|r| r.seed)
            .or(self.config.as_ref().map(|c| c.method.seed))
    }

    fn variant(&self) -> String {
        match (&self.results, &self.config) {
            (Some(r), _) => r.variant.clone(),
            (None, Some(c)) => crate::run::variant(c),
            (None, None) => "?".into(),
        }
    }
}

/// Runs of one group: the same settings but the seed.
#[derive(Debug)]
struct Group {
    label: String,
    /// Finished runs, by seed.
    runs: Vec<RunResults>,
    /// Runs given, finished or not.
    given: usize,
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
    if v.is_empty() {
        return "–".into();
    }
    let (m, s) = mean_sd(v);
    format!("{m:.2} ± {s:.2}")
}

/// The seed number of a `seed-N` folder name.
fn seed_of(dir: &Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("seed-")?
        .parse()
        .ok()
}

/// The runs `path` names: a run folder, a results.json, or a sweep folder's seed-N/ runs.
fn expand(path: &Path) -> Result<Vec<Run>> {
    let one = |dir: &Path, file: PathBuf| -> Result<Run> {
        let results = if file.is_file() {
            Some(read_results(&file)?)
        } else {
            None
        };
        let cfg = dir.join("config.toml");
        let config = if cfg.is_file() {
            Some(read_config_file(&cfg, None)?)
        } else {
            None
        };
        if results.is_none() && config.is_none() {
            bail!("{}: no results.json and no config.toml", dir.display());
        }
        Ok(Run {
            path: dir.to_path_buf(),
            results,
            config,
        })
    };
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut run = one(dir, path.to_path_buf())?;
        run.path = path.to_path_buf();
        return Ok(vec![run]);
    }
    if !path.is_dir() {
        bail!("{}: no such run folder or results.json", path.display());
    }
    if path.join("results.json").is_file() || path.join("config.toml").is_file() {
        return Ok(vec![one(path, path.join("results.json"))?]);
    }
    let mut seeds: Vec<(u64, PathBuf)> = std::fs::read_dir(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter_map(|p| seed_of(&p).map(|s| (s, p)))
        .collect();
    if seeds.is_empty() {
        bail!(
            "{}: neither a run folder (results.json, config.toml) nor a sweep (seed-N/ folders)",
            path.display()
        );
    }
    seeds.sort();
    seeds
        .iter()
        .map(|(_, dir)| one(dir, dir.join("results.json")))
        .collect()
}

/// The settings (keys) whose values differ between the groups' keys.
fn differing(keys: &[Key]) -> Vec<String> {
    let mut all: Vec<String> = keys.iter().flatten().map(|(k, _)| k.clone()).collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .filter(|k| {
            let vals: Vec<Option<&String>> = keys
                .iter()
                .map(|key| key.iter().find(|(kk, _)| kk == k).map(|(_, v)| v))
                .collect();
            vals.windows(2).any(|w| w[0] != w[1])
        })
        .collect()
}

/// Settings already said by the variant's name.
const IN_VARIANT: [&str; 7] = [
    "method.method",
    "method.cosine",
    "method.less_forget",
    "method.adaptive_lambda",
    "method.margin_rank",
    "method.imprint",
    "method.cbf",
];

/// Groups runs by their settings in order of first appearance, and the note that says which
/// settings split runs of one variant into several rows.
fn group(runs: Vec<Run>, labels: &[String]) -> Result<(Vec<Group>, Option<String>)> {
    let mut keyed: Vec<(Key, Vec<Run>)> = Vec::new();
    for r in runs {
        let key = r.key();
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => keyed.push((key, vec![r])),
        }
    }
    if !labels.is_empty() && labels.len() != keyed.len() {
        let names: Vec<String> = keyed.iter().map(|(_, r)| r[0].variant()).collect();
        return usage(Err(format!(
            "--label gives {} labels for {} groups ({})",
            labels.len(),
            keyed.len(),
            names.join(", ")
        )));
    }
    let keys: Vec<Key> = keyed.iter().map(|(k, _)| k.clone()).collect();
    let shown: Vec<String> = differing(&keys)
        .into_iter()
        .filter(|k| !IN_VARIANT.contains(&k.as_str()) && k != "variant")
        .collect();
    let variants: Vec<String> = keyed.iter().map(|(_, r)| r[0].variant()).collect();
    let split = variants
        .iter()
        .enumerate()
        .any(|(i, v)| variants[..i].contains(v));
    let note = (split && !shown.is_empty()).then(|| {
        format!(
            "Runs of one method with other settings are separate rows; they differ in {}.",
            shown.join(", ")
        )
    });
    let mut groups = Vec::new();
    for (i, (key, mut runs)) in keyed.into_iter().enumerate() {
        runs.sort_by_key(Run::seed);
        if let Some(w) = runs.windows(2).find(|w| w[0].seed() == w[1].seed()) {
            return usage(Err(format!(
                "{} and {} are runs of the same settings with the same seed {}",
                w[0].path.display(),
                w[1].path.display(),
                w[0].seed().unwrap_or_default()
            )));
        }
        let label = match labels.get(i) {
            Some(l) => l.clone(),
            None => {
                let extra: Vec<String> = shown
                    .iter()
                    .filter_map(|k| {
                        let v = key.iter().find(|(kk, _)| kk == k).map(|(_, v)| v)?;
                        let name = k.rsplit('.').next().unwrap_or(k);
                        Some(format!("{name}={}", v.trim_matches('"')))
                    })
                    .collect();
                match extra.is_empty() {
                    true => variants[i].clone(),
                    false => format!("{} ({})", variants[i], extra.join(", ")),
                }
            }
        };
        let given = runs.len();
        let finished: Vec<RunResults> = runs
            .into_iter()
            .filter(Run::finished)
            .filter_map(|r| r.results)
            .collect();
        groups.push(Group {
            label,
            runs: finished,
            given,
        });
    }
    Ok((groups, note))
}

/// The markdown report of `groups`.
fn markdown(groups: &[Group], note: Option<&str>, per_seed: bool) -> String {
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
        let seeds = match g.given == g.runs.len() {
            true => g.runs.len().to_string(),
            false => format!("{} finished / {}", g.runs.len(), g.given),
        };
        let _ = writeln!(
            s,
            "| {} | {seeds} | {} | {} | {} | {} | {} |",
            g.label,
            pm(&col(&|r| r.avg_inc_acc_cnn)),
            pm(&col(&|r| r.avg_inc_acc_nme)),
            pm(&last(&|p| p.acc_cnn)),
            pm(&last(&|p| p.acc_nme)),
            pm(&last(&|p| p.forgetting_cnn)),
        );
    }
    if let Some(note) = note {
        let _ = writeln!(s, "\n{note}");
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

/// One chart of accuracy per phase (`nme`: the NME classifier's, else the CNN's): each
/// group's mean as a line and mean ± s.d. as a band.
fn band_svg(groups: &[Group], nme: bool) -> String {
    let classes = groups.iter().flat_map(|g| {
        g.runs
            .iter()
            .flat_map(|r| r.phases.iter().map(|p| p.classes_seen))
    });
    let chart = Chart::new(760.0, 420.0, 240.0, classes.collect::<Vec<_>>());
    let (x, y) = (|c: f64| chart.x(c), |a: f64| chart.y(a));
    let name = if nme { "NME" } else { "CNN" };
    let mut s = chart.frame(&format!(
        "{name} accuracy per phase, mean ± s.d. over seeds"
    ));
    let acc = |p: &lucir_method::PhaseResult| if nme { p.acc_nme } else { p.acc_cnn };
    for (i, g) in groups.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let phases = g.runs.iter().map(|r| r.phases.len()).min().unwrap_or(0);
        let stats: Vec<(f64, f64, f64)> = (0..phases)
            .map(|p| {
                let accs: Vec<f64> = g.runs.iter().map(|r| acc(&r.phases[p])).collect();
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
        let avg: Vec<f64> = g
            .runs
            .iter()
            .map(|r| {
                if nme {
                    r.avg_inc_acc_nme
                } else {
                    r.avg_inc_acc_cnn
                }
            })
            .collect();
        let label = format!("{} ({}, n={})", g.label, pm(&avg), g.runs.len());
        let _ = writeln!(s, "{}", chart.legend(i, colour, "", &label));
    }
    s.push_str("</svg>\n");
    s
}

/// The chart of `metric`: one panel, or CNN and NME side by side.
fn chart(groups: &[Group], metric: Metric) -> String {
    match metric {
        Metric::Cnn => band_svg(groups, false),
        Metric::Nme => band_svg(groups, true),
        Metric::Both => {
            let panel = |nme: bool, x: u32| {
                band_svg(groups, nme).replacen("<svg ", &format!("<svg x=\"{x}\" "), 1)
            };
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1520\" height=\"420\">\n{}{}</svg>\n",
                panel(false, 0),
                panel(true, 760)
            )
        }
    }
}

/// The deepest folder holding every path (`.` when they share none).
fn common_folder(paths: &[PathBuf]) -> PathBuf {
    let folders: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            let dir = if p.is_file() {
                p.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                p.clone()
            };
            std::path::absolute(&dir).unwrap_or(dir)
        })
        .collect();
    let Some(first) = folders.first() else {
        return PathBuf::from(".");
    };
    let mut common: Vec<std::path::Component> = first.components().collect();
    for f in &folders[1..] {
        let n = common
            .iter()
            .zip(f.components())
            .take_while(|(a, b)| **a == *b)
            .count();
        common.truncate(n);
    }
    let p: PathBuf = common.iter().collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// Runs the command.
pub fn run(args: &ReportArgs) -> Result<()> {
    let mut runs = Vec::new();
    for p in &args.runs {
        runs.extend(usage(expand(p))?);
    }
    let unfinished: Vec<String> = runs
        .iter()
        .filter(|r| !r.finished())
        .map(|r| {
            let done = r.results.as_ref().map_or(0, |x| x.phases.len());
            format!("{} ({done} phases done)", r.path.display())
        })
        .collect();
    if !unfinished.is_empty() {
        eprintln!(
            "warning: {} unfinished run{} left out of the means: {}",
            unfinished.len(),
            if unfinished.len() == 1 { "" } else { "s" },
            unfinished.join(", ")
        );
    }
    let (groups, note) = group(runs, &args.label)?;
    let text = markdown(&groups, note.as_deref(), args.per_seed);
    out!("{text}")?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| common_folder(&args.runs));
    if !out.is_dir() {
        std::fs::create_dir_all(&out)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", out.display()))?;
    }
    let (md, svg) = (out.join("report.md"), out.join("report.svg"));
    write_atomic(&md, text.as_bytes())?;
    write_atomic(&svg, chart(&groups, args.metric).as_bytes())?;
    outln!("\nreport: {}, chart: {}", md.display(), svg.display())?;
    Ok(())
}
