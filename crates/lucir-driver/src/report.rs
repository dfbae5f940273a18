//! Run outputs: `results.json`, `results.csv`, `accuracy.svg` and the final table. Every file
//! is written atomically (temporary file, fsync, rename).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use lucir_method::{PhaseResult, ProtocolResult};
use lucir_nn::write_atomic;
use serde::{Deserialize, Serialize};

/// The content of `results.json` (accuracies in percent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// lucir, finetune or icarl.
    pub method: String,
    /// The method with its ablation switches, e.g. `lucir-no-margin`.
    pub variant: String,
    /// Preset the run started from.
    pub preset: String,
    /// Seed.
    pub seed: u64,
    /// Dataset class ids in learning order.
    pub class_order: Vec<usize>,
    /// Per-phase results.
    pub phases: Vec<PhaseResult>,
    /// Average incremental accuracy, CNN.
    pub avg_inc_acc_cnn: f64,
    /// Average incremental accuracy, NME.
    pub avg_inc_acc_nme: f64,
    /// Wall time of the run so far.
    pub wall_seconds: f64,
}

impl RunResults {
    /// Updates phases and averages from a protocol result.
    pub fn set_phases(&mut self, phases: Vec<PhaseResult>) {
        let r = ProtocolResult::from_phases(phases);
        self.phases = r.phases;
        self.avg_inc_acc_cnn = r.avg_inc_acc_cnn;
        self.avg_inc_acc_nme = r.avg_inc_acc_nme;
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.2}"))
}

/// Writes `results.json`, `results.csv` and `accuracy.svg` into `dir`.
pub fn write_all(dir: &Path, r: &RunResults, baselines: &[RunResults]) -> Result<()> {
    let json = serde_json::to_string_pretty(r)?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;
    let mut csv = String::from(
        "phase,classes_seen,acc_cnn,acc_nme,acc_old_cnn,acc_new_cnn,acc_old_nme,acc_new_nme,\
         forgetting_cnn,lambda,sigma,train_seconds,images_per_s\n",
    );
    for p in &r.phases {
        writeln!(
            csv,
            "{},{},{:.2},{:.2},{},{:.2},{},{:.2},{:.2},{:.4},{},{:.1},{:.1}",
            p.phase,
            p.classes_seen,
            p.acc_cnn,
            p.acc_nme,
            opt(p.acc_old_cnn),
            p.acc_new_cnn,
            opt(p.acc_old_nme),
            p.acc_new_nme,
            p.forgetting_cnn,
            p.lambda,
            p.sigma.map_or(String::new(), |s| format!("{s:.4}")),
            p.train_seconds,
            p.images_per_s
        )?;
    }
    write_atomic(&dir.join("results.csv"), csv.as_bytes())?;
    write_atomic(&dir.join("accuracy.svg"), svg(r, baselines).as_bytes())?;
    Ok(())
}

/// Reads another run's `results.json` (for comparison curves).
pub fn read_results(path: &Path) -> Result<RunResults> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a lucir results.json", path.display()))
}

/// The frame of an accuracy-per-phase chart (x: classes seen, y: 0–100 %): the plot area,
/// coordinate maps, and the SVG of title, grid, ticks and axis titles.
#[derive(Debug)]
pub struct Chart {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    pw: f64,
    ph: f64,
    xmin: f64,
    span: f64,
    ticks: Vec<usize>,
}

/// Line colours, in order.
pub const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

impl Chart {
    /// A `w`×`h` chart whose legend column is `legend` wide, for these classes-seen values.
    pub fn new(w: f64, h: f64, legend: f64, classes: impl IntoIterator<Item = usize>) -> Self {
        let (left, top, bottom) = (60.0, 30.0, 50.0);
        let mut ticks: Vec<usize> = classes.into_iter().collect();
        ticks.sort_unstable();
        ticks.dedup();
        let xmin = ticks.first().copied().unwrap_or(0) as f64;
        let xmax = ticks.last().copied().unwrap_or(1) as f64;
        Self {
            w,
            h,
            left,
            top,
            pw: w - left - legend,
            ph: h - top - bottom,
            xmin,
            span: (xmax - xmin).max(1.0),
            ticks,
        }
    }

    /// x of `classes` seen.
    pub fn x(&self, classes: f64) -> f64 {
        self.left + (classes - self.xmin) / self.span * self.pw
    }

    /// y of accuracy `a` (%).
    pub fn y(&self, a: f64) -> f64 {
        self.top + (1.0 - a.clamp(0.0, 100.0) / 100.0) * self.ph
    }

