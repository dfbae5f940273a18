//! The `lucir-driver` binary end to end: a small run on synthetic IDX files writes every output
//! of the run folder; bad input gives one-line errors and the documented exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn driver(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .expect("the driver binary runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lucir-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 10-class MNIST-format dataset of 28×28 images: class c is a bright horizontal band at
/// rows 2c..2c+4, so the classes are easy to tell apart.
fn write_mnist_like(dir: &Path, per_class: usize) {
    for (prefix, n) in [("train", per_class), ("t10k", 4)] {
        let mut px = Vec::new();
        let mut lb = Vec::new();
        for i in 0..10 * n {
            let c = i % 10;
            for y in 0..28 {
                for x in 0..28 {
                    let band = y >= 2 * c && y < 2 * c + 4;
                    px.push(if band {
                        200u8
                    } else {
                        ((x * 7 + y * 3 + i) % 40) as u8
                    });
                }
            }
            lb.push(c as u8);
        }
        let mut images = vec![0, 0, 8, 3];
        for d in [(10 * n) as u32, 28, 28] {
            images.extend_from_slice(&d.to_be_bytes());
        }
        images.extend(px);
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&((10 * n) as u32).to_be_bytes());
        labels.extend(lb);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

#[test]
fn a_small_run_writes_the_whole_run_folder() {
    let data = temp_dir("data");
    write_mnist_like(&data, 6);
    let out = temp_dir("run");
    let o = driver(&[
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--base",
        "8",
        "--inc",
        "1",
        "--epochs",
        "1",
        "--batch",
        "16",
        "--memory",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--class-order",
        "0,1,2,3,4,5,6,7,8,9",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("average incremental accuracy"), "{stdout}");
    assert!(
        stderr.contains("phase 2/2"),
        "plain progress lines expected: {stderr}"
    );
    for f in ["config.toml", "results.json", "results.csv", "accuracy.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for p in 0..3 {
        assert!(out.join(format!("checkpoints/phase-{p}.state")).is_file());
        assert!(out
            .join(format!("checkpoints/phase-{p}.memory.json"))
            .is_file());
    }
    let json = std::fs::read_to_string(out.join("results.json")).unwrap();
    for key in [
        "\"method\": \"lucir\"",
        "\"preset\": \"fmnist-quick\"",
        "\"seed\": 1993",
        "\"class_order\"",
        "\"classes_seen\": 10",
        "\"acc_cnn\"",
        "\"acc_nme\"",
        "\"acc_old_cnn\"",
        "\"acc_new_cnn\"",
        "\"lambda\"",
        "\"sigma\"",
        "\"train_seconds\"",
        "\"images_per_s\"",
        "\"avg_inc_acc_cnn\"",
        "\"avg_inc_acc_nme\"",
        "\"wall_seconds\"",
    ] {
        assert!(json.contains(key), "results.json lacks {key}: {json}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    let svg = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        cfg.contains("dataset = \"mnist\"") && cfg.contains("base = 8"),
        "{cfg}"
    );
    // The resolved config file reproduces the run's settings when read back.
    let again = driver(&[
        "--config",
        out.join("config.toml").to_str().unwrap(),
        "--epochs",
        "0",
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("epochs must be at least 1"));
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_input_gives_one_line_errors_and_exit_codes() {
    let o = driver(&["--dataset", "cifar100", "--data-dir", "/nonexistent/cifar"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.starts_with("error: ") && e.contains("/nonexistent/cifar") && e.contains("train.bin"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");

    let o = driver(&["--preset", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown preset \"nope\""));

    let o = driver(&["--method", "sgd"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown method \"sgd\""));

    let o = driver(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));

    // No GPU here (or no CUDA support in this build): a clear runtime error.
    let data = temp_dir("gpu-data");
    write_mnist_like(&data, 2);
    let out = temp_dir("gpu-run");
    let o = driver(&[
        "--device",
        "cuda",
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.join("r").to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    let why = e.contains("`cuda` feature") || e.contains("no CUDA device");
    assert!(e.starts_with("error: --device cuda: ") && why, "{e}");
    assert!(!out.join("r").exists(), "nothing is written without a GPU");
    let o = driver(&["--device", "tpu"]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    let dir = temp_dir("cfg");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "threads = 0\nbogus_key = 1\n").unwrap();
    let o = driver(&["--config", cfg.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(e.contains("bad.toml") && e.contains("bogus_key"), "{e}");
    std::fs::write(&cfg, "preset = \"x\"\n").unwrap();
    let o = driver(&["--config", cfg.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        e.contains("bad.toml") && e.contains("unknown preset \"x\""),
        "{e}"
    );

    // The sub-commands' usage errors exit 2 as a run's do, naming the setting.
    for (args, what) in [
        (&["data", "--dataset", "nope"][..], "--dataset"),
        (&["bench", "--model", "resnet99"][..], "--model"),
        (&["bench", "--input", "1x28"][..], "--input"),
        (&["bench", "--steps", "0"][..], "--steps"),
        (&["--k", "0"][..], "k must be at least 1"),
        (&["--milestones", "9,6"][..], "milestones [9, 6]"),
        (
            &["--momentum", "1.5"][..],
            "momentum must be in [0, 1), got 1.5",
        ),
    ] {
        let o = driver(args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.starts_with("error: ") && e.contains(what),
            "{args:?}: {e}"
        );
    }

    // Impossible phase split, too small a memory budget, training that diverges.
    let data = temp_dir("bad-data");
    write_mnist_like(&data, 3);
    let d = data.to_str().unwrap();
    let o = driver(&[
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--base",
        "5",
        "--inc",
        "2",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("base/inc") && e.contains("do not split"), "{e}");
    let o = driver(&["--dataset", "mnist", "--data-dir", d, "--memory-total", "5"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("memory") && e.contains("10 classes"), "{e}");
    let out = dir.join("diverging");
    let o = driver(&[
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--base",
        "8",
        "--inc",
        "1",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--lr",
        "1e30",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("diverged in phase 0, epoch 0") && e.contains("not finite"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// results.json without the fields that measure time.
fn results_without_timings(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("wall_seconds");
    for p in v["phases"].as_array_mut().unwrap() {
        let p = p.as_object_mut().unwrap();
        p.remove("train_seconds");
        p.remove("images_per_s");
    }
    v
}

fn small_run_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--base",
        "8",
        "--inc",
        "1",
        "--epochs",
        "3",
        "--batch",
        "16",
        "--memory",
        "4",
        "--out",
        out,
        "--class-order",
        "3,1,4,0,5,9,2,6,8,7",
    ]
}

/// The same configuration, seed and thread count give the same results, and a run killed with
/// SIGKILL during phase 2 and resumed (also from a damaged newest checkpoint) ends with exactly
/// the results of the uninterrupted run.
#[test]
fn runs_are_deterministic_and_resume_exactly_after_sigkill() {
    let data = temp_dir("resume-data");
    write_mnist_like(&data, 30);
    let d = data.to_str().unwrap().to_string();
    let (a, b, c) = (temp_dir("run-a"), temp_dir("run-b"), temp_dir("run-c"));
    for dir in [&a, &b] {
        let o = driver(&small_run_args(&d, dir.to_str().unwrap()));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let reference = results_without_timings(&a);
    assert_eq!(
        reference,
        results_without_timings(&b),
        "two identical runs differ"
    );

    // Start a third run and kill it as soon as phase 2 has finished an epoch.
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(small_run_args(&d, c.to_str().unwrap()))
        .env("RAYON_NUM_THREADS", "2")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines() {
        if line.unwrap().starts_with("phase 2 train epoch 1/3") {
            // SAFETY: sends SIGKILL to our own child process, which is still running.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed"
    );
    let partial = std::fs::read_to_string(c.join("results.json")).unwrap_or_default();
    assert!(
        !partial.contains("\"phase\": 2"),
        "phase 2 completed before the kill"
    );

    // Damage the newest checkpoint (if the kill did not already land between its two renames):
    // the resume must fall back to the previous one.
    let latest = c.join("checkpoints/latest.ckpt");
    if let Ok(bytes) = std::fs::read(&latest) {
        std::fs::write(&latest, &bytes[..bytes.len() / 2]).unwrap();
    }
    let t0 = std::time::Instant::now();
    let o = driver(&["--resume", c.to_str().unwrap()]);
    let resume_seconds = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("latest.ckpt") && err.contains("using"),
        "{err}"
    );
    // It continued inside phase 1 or 2 instead of starting over.
    assert!(
        err.contains("resuming from") && !err.contains("phase 0 train"),
        "{err}"
    );
    assert_eq!(
        reference,
        results_without_timings(&c),
        "resumed run differs from uninterrupted"
    );

    // The resumed run's wall time covers both segments, not only the last one.
    let wall = |dir: &Path| -> f64 {
        let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["wall_seconds"]
            .as_f64()
            .unwrap()
    };
    assert!(
        wall(&c) > resume_seconds,
        "wall {} s, resumed segment alone {resume_seconds} s",
        wall(&c)
    );

    // A finished run folder is not overwritten by a new run; resuming it changes nothing.
    let o = driver(&small_run_args(&d, a.to_str().unwrap()));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let before = std::fs::read(a.join("results.json")).unwrap();
    let o = driver(&["--resume", a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to do"));
    assert_eq!(before, std::fs::read(a.join("results.json")).unwrap());
    // Flags that would change a resumed run are refused, by name.
    let o = driver(&[
        "--resume",
        a.to_str().unwrap(),
        "--epochs",
        "5",
        "--seed",
        "3",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--epochs, --seed would change it"), "{e}");
    for dir in [&data, &a, &b, &c] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Every phase exports `model-phase-P.safetensors`; `--init-from` with `--skip-base-training`
/// evaluates an exported base model exactly as the run that trained it did, and a model of the
/// wrong shape is an error naming the tensor.
#[test]
fn exported_models_start_new_runs() {
    let data = temp_dir("init-data");
    write_mnist_like(&data, 6);
    let (first, second) = (temp_dir("init-first"), temp_dir("init-second"));
    let d = data.to_str().unwrap();
    let o = driver(&small_run_args(d, first.to_str().unwrap()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in 0..3 {
        assert!(first.join(format!("model-phase-{p}.safetensors")).is_file());
    }
    let base = first.join("model-phase-0.safetensors");
    let mut args = small_run_args(d, second.to_str().unwrap());
    args.extend([
        "--init-from",
        base.to_str().unwrap(),
        "--skip-base-training",
    ]);
    let o = driver(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        results_without_timings(&first),
        results_without_timings(&second),
    );
    for key in ["acc_cnn", "acc_nme", "sigma"] {
        assert_eq!(a["phases"][0][key], b["phases"][0][key], "{key}");
    }
    let cfg = std::fs::read_to_string(second.join("config.toml")).unwrap();
    assert!(cfg.contains("skip_base_training = true"), "{cfg}");

    let wrong = first.join("model-phase-1.safetensors");
    let out3 = temp_dir("init-third");
    let mut args = small_run_args(d, out3.to_str().unwrap());
    args.extend(["--init-from", wrong.to_str().unwrap()]);
    let o = driver(&args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("model-phase-1.safetensors: tensor fc.weight has shape [9, 64], the model expects [8, 64]"),
        "{stderr}"
    );
    let mut args = small_run_args(d, out3.to_str().unwrap());
    args.push("--skip-base-training");
    let o = driver(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --init-from"));
    for dir in [data, first, second, out3] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A config file is a preset plus the settings it changes; flags override the file, and
/// `--print-config` shows the result. Unknown keys suggest the nearest valid one.
#[test]
fn partial_configs_resolve_over_their_preset() {
    let dir = temp_dir("partial");
    let cfg = dir.join("short.toml");
    std::fs::write(
        &cfg,
        "[method]\nepochs = 4\nmilestones = [2]\n[data]\nbase = 6\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let print = |extra: &[&str]| -> String {
        let mut args = vec!["--config", c, "--print-config"];
        args.extend_from_slice(extra);
        let o = driver(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let toml = print(&[]);
    for want in [
        "preset = \"fmnist-quick\"",
        "epochs = 4",
        "base = 6",
        "train_per_class = 1000",
        "lambda_base = 5.0",
    ] {
        assert!(toml.contains(want), "{want} missing from:\n{toml}");
    }
    let toml = print(&["--preset", "fmnist", "--epochs", "6", "--milestones", "3,5"]);
    assert!(
        toml.contains("preset = \"fmnist\"") && toml.contains("epochs = 6"),
        "{toml}"
    );
    assert!(
        !toml.contains("train_per_class"),
        "fmnist uses every image:\n{toml}"
    );
    assert!(toml.contains("base = 6"), "{toml}");
    // Without explicit milestones the resolved file states the default ones.
    let o = driver(&["--epochs", "12", "--print-config"]);
    let toml = String::from_utf8_lossy(&o.stdout);
    assert!(
        toml.replace([' ', '\n'], "").contains("milestones=[6,9,]"),
        "{toml}"
    );

    std::fs::write(&cfg, "[method]\nlamda_base = 2\n").unwrap();
    let o = driver(&["--config", c]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("`lamda_base`") && e.contains("did you mean `lambda_base`?"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ctrl-C stops a run at the next step with exit code 130; the run resumes from its checkpoint.
#[test]
fn interrupted_runs_exit_130_and_resume() {
    use std::io::{BufRead, BufReader};
    let data = temp_dir("sigint-data");
    write_mnist_like(&data, 30);
    let out = temp_dir("sigint-run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(small_run_args(d, o))
        .env("RAYON_NUM_THREADS", "2")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("phase 0 train epoch 1/3") {
            // SAFETY: sends SIGINT to our own child process, which is still running.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            break;
        }
    }
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    let o = driver(&["--resume", o, "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for dir in [&data, &out] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// `--seeds` runs one sub-folder per seed and reports mean ± s.d.; run again, it finds the
/// seeds finished and only reports. `report` aggregates runs by variant.
#[test]
fn seed_sweeps_and_reports() {
    let data = temp_dir("sweep-data");
    write_mnist_like(&data, 6);
    let out = temp_dir("sweep");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let sweep = |extra: &[&str], out: &str| {
        let mut args = vec![
            "--dataset",
            "mnist",
            "--data-dir",
            d,
            "--base",
            "8",
            "--inc",
            "1",
            "--epochs",
            "1",
            "--batch",
            "16",
            "--memory",
            "2",
            "--quiet",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        driver(&args)
    };
    let first = sweep(&["--seeds", "5..6"], o);
    let text = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for want in ["| lucir | 2 |", "| 5 |", "| 6 |", "report.svg"] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    assert!(out.join("seed-5/results.json").is_file() && out.join("report.svg").is_file());
    let again = sweep(&["--seeds", "5..6"], o);
    let again_text = String::from_utf8_lossy(&again.stdout);
    assert!(again_text.contains("nothing to do"), "{again_text}");
    let table = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        table(&text),
        table(&again_text),
        "a finished sweep reports the same"
    );

    let ft = out.join("ft");
    let o = sweep(
        &["--method", "finetune", "--seed", "5"],
        ft.to_str().unwrap(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = out.join("both.svg");
    let runs = [out.join("seed-5"), out.join("seed-6"), ft.clone()];
    let mut args = vec![
        "report",
        "--label",
        "LUCIR,fine-tuning",
        "--svg",
        svg.to_str().unwrap(),
    ];
    args.extend(runs.iter().map(|p| p.to_str().unwrap()));
    let o = driver(&args);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("| LUCIR | 2 |") && text.contains("| fine-tuning | 1 |"),
        "{text}"
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.contains("fill-opacity") && chart.contains("fine-tuning"),
        "{chart}"
    );
    args[2] = "just-one";
    let o = driver(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 labels for 2 groups"));
    let o = driver(&["--seeds", "9..3"]);
    assert_eq!(o.status.code(), Some(2));
    for dir in [&data, &out] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
