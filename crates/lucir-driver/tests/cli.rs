//! The `lucir-driver` binary end to end: a small run on synthetic IDX files writes every output
//! of the run folder; bad input gives one-line errors and the documented exit codes; configs
//! resolve over their preset; exported models start new runs.

mod common;

use common::*;

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
        // Not the RAYON_NUM_THREADS the helper sets: the pool must be built at this size.
        "--threads",
        "3",
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
    // run.json: the build, the machine and the segment; metrics.csv: one row per epoch
    // (3 phases × 1 epoch); train.log: the progress lines.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    for key in [
        "version",
        "git_commit",
        "cpu_model",
        "cpu_kernels",
        "threads",
    ] {
        assert!(!info[key].is_null(), "run.json lacks {key}: {info}");
    }
    assert_eq!(info["threads"], 3);
    assert_eq!(info["segments"].as_array().unwrap().len(), 1);
    assert!(info["segments"][0]["end"].is_string(), "{info}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(metrics.starts_with("phase,stage,epoch,lr,loss,ce,lf,mr,kd,seconds\n"));
    assert_eq!(metrics.lines().count(), 1 + 3, "{metrics}");
    let log = std::fs::read_to_string(out.join("train.log")).unwrap();
    assert!(log.contains("phase 2 train epoch 1/1"), "{log}");
    // `eval` recomputes the last phase's CNN and NME accuracy exactly, and writes per-class
    // accuracy and confusion matrices; a quick trial on 2 test images per class.
    let results: serde_json::Value = serde_json::from_str(&json).unwrap();
    let last = &results["phases"][2];
    let o = driver(&["eval", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval-phase-2/eval.json")).unwrap())
            .unwrap();
    assert_eq!(eval["acc_cnn"], last["acc_cnn"], "{eval}");
    assert_eq!(eval["acc_nme"], last["acc_nme"], "{eval}");
    let confusion = std::fs::read_to_string(out.join("eval-phase-2/confusion_cnn.csv")).unwrap();
    assert_eq!(confusion.lines().count(), 1 + 10, "{confusion}");
    let per_class = std::fs::read_to_string(out.join("eval-phase-2/per_class.csv")).unwrap();
    assert_eq!(per_class.lines().count(), 1 + 10, "{per_class}");
    let quick = out.join("quick");
    let o = driver(&[
        "eval",
        out.to_str().unwrap(),
        "--phase",
        "1",
        "--test-per-class",
        "2",
        "--out",
        quick.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("9 classes, 18 test images"));
    let o = driver(&["eval", out.to_str().unwrap(), "--phase", "7"]);
    assert_eq!(o.status.code(), Some(2));
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
    let o = driver(&[
        "--preset",
        "cifar100-b50-inc10",
        "--data-dir",
        "/nonexistent/cifar",
    ]);
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
    assert!(toml.contains("milestones = [6, 9]\n"), "{toml}");

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

/// A kernel setting (`--conv winograd`, `--precision bf16`): stated in the resolved settings
/// (and absent from them at its default, so earlier configurations print as they did),
/// refused by name when misspelt (`misspelt` the message) or where the CPU lacks it (`lacks`),
/// named in run.json's CPU kernels, and repeatable: two runs give the same results and model
/// files.
fn kernel_setting_is_stated_named_and_repeatable(
    (flag, key, value): (&str, &str, &str),
    available: bool,
    misspelt: &str,
    lacks: &str,
) {
    let o = driver(&["--print-config"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&format!("{key} =")));
    let o = driver(&[flag, "fast", "--print-config"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains(misspelt), "{e}");
    let o = driver(&[flag, value, "--print-config"]);
    if !available {
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(lacks), "{e}");
        eprintln!("skipped: the {flag} {value} runs: this CPU lacks it");
        return;
    }
    let line = format!("{key} = \"{value}\"\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&line));

    let data = temp_dir(&format!("{value}-data"));
    write_mnist_like(&data, 6);
    let run = |name: &str| {
        let out = temp_dir(name);
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
            flag,
            value,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (a, b) = (run(&format!("{value}-a")), run(&format!("{value}-b")));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("run.json")).unwrap()).unwrap();
    let kernels = info["cpu_kernels"].as_str().unwrap();
    assert!(kernels.ends_with(&format!("+{value}")), "{info}");
    let cfg = std::fs::read_to_string(a.join("config.toml")).unwrap();
    assert!(cfg.contains(&line), "{cfg}");
    assert_same_run(&a, &b);
    for d in [data, a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn winograd_runs_are_stated_named_and_repeatable() {
    kernel_setting_is_stated_named_and_repeatable(
        ("--conv", "conv", "winograd"),
        lucir_tensor::Conv3x3::Winograd.available(),
        "conv \"fast\" is none of direct, winograd and winograd4",
        "needs a CPU with AVX-512F",
    );
}

#[test]
fn bf16_runs_are_stated_named_and_repeatable() {
    kernel_setting_is_stated_named_and_repeatable(
        ("--precision", "precision", "bf16"),
        lucir_tensor::Precision::Bf16.available(),
        "precision \"fast\" is neither f32 nor bf16",
        "needs a CPU with AVX512-BF16",
    );
}

/// `--precision bf16` does not combine with Winograd (its own kernels run those layers) or
/// with the GPU (which trains in f32): each refused in one line before anything runs.
#[test]
fn bf16_refuses_winograd_and_the_gpu() {
    if !lucir_tensor::Precision::Bf16.available() {
        eprintln!("skipped: bf16_refuses_winograd_and_the_gpu: no AVX512-BF16 on this CPU");
        return;
    }
    for (args, says) in [
        (
            ["--conv", "winograd"],
            "does not combine with conv winograd",
        ),
        (["--device", "cuda"], "device cuda trains in f32"),
    ] {
        let o = driver(&["--precision", "bf16", args[0], args[1], "--print-config"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(says), "{e}");
    }
}