    /// Legend entry `i`: a line in `colour` (with SVG attributes `extra`, e.g. a dash
    /// pattern) and `label`.
    pub fn legend(&self, i: usize, colour: &str, extra: &str, label: &str) -> String {
        let (lx, ly) = (
            self.left + self.pw + 12.0,
            self.top + 10.0 + 18.0 * i as f64,
        );
        format!(
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{extra}/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            xml_escape(label)
        )
    }

    /// The opening `<svg>` with title, grid, ticks and axis titles (close with `</svg>`).
    pub fn frame(&self, title: &str) -> String {
        let (w, h, left, top, pw, ph) = (self.w, self.h, self.left, self.top, self.pw, self.ph);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
            left + pw / 2.0,
            xml_escape(title)
        );
        for a in (0..=100).step_by(20) {
            let yy = self.y(a as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{a}</text>"##,
                left + pw,
                left - 6.0,
                yy + 4.0
            );
        }
        for &c in &self.ticks {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{c}</text>"#,
                self.x(c as f64),
                top + ph + 18.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">classes seen</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">accuracy (%)</text>"#,
            left + pw / 2.0,
            h - 10.0,
            top + ph / 2.0,
            top + ph / 2.0
        );
        s
    }
}

/// One curve of the chart: label, colour, dashed, (classes seen, accuracy) points.
type Series<'a> = (String, &'a str, bool, Vec<(usize, f64)>);

/// A line chart of accuracy per phase (x: classes seen; y: 0–100 %).
pub fn svg(r: &RunResults, baselines: &[RunResults]) -> String {
    let all = std::iter::once(r).chain(baselines);
    let chart = Chart::new(
        720.0,
        420.0,
        200.0,
        all.flat_map(|r| r.phases.iter().map(|p| p.classes_seen)),
    );
    let x = |c: usize| chart.x(c as f64);
    let y = |a: f64| chart.y(a);
    let mut s = chart.frame(&format!("{} — accuracy per phase", r.preset));
    let colours = COLOURS;
    let mut series: Vec<Series> = vec![
        (
            format!("{} CNN ({:.2})", r.variant, r.avg_inc_acc_cnn),
            colours[0],
            false,
            r.phases
                .iter()
                .map(|p| (p.classes_seen, p.acc_cnn))
                .collect(),
        ),
        (
            format!("{} NME ({:.2})", r.variant, r.avg_inc_acc_nme),
            colours[0],
            true,
            r.phases
                .iter()
                .map(|p| (p.classes_seen, p.acc_nme))
                .collect(),
        ),
    ];
    // Runs of the same variant are told apart by preset and seed.
    let name = |x: &RunResults| {
        let same = std::iter::once(r)
            .chain(baselines)
            .filter(|o| o.variant == x.variant)
            .count();
        if same > 1 {
            format!("{} {} s{}", x.variant, x.preset, x.seed)
        } else {
            x.variant.clone()
        }
    };
    series[0].0 = format!("{} CNN ({:.2})", name(r), r.avg_inc_acc_cnn);
    series[1].0 = format!("{} NME ({:.2})", name(r), r.avg_inc_acc_nme);
    for (i, b) in baselines.iter().enumerate() {
        series.push((
            format!("{} CNN ({:.2})", name(b), b.avg_inc_acc_cnn),
            colours[(i + 1) % colours.len()],
            false,
            b.phases
                .iter()
                .map(|p| (p.classes_seen, p.acc_cnn))
                .collect(),
        ));
    }
    for (i, (label, colour, dashed, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(c, a)| format!("{:.1},{:.1}", x(*c), y(*a)))
            .collect();
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        for (c, a) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(*c),
                y(*a)
            );
        }
        let _ = writeln!(s, "{}", chart.legend(i, colour, dash, label));
    }
    s.push_str("</svg>\n");
    s
}

/// `s` with `&`, `<` and `>` escaped for SVG text.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The end-of-run table.
pub fn table(r: &RunResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8}",
        "phase", "classes", "CNN", "NME", "old CNN", "new CNN", "forget", "λ", "train s", "img/s"
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "{:>5} {:>7} {:>8.2} {:>8.2} {:>8} {:>8.2} {:>8.2} {:>7.3} {:>9.1} {:>8.1}",
            p.phase,
            p.classes_seen,
            p.acc_cnn,
            p.acc_nme,
            opt(p.acc_old_cnn),
            p.acc_new_cnn,
            p.forgetting_cnn,
            p.lambda,
            p.train_seconds,
            p.images_per_s
        );
    }
    let _ = writeln!(
        s,
        "average incremental accuracy ({}, {} phases): CNN {:.2}  NME {:.2}   wall {:.0} s",
        r.variant,
        r.phases.len(),
        r.avg_inc_acc_cnn,
        r.avg_inc_acc_nme,
        r.wall_seconds
    );
    s
}
