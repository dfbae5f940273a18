//! Every key a configuration file may hold, what value it expects in the user's words, and the
//! check of a file's values against that before serde sees them — so that `memory = "ten"`
//! says "`memory` expects a number of exemplars per class, e.g. `memory = 20`", not serde's
//! message about enum variants.

use anyhow::{bail, Result};

/// The TOML type a key takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A string.
    Str,
    /// true or false.
    Bool,
    /// A whole number ≥ 0.
    Count,
    /// A number (a whole number is taken as that number).
    Number,
    /// A list of whole numbers ≥ 0.
    Counts,
    /// An exemplar budget: a whole number (per class) or `{ total = N }` / `{ per_class = N }`.
    Memory,
}

/// `(section, key, kind, what it expects)`; section `""` is the top level.
const KEYS: &[(&str, &str, Kind, &str)] = &[
    ("", "preset", Kind::Str, "a preset name, e.g. `preset = \"cifar100-b50-inc10\"`"),
    ("", "threads", Kind::Count, "a number of worker threads (0: one per core), e.g. `threads = 2`"),
    ("", "device", Kind::Str, "`\"cpu\"` or `\"cuda\"`"),
    ("", "conv", Kind::Str, "`\"direct\"`, `\"winograd\"` or `\"winograd4\"` (how the 3×3 stride-1 convolutions run)"),
    ("", "precision", Kind::Str, "`\"f32\"` or `\"bf16\"` (the number format of the 3×3 stride-1 convolutions' products)"),
    ("", "init_from", Kind::Str, "the path of a safetensors model, e.g. `init_from = \"runs/r/model-phase-0.safetensors\"`"),
    ("", "skip_base_training", Kind::Bool, "true or false"),
    ("data", "dataset", Kind::Str, "one of `\"fmnist\"`, `\"mnist\"`, `\"cifar10\"`, `\"cifar100\"`, `\"folder\"`"),
    ("data", "data_dir", Kind::Str, "the path of the dataset's folder, e.g. `data_dir = \"/data/cifar-100-binary\"`"),
    ("data", "train_per_class", Kind::Count, "a number of training images per class, e.g. `train_per_class = 500`"),
    ("data", "test_per_class", Kind::Count, "a number of test images per class, e.g. `test_per_class = 100`"),
    ("data", "class_order", Kind::Counts, "a list of class ids, e.g. `class_order = [4, 2, 7, 6, 0, 3, 5, 8, 9, 1]`"),
    ("data", "class_order_seed", Kind::Count, "the seed of the class-order shuffle, e.g. `class_order_seed = 1993`"),
    ("data", "base", Kind::Count, "the number of classes of the base phase, e.g. `base = 50`"),
    ("data", "inc", Kind::Count, "the number of classes each incremental phase adds, e.g. `inc = 10`"),
    ("data", "resize", Kind::Count, "the side test images are resized to, e.g. `resize = 256`"),
    ("data", "crop", Kind::Count, "the side of the crop the network sees, e.g. `crop = 224`"),
    ("data", "classes", Kind::Count, "the number of the folder's classes to use, e.g. `classes = 100`"),
    ("method", "method", Kind::Str, "one of `\"lucir\"`, `\"finetune\"`, `\"icarl\"`"),
    ("method", "arch", Kind::Str, "one of `\"resnet20\"`, `\"resnet32\"`, `\"resnet56\"`, `\"resnet18\"`"),
    ("method", "cosine", Kind::Bool, "true or false"),
    ("method", "less_forget", Kind::Bool, "true or false"),
    ("method", "adaptive_lambda", Kind::Bool, "true or false"),
    ("method", "margin_rank", Kind::Bool, "true or false"),
    ("method", "imprint", Kind::Bool, "true or false"),
    ("method", "cbf", Kind::Bool, "true or false"),
    ("method", "lambda_base", Kind::Number, "a number, e.g. `lambda_base = 5.0`"),
    ("method", "margin", Kind::Number, "a number, e.g. `margin = 0.5`"),
    ("method", "k", Kind::Count, "a number of hard negatives, e.g. `k = 2`"),
    ("method", "lr", Kind::Number, "a learning rate, e.g. `lr = 0.1`"),
    ("method", "momentum", Kind::Number, "a number in [0, 1), e.g. `momentum = 0.9`"),
    ("method", "weight_decay", Kind::Number, "a number, e.g. `weight_decay = 5e-4`"),
    ("method", "epochs", Kind::Count, "a number of epochs per phase, e.g. `epochs = 160`"),
    ("method", "milestones", Kind::Counts, "a list of epochs after which the rate drops ×0.1, e.g. `milestones = [80, 120]`"),
    ("method", "batch", Kind::Count, "a batch size, e.g. `batch = 128`"),
    ("method", "memory", Kind::Memory, "a number of exemplars per class, e.g. `memory = 20` (or a fixed total: `memory = { total = 2000 }`)"),
    ("method", "kd_temperature", Kind::Number, "a number, e.g. `kd_temperature = 2.0`"),
    ("method", "cbf_epochs", Kind::Count, "a number of epochs, e.g. `cbf_epochs = 20`"),
    ("method", "cbf_lr", Kind::Number, "a learning rate, e.g. `cbf_lr = 0.01`"),
    ("method", "seed", Kind::Count, "a whole number, e.g. `seed = 1993`"),
];

