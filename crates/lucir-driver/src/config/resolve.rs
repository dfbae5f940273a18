//! TOML configuration files and command-line flags over a preset, checked into one
//! [`RunConfig`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use lucir_data::MemoryBudget;
use lucir_method::{Arch, Method};

use lucir_data::{ClassOrder, DatasetKind, Phases};

use super::{keys, preset, RunArgs, RunConfig, DEFAULT_PRESET};

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
    // toml's syntax errors draw a caret under the fault over several lines: kept as they are.
    let mut file: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    keys::check(&mut file)?;
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
    for (section, key, parse) in [
        (
            "method",
            "method",
            parse_method_name as fn(&str) -> Result<()>,
        ),
        ("method", "arch", |s| parse_arch(s).map(drop)),
        ("data", "dataset", |s| {
            DatasetKind::parse(s).map(drop).map_err(Into::into)
        }),
    ] {
        if let Some(toml::Value::String(v)) = merged.get(section).and_then(|t| t.get(key)) {
            parse(v).with_context(|| format!("{section}.{key}"))?;
        }
    }
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

fn parse_method_name(s: &str) -> Result<()> {
    parse_method(s).map(drop)
}

/// Preset (or config file), then the command-line overrides, validated ([`validate`]).
pub fn resolve(args: &RunArgs) -> Result<RunConfig> {
    let mut c = apply(args)?;
    // The margin loss ranks min(K, new classes) negatives: a K that is not given on the
    // command line (a preset's K = 2 with --inc 1) is written as what the loss uses. A --k
    // beyond the new classes is refused by `validate`.
    if args.k.is_none() && c.data.inc > 0 {
        c.method.k = c.method.k.min(c.data.inc);
    }
    validate(&c)?;
    // Written out, so the run folder's config.toml says when the rate dropped.
    c.method.milestones = Some(c.method.lr_milestones());
    Ok(c)
}

/// The preset (or config file) with the command-line overrides, not yet validated: what
/// `--resume` compares with the run's own settings to see what the flags would change.
pub fn apply(args: &RunArgs) -> Result<RunConfig> {
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
            let mut scaled: Vec<usize> = ms
                .iter()
                .map(|&x| x * v / old)
                .filter(|&x| x > 0 && x < v)
                .collect();
            // Two drops that land on one epoch stay one drop (12 epochs with drops after 6
            // and 9 → 2 epochs with one drop after 1, not ×0.01 at once).
            scaled.dedup();
            m.milestones = Some(scaled);
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
    if let Some(v) = args.test_per_class {
        d.test_per_class = Some(v);
    }
    if let Some(v) = args.class_order_seed {
        d.class_order = None;
        d.class_order_seed = v;
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
    if let Some(v) = &args.conv {
        c.conv = v.clone();
    }
    if let Some(v) = &args.precision {
        c.precision = v.clone();
    }
    if let Some(v) = &args.init_from {
        c.init_from = Some(v.clone());
    }
    c.skip_base_training |= args.skip_base_training;
    let ablations = [
        (args.no_cosine, "--no-cosine"),
        (args.no_less_forget, "--no-less-forget"),
        (args.no_adaptive_lambda, "--no-adaptive-lambda"),
        (args.no_margin, "--no-margin"),
        (args.no_imprint, "--no-imprint"),
        (args.cbf, "--cbf"),
    ];
    let given: Vec<&str> = ablations
        .iter()
        .filter(|(g, _)| *g)
        .map(|(_, f)| *f)
        .collect();
    if c.method.method != Method::Lucir && !given.is_empty() {
        bail!(
            "{} switch{} parts of LUCIR; --method {} has none of them",
            given.join(", "),
            if given.len() == 1 { "es" } else { "" },
            method_name(c.method.method)
        );
    }
    Ok(c)
}

/// The convolution setting `conv` names, if this CPU runs it.
pub fn conv3x3(conv: &str) -> Result<lucir_tensor::Conv3x3> {
    let Some(c) = lucir_tensor::Conv3x3::from_name(conv) else {
        bail!("conv {conv:?} is none of direct, winograd and winograd4");
    };
    if !c.available() {
        bail!("conv {conv} needs a CPU with AVX-512F, which this one lacks; use conv direct");
    }
    Ok(c)
}

/// The precision `precision` names, if this CPU runs it.
pub fn precision(precision: &str) -> Result<lucir_tensor::Precision> {
    let Some(p) = lucir_tensor::Precision::from_name(precision) else {
        bail!("precision {precision:?} is neither f32 nor bf16");
    };
    if !p.available() {
        bail!(
            "precision {precision} needs a CPU with AVX512-BF16 (the vdpbf16ps instruction), \
             which this one lacks; use precision f32"
        );
    }
    Ok(p)
}

/// The command-line name of a method.
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Lucir => "lucir",
        Method::Finetune => "finetune",
        Method::Icarl => "icarl",
    }
}

