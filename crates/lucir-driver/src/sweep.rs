//! Seed sweeps: `--seeds` runs one run per seed in `OUT/seed-N/` with the settings stored once
//! in `OUT/sweep.toml` (flags that would change them are refused by name), then reports them;
//! `--slurm` writes the same sweep as a Slurm job array and runs nothing.

use std::path::{Path, PathBuf};

use crate::config::{self, read_config_file, resolve, RunArgs, RunConfig, DEFAULT_PRESET};
use crate::outln;
use anyhow::{Context, Result};
use lucir_nn::write_atomic;

use crate::checkpoint;
use crate::run::{run_changing_flags, run_one, timestamp};
use crate::usage;

/// The flags of `a` that set a run's settings (those of [`run_changing_flags`] but the run
/// folder and the seed).
fn settings_flags(a: &RunArgs) -> Vec<&'static str> {
    run_changing_flags(a)
        .into_iter()
        .filter(|f| !["--out", "--seed"].contains(f))
        .collect()
}

/// `changes` as one clause: "method.epochs 1 → 2, data.train_per_class 60 → 30".
pub(crate) fn list_changes(changes: &[config::Change]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The settings every run of the sweep in `base` uses: those of its `sweep.toml` (or, for a
/// sweep made before there was one, of its first seed's `config.toml`), which flags given
/// now must not change; a new sweep's are the resolved flags, written to `sweep.toml`.
fn sweep_settings(args: &RunArgs, base: &Path, seeds: &[u64]) -> Result<RunConfig> {
    let one = RunArgs {
        seeds: None,
        slurm: None,
        out: None,
        seed: None,
        ..args.clone()
    };
    let file = base.join(SWEEP_FILE);
    let earlier = seeds
        .iter()
        .map(|s| base.join(format!("seed-{s}")).join("config.toml"))
        .find(|p| p.is_file());
    let stored = match (file.is_file(), earlier) {
        (true, _) => Some(usage(read_config_file(&file, None))?),
        (false, Some(cfg)) => Some(usage(read_config_file(&cfg, None))?),
        (false, None) => None,
    };
    let given = !settings_flags(args).is_empty();
    let cfg = match (stored, given) {
        (Some(stored), false) => stored,
        (Some(stored), true) => {
            let now = usage(resolve(&one))?;
            let changed = config::changes(&stored, &now, &["method.seed"]);
            if !changed.is_empty() {
                return usage(Err(format!(
                    "{} is a sweep with other settings: {} (from its {}); run it again \
                     without settings flags to continue it, or choose another --out",
                    base.display(),
                    list_changes(&changed),
                    if file.is_file() {
                        SWEEP_FILE
                    } else {
                        "seed folders' config.toml"
                    }
                )));
            }
            stored
        }
        (None, _) => usage(resolve(&one))?,
    };
    // Every seed folder already there must hold a run of these settings.
    for &seed in seeds {
        let path = base.join(format!("seed-{seed}")).join("config.toml");
        if !path.is_file() {
            continue;
        }
        let theirs = usage(read_config_file(&path, None))?;
        // The thread count is each run's own business: its checkpoints hold the count its bits
        // were made with, and a resume checks it (a Slurm script pins it for new runs only).
        let changed = config::changes(&cfg, &theirs, &["method.seed", "threads"]);
        if !changed.is_empty() {
            return usage(Err(format!(
                "{} holds a run with other settings than the sweep: {}",
                path.display(),
                list_changes(&changed)
            )));
        }
    }
    Ok(cfg)
}

/// Writes `cfg` (less its seed: each run has its own) as the sweep's `sweep.toml`.
fn write_sweep_file(base: &Path, cfg: &RunConfig) -> Result<PathBuf> {
    let mut table = toml::Table::try_from(cfg).context("encoding sweep.toml")?;
    if let Some(toml::Value::Table(m)) = table.get_mut("method") {
        m.remove("seed");
    }
    let text = format!(
        "# The settings of every run of this sweep; each run has its own seed (seed-N/).\n{}",
        toml::to_string(&table).context("encoding sweep.toml")?
    );
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let path = base.join(SWEEP_FILE);
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// The file in a sweep folder holding the settings of its runs.
pub const SWEEP_FILE: &str = "sweep.toml";

/// Runs the experiment `args` describe: one run, or with `--seeds` one run per seed in
/// `OUT/seed-N/` (each continued if it is there already) followed by their report; with
/// `--slurm`, writes the job-array script that does the latter and runs nothing.
pub fn run(args: &RunArgs) -> Result<()> {
    if args.slurm.is_none() && args.seeds.is_none() {
        return run_one(args);
    }
    if args.resume.is_some() || args.print_config {
        return usage(Err(
            "--seeds and --slurm run a sweep into --out DIR (run it again to continue it); \
             they take neither --resume nor --print-config",
        ));
    }
    let seeds: Vec<u64> = match (&args.seeds, args.seed) {
        (Some(s), None) => s.clone(),
        (None, Some(s)) => vec![s],
        (None, None) => vec![usage(resolve(args))?.method.seed],
        (Some(_), Some(_)) => return usage(Err("give --seeds or --seed, not both")),
    };
    let base = match &args.out {
        Some(d) => d.clone(),
        None => {
            let preset = args.preset.as_deref().unwrap_or(DEFAULT_PRESET);
            PathBuf::from("runs").join(format!("{}-{preset}-seeds", timestamp()))
        }
    };
    let mut cfg = sweep_settings(args, &base, &seeds)?;
    if let Some(script) = &args.slurm {
        // A requeued task may land on other hardware: its thread count is fixed to the
        // task's CPUs so that every segment of a run sums in the same order.
        if cfg.threads == 0 {
            cfg.threads = SLURM_CPUS;
        }
        let file = write_sweep_file(&base, &cfg)?;
        return write_slurm(script, &base, &file, &seeds, cfg.threads);
    }
    let file = write_sweep_file(&base, &cfg)?;
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
                config: Some(file.clone()),
                seed: Some(seed),
                out: Some(dir.clone()),
                quiet: args.quiet,
                baseline: args.baseline.clone(),
                ..RunArgs::default()
            }
        };
        run_one(&one).with_context(|| format!("seed {seed} ({})", dir.display()))?;
        dirs.push(dir);
    }
    let report = crate::report_cmd::ReportArgs {
        runs: dirs,
        out: Some(base),
        per_seed: true,
        ..crate::report_cmd::ReportArgs::default()
    };
    crate::report_cmd::run(&report)
}

