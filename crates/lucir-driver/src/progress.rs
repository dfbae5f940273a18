//! Progress display and per-phase outputs: progress bars on a terminal, one line per epoch
//! otherwise, nothing with `--quiet`; after each phase a checkpoint and refreshed results files.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lucir_method::{Event, IncrementalLearner, Observer, PhaseResult, Stage};
use lucir_nn::{save_state, write_atomic};

use crate::checkpoint;
use crate::eta::{self, Plan, Rates};
use crate::report::{write_all, RunResults};
use crate::signals::{self, INTERRUPTED};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// indicatif bars (stderr is a terminal).
    Bars,
    /// One line per epoch on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

impl Display {
    /// Bars on a terminal, lines otherwise, nothing when quiet.
    pub fn pick(quiet: bool) -> Self {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Lines
        }
    }
}

/// The driver's [`Observer`].
#[derive(Debug)]
pub struct Progress {
    display: Display,
    /// Holds the run bar above the epoch (or testing) bar.
    multi: MultiProgress,
    /// The whole run's training epochs, with the estimated time left.
    run_bar: Option<ProgressBar>,
    /// The current epoch's batches, or the test images being evaluated.
    bar: Option<ProgressBar>,
    dir: PathBuf,
    /// Results so far (rewritten after every phase).
    pub results: RunResults,
    baselines: Vec<RunResults>,
    start: Instant,
    /// Wall seconds of the run's earlier segments (before a resume).
    earlier: f64,
    /// Phases of the run (known from the first phase start).
    phases: usize,
    /// The run's work, for the estimate of the time left.
    pub plan: Plan,
    /// What decides the run's bits besides its settings, recorded in every checkpoint.
    pub machine: checkpoint::Machine,
    /// Rates measured so far.
    rates: Rates,
    /// Seconds spent outside epochs in this phase (herding, class means, testing…), and
    /// when that time was last counted.
    between: (f64, Instant),
    /// Whether an epoch is running.
    in_epoch: bool,
}

/// Header of `metrics.csv`.
const METRICS_HEADER: &str = "phase,stage,epoch,lr,loss,ce,lf,mr,kd,seconds";

/// Starts the `metrics.csv` of the run in `dir`, which then grows by one appended row per
/// epoch. A run resumed in phase `phase` after `done` of its training epochs keeps the rows
/// of every epoch before that point (`None`: a new run, no rows); rows of epochs after its
/// checkpoint, a half-written last row among them, are dropped, so the file stays exact.
pub fn start_metrics(dir: &Path, resumed_at: Option<(usize, usize)>) -> anyhow::Result<()> {
    let path = dir.join("metrics.csv");
    let text = match resumed_at {
        Some(_) => std::fs::read_to_string(&path).unwrap_or_default(),
        None => String::new(),
    };
    let (phase, done) = resumed_at.unwrap_or((0, 0));
    let kept: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|row| {
            let mut f = row.split(',');
            let (p, stage, e) = (f.next(), f.next(), f.next());
            let p: Option<usize> = p.and_then(|v| v.parse().ok());
            let e: Option<usize> = e.and_then(|v| v.parse().ok());
            match (p, stage, e) {
                (Some(p), _, Some(_)) if p < phase => true,
                // Epochs are numbered from 1, as the progress lines say.
                (Some(p), Some("train"), Some(e)) => p == phase && e <= done,
                _ => false,
            }
        })
        .collect();
    let mut out = format!("{METRICS_HEADER}\n");
    for row in kept {
        out.push_str(row);
        out.push('\n');
    }
    Ok(write_atomic(&path, out.as_bytes())?)
}

impl Progress {
    /// An observer writing into run folder `dir` (whose `metrics.csv` [`start_metrics`] has
    /// begun); `earlier` is the wall time of the run's earlier segments (0 for a new run).
    pub fn new(
        display: Display,
        dir: PathBuf,
        (results, baselines): (RunResults, Vec<RunResults>),
        earlier: f64,
    ) -> Self {
        Self {
            display,
            multi: MultiProgress::new(),
            run_bar: None,
            bar: None,
            dir,
            results,
            baselines,
            start: Instant::now(),
            earlier,
            phases: 0,
            plan: Plan::default(),
            machine: checkpoint::Machine::current(""),
            rates: Rates::default(),
            between: (0.0, Instant::now()),
            in_epoch: false,
        }
    }

    /// Counts the time since the last event as forward work unless an epoch ran.
    fn count_between(&mut self) {
        let now = Instant::now();
        if !self.in_epoch {
            self.between.0 += (now - self.between.1).as_secs_f64();
        }
        self.between.1 = now;
    }

    /// ", ETA …" once epoch `epoch` of `stage` in `phase` took `seconds`.
    fn eta(&mut self, phase: usize, stage: Stage, epoch: usize, seconds: f64) -> String {
        let images = self.plan.epoch_images(phase, stage);
        if images > 0 && seconds > 0.0 {
            let rate = Some(seconds / images as f64);
            match phase {
                0 => self.rates.base = rate,
                _ => self.rates.incremental = rate,
            }
        }
        match self.plan.remaining(phase, stage, epoch, self.rates) {
            Some(left) => format!(", {}", eta::format(left)),
            None => String::new(),
        }
    }

