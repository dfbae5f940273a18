//! `lucir-driver` without a sub-command: one class-incremental experiment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{out, outln};
use anyhow::{bail, Context, Result};
use lucir_data::{load, ClassOrder, DatasetKind, FolderOptions, Phases};
use lucir_method::{run_protocol, IncrementalLearner, Method, ProtocolData};
use lucir_nn::write_atomic;
use lucir_tensor::Device;

use crate::checkpoint;
use crate::config::{self, method_name, read_config_file, resolve, RunArgs, RunConfig};
use crate::progress::start_metrics;
use crate::progress::{Display, Progress};
use crate::report::{read_results, table, write_all, RunResults};
use crate::run_info::RunInfo;
use crate::sweep::list_changes;
use crate::usage;

/// Now as `YYYYmmdd-HHMMSS` (UTC), for run folder names.
pub(crate) fn timestamp() -> String {
    // RFC 3339 to the second: "2026-11-30T09:20:00Z".
    let t = crate::run_info::now();
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap_or((&t, ""));
    format!("{}-{}", date.replace('-', ""), time.replace(':', ""))
}

/// Opens device 0 for `--device cuda`, with a one-line error naming what is missing.
pub(crate) fn open_gpu() -> Result<Device> {
    let dev = Device::cuda(0).map_err(|e| match e {
        lucir_tensor::Error::Cuda(lucir_cuda::Error::NotCompiled) => anyhow::anyhow!(
            "--device cuda: {e}; rebuild with `cargo build --release -p lucir-driver --features cuda`"
        ),
        e => anyhow::anyhow!("--device cuda: {e}"),
    })?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(gpu) = &dev {
        // Said once, here: without cuDNN the convolutions still run, through im2col and cuBLAS.
        match gpu.cudnn_status() {
            Ok(()) => {}
            Err(e @ lucir_cuda::Error::MissingLibrary { .. }) => eprintln!(
                "warning: {e}; the convolutions run through im2col and cuBLAS instead \
                 (slower, and other bits than cuDNN's)"
            ),
            Err(e) => anyhow::bail!("--device cuda: {e}"),
        }
    }
    Ok(dev)
}

/// Puts the learner, its networks and its optimiser state on the GPU opened for
/// `--device cuda`.
fn use_gpu(learner: &mut IncrementalLearner, gpu: Option<Device>, display: Display) -> Result<()> {
    let Some(gpu) = gpu else {
        return Ok(());
    };
    if display != Display::Quiet {
        if let Device::Cuda(g) = &gpu {
            eprintln!("training on {}", g.name());
        }
    }
    learner.set_device(gpu).context("--device cuda")?;
    Ok(())
}

/// The method name with its ablation switches, e.g. `lucir-no-margin-cbf`.
pub fn variant(cfg: &RunConfig) -> String {
    let m = &cfg.method;
    let mut s = method_name(m.method).to_string();
    if m.method == Method::Lucir {
        for (on, name) in [
            (m.cosine, "no-cosine"),
            (m.less_forget, "no-less-forget"),
            (m.adaptive_lambda, "no-adaptive-lambda"),
            (m.margin_rank, "no-margin"),
            (m.imprint, "no-imprint"),
        ] {
            if !on {
                s.push('-');
                s.push_str(name);
            }
        }
        if m.cbf {
            s.push_str("-cbf");
        }
    }
    s
}

