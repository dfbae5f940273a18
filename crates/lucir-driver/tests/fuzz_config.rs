//! The configuration parser on arbitrary input: it returns a configuration or an error, never
//! panics. CI runs 2 000 cases per property; `LUCIR_FUZZ_CASES=100000 cargo test --release -p
//! lucir-driver --test fuzz_config` is the long run recorded in docs/reliability.md.

use lucir_driver::config::{parse_config, preset, PRESETS};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("LUCIR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// A valid configuration file, as `lucir-driver` writes it.
fn valid_toml() -> String {
    toml::to_string_pretty(&preset(PRESETS[0]).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = parse_config(&text, None);
    }

    /// Valid files with one line replaced, deleted or duplicated: deep paths of the parser and
    /// of serde's validation run.
    #[test]
    fn config_parser_never_panics_on_mangled_valid_files(
        line in 0usize..80, junk in "[a-z_]{0,12} ?=? ?[-0-9a-z.\"\\[\\],{}]{0,16}", op in 0u8..3,
    ) {
        let text = valid_toml();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let i = line % lines.len().max(1);
        match op {
            0 => lines[i] = junk,
            1 => { lines.remove(i); }
            _ => { let l = lines[i].clone(); lines.insert(i, l); }
        }
        let _ = parse_config(&lines.join("\n"), None);
    }
}

#[test]
fn written_configurations_parse_back() {
    for name in PRESETS {
        let cfg = preset(name).unwrap();
        let text = toml::to_string_pretty(&cfg).unwrap();
        assert_eq!(parse_config(&text, None).unwrap(), cfg, "{name}");
    }
}