    /// Shows a progress line and appends it to the run folder's `train.log`.
    pub fn line(&self, text: &str) -> lucir_method::Result<()> {
        match self.display {
            Display::Quiet => {}
            Display::Bars if self.run_bar.is_some() || self.bar.is_some() => {
                let _ = self.multi.println(text);
            }
            _ => eprintln!("{text}"),
        }
        self.log(text).map_err(to_method_err)
    }

    /// Appends a timestamped line to the run folder's `train.log`. A failed write (a full
    /// disk) is an error naming the file: the log is part of the run's record.
    pub fn log(&self, text: &str) -> anyhow::Result<()> {
        let path = self.dir.join("train.log");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}  {text}", crate::run_info::now()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Wall seconds of the run: earlier segments and this one.
    pub fn elapsed(&self) -> f64 {
        self.earlier + self.start.elapsed().as_secs_f64()
    }
}

/// A bar over `total` items (test images), labelled `prefix`.
pub fn count_bar(total: usize, prefix: String) -> lucir_method::Result<ProgressBar> {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images (ETA {eta})")
            .map_err(to_method_err)?
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    Ok(bar)
}

fn to_method_err(e: impl std::fmt::Display) -> lucir_method::Error {
    lucir_method::Error::Stopped(format!("{e:#}"))
}

