//! TOML configuration files and command-line flags over a preset, checked into one
//! [`RunConfig`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use lucir_data::MemoryBudget;
use lucir_method::{Arch, Method};

use super::{preset, RunArgs, RunConfig, DEFAULT_PRESET};

fn parse_method(s: &str) -> Result<Method> {
    Ok(match s {
        "lucir" => Method::Lucir,
        "finetune" => Method::Finetune,
        "icarl" => Method::Icarl,
        o => bail!("unknown method {o:?}; expected lucir, finetune or icarl"),
    })
}

/// A model name: resnet20, resnet32, resnet56 or resnet18.
pub fn parse_arch(s: &str) -> Result<Arch> {
    Ok(match s {
        "resnet20" => Arch::Resnet20,
        "resnet32" => Arch::Resnet32,
        "resnet56" => Arch::Resnet56,
        "resnet18" => Arch::Resnet18,
        o => bail!("unknown model {o:?}; expected resnet20, resnet32, resnet56 or resnet18"),
    })
}

/// Reads a TOML run configuration (see [`parse_config`]).
pub fn read_config_file(path: &Path, preset_name: Option<&str>) -> Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&text, preset_name).with_context(|| format!("{}", path.display()))
}

/// Parses a TOML run configuration: the preset `preset_name` (else the file's `preset`, else
/// fmnist-quick) with the file's settings over it — top-level keys replace the preset's, and
/// keys inside `[data]` and `[method]` replace those of the preset's tables one by one. An
/// unknown key is an error naming it and the nearest valid one. A complete configuration (a
/// run folder's `config.toml`) reads back as itself.
pub fn parse_config(text: &str, preset_name: Option<&str>) -> Result<RunConfig> {
    let file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", one_line(&e.to_string())))?;
    let name = match (preset_name, file.get("preset")) {
        (Some(n), _) => n.to_string(),
        (None, Some(toml::Value::String(n))) => n.clone(),
        (None, Some(v)) => bail!("preset must be a string naming a preset, got {v}"),
        (None, None) => DEFAULT_PRESET.to_string(),
    };
    let base = preset(&name)?;
    let mut merged = toml::Table::try_from(&base).context("encoding the preset")?;
    for (key, value) in file {
        match (merged.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(over))
                if key == "data" || key == "method" =>
            {
                section.extend(over);
            }
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    merged.insert("preset".into(), toml::Value::String(name));
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", suggest(&one_line(&e.to_string()))))
}

fn one_line(s: &str) -> String {
    s.trim().replace('\n', " ")
}

/// Adds "did you mean …?" to serde's unknown-field message (which lists the valid fields).
fn suggest(msg: &str) -> String {
    let Some(rest) = msg.split("unknown field `").nth(1) else {
        return msg.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return msg.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|f| (strsim::damerau_levenshtein(unknown, f), f))
        .min();
    match best {
        Some((d, f)) if d <= 3.max(unknown.len() / 3) => format!("{msg}; did you mean `{f}`?"),
        _ => msg.to_string(),
    }
}

/// Preset (or config file), then the command-line overrides.
pub fn resolve(args: &RunArgs) -> Result<RunConfig> {
    let mut c = match &args.config {
        Some(path) => read_config_file(path, args.preset.as_deref())?,
        None => preset(args.preset.as_deref().unwrap_or(DEFAULT_PRESET))?,
    };
    let m = &mut c.method;
    if let Some(s) = &args.method {
        m.method = parse_method(s)?;
    }
    if let Some(s) = &args.model {
        m.arch = parse_arch(s)?;
    }
    m.cosine &= !args.no_cosine;
    m.less_forget &= !args.no_less_forget;
    m.adaptive_lambda &= !args.no_adaptive_lambda;
    m.margin_rank &= !args.no_margin;
    m.imprint &= !args.no_imprint;
    m.cbf |= args.cbf;
    if let Some(v) = args.epochs {
        // Milestones from the preset or file keep their place in the schedule (90 epochs with
        // drops after 30 and 60 → 9 epochs with drops after 3 and 6); --milestones overrides.
        if let (Some(ms), None) = (&m.milestones, &args.milestones) {
            let old = m.epochs.max(1);
            let scaled = ms.iter().map(|&x| x * v / old).filter(|&x| x > 0 && x < v);
            m.milestones = Some(scaled.collect());
        }
        m.epochs = v;
    }
    if let Some(v) = args.memory {
        m.memory = MemoryBudget::PerClass(v);
    }
    if let Some(v) = args.memory_total {
        m.memory = MemoryBudget::Total(v);
    }
    if let Some(v) = args.lambda_base {
        m.lambda_base = v;
    }
    if let Some(v) = args.margin {
        m.margin = v;
    }
    if let Some(v) = args.k {
        m.k = v;
    }
    if let Some(v) = args.lr {
        m.lr = v;
    }
    if let Some(v) = &args.milestones {
        m.milestones = Some(v.clone());
    }
    if let Some(v) = args.momentum {
        m.momentum = v;
    }
    if let Some(v) = args.weight_decay {
        m.weight_decay = v;
    }
    if let Some(v) = args.cbf_epochs {
        m.cbf_epochs = v;
    }
    if let Some(v) = args.cbf_lr {
        m.cbf_lr = v;
    }
    if let Some(v) = args.kd_temperature {
        m.kd_temperature = v;
    }
    if let Some(v) = args.batch {
        m.batch = v;
    }
    if let Some(v) = args.seed {
        m.seed = v;
    }
    let d = &mut c.data;
    if let Some(v) = args.base {
        d.base = v;
    }
    if let Some(v) = args.inc {
        d.inc = v;
    }
    if let Some(v) = args.train_per_class {
        d.train_per_class = Some(v);
    }
    if let Some(v) = &args.class_order {
        d.class_order = Some(v.clone());
    }
    if let Some(v) = &args.data_dir {
        d.data_dir = Some(v.clone());
    }
    if let Some(v) = &args.dataset {
        d.dataset = v.clone();
    }
    if let Some(v) = args.resize {
        d.resize = v;
    }
    if let Some(v) = args.crop {
        d.crop = v;
    }
    if let Some(v) = args.classes {
        d.classes = Some(v);
    }
    if let Some(v) = args.threads {
        c.threads = v;
    }
    if let Some(v) = &args.device {
        c.device = v.clone();
    }
    if let Some(v) = &args.init_from {
        c.init_from = Some(v.clone());
    }
    c.skip_base_training |= args.skip_base_training;
    if c.skip_base_training && c.init_from.is_none() {
        bail!("--skip-base-training needs --init-from FILE (the model to use as the base phase)");
    }
    if c.device != "cpu" && c.device != "cuda" {
        bail!("device {:?} is neither cpu nor cuda", c.device);
    }
    c.method.validate()?;
    // Written out, so the run folder's config.toml says when the rate dropped.
    c.method.milestones = Some(c.method.lr_milestones());
    if c.data.train_per_class == Some(0) {
        bail!("train_per_class must be at least 1");
    }
    if c.data.classes == Some(0) {
        bail!("classes must be at least 1, got 0");
    }
    if c.data.crop == 0 || c.data.crop > c.data.resize {
        bail!(
            "crop must be in 1..={} (resize), got {}",
            c.data.resize,
            c.data.crop
        );
    }
    Ok(c)
}
