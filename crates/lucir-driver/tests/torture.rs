//! Kill torture: a small run is SIGKILLed at random moments — during training steps, checkpoint
//! and model-file writes, herding and evaluation alike — and resumed after each kill; at the
//! end its results, every model file and its metrics must equal an uninterrupted run's.
//!
//! `LUCIR_KILLS=N` sets the number of kills (CI: 5); `LUCIR_TORTURE_SEED=S` the seed of the
//! kill times (default: from the clock, printed, so a failure can be replayed):
//!
//! ```text
//! LUCIR_KILLS=100 cargo test --release -p lucir-driver --test torture -- --nocapture
//! ```

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What the run was doing when it was killed: its last progress line, reduced to its kind,
/// and whether a file was being written (a temporary file in the run folder).
fn moment(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap_or_default();
    let last = log.lines().last().unwrap_or("start");
    let kind = if last.contains("testing") {
        "testing"
    } else if last.contains("herding") {
        "herding"
    } else if last.contains("class means") {
        "class means"
    } else if last.contains("imprinting") {
        "imprinting"
    } else if last.contains(" done:") {
        "between phases"
    } else if last.contains("epoch") || last.contains("training samples") {
        "training"
    } else {
        "start"
    };
    let writing = [dir.to_path_buf(), dir.join("checkpoints")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
        .filter_map(|e| e.ok())
        .any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".tmp") || n.ends_with(".new")
        });
    match writing {
        true => format!("{kind} (a file half-written)"),
        false => kind.to_string(),
    }
}

#[test]
fn runs_killed_at_random_moments_end_exactly_as_uninterrupted_ones() {
    let kills: usize = std::env::var("LUCIR_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("LUCIR_TORTURE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("torture: {kills} kills, LUCIR_TORTURE_SEED={seed}");
    let mut state = seed | 1;
    let mut uniform = move || {
        // xorshift64*: a small, well-mixed stream for the kill times.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };

    let data = temp_dir("torture-data");
    write_mnist_like(&data, 12);
    let (a, b) = (temp_dir("torture-a"), temp_dir("torture-b"));
    let d = data.to_str().unwrap();
    let t0 = Instant::now();
    let o = driver(&small_run_args(d, a.to_str().unwrap()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = t0.elapsed().as_secs_f64();

    let mut moments: Vec<String> = Vec::new();
    let (mut started, mut finished_runs) = (false, 0);
    while moments.len() < kills {
        let mut args = vec!["--quiet"];
        let b_str = b.to_str().unwrap().to_string();
        let fresh = small_run_args(d, &b_str);
        if started {
            args.extend(["--resume", b_str.as_str()]);
        } else {
            args.extend(fresh.iter().copied());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_lucir-driver"))
            .args(&args)
            .env("RAYON_NUM_THREADS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Any moment of the run, its start-up included.
        let delay = Duration::from_secs_f64(uniform() * whole);
        let start = Instant::now();
        let mut finished = None;
        while start.elapsed() < delay {
            if let Some(s) = child.try_wait().unwrap() {
                finished = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match finished {
            Some(s) => {
                let out = child.wait_with_output().unwrap();
                assert!(s.success(), "{}", String::from_utf8_lossy(&out.stderr));
                if b.join("results.json").is_file()
                    && results_without_timings(&b)["phases"]
                        .as_array()
                        .unwrap()
                        .len()
                        == 3
                {
                    // Finished before the next kill: it must have ended exactly as the
                    // uninterrupted run; then a new run takes the kills left.
                    assert_same_run(&a, &b);
                    finished_runs += 1;
                    std::fs::remove_dir_all(&b).unwrap();
                    std::fs::create_dir_all(&b).unwrap();
                    started = false;
                }
            }
            None => {
                // SAFETY: SIGKILL to our own child, which has not been waited for.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                child.wait().unwrap();
                moments.push(moment(&b));
                started = b.join("checkpoints/latest.ckpt").is_file()
                    || b.join("checkpoints/previous.ckpt").is_file();
                if !started {
                    // Killed before its first checkpoint: a new run starts over.
                    std::fs::remove_dir_all(&b).unwrap();
                    std::fs::create_dir_all(&b).unwrap();
                }
            }
        }
    }
    let last = if started {
        driver(&["--resume", b.to_str().unwrap(), "--quiet"])
    } else {
        driver(&small_run_args(d, b.to_str().unwrap()))
    };
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );

    let mut tally: Vec<(String, usize)> = Vec::new();
    for m in &moments {
        match tally.iter_mut().find(|(k, _)| k == m) {
            Some((_, n)) => *n += 1,
            None => tally.push((m.clone(), 1)),
        }
    }
    assert_same_run(&a, &b);
    eprintln!(
        "torture: {} kills survived by {} runs, each ending exactly as the uninterrupted one; \
         killed during: {tally:?}",
        moments.len(),
        finished_runs + 1
    );
    for dir in [&data, &a, &b] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
