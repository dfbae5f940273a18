//! `lucir-driver` without a sub-command: one class-incremental experiment.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use lucir_data::{load, ClassOrder, DatasetKind, FolderOptions, Phases};
use lucir_method::{run_protocol, IncrementalLearner, Method, ProtocolData};
use lucir_nn::write_atomic;

use crate::checkpoint;
use crate::progress::{start_metrics, INTERRUPTED};
use crate::progress::{Display, Progress};
use crate::report::{read_results, table, write_all, RunResults};
use crate::run_info::RunInfo;
use crate::usage;
use lucir_driver::config::{read_config_file, resolve, RunArgs, RunConfig, DEFAULT_PRESET};

/// Now as `YYYYmmdd-HHMMSS` (UTC), for run folder names.
fn timestamp() -> String {
    // RFC 3339 to the second: "2026-11-30T09:20:00Z".
    let t = crate::run_info::now();
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap_or((&t, ""));
    format!("{}-{}", date.replace('-', ""), time.replace(':', ""))
}

/// Opens device 0 for `--device cuda`, with a one-line error naming what is missing.
fn open_gpu() -> Result<lucir_cuda::Gpu> {
    lucir_cuda::Gpu::new(0).map_err(|e| match e {
        lucir_cuda::Error::NotCompiled => anyhow::anyhow!(
            "--device cuda: {e}; rebuild with `cargo build --release -p lucir-driver --features cuda`"
        ),
        e => anyhow::anyhow!("--device cuda: {e}"),
    })
}

/// Puts the LUCIR head ops of `learner` on the GPU opened for `--device cuda`.
#[cfg(feature = "cuda")]
fn use_gpu(learner: &mut IncrementalLearner, gpu: Option<lucir_cuda::Gpu>, display: Display) {
    let Some(gpu) = gpu else {
        return;
    };
    let heads = lucir_method::GpuHeads::new(gpu);
    if display != Display::Quiet {
        eprintln!("LUCIR head ops on {}", heads.name());
    }
    learner.use_gpu(heads);
}

/// A build without CUDA support never gets a GPU: [`open_gpu`] fails.
#[cfg(not(feature = "cuda"))]
fn use_gpu(_: &mut IncrementalLearner, gpu: Option<lucir_cuda::Gpu>, _: Display) {
    debug_assert!(gpu.is_none(), "a GPU opened without CUDA support");
}

/// The command-line name of a method.
fn method_name(m: Method) -> &'static str {
    match m {
        Method::Lucir => "lucir",
        Method::Finetune => "finetune",
        Method::Icarl => "icarl",
    }
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
fn run_changing_flags(a: &RunArgs) -> Vec<&'static str> {
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
        (a.class_order.is_some(), "--class-order"),
        (a.data_dir.is_some(), "--data-dir"),
        (a.dataset.is_some(), "--dataset"),
        (a.out.is_some(), "--out"),
        (a.init_from.is_some(), "--init-from"),
        (a.skip_base_training, "--skip-base-training"),
    ];
    given.iter().filter(|(g, _)| *g).map(|(_, f)| *f).collect()
}

/// Runs the experiment `args` describe: one run, or with `--seeds` one run per seed in
/// `OUT/seed-N/` (each continued if it is there already) followed by their report.
pub fn run(args: &RunArgs) -> Result<()> {
    let Some(seeds) = &args.seeds else {
        return run_one(args);
    };
    if args.resume.is_some() || args.seed.is_some() || args.print_config {
        return usage(Err(
            "--seeds runs a sweep into --out DIR (run it again to continue it); it takes \
             neither --seed, --resume nor --print-config",
        ));
    }
    let base = match &args.out {
        Some(d) => d.clone(),
        None => {
            let preset = args.preset.as_deref().unwrap_or(DEFAULT_PRESET);
            PathBuf::from("runs").join(format!("{}-{preset}-seeds", timestamp()))
        }
    };
    if let Some(script) = &args.slurm {
        return write_slurm(script, &base, seeds, args.threads);
    }
    let mut dirs = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let dir = base.join(format!("seed-{seed}"));
        if !args.quiet {
            eprintln!(
                "== seed {seed} ({}/{}): {}",
                i + 1,
                seeds.len(),
                dir.display()
            );
        }
        let (latest, previous) = checkpoint::paths(&dir);
        let one = if latest.is_file() || previous.is_file() {
            RunArgs {
                resume: Some(dir.clone()),
                quiet: args.quiet,
                baseline: args.baseline.clone(),
                ..RunArgs::default()
            }
        } else {
            RunArgs {
                seed: Some(seed),
                seeds: None,
                out: Some(dir.clone()),
                ..args.clone()
            }
        };
        run_one(&one).with_context(|| format!("seed {seed} ({})", dir.display()))?;
        dirs.push(dir);
    }
    let report = crate::report_cmd::ReportArgs {
        runs: dirs,
        label: Vec::new(),
        per_seed: true,
        svg: base.join("report.svg"),
    };
    crate::report_cmd::run(&report)
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
        test: Arc::new(ds.test),
        order,
        phases,
        norm: ds.norm,
        augment: ds.augment,
    };
    Ok((Arc::new(data), kind, ds.class_names))
}