/// The flags given beside `--resume` that would change the run (all but `--quiet`,
/// `--print-config` and `--baseline`).
pub(crate) fn run_changing_flags(a: &RunArgs) -> Vec<&'static str> {
    let given = [
        (a.preset.is_some(), "--preset"),
        (a.config.is_some(), "--config"),
        (a.method.is_some(), "--method"),
        (a.no_cosine, "--no-cosine"),
        (a.no_less_forget, "--no-less-forget"),
        (a.no_adaptive_lambda, "--no-adaptive-lambda"),
        (a.no_margin, "--no-margin"),
        (a.no_imprint, "--no-imprint"),
        (a.cbf, "--cbf"),
        (a.model.is_some(), "--model"),
        (a.epochs.is_some(), "--epochs"),
        (a.base.is_some(), "--base"),
        (a.inc.is_some(), "--inc"),
        (a.train_per_class.is_some(), "--train-per-class"),
        (a.test_per_class.is_some(), "--test-per-class"),
        (a.class_order_seed.is_some(), "--class-order-seed"),
        (a.memory.is_some(), "--memory"),
        (a.memory_total.is_some(), "--memory-total"),
        (a.lambda_base.is_some(), "--lambda-base"),
        (a.margin.is_some(), "--margin"),
        (a.k.is_some(), "--k"),
        (a.lr.is_some(), "--lr"),
        (a.milestones.is_some(), "--milestones"),
        (a.momentum.is_some(), "--momentum"),
        (a.weight_decay.is_some(), "--weight-decay"),
        (a.cbf_epochs.is_some(), "--cbf-epochs"),
        (a.cbf_lr.is_some(), "--cbf-lr"),
        (a.kd_temperature.is_some(), "--kd-temperature"),
        (a.resize.is_some(), "--resize"),
        (a.crop.is_some(), "--crop"),
        (a.classes.is_some(), "--classes"),
        (a.batch.is_some(), "--batch"),
        (a.seed.is_some(), "--seed"),
        (a.threads.is_some(), "--threads"),
        (a.device.is_some(), "--device"),
        (a.conv.is_some(), "--conv"),
        (a.precision.is_some(), "--precision"),
        (a.class_order.is_some(), "--class-order"),
        (a.data_dir.is_some(), "--data-dir"),
        (a.dataset.is_some(), "--dataset"),
        (a.out.is_some(), "--out"),
        (a.init_from.is_some(), "--init-from"),
        (a.skip_base_training, "--skip-base-training"),
    ];
    given.iter().filter(|(g, _)| *g).map(|(_, f)| *f).collect()
}

/// The dataset of `cfg`, its class order and phases, checked against the method's settings;
/// with its kind and class names (by class id).
pub fn protocol_data(cfg: &RunConfig) -> Result<(Arc<ProtocolData>, DatasetKind, Vec<String>)> {
    let kind = usage(DatasetKind::parse(&cfg.data.dataset))?;
    let folder = FolderOptions {
        resize: cfg.data.resize,
        crop: cfg.data.crop,
        classes: cfg.data.classes,
        class_seed: cfg.data.class_order_seed,
    };
    let ds = load(kind, cfg.data.data_dir.as_deref(), folder)?;
    let train = match cfg.data.train_per_class {
        Some(n) => ds.train.first_per_class(ds.classes, n),
        None => ds.train.clone(),
    };
    let test = match cfg.data.test_per_class {
        Some(n) => ds.test.first_per_class(ds.classes, n),
        None => ds.test,
    };
    let order = match &cfg.data.class_order {
        Some(o) => usage(ClassOrder::explicit(ds.classes, o.clone()).context("class_order"))?,
        None => ClassOrder::seeded(ds.classes, cfg.data.class_order_seed),
    };
    let phases = usage(
        Phases::equal(ds.classes, cfg.data.base, cfg.data.inc).context("base/inc phase split"),
    )?;
    if let lucir_data::MemoryBudget::Total(t) = cfg.method.memory {
        if t < ds.classes {
            return usage(Err(format!(
                "memory: a total budget of {t} exemplars cannot hold one per class for {} classes",
                ds.classes
            )));
        }
    }
    let data = ProtocolData {
        train: Arc::new(train),
        test: Arc::new(test),
        order,
        phases,
        norm: ds.norm,
        augment: ds.augment,
    };
    Ok((Arc::new(data), kind, ds.class_names))
}

/// Sizes rayon's global pool to `n` threads. The pool can be built once per process: a seed
/// sweep builds it for its first run and its later runs find it at that size. (Asking rayon
/// for its thread count first would build the pool at one thread per core.)
pub(crate) fn set_threads(n: usize) -> Result<()> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "setting {n} threads: {e} (at {} threads)",
            rayon::current_num_threads()
        )),
    }
}

