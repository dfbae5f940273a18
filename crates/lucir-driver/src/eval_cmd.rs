//! `lucir-driver eval RUN`: evaluates a run's model after a phase (by default the last one it
//! finished) on the test images of the classes seen by then — CNN and NME accuracy, per-class
//! accuracy and both confusion matrices as CSV files, each class by its dataset id with its
//! name in a last `name` column (so the columns before it are as they always were).
//! `--model FILE` evaluates other weights of the same shape (another run's export, a PyTorch
//! model) with this run's exemplars.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lucir_data::ExemplarMemory;
use lucir_method::{accuracy_split, per_class_accuracy, IncrementalLearner, Network};
use lucir_nn::write_atomic;

use crate::config::read_config_file;
use crate::outln;
use crate::run::protocol_data;
use crate::usage;

/// Options of `lucir-driver eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The run folder.
    pub run: PathBuf,
    /// Phase whose model to evaluate [default: the last with an exported model].
    #[arg(long)]
    pub phase: Option<usize>,
    /// Weights to evaluate instead of the run's model-phase-P.safetensors.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Only the first N test images of each class (quick trials).
    #[arg(long)]
    pub test_per_class: Option<usize>,
    /// Output folder [default: RUN/eval-phase-P].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `field` as one CSV field: quoted (RFC 4180) when it holds a comma, a quote or a line break.
/// `None` (no name) is an empty field.
fn csv_field(field: Option<&String>) -> String {
    let field = field.map_or("", String::as_str);
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// A square confusion matrix as CSV: rows true class, columns predicted, by class position,
/// each labelled with its class id; the last column is the row's class name.
fn confusion_csv(labels: &[usize], pred: &[usize], classes: &[usize], names: &[String]) -> String {
    let n = classes.len();
    let mut m = vec![0usize; n * n];
    for (&y, &p) in labels.iter().zip(pred) {
        if y < n && p < n {
            m[y * n + p] += 1;
        }
    }
    let mut s = String::from("true\\predicted");
    for c in classes {
        let _ = write!(s, ",{c}");
    }
    s.push_str(",name\n");
    for (i, c) in classes.iter().enumerate() {
        let _ = write!(s, "{c}");
        for v in &m[i * n..(i + 1) * n] {
            let _ = write!(s, ",{v}");
        }
        let _ = writeln!(s, ",{}", csv_field(names.get(*c)));
    }
    s
}

/// Accuracy (%) as the protocol computes it (`lucir_method::accuracy_split`), 0 where there
/// is no test image (`--test-per-class 0`).
fn or_zero(accuracy: f64) -> f64 {
    if accuracy.is_nan() {
        0.0
    } else {
        accuracy
    }
}

/// Runs the command.
pub fn run(args: &EvalArgs) -> Result<()> {
    let cfg = usage(read_config_file(&args.run.join("config.toml"), None))?;
    // The run's convolution kernels, so the accuracies are the run's own.
    lucir_tensor::set_conv3x3(crate::config::conv3x3(&cfg.conv)?);
    lucir_tensor::set_precision(crate::config::precision(&cfg.precision)?);
    let (data, _, names) = protocol_data(&cfg)?;
    let last = (0..data.phases.len()).rev().find(|p| {
        args.run
            .join(format!("model-phase-{p}.safetensors"))
            .is_file()
    });
    let phase = match (args.phase, last) {
        (Some(p), _) if p < data.phases.len() => p,
        (Some(p), _) if data.phases.len() == 1 => {
            return usage(Err(format!("--phase {p}: the run has only phase 0")))
        }
        (Some(p), _) => {
            return usage(Err(format!(
                "--phase {p}: the run has phases 0–{}",
                data.phases.len() - 1
            )))
        }
        (None, Some(p)) => p,
        (None, None) => {
            return usage(Err(format!(
                "{} has no model-phase-P.safetensors yet",
                args.run.display()
            )))
        }
    };
    let seen = data.phases.range(phase).end;
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| args.run.join(format!("model-phase-{phase}.safetensors")));
    let memory_file = args
        .run
        .join("checkpoints")
        .join(format!("phase-{phase}.memory.json"));
    let memory: ExemplarMemory = serde_json::from_slice(
        &std::fs::read(&memory_file)
            .with_context(|| format!("reading {}", memory_file.display()))?,
    )
    .with_context(|| format!("{}: not an exemplar memory", memory_file.display()))?;
    let channels = data.train.shape[0];
    let m = &cfg.method;
    let mut net = Network::new(m.arch, channels, seen, m.cosine_head(), m.seed)?;
    net.load_safetensors(&model)
        .with_context(|| format!("loading {}", model.display()))?;
    let order = data.order.order().to_vec();
    let mut learner = IncrementalLearner::new(cfg.method.clone(), data)?;
    learner.net = net;
    learner.memory = memory;
    eprintln!("phase {phase} ({seen} classes): NME class means from the exemplars…");
    learner.compute_class_means(seen)?;
    eprintln!("testing…");
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| crate::progress::count_bar(0, format!("phase {phase} testing")))
        .transpose()?;
    let mut progress = |done: usize, total: usize| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        Ok(())
    };
    let (labels, cnn, nme) = learner.test_predictions(seen, args.test_per_class, &mut progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let classes = &order[..seen];
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run.join(format!("eval-phase-{phase}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut images = vec![0usize; seen];
    for &y in &labels {
        images[y] += 1;
    }
    let (class_cnn, class_nme) = (
        per_class_accuracy(&cnn, &labels, seen),
        per_class_accuracy(&nme, &labels, seen),
    );
    let mut per_class = String::from("position,class,test_images,acc_cnn,acc_nme,name\n");
    for (pos, class) in classes.iter().enumerate() {
        let _ = writeln!(
            per_class,
            "{pos},{class},{},{:.2},{:.2},{}",
            images[pos],
            or_zero(class_cnn[pos]),
            or_zero(class_nme[pos]),
            csv_field(names.get(*class))
        );
    }
    let acc_cnn = or_zero(accuracy_split(&cnn, &labels, 0).0);
    let acc_nme = or_zero(accuracy_split(&nme, &labels, 0).0);
    write_atomic(&out.join("per_class.csv"), per_class.as_bytes())?;
    let cnn_csv = confusion_csv(&labels, &cnn, classes, &names);
    write_atomic(&out.join("confusion_cnn.csv"), cnn_csv.as_bytes())?;
    let nme_csv = confusion_csv(&labels, &nme, classes, &names);
    write_atomic(&out.join("confusion_nme.csv"), nme_csv.as_bytes())?;
    let summary = serde_json::json!({
        "run": args.run,
        "model": model,
        "phase": phase,
        "classes_seen": seen,
        "test_images": labels.len(),
        "acc_cnn": acc_cnn,
        "acc_nme": acc_nme,
    });
    write_atomic(
        &out.join("eval.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    outln!(
        "phase {phase}, {seen} classes, {} test images: CNN {:.2}%  NME {:.2}%  ({})",
        labels.len(),
        acc_cnn,
        acc_nme,
        out.display()
    )?;
    Ok(())
}
