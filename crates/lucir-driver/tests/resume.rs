//! Runs that stop and go on: determinism and exact resumption after SIGKILL (also from a
//! damaged checkpoint), Ctrl-C, refused and finished resumes, and seed sweeps with reports.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

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
    killed_in_phase_2(&small_run_args(&d, c.to_str().unwrap()), &c);

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
    // Its per-epoch metrics too (the seconds aside), and run.json lists both segments.
    let metrics = |dir: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        text.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(metrics(&a), metrics(&c));
    assert_eq!(metrics(&a).len(), 1 + 3 * 3, "3 phases × 3 epochs");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("run.json")).unwrap()).unwrap();
    let segments = info["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{info}");
    assert!(
        segments[0]["end"].is_null() && segments[1]["end"].is_string(),
        "{info}"
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
    assert!(
        e.contains("method.epochs 3 → 5") && e.contains("method.seed 1993 → 3"),
        "{e}"
    );
    // The kernel settings too (where the CPU runs bf16 at all; elsewhere that is the refusal).
    let o = driver(&["--resume", a.to_str().unwrap(), "--precision", "bf16"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("precision (not set) → \"bf16\"") || e.contains("needs a CPU with AVX512-BF16"),
        "{e}"
    );
    for dir in [&data, &a, &b, &c] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The driver started with `args` on 2 threads, its standard error piped to the test.
fn spawn_driver(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the driver with `args` (its run folder `dir`) and kills it with SIGKILL as soon as
/// phase 2 has finished an epoch, before phase 2 ends.
fn killed_in_phase_2(args: &[&str], dir: &Path) {
    use std::io::{BufRead, BufReader};
    let mut child = spawn_driver(args);
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
    let partial = std::fs::read_to_string(dir.join("results.json")).unwrap_or_default();
    assert!(
        !partial.contains("\"phase\": 2"),
        "phase 2 completed before the kill"
    );
}

/// With bf16 products (`--precision bf16`) too, a run killed during phase 2 and resumed ends
/// with exactly the results of the uninterrupted run (where the CPU has AVX512-BF16).
#[test]
fn bf16_runs_resume_exactly_after_sigkill() {
    if !lucir_tensor::Precision::Bf16.available() {
        eprintln!("skipped: bf16_runs_resume_exactly_after_sigkill: no AVX512-BF16 on this CPU");
        return;
    }
    let data = temp_dir("bf16-resume-data");
    write_mnist_like(&data, 30);
    let d = data.to_str().unwrap().to_string();
    let (a, c) = (temp_dir("bf16-run-a"), temp_dir("bf16-run-c"));
    let (out_a, out_c) = (a.to_str().unwrap(), c.to_str().unwrap());
    let [args_a, args_c] = [out_a, out_c].map(|out| {
        let mut v = small_run_args(&d, out);
        v.extend(["--precision", "bf16"]);
        v
    });
    let o = driver(&args_a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    killed_in_phase_2(&args_c, &c);
    let o = driver(&["--resume", c.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        results_without_timings(&a),
        results_without_timings(&c),
        "resumed bf16 run differs from uninterrupted"
    );
    for dir in [&data, &a, &c] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Ctrl-C stops a run at the next step with exit code 130; the run resumes from its checkpoint.
#[test]
fn interrupted_runs_exit_130_and_resume() {
    use std::io::{BufRead, BufReader};
    let data = temp_dir("sigint-data");
    write_mnist_like(&data, 30);
    let out = temp_dir("sigint-run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut child = spawn_driver(&small_run_args(d, o));
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
    let both = out.join("both");
    let svg = both.join("report.svg");
    let runs = [out.join("seed-5"), out.join("seed-6"), ft.clone()];
    let mut args = vec![
        "report",
        "--label",
        "LUCIR,fine-tuning",
        "--out",
        both.to_str().unwrap(),
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

    // --slurm writes a job-array script instead of running; its task 1 runs seed 8 alone.
    let script = out.join("sweep.sh");
    let slurm_out = out.join("slurm");
    let o = sweep(
        &["--seeds", "7..8", "--slurm", script.to_str().unwrap()],
        slurm_out.to_str().unwrap(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains("#SBATCH --array=0-1") && text.contains("SEEDS=(7 8)"),
        "{text}"
    );
    assert!(!slurm_out.join("seed-7").exists(), "--slurm runs nothing");
    let o = Command::new("bash")
        .arg(&script)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(slurm_out.join("seed-8/results.json").is_file());
    assert!(!slurm_out.join("seed-7").exists());
    for dir in [&data, &out] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