/// The classes of a dataset whose class count is fixed (all but image folders).
fn known_classes(kind: DatasetKind) -> Option<usize> {
    match kind {
        DatasetKind::Fmnist | DatasetKind::Mnist | DatasetKind::Cifar10 => Some(10),
        DatasetKind::Cifar100 => Some(100),
        DatasetKind::Folder => None,
    }
}

/// Checks a resolved configuration as far as it can be without reading the data: what a run
/// and `--print-config` both check, so a configuration that prints is one that runs (but for
/// the files themselves and, for image folders, the class count).
pub fn validate(c: &RunConfig) -> Result<()> {
    let kind = DatasetKind::parse(&c.data.dataset).context("dataset")?;
    if c.skip_base_training && c.init_from.is_none() {
        bail!("--skip-base-training needs --init-from FILE (the model to use as the base phase)");
    }
    if c.device != "cpu" && c.device != "cuda" {
        bail!("device {:?} is neither cpu nor cuda", c.device);
    }
    conv3x3(&c.conv)?;
    if precision(&c.precision)? == lucir_tensor::Precision::Bf16 {
        if c.conv != "direct" {
            bail!(
                "precision bf16 runs the 3×3 stride-1 layers with its own kernels; it does not \
                 combine with conv {}",
                c.conv
            );
        }
        if c.device != "cpu" {
            bail!(
                "precision bf16 is for the CPU's kernels; device {} trains in f32",
                c.device
            );
        }
    }
    if c.method.method != Method::Lucir && c.method.cbf {
        bail!(
            "class-balanced fine-tuning (cbf) is part of LUCIR; method {} has none",
            method_name(c.method.method)
        );
    }
    c.method.validate()?;
    let d = &c.data;
    let incremental = match known_classes(kind).or(d.classes) {
        Some(n) => {
            Phases::equal(n, d.base, d.inc).context("base/inc phase split")?;
            if let Some(o) = &d.class_order {
                ClassOrder::explicit(n, o.clone()).context("class_order")?;
            }
            if let MemoryBudget::Total(t) = c.method.memory {
                if t < n {
                    bail!(
                        "memory: a total budget of {t} exemplars cannot hold one per class for \
                         {n} classes"
                    );
                }
            }
            n > d.base
        }
        None => true,
    };
    let m = &c.method;
    if m.method == Method::Lucir && m.margin_rank && incremental && m.k > d.inc {
        bail!(
            "k = {}: the margin loss ranks at most the {} new class{} of a phase (inc = {}); \
             give k ≤ {}",
            m.k,
            d.inc,
            if d.inc == 1 { "" } else { "es" },
            d.inc,
            d.inc
        );
    }
    if c.data.train_per_class == Some(0) {
        bail!("train_per_class must be at least 1");
    }
    if c.data.test_per_class == Some(0) {
        bail!("test_per_class must be at least 1");
    }
    if c.data.classes == Some(0) {
        bail!("classes must be at least 1, got 0");
    }
    if c.data.crop == 0 || c.data.crop > c.data.resize {
        bail!(
            "crop must be between 1 and resize = {}, got {}",
            c.data.resize,
            c.data.crop
        );
    }
    Ok(())
}
