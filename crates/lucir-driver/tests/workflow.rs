//! The researcher's workflow end to end: sweeps that keep their settings, `--slurm` that only
//! writes, reports that never pool incomparable or unfinished runs, quick evaluation, config
//! errors in the user's words, each cause said once, ranges written one way.

mod common;

use common::{driver, stderr, stdout, temp_dir, write_mnist_like};
use std::path::Path;

/// A tiny run's flags on the MNIST-like data in `data`: 8 base classes, then `inc` per phase.
fn tiny<'a>(data: &'a str, inc: &'a str) -> Vec<&'a str> {
    vec![
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--base",
        "8",
        "--inc",
        inc,
        "--epochs",
        "1",
        "--batch",
        "16",
        "--memory",
        "2",
        "--quiet",
    ]
}

fn run(args: &[&str], extra: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend_from_slice(extra);
    driver(&all)
}

/// `--slurm` writes its script and trains nothing, with `--seed` or with no seed at all.
#[test]
fn slurm_only_writes_the_script() {
    let dir = temp_dir("wf-slurm");
    let script = dir.join("one.sh");
    let out = dir.join("sweep");
    let o = driver(&[
        "--seed",
        "1",
        "--slurm",
        script.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains("SEEDS=(1)") && text.contains("#SBATCH --array=0-0"),
        "{text}"
    );
    assert!(!out.join("seed-1").exists(), "--slurm trains nothing");
    // The tasks run the sweep's settings file, thread count pinned.
    let settings = std::fs::read_to_string(out.join("sweep.toml")).unwrap();
    assert!(
        settings.contains("epochs = 1") && settings.contains("threads = 2"),
        "{settings}"
    );
    assert!(
        text.contains("--config") && text.contains("sweep.toml"),
        "{text}"
    );

    let again = |extra: &[&str]| {
        let mut args = vec![
            "--slurm",
            script.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        driver(&args)
    };
    let o = again(&["--epochs", "3"]);
    assert_eq!(o.status.code(), Some(2), "other settings than the sweep's");
    assert!(stderr(&o).contains("method.epochs 1 → 3"), "{}", stderr(&o));
    // Without settings flags, the sweep's own (the seed of its settings: the preset's).
    let o = again(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&script)
        .unwrap()
        .contains("SEEDS=(1993)"));

    // A script that cannot be written: one error, its cause said once.
    let o = driver(&[
        "--seeds",
        "1..2",
        "--epochs",
        "1",
        "--slurm",
        dir.join("nodir/s.sh").to_str().unwrap(),
        "--out",
        dir.join("other").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("nodir/s.sh"), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sweep keeps the settings it was made with: other settings are refused by name, no
/// settings at all continue it; a sweep folder is a report's input.
#[test]
fn sweeps_refuse_other_settings_and_report_as_folders() {
    let data = temp_dir("wf-sweep-data");
    write_mnist_like(&data, 6);
    let dir = temp_dir("wf-sweep");
    let out = dir.join("s");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let first = run(&tiny(d, "1"), &["--seeds", "5..6", "--out", o]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(out.join("sweep.toml").is_file() && out.join("report.md").is_file());

    let mut other = tiny(d, "1");
    let at = other.iter().position(|a| *a == "--epochs").unwrap();
    other[at + 1] = "2";
    let changed = run(&other, &["--seeds", "5..7", "--out", o]);
    let e = stderr(&changed);
    assert_eq!(changed.status.code(), Some(2), "{e}");
    assert!(
        e.contains("method.epochs 1 → 2") && e.contains("sweep.toml"),
        "{e}"
    );
    assert!(!out.join("seed-7").exists(), "nothing runs");

    // No settings: the sweep's own, for a new seed too.
    let more = driver(&["--seeds", "5..7", "--out", o, "--quiet"]);
    assert!(more.status.success(), "{}", stderr(&more));
    let cfg7 = std::fs::read_to_string(out.join("seed-7/config.toml")).unwrap();
    assert!(
        cfg7.contains("epochs = 1") && cfg7.contains("seed = 7"),
        "{cfg7}"
    );
    assert!(stdout(&more).contains("| lucir | 3 |"), "{}", stdout(&more));

    // The sweep folder itself is a report's input; its outputs go beside the runs.
    std::fs::remove_file(out.join("report.md")).unwrap();
    let r = driver(&["report", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(stdout(&r).contains("| lucir | 3 |"), "{}", stdout(&r));
    assert!(out.join("report.md").is_file() && out.join("report.svg").is_file());
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(
        svg.contains("CNN accuracy") && svg.contains("NME accuracy"),
        "{svg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// Drops every phase after the first from a finished run's results.json: an unfinished run.
fn unfinish(run: &Path) {
    let path = run.join("results.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["phases"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

/// Runs with other phase structures or settings are separate rows, labelled by what differs;
/// unfinished runs are counted and left out of the means.
#[test]
fn reports_keep_incomparable_and_unfinished_runs_apart() {
    let data = temp_dir("wf-report-data");
    write_mnist_like(&data, 6);
    let dir = temp_dir("wf-report");
    let d = data.to_str().unwrap();
    let runs: Vec<_> = [
        ("inc1-s1", "1", "1"),
        ("inc1-s2", "1", "2"),
        ("inc2-s1", "2", "1"),
    ]
    .iter()
    .map(|(name, inc, seed)| {
        let out = dir.join(name);
        let o = run(
            &tiny(d, inc),
            &["--seed", seed, "--out", out.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        out
    })
    .collect();
    let unfinished = dir.join("inc1-s3");
    std::fs::create_dir_all(&unfinished).unwrap();
    for f in ["results.json", "config.toml"] {
        std::fs::copy(runs[0].join(f), unfinished.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(unfinished.join("config.toml")).unwrap();
    std::fs::write(
        unfinished.join("config.toml"),
        cfg.replace("seed = 1\n", "seed = 3\n"),
    )
    .unwrap();
    unfinish(&unfinished);
    let results = std::fs::read_to_string(unfinished.join("results.json")).unwrap();
    std::fs::write(
        unfinished.join("results.json"),
        results.replace("\"seed\":1,", "\"seed\":3,"),
    )
    .unwrap();
    let mut args = vec!["report"];
    args.extend(runs.iter().map(|p| p.to_str().unwrap()));
    args.push(unfinished.to_str().unwrap());
    let o = driver(&args);
    let (text, e) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{e}");
    assert!(
        text.contains("| lucir (inc=1) | 2 finished / 3 |"),
        "{text}"
    );
    assert!(text.contains("| lucir (inc=2) | 1 |"), "{text}");
    assert!(text.contains("they differ in data.inc"), "{text}");
    assert!(
        e.contains("1 unfinished run") && e.contains("inc1-s3"),
        "{e}"
    );
    // Beside the runs: their common folder.
    assert!(dir.join("report.md").is_file() && dir.join("report.svg").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// `--test-per-class` is a run setting (recorded), the log writes class ranges with both ends
/// included, metrics.csv numbers epochs as the log does, and `--resume` accepts flags that
/// repeat the run's settings.
#[test]
fn quick_runs_and_one_way_of_writing_ranges() {
    let data = temp_dir("wf-quick-data");
    write_mnist_like(&data, 6);
    let dir = temp_dir("wf-quick");
    let out = dir.join("r");
    let d = data.to_str().unwrap();
    let mut args = tiny(d, "1");
    args.retain(|a| *a != "--quiet");
    let o = run(
        &args,
        &["--test-per-class", "2", "--out", out.to_str().unwrap()],
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("(60 train / 20 test images"), "{e}");
    assert!(e.contains("phase 0/2: classes 0–7 (8 new)"), "{e}");
    assert!(e.contains("phase 1/2: classes 8 (1 new)"), "{e}");
    assert!(e.contains(", ETA "), "{e}");
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(cfg.contains("test_per_class = 2"), "{cfg}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        metrics.lines().nth(1).unwrap().starts_with("0,train,1,"),
        "{metrics}"
    );
    let o = driver(&["--resume", out.to_str().unwrap(), "--epochs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", stdout(&o));
    let o = driver(&["--resume", out.to_str().unwrap(), "--epochs", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("method.epochs 1 → 2"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// Config errors in the user's words, and `--print-config` checks what a run checks.
#[test]
fn config_errors_speak_the_users_language() {
    let dir = temp_dir("wf-config");
    let cfg = dir.join("c.toml");
    let with = |text: &str, extra: &[&str]| {
        std::fs::write(&cfg, text).unwrap();
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        driver(&args)
    };
    let o = with("[method]\nmemory = \"ten\"\n", &["--print-config"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("`method.memory` expects a number of exemplars per class, e.g. `memory = 20`"),
        "{e}"
    );
    // A plain number is a per-class count.
    let o = with("[method]\nmemory = 10\n", &["--print-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("per_class = 10"), "{}", stdout(&o));
    // A syntax error keeps toml's caret diagram on its lines.
    let o = with("[method]\nepochs = = 3\n", &["--print-config"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.lines().count() >= 3 && e.contains('^'), "{e}");
    // What a run refuses, --print-config refuses.
    for (text, flags, want) in [
        (
            "[data]\ndataset = \"Fashion-MNIST\"\n",
            &[][..],
            "unknown dataset",
        ),
        ("", &["--k", "100"][..], "k = 100"),
        (
            "",
            &["--method", "finetune", "--cbf"][..],
            "--cbf switches parts of LUCIR",
        ),
        ("[data]\nbase = 4\ninc = 4\n", &[][..], "do not split"),
    ] {
        let mut args = flags.to_vec();
        args.push("--print-config");
        let o = with(text, &args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{text} {flags:?}: {e}");
        assert!(e.contains(want), "{text} {flags:?}: {e}");
    }
    // A typo in a seed range is not 18 003 runs.
    let o = driver(&[
        "--seeds",
        "1993..19995",
        "--out",
        dir.join("s").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at most 1000"), "{}", stderr(&o));
    // Two drops of the rate on one epoch are one; a class-order seed replaces the order.
    let o = with("", &["--epochs", "2", "--print-config"]);
    assert!(stdout(&o).contains("milestones = [1]\n"), "{}", stdout(&o));
    let o = with("", &["--class-order-seed", "7", "--print-config"]);
    let t = stdout(&o);
    assert!(
        t.contains("class_order_seed = 7") && !t.contains("class_order = ["),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