/// CPUs a Slurm task asks for when the settings leave the thread count automatic.
const SLURM_CPUS: usize = 2;

/// `s` quoted for bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes a Slurm job-array script: task i runs the settings of `settings` (the sweep's
/// `sweep.toml`) with `seeds[i]` into `base/seed-N/`, continuing it if a checkpoint is there,
/// as `--seeds` would run it here.
fn write_slurm(
    script: &Path,
    base: &Path,
    settings: &Path,
    seeds: &[u64],
    cpus: usize,
) -> Result<()> {
    let exe = std::env::current_exe().context("locating the lucir-driver binary")?;
    let exe = sh_quote(&exe.display().to_string());
    let base_abs = std::path::absolute(base).context("resolving --out")?;
    let base_q = sh_quote(&base_abs.display().to_string());
    let settings = std::path::absolute(settings).context("resolving sweep.toml")?;
    let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
    let text = format!(
        "#!/usr/bin/env bash\n\
         # A seed sweep of lucir-driver as a Slurm job array: submit with `sbatch {file}`;\n\
         # when every task has finished: {exe} report {base_q}\n\
         # Before a time limit or a preemption Slurm sends SIGUSR1 (120 s ahead): the run\n\
         # checkpoints after its current step and exits {code}, and the task is requeued; the\n\
         # requeued task continues its seed's run folder.\n\
         #SBATCH --job-name=lucir-sweep\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --cpus-per-task={cpus}\n\
         #SBATCH --output={base}/slurm-%A_%a.out\n\
         #SBATCH --signal=B:USR1@120\n\
         #SBATCH --requeue\n\
         #SBATCH --open-mode=append\n\
         set -uo pipefail\n\
         SEEDS=({seeds})\n\
         SEED=${{SEEDS[$SLURM_ARRAY_TASK_ID]}}\n\
         DIR={base_q}/seed-$SEED\n\
         # `--signal=B:` signals this shell only: pass it on to the run (or, before the run has\n\
         # started, as soon as it has).\n\
         CHILD=\n\
         PENDING=\n\
         trap 'if [ -n \"$CHILD\" ]; then kill -USR1 \"$CHILD\" 2>/dev/null; else PENDING=1; fi' USR1 TERM\n\
         if [ -f \"$DIR/checkpoints/latest.ckpt\" ] || [ -f \"$DIR/checkpoints/previous.ckpt\" ]; then\n\
         \x20 {exe} --resume \"$DIR\" --quiet &\n\
         else\n\
         \x20 {exe} --config {settings} --seed \"$SEED\" --out \"$DIR\" --quiet &\n\
         fi\n\
         CHILD=$!\n\
         if [ -n \"$PENDING\" ]; then kill -USR1 \"$CHILD\" 2>/dev/null; fi\n\
         STATUS=0\n\
         wait \"$CHILD\" || STATUS=$?\n\
         # A trapped signal ends `wait` early (status > 128): wait for the run itself.\n\
         while kill -0 \"$CHILD\" 2>/dev/null; do STATUS=0; wait \"$CHILD\" || STATUS=$?; done\n\
         if [ \"$STATUS\" -gt 128 ]; then wait \"$CHILD\"; STATUS=$?; fi\n\
         if [ \"$STATUS\" -eq {code} ]; then\n\
         \x20 # Requeued, the task continues the run; if it cannot be, it fails as preempted.\n\
         \x20 scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\" || exit {code}\n\
         \x20 exit 0\n\
         fi\n\
         exit \"$STATUS\"\n",
        file = script.display(),
        last = seeds.len() - 1,
        base = base_abs.display(),
        seeds = list.join(" "),
        settings = sh_quote(&settings.display().to_string()),
        code = crate::signals::PREEMPTED_EXIT,
    );
    write_atomic(script, text.as_bytes())
        .with_context(|| format!("writing the Slurm script {}", script.display()))?;
    outln!(
        "wrote {} ({} task{}, settings {}); submit it with `sbatch {}`",
        script.display(),
        seeds.len(),
        if seeds.len() == 1 { "" } else { "s" },
        base.join(SWEEP_FILE).display(),
        script.display()
    )?;
    Ok(())
}
