//! Where long runs die on clusters: preemption (SIGTERM / SIGUSR1 → checkpoint after the
//! current step → exit 75 → exact resume), Slurm requeueing, a second process on one run
//! folder, a resume on other hardware, a checkpoint of another format version, and a disk
//! that fills up mid-checkpoint (a file-size limit: writes fail with EFBIG).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use common::*;

/// Starts the driver with `args`; `env` adds variables (RAYON_NUM_THREADS is 2 unless set).
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lucir-driver"));
    c.args(args)
        .env("RAYON_NUM_THREADS", "2")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Reads the child's progress lines until one starts with `prefix`; returns the lines read.
fn wait_for(child: &mut Child, prefix: &str) -> Vec<String> {
    let err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut lines = BufReader::new(err).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let hit = line.starts_with(prefix);
        seen.push(line);
        if hit {
            break;
        }
    }
    // Keep draining in the background so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    seen
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signals our own child process, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// SIGTERM inside an epoch: the step finishes, the run is checkpointed there and exits 75;
/// `--resume` then ends exactly as the uninterrupted run.
#[test]
fn preemption_checkpoints_mid_epoch_and_resumes_exactly() {
    let data = temp_dir("pre-data");
    write_mnist_like(&data, 30);
    let d = data.to_str().unwrap();
    let (a, b) = (temp_dir("pre-a"), temp_dir("pre-b"));
    let o = driver(&small_run_args(d, a.to_str().unwrap()));
    assert!(o.status.success(), "{}", stderr(&o));

    let mut child = spawn(&small_run_args(d, b.to_str().unwrap()), &[]);
    wait_for(&mut child, "phase 1 train epoch 1/3");
    signal(&child, libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "a preempted run exits 75");
    let log = std::fs::read_to_string(b.join("train.log")).unwrap();
    assert!(
        log.contains("preempted by SIGTERM: stopped") && log.contains("--resume"),
        "{log}"
    );
    let o = driver(&["--resume", b.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_run(&a, &b);
    for dir in [&data, &a, &b] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// The Slurm script passes SIGUSR1 on to the run and requeues the task when the run exits 75;
/// the requeued task resumes the seed's folder and ends as an uninterrupted run.
#[test]
fn slurm_tasks_are_requeued_after_preemption() {
    let data = temp_dir("slurm-data");
    write_mnist_like(&data, 30);
    let dir = temp_dir("slurm-sweep");
    let (d, sweep) = (data.to_str().unwrap(), dir.join("sweep"));
    let script = dir.join("sweep.sh");
    let mut args = small_run_args(d, sweep.to_str().unwrap());
    args.extend(["--seeds", "4", "--slurm", script.to_str().unwrap()]);
    let o = driver(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains("#SBATCH --signal=B:USR1@120") && text.contains("#SBATCH --requeue"),
        "{text}"
    );
    // A stand-in `scontrol` that records how it was called.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let called = dir.join("scontrol.args");
    std::fs::write(
        bin.join("scontrol"),
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", called.display()),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("scontrol"))
        .status()
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let task = || {
        let mut c = Command::new("bash");
        c.arg(&script)
            .env("PATH", &path)
            .env("SLURM_ARRAY_TASK_ID", "0")
            .env("SLURM_ARRAY_JOB_ID", "77")
            .env("RAYON_NUM_THREADS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let job = task().spawn().unwrap();
    let log = sweep.join("seed-4/train.log");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("phase 1 train epoch 1/3")) {
        assert!(
            t0.elapsed().as_secs() < 120,
            "the task never reached phase 1"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal(&job, libc::SIGUSR1);
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = std::fs::read_to_string(&called).unwrap();
    assert_eq!(calls.trim(), "requeue 77_0");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("preempted by SIGUSR1"));
    // The requeued task.
    let out = task().output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The same settings and seed run in one go.
    let reference = dir.join("reference");
    let settings = sweep.join("sweep.toml");
    let o = driver(&[
        "--config",
        settings.to_str().unwrap(),
        "--seed",
        "4",
        "--out",
        reference.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_run(&reference, &sweep.join("seed-4"));
    for d in [&data, &dir] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// One writer per run folder: a second process is refused with the holder's pid; once the
/// holder dies, the folder is free.
#[test]
fn a_second_process_on_a_run_folder_is_refused() {
    let data = temp_dir("lock-data");
    write_mnist_like(&data, 30);
    let run = temp_dir("lock-run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut child = spawn(&small_run_args(d, r), &[]);
    wait_for(&mut child, "phase 0 train epoch 2/3");
    let o = driver(&["--resume", r]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&format!(
            "is in use by lucir-driver pid {} on host",
            child.id()
        )),
        "{e}"
    );
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let o = driver(&["--resume", r, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for dir in [&data, &run] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A resume whose thread count differs (automatic threads on fewer cores) is refused by name
/// unless allowed, and then recorded; a checkpoint of another format version names both.
#[test]
fn resumes_that_would_change_the_bits_are_refused() {
    let data = temp_dir("bits-data");
    write_mnist_like(&data, 30);
    let run = temp_dir("bits-run");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut child = spawn(&small_run_args(d, r), &[]);
    wait_for(&mut child, "phase 0 train epoch 2/3");
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let one = Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(["--resume", r, "--quiet"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let e = stderr(&one);
    assert_eq!(one.status.code(), Some(2), "{e}");
    assert!(
        e.contains("2 threads, now 1") && e.contains("--threads 2"),
        "{e}"
    );
    // Naming the checkpoint's count keeps the bits; so the thread count may be given.
    let ckpt = run.join("checkpoints/latest.ckpt");
    let bytes = std::fs::read(&ckpt).unwrap();

    // Another format version: the version field follows the format name.
    let mut old = bytes.clone();
    let payload = old.len() - 32;
    let name = b"lucir-checkpoint";
    assert_eq!(&old[1..1 + name.len()], name);
    old[1 + name.len()] = 2;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&old[..payload]);
    old[payload..].copy_from_slice(&digest);
    std::fs::write(&ckpt, &old).unwrap();
    let _ = std::fs::remove_file(run.join("checkpoints/previous.ckpt"));
    let o = driver(&["--resume", r, "--quiet"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("version 2") && e.contains("reads version 3"),
        "{e}"
    );
    std::fs::write(&ckpt, &bytes).unwrap();

    let allowed = Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
        .args(["--resume", r, "--quiet", "--allow-different-threads"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    let segments = info["segments"].as_array().unwrap();
    let last = &segments[segments.len() - 1];
    assert_eq!(last["machine"]["threads"], 1, "{info}");
    assert_eq!(segments[0]["machine"]["threads"], 2, "{info}");
    for dir in [&data, &run] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Runs the driver with a file-size limit of `limit` bytes (writes beyond it fail with EFBIG;
/// SIGXFSZ ignored, as a full disk's ENOSPC would fail them).
fn limited(args: &[&str], limit: u64) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lucir-driver"));
    c.args(args).env("RAYON_NUM_THREADS", "2");
    // SAFETY: runs in the forked child before exec; setrlimit and signal are
    // async-signal-safe and touch only the child's own limits and dispositions.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    c.output().unwrap()
}

/// A write that fails mid-checkpoint: one error naming the file and the errno, the previous
/// checkpoint intact, no half-written file under a final name, and an exact resume once the
/// space is back.
#[test]
fn a_full_disk_keeps_the_last_checkpoint() {
    let data = temp_dir("full-data");
    write_mnist_like(&data, 30);
    let (a, b) = (temp_dir("full-a"), temp_dir("full-b"));
    let d = data.to_str().unwrap();
    let o = driver(&small_run_args(d, a.to_str().unwrap()));
    assert!(o.status.success(), "{}", stderr(&o));
    // Kill the run once it has a checkpoint, then resume it where files over 64 KiB fail.
    let mut child = spawn(&small_run_args(d, b.to_str().unwrap()), &[]);
    wait_for(&mut child, "phase 0 train epoch 2/3");
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    let ckpt = b.join("checkpoints/latest.ckpt");
    let before = std::fs::read(&ckpt).unwrap();
    let o = limited(&["--resume", b.to_str().unwrap(), "--quiet"], 64 << 10);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("File too large") && e.contains("latest.ckpt"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert_eq!(e.matches("File too large").count(), 1, "{e}");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the last checkpoint is intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(b.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".new"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let o = driver(&["--resume", b.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_run(&a, &b);
    for dir in [&data, &a, &b] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