/// `s` quoted for bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes a Slurm job-array script: task i runs this command line for `seeds[i]` into
/// `base/seed-N/` (continuing it if a checkpoint is there), as `--seeds` would run it here.
fn write_slurm(script: &Path, base: &Path, seeds: &[u64], threads: Option<usize>) -> Result<()> {
    // This command line without the sweep's own flags.
    let mut kept = Vec::new();
    let mut skip_value = false;
    for a in std::env::args().skip(1) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let flag = a.split('=').next().unwrap_or("");
        if ["--seeds", "--slurm", "--out"].contains(&flag) {
            skip_value = !a.contains('=');
            continue;
        }
        if a == "--quiet" {
            continue;
        }
        kept.push(sh_quote(&a));
    }
    let exe = std::env::current_exe().context("locating the lucir-driver binary")?;
    let exe = sh_quote(&exe.display().to_string());
    // Slurm writes the tasks' logs there before any task runs.
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let base_abs = std::path::absolute(base).context("resolving --out")?;
    let base_q = sh_quote(&base_abs.display().to_string());
    let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
    let cpus = threads.filter(|&t| t > 0).unwrap_or(2);
    let text = format!(
        "#!/usr/bin/env bash\n\
         # A seed sweep of lucir-driver as a Slurm job array: submit with `sbatch {file}`;\n\
         # when every task has finished: {exe} report {base_q}/seed-*\n\
         #SBATCH --job-name=lucir-sweep\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --cpus-per-task={cpus}\n\
         #SBATCH --output={base}/slurm-%A_%a.out\n\
         set -euo pipefail\n\
         SEEDS=({seeds})\n\
         SEED=${{SEEDS[$SLURM_ARRAY_TASK_ID]}}\n\
         DIR={base_q}/seed-$SEED\n\
         mkdir -p {base_q}\n\
         if [ -f \"$DIR/checkpoints/latest.ckpt\" ] || [ -f \"$DIR/checkpoints/previous.ckpt\" ]; then\n\
         \x20 exec {exe} --resume \"$DIR\" --quiet\n\
         fi\n\
         exec {exe} {args} --seed \"$SEED\" --out \"$DIR\" --quiet\n",
        file = script.display(),
        last = seeds.len() - 1,
        base = base_abs.display(),
        seeds = list.join(" "),
        args = kept.join(" "),
    );
    write_atomic(script, text.as_bytes())?;
    println!(
        "wrote {} ({} tasks); submit it with `sbatch {}`",
        script.display(),
        seeds.len(),
        script.display()
    );
    Ok(())
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

/// Runs one experiment as configured by `args`, or continues the one in `--resume DIR`.
fn run_one(args: &RunArgs) -> Result<()> {
    if args.resume.is_some() {
        let changes = run_changing_flags(args);
        if !changes.is_empty() {
            return usage(Err(format!(
                "--resume continues a run with the settings in its config.toml; {} would change \
                 it (start a new run with --config RUN/config.toml and the changes instead)",
                changes.join(", ")
            )));
        }
    }
    let cfg = match &args.resume {
        Some(dir) => usage(
            read_config_file(&dir.join("config.toml"), None)
                .with_context(|| format!("resuming {}", dir.display())),
        )?,
        None => usage(resolve(args))?,
    };
    if args.print_config {
        print!(
            "{}",
            toml::to_string_pretty(&cfg).context("encoding the configuration")?
        );
        return Ok(());
    }
    if cfg.threads > 0 {
        set_threads(cfg.threads)?;
    }
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
    if args.resume.is_none() {
        if checkpoint::paths(&dir).0.is_file() {
            bail!(
                "{} already holds a run; continue it with --resume {} or choose another --out",
                dir.display(),
                dir.display()
            );
        }
        std::fs::create_dir_all(dir.join("checkpoints"))
            .with_context(|| format!("creating run folder {}", dir.display()))?;
        let toml_text = toml::to_string_pretty(&cfg).context("encoding config.toml")?;
        write_atomic(&dir.join("config.toml"), toml_text.as_bytes())?;
    }
    // Ctrl-C: stop at the next step; the checkpoint of the last finished epoch stays valid.
    static HANDLER: std::sync::Once = std::sync::Once::new();
    let mut installed = Ok(());
    HANDLER.call_once(|| {
        installed = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
    installed.context("installing the Ctrl-C handler")?;

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
    let (mut earlier, mut resumed_at) = (0.0, None);
    let mut learner = match &args.resume {
        Some(d) => {
            let (ckpt, from) = checkpoint::load(d, &mut |w| eprintln!("warning: {w}"))?;
            let state = ckpt.state;
            if state.training.is_none() && state.results.len() == data.phases.len() {
                println!(
                    "{} has finished all {} phases; nothing to do (results: {})",
                    d.display(),
                    data.phases.len(),
                    d.join("results.json").display()
                );
                return Ok(());
            }
            earlier = ckpt.wall_seconds;
            resumed_at = Some(state.training.unwrap_or((state.results.len(), 0)));
            if display != Display::Quiet {
                let at = match state.training {
                    Some((p, e)) => format!("phase {p} after epoch {e}"),
                    None => format!("after phase {}", state.results.len().saturating_sub(1)),
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
    use_gpu(&mut learner, gpu, display);
    let mut results = results;
    results.set_phases(learner.results.clone());
    let mut info = RunInfo::start(RunInfo::earlier(&dir), earlier);
    info.write(&dir)?;
    start_metrics(&dir, resumed_at)?;
    let mut progress = Progress::new(display, dir.clone(), (results, baselines.clone()), earlier);
    let outcome = run_protocol(&mut learner, &mut progress);
    info.finish(progress.elapsed());
    info.write(&dir)?;
    outcome?;
    progress.results.wall_seconds = progress.elapsed();
    write_all(&dir, &progress.results, &baselines)?;
    print!("{}", table(&progress.results));
    println!("results: {}", dir.join("results.json").display());
    Ok(())
}