/// Whether `v` has the TOML type `kind` asks for.
fn fits(kind: Kind, v: &toml::Value) -> bool {
    use toml::Value as V;
    let count = |v: &V| matches!(v, V::Integer(i) if *i >= 0);
    match kind {
        Kind::Str => matches!(v, V::String(_)),
        Kind::Bool => matches!(v, V::Boolean(_)),
        Kind::Count => count(v),
        Kind::Number => matches!(v, V::Integer(_) | V::Float(_)),
        Kind::Counts => matches!(v, V::Array(a) if a.iter().all(count)),
        Kind::Memory => match v {
            V::Table(t) => {
                t.len() == 1
                    && t.iter()
                        .all(|(k, n)| (k == "per_class" || k == "total") && count(n))
            }
            v => count(v),
        },
    }
}

/// The name a user writes: `memory` inside `[method]` is `method.memory`.
fn dotted(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

/// The valid keys of `section`.
fn keys_of(section: &str) -> impl Iterator<Item = &'static str> + '_ {
    KEYS.iter()
        .filter(move |(s, ..)| *s == section)
        .map(|(_, k, ..)| *k)
}

/// `unknown` with the nearest valid key of `section` as a suggestion, if one is close.
fn unknown_key(section: &str, unknown: &str) -> String {
    let best = keys_of(section)
        .chain(if section.is_empty() {
            vec!["data", "method"]
        } else {
            vec![]
        })
        .map(|k| (strsim::damerau_levenshtein(unknown, k), k))
        .min();
    let place = if section.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{section}]")
    };
    match best {
        Some((d, k)) if d <= 3.max(unknown.len() / 3) => {
            format!("unknown key `{unknown}` {place}; did you mean `{k}`?")
        }
        _ => format!(
            "unknown key `{unknown}` {place}; the keys there are {}",
            keys_of(section).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Checks the keys and value types of a configuration file's table, and writes a per-class
/// exemplar count given as a plain number (`memory = 20`) in the form the settings store.
pub(super) fn check(file: &mut toml::Table) -> Result<()> {
    for (key, value) in file.iter_mut() {
        match (key.as_str(), value) {
            ("data" | "method", toml::Value::Table(t)) => {
                for (k, v) in t.iter_mut() {
                    check_one(key, k, v)?;
                }
            }
            ("data" | "method", v) => bail!(
                "`{key}` is a section: write its settings under a `[{key}]` line, got `{key} = {v}`"
            ),
            (k, v) => check_one("", k, v)?,
        }
    }
    Ok(())
}

fn check_one(section: &str, key: &str, v: &mut toml::Value) -> Result<()> {
    let Some((_, _, kind, expects)) = KEYS.iter().find(|(s, k, ..)| *s == section && *k == key)
    else {
        bail!("{}", unknown_key(section, key));
    };
    if !fits(*kind, v) {
        bail!("`{}` expects {expects}; got `{v}`", dotted(section, key));
    }
    if *kind == Kind::Memory {
        if let toml::Value::Integer(n) = v {
            let mut t = toml::Table::new();
            t.insert("per_class".into(), toml::Value::Integer(*n));
            *v = toml::Value::Table(t);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(text: &str) -> Result<toml::Table> {
        let mut t: toml::Table = text.parse().unwrap();
        check(&mut t).map(|()| t)
    }

    #[test]
    fn wrong_types_are_said_in_the_users_words() {
        let e = checked("[method]\nmemory = \"ten\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`method.memory` expects a number of exemplars per class"),
            "{e}"
        );
        assert!(e.contains("memory = 20"), "{e}");
        let e = checked("[method]\nlr = \"fast\"").unwrap_err().to_string();
        assert!(e.starts_with("`method.lr` expects a learning rate"), "{e}");
        let e = checked("[data]\nbase = -5").unwrap_err().to_string();
        assert!(
            e.starts_with("`data.base` expects the number of classes"),
            "{e}"
        );
        let e = checked("method = 3").unwrap_err().to_string();
        assert!(e.contains("`method` is a section"), "{e}");
    }

    #[test]
    fn a_plain_memory_number_is_per_class() {
        let t = checked("[method]\nmemory = 10\nlr = 1").unwrap();
        assert_eq!(
            t["method"]["memory"].as_table().unwrap()["per_class"].as_integer(),
            Some(10)
        );
        assert!(checked("[method]\nmemory = { total = 2000 }").is_ok());
        assert!(checked("[method]\nmemory = { whole = 2000 }").is_err());
    }

    #[test]
    fn unknown_keys_name_the_nearest() {
        let e = checked("[method]\nepoch = 3").unwrap_err().to_string();
        assert!(e.contains("did you mean `epochs`?"), "{e}");
        let e = checked("[data]\nbananas = 3").unwrap_err().to_string();
        assert!(e.contains("the keys there are dataset, data_dir"), "{e}");
    }
}