impl Observer for Progress {
    fn event(&mut self, e: &Event) -> lucir_method::Result<()> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            for bar in [self.bar.take(), self.run_bar.take()].into_iter().flatten() {
                bar.abandon();
            }
            return Err(lucir_method::Error::Stopped(format!(
                "interrupted; the last checkpoint is kept: continue with --resume {}",
                self.dir.display()
            )));
        }
        // A preemption inside training is the learner's to stop at the next step (after
        // checkpointing there); anywhere else the run stops now, at its last checkpoint.
        let training = matches!(e, Event::Batch { .. } | Event::EpochEnd { .. });
        if let (Some(signal), false) = (signals::preempted(), training) {
            for bar in [self.bar.take(), self.run_bar.take()].into_iter().flatten() {
                bar.abandon();
            }
            return Err(lucir_method::Error::Preempted(format!(
                "{signal} outside training; the last checkpoint is kept"
            )));
        }
        self.count_between();
        match e {
            Event::PhaseStart {
                phase,
                phases,
                new,
                samples,
                lambda,
            } => {
                self.phases = *phases;
                self.line(&format!(
                    "phase {}/{}: classes {} ({} new), {} training samples, λ = {:.3}",
                    phase,
                    phases - 1,
                    positions(new),
                    new.len(),
                    samples,
                    lambda
                ))?;
            }
            Event::Stage { phase, what } => self.line(&format!("phase {phase}: {what}"))?,
            Event::EpochStart {
                phase,
                stage,
                epoch,
                epochs,
                batches,
                ..
            } => {
                self.in_epoch = true;
                if self.display == Display::Bars {
                    let bar = ProgressBar::new(*batches as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})",
                        )
                        .map_err(to_method_err)?
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(format!(
                        "phase {phase} {stage} epoch {}/{epochs}",
                        epoch + 1
                    ));
                    if self.run_bar.is_none() && *stage == Stage::Train {
                        let total = self.phases.max(phase + 1) * epochs;
                        let run = ProgressBar::new(total as u64);
                        run.set_style(
                            ProgressStyle::with_template(
                                "run [{bar:30}] {pos}/{len} training epochs{msg}",
                            )
                            .map_err(to_method_err)?
                            .progress_chars("=> "),
                        );
                        run.set_position((phase * epochs + epoch) as u64);
                        self.run_bar = Some(self.multi.add(run));
                    }
                    self.bar = Some(self.multi.add(bar));
                }
            }
            Event::Eval { phase, done, total } => {
                if self.display == Display::Bars {
                    if self.bar.is_none() {
                        let bar = count_bar(*total, format!("phase {phase} testing"))?;
                        self.bar = Some(self.multi.add(bar));
                    }
                    if let Some(bar) = &self.bar {
                        bar.set_position(*done as u64);
                    }
                    if done >= total {
                        if let Some(bar) = self.bar.take() {
                            bar.finish_and_clear();
                        }
                    }
                }
            }
            Event::Batch { loss, .. } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                if let (Some(bar), Some(loss)) = (&self.bar, loss) {
                    bar.set_message(format!(
                        "loss {:.4} (ce {:.4} lf {:.4} mr {:.4} kd {:.4})",
                        loss.total, loss.ce, loss.lf, loss.mr, loss.kd
                    ));
                }
            }
            Event::EpochEnd {
                phase,
                stage,
                epoch,
                epochs,
                loss,
                lr,
                seconds,
            } => {
                self.in_epoch = false;
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let eta = self.eta(*phase, *stage, *epoch, *seconds);
                if let (Some(run), Stage::Train) = (&self.run_bar, stage) {
                    run.set_position((phase * epochs + epoch + 1) as u64);
                    run.set_message(eta.clone());
                }
                self.line(&format!(
                    "phase {phase} {stage} epoch {}/{epochs}: lr {lr:.4} loss {:.4} (ce {:.4} \
                     lf {:.4} mr {:.4} kd {:.4}) {seconds:.1} s{eta}",
                    epoch + 1,
                    loss.total,
                    loss.ce,
                    loss.lf,
                    loss.mr,
                    loss.kd
                ))?;
                let row = format!(
                    "{phase},{stage},{},{lr},{},{},{},{},{},{seconds:.3}",
                    epoch + 1,
                    loss.total,
                    loss.ce,
                    loss.lf,
                    loss.mr,
                    loss.kd
                );
                let path = self.dir.join("metrics.csv");
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "{row}"))
                    .map_err(|e| to_method_err(format!("{}: {e}", path.display())))?;
            }
        }
        Ok(())
    }

    fn preempted(&self) -> bool {
        signals::preempted().is_some()
    }

    fn epoch_done(&mut self, learner: &IncrementalLearner) -> lucir_method::Result<()> {
        checkpoint::save(
            &self.dir,
            &learner.snapshot().map_err(to_method_err)?,
            &self.machine,
            self.elapsed(),
        )
        .map_err(to_method_err)
    }

    fn phase_done(
        &mut self,
        r: &PhaseResult,
        learner: &IncrementalLearner,
    ) -> lucir_method::Result<()> {
        // The phase's outputs first, its checkpoint last: the checkpoint is what says a phase
        // is done, so a kill between the two redoes the phase's end (the same bytes again)
        // instead of leaving a model file or results.json behind for good.
        self.count_between();
        let forward = self.plan.phases.get(r.phase).map_or(0, |w| w.forward);
        if forward > 0 {
            self.rates.forward = Some(self.between.0 / forward as f64);
        }
        self.between.0 = 0.0;
        let ckpt = self.dir.join("checkpoints");
        save_state(&learner.net, &ckpt.join(format!("phase-{}.state", r.phase)))
            .map_err(to_method_err)?;
        let memory = serde_json::to_vec(&learner.memory).map_err(to_method_err)?;
        write_atomic(
            &ckpt.join(format!("phase-{}.memory.json", r.phase)),
            &memory,
        )
        .map_err(to_method_err)?;
        let model = self
            .dir
            .join(format!("model-phase-{}.safetensors", r.phase));
        let meta = model_metadata(learner, &self.results, r);
        learner
            .net
            .save_safetensors(meta, &model)
            .map_err(to_method_err)?;
        self.results.set_phases(learner.results.clone());
        self.results.wall_seconds = self.elapsed();
        write_all(&self.dir, &self.results, &self.baselines).map_err(to_method_err)?;
        checkpoint::save(
            &self.dir,
            &learner.snapshot().map_err(to_method_err)?,
            &self.machine,
            self.elapsed(),
        )
        .map_err(to_method_err)?;
        self.line(&format!(
            "phase {} done: {} classes, CNN {:.2}%  NME {:.2}%  (old {} / new {:.2}), σ {}",
            r.phase,
            r.classes_seen,
            r.acc_cnn,
            r.acc_nme,
            r.acc_old_cnn.map_or("-".into(), |v| format!("{v:.2}")),
            r.acc_new_cnn,
            r.sigma.map_or("-".into(), |v| format!("{v:.3}"))
        ))?;
        if r.phase + 1 >= self.phases {
            if let Some(run) = self.run_bar.take() {
                run.finish_and_clear();
            }
        }
        Ok(())
    }
}

/// The `__metadata__` of an exported model: what it is and which class each head row scores
/// (row i is class `class_order[i]` of the dataset).
fn model_metadata(
    learner: &IncrementalLearner,
    run: &RunResults,
    r: &PhaseResult,
) -> HashMap<String, String> {
    let arch = serde_json::to_value(learner.cfg.arch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let order: Vec<String> = run
        .class_order
        .iter()
        .take(r.classes_seen)
        .map(|c| c.to_string())
        .collect();
    HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("lucir.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("lucir.arch".into(), arch),
        ("lucir.method".into(), run.variant.clone()),
        ("lucir.seed".into(), run.seed.to_string()),
        ("lucir.phase".into(), r.phase.to_string()),
        ("lucir.classes".into(), r.classes_seen.to_string()),
        ("lucir.class_order".into(), order.join(",")),
    ])
}

/// Class positions `r` as people write them: `5` or `5–9` (both ends included).
pub fn positions(r: &std::ops::Range<usize>) -> String {
    match r.len() {
        0 => "none".into(),
        1 => r.start.to_string(),
        _ => format!("{}–{}", r.start, r.end - 1),
    }
}