/// `cfg` as TOML: a table per section, lists on one line.
fn config_text(cfg: &RunConfig) -> Result<String> {
    toml::to_string(cfg).context("encoding the configuration")
}

/// The settings of the run in `dir` that `--resume` continues. Flags given beside it may
/// repeat the run's settings but not change them: a change is refused by name.
fn resumed_settings(args: &RunArgs, dir: &Path) -> Result<RunConfig> {
    let file = dir.join("config.toml");
    let cfg = usage(
        read_config_file(&file, None).with_context(|| format!("resuming {}", dir.display())),
    )?;
    let foreign: Vec<&str> = run_changing_flags(args)
        .into_iter()
        .filter(|f| ["--preset", "--config", "--out"].contains(f))
        .collect();
    if !foreign.is_empty() {
        return usage(Err(format!(
            "--resume continues the run in {} with its own settings; it takes no {}",
            dir.display(),
            foreign.join(", ")
        )));
    }
    if !run_changing_flags(args).is_empty() {
        let over = RunArgs {
            config: Some(file.clone()),
            resume: None,
            ..args.clone()
        };
        let now = usage(config::apply(&over))?;
        // The thread count is how the run computes, not what: `--threads` may name the count
        // its checkpoint was made with (checked against it in `run_one`).
        let changed = config::changes(&cfg, &now, &["threads"]);
        if !changed.is_empty() {
            return usage(Err(format!(
                "--resume continues a run with the settings in its config.toml; the flags \
                 would change {} (start a new run with --config {} and the changes instead)",
                list_changes(&changed),
                file.display()
            )));
        }
    }
    Ok(cfg)
}

/// Runs one experiment as configured by `args`, or continues the one in `--resume DIR`.
pub(crate) fn run_one(args: &RunArgs) -> Result<()> {
    // Ctrl-C, SIGTERM and SIGUSR1 (see `signals`), before the data is loaded: a preemption
    // that comes early stops the run at its first event, as a preempted one.
    crate::signals::install()?;
    let cfg = match &args.resume {
        Some(dir) => resumed_settings(args, dir)?,
        None => usage(resolve(args))?,
    };
    if args.print_config {
        out!("{}", config_text(&cfg)?)?;
        return Ok(());
    }
    let threads = match &args.resume {
        Some(_) => args.threads.unwrap_or(cfg.threads),
        None => cfg.threads,
    };
    if threads > 0 {
        set_threads(threads)?;
    }
    // Before anything computes (and before `Machine::current` names the CPU kernels).
    lucir_tensor::set_conv3x3(config::conv3x3(&cfg.conv)?);
    lucir_tensor::set_precision(config::precision(&cfg.precision)?);
    // Fails before anything is written when there is no usable GPU.
    let gpu = (cfg.device == "cuda").then(open_gpu).transpose()?;
    let (data, kind, _) = protocol_data(&cfg)?;
    let baselines = args
        .baseline
        .iter()
        .map(|p| read_results(p))
        .collect::<Result<Vec<_>>>()?;
    let dir = match (&args.resume, &args.out) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => PathBuf::from("runs").join(format!("{}-{}", timestamp(), cfg.preset)),
    };
    std::fs::create_dir_all(dir.join("checkpoints"))
        .with_context(|| format!("creating run folder {}", dir.display()))?;
    let _lock = crate::lock::lock(&dir)?;
    crate::lock::remove_stale_temporaries(&dir);
    if args.resume.is_none() {
        if checkpoint::paths(&dir).0.is_file() {
            bail!(
                "{} already holds a run; continue it with --resume {} or choose another --out",
                dir.display(),
                dir.display()
            );
        }
        write_atomic(&dir.join("config.toml"), config_text(&cfg)?.as_bytes())?;
    }

    let display = Display::pick(args.quiet);
    if display != Display::Quiet {
        eprintln!(
            "lucir-driver: {} on {} ({} train / {} test images, {} phases), run folder {}",
            variant(&cfg),
            kind.name(),
            data.train.len(),
            data.test.len(),
            data.phases.len(),
            dir.display()
        );
        let list: Vec<String> = data.order.order().iter().map(|c| c.to_string()).collect();
        eprintln!("class order: {}", list.join(","));
    }
    let results = RunResults {
        method: variant(&cfg)
            .split('-')
            .next()
            .unwrap_or("lucir")
            .to_string(),
        variant: variant(&cfg),
        preset: cfg.preset.clone(),
        seed: cfg.method.seed,
        class_order: data.order.order().to_vec(),
        phases: Vec::new(),
        avg_inc_acc_cnn: f64::NAN,
        avg_inc_acc_nme: f64::NAN,
        wall_seconds: 0.0,
    };
    let machine = checkpoint::Machine::current(&cfg.device);
    let (mut earlier, mut resumed_at) = (0.0, None);
    let mut learner = match &args.resume {
        Some(d) => {
            let (ckpt, from) = checkpoint::load(d, &mut |w| eprintln!("warning: {w}"))?;
            let state = ckpt.state;
            if state.training.is_none() && state.results.len() == data.phases.len() {
                outln!(
                    "{} has finished all {} phases; nothing to do (results: {})",
                    d.display(),
                    data.phases.len(),
                    d.join("results.json").display()
                )?;
                return Ok(());
            }
            let differences = ckpt.machine.differences(&machine);
            if !differences.is_empty() {
                let what = differences.join(", ");
                if !args.allow_different_threads {
                    return usage(Err(format!(
                        "{} was computed with {what}: continuing would change its bits (the \
                         summation order); resume with --threads {} where the thread count \
                         differs, or give --allow-different-threads to continue anyway",
                        from.display(),
                        ckpt.machine.threads
                    )));
                }
                eprintln!(
                    "warning: continuing {} with {what} (--allow-different-threads)",
                    d.display()
                );
            }
            earlier = ckpt.wall_seconds;
            resumed_at = Some(state.training.unwrap_or((state.results.len(), 0)));
            if display != Display::Quiet {
                let at = match (state.training, state.mid_epoch) {
                    (Some((p, e)), Some(m)) => {
                        format!(
                            "phase {p} after epoch {e} and {} steps of the next",
                            m.steps
                        )
                    }
                    (Some((p, e)), None) => format!("phase {p} after epoch {e}"),
                    (None, _) => format!("after phase {}", state.results.len().saturating_sub(1)),
                };
                eprintln!("resuming from {} ({at})", from.display());
            }
            IncrementalLearner::restore(cfg.method.clone(), data, state, &from)?
        }
        None => {
            let mut learner = IncrementalLearner::new(cfg.method.clone(), data)?;
            if let Some(file) = &cfg.init_from {
                learner.net.load_safetensors(file).context("--init-from")?;
                if display != Display::Quiet {
                    eprintln!("base phase starts from {}", file.display());
                }
            }
            learner
        }
    };
    learner.skip_base_training = cfg.skip_base_training;
    use_gpu(&mut learner, gpu, display)?;
    let mut results = results;
    results.set_phases(learner.results.clone());
    let mut info = RunInfo::start(RunInfo::earlier(&dir), earlier, &machine);
    info.write(&dir)?;
    start_metrics(&dir, resumed_at)?;
    let mut progress = Progress::new(display, dir.clone(), (results, baselines.clone()), earlier);
    progress.plan = crate::eta::Plan::new(learner.data(), &cfg.method);
    progress.machine = machine;
    let outcome = run_protocol(&mut learner, &mut progress);
    info.finish(progress.elapsed());
    info.write(&dir)?;
    if let (Err(e), Some(signal)) = (&outcome, crate::signals::preempted()) {
        let text = format!(
            "{signal}: {e}; continue with --resume {} (exit {})",
            dir.display(),
            crate::signals::PREEMPTED_EXIT
        );
        progress.log(&format!("preempted by {text}"))?;
        bail!("preempted by {text}");
    }
    outcome?;
    progress.results.wall_seconds = progress.elapsed();
    write_all(&dir, &progress.results, &baselines)?;
    out!("{}", table(&progress.results))?;
    outln!("results: {}", dir.join("results.json").display())?;
    Ok(())
}
