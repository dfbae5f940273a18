//! `cargo xtask gpu-check [--out DIR]`: prepares the GPU verification for a machine that has a
//! GPU and the NVIDIA driver but no Rust toolchain. It builds, here, the CUDA test and bench
//! binaries and the driver (`--features cuda`, release), strips them into DIR (default
//! `device-bin/`, git-ignored), and writes `DIR/gpu-check.sh`, one script that on the GPU
//! machine — in a copy of the repository with DIR in it (the PyTorch reference is the
//! repository's `benches/reference/pytorch_train_step.py`)
//!
//! 1. finds the CUDA libraries (cuDNN, cuBLAS, NVRTC, the runtime) of the machine's PyTorch
//!    wheels (`site-packages/nvidia/*/lib`) or of a CUDA toolkit, and says which it uses;
//! 2. records the card, the driver and the cuDNN version;
//! 3. runs every GPU test (`GPU_TESTS`: the head kernels, the device tensors and their ops,
//!    the network kernels) against the CPU ops (each prints `skipped: no CUDA device` and checks
//!    nothing without a GPU — the script reports that as a skip, not a pass);
//! 4. runs the op tests again under `compute-sanitizer --tool memcheck`;
//! 5. times the training step (`lucir-driver bench --device cuda`, ResNet-32, batch 128,
//!    3×32×32) and PyTorch's same step on the card in three interleaved rounds, then PyTorch
//!    under `torch.compile(mode="reduce-overhead")`, and the head benchmark;
//! 6. runs fmnist-quick end to end on the GPU (seed 1993 timed, then seeds 1994–2000) when
//!    Fashion-MNIST was found here (`/usr/share/datasets/fashion-mnist`) and copied into DIR;
//! 7. writes synthetic data in the CIFAR-100 binary layout (random pixels, 500 training and
//!    100 test images a class) and times the paper's CIFAR-100 50+5×10 protocol at one epoch
//!    a phase, whose per-phase times project the 160-epoch schedule (the time is real, the
//!    accuracy is not);
//!
//! each step under a time limit, and writes `summary.txt` (one line per step: status, seconds)
//! beside the logs into `$OUT` (default `DIR/out`). Run it as `bash DIR/gpu-check.sh [PART…]`
//! (parts: `tests`, `bench`, `e2e`, `cifar`; all when none), so that it fits calls of limited
//! length.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The most the copied files may weigh together, so that the folder can travel with the
/// working tree to a machine that takes 64 MiB.
const MAX_BYTES: u64 = 60 << 20;

/// Where Fashion-MNIST is installed here (`apt-get install dataset-fashion-mnist`); its four
/// files travel with the binaries when present.
const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The test binaries that compare device ops with the CPU ops (`tests/<name>.rs`).
const GPU_TESTS: [&str; 5] = [
    "cuda_parity",
    "cuda_tensor",
    "cuda_empty",
    "cuda_kernels",
    "cuda_training",
];

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The executables `cargo <args> --message-format=json` built, by target name.
fn built(args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let out = cargo()
        .args(args)
        .args(["--features", "cuda", "--message-format=json"])
        .current_dir(crate::root())
        .output()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "cargo {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = msg["executable"].as_str() {
            let name = msg["target"]["name"].as_str().unwrap_or("bin").to_string();
            exes.push((name, PathBuf::from(exe)));
        }
    }
    Ok(exes)
}

/// Copies `from` to `to` without its debug information (`strip`, else a plain copy).
fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Builds and copies everything, and writes the script.
pub fn run(args: &[String]) -> Result<()> {
    let out = match args {
        [] => crate::root().join("device-bin"),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => bail!("usage: cargo xtask gpu-check [--out DIR]"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut args = vec!["test", "--release", "--no-run"];
    for t in GPU_TESTS {
        args.extend(["--test", t]);
    }
    let mut tests = built(&args)?;
    tests.retain(|(name, _)| GPU_TESTS.contains(&name.as_str()));
    let mut benches = built(&["bench", "--no-run", "--bench", "heads"])?;
    benches.retain(|(name, _)| name == "heads");
    let mut driver = built(&["build", "--release", "-p", "lucir-driver"])?;
    driver.retain(|(name, _)| name == "lucir-driver");
    if tests.len() != GPU_TESTS.len() || benches.is_empty() || driver.is_empty() {
        bail!(
            "the cuda build produced {} of the {} GPU test binaries ({}), {} heads bench and {} \
             driver binary",
            tests.len(),
            GPU_TESTS.len(),
            GPU_TESTS.join(", "),
            benches.len(),
            driver.len()
        );
    }
    let mut total = 0;
    let mut copy = |(name, from): &(String, PathBuf), kind: &str| -> Result<String> {
        let file = format!("{kind}-{name}");
        let to = out.join(&file);
        copy_stripped(from, &to)?;
        total += std::fs::metadata(&to)?.len();
        Ok(file)
    };
    let test_files: Vec<String> = tests
        .iter()
        .map(|t| copy(t, "test"))
        .collect::<Result<_>>()?;
    let bench_files: Vec<String> = benches
        .iter()
        .map(|b| copy(b, "bench"))
        .collect::<Result<_>>()?;
    copy(&driver[0], "bin")?;
    let fmnist = Path::new(FMNIST);
    let with_data = fmnist.join("train-images-idx3-ubyte.gz").is_file();
    if with_data {
        let to = out.join("fashion-mnist");
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for f in std::fs::read_dir(fmnist)? {
            let f = f?.path();
            let dest = to.join(f.file_name().unwrap_or_default());
            std::fs::copy(&f, &dest)
                .with_context(|| format!("copying {} to {}", f.display(), dest.display()))?;
            total += std::fs::metadata(&dest)?.len();
        }
    } else {
        println!("{FMNIST} not found: the script will skip the end-to-end runs");
    }
    if total > MAX_BYTES {
        bail!(
            "{} holds {} MiB of binaries, more than the {} MiB that travel",
            out.display(),
            total >> 20,
            MAX_BYTES >> 20
        );
    }
    let script = out.join("gpu-check.sh");
    std::fs::write(&script, script_text(&test_files, &bench_files))
        .with_context(|| format!("writing {}", script.display()))?;
    println!(
        "{}: {} test and {} bench binaries, the driver{} ({} MiB), run with `bash {}`",
        out.display(),
        test_files.len(),
        bench_files.len(),
        if with_data { " and Fashion-MNIST" } else { "" },
        total >> 20,
        script.display()
    );
    Ok(())
}

/// The script run on the GPU machine.
fn script_text(tests: &[String], benches: &[String]) -> String {
    let mut s = String::from(SCRIPT_HEAD);
    s.push_str("if want tests; then\n");
    for t in tests {
        s.push_str(&format!(
            "step test-{t} 240 \"$HERE/{t}\" --test-threads=1 --nocapture\n"
        ));
    }
    // The op tests under memcheck (the training sequences would take too long there).
    for t in tests.iter().filter(|t| !t.ends_with("cuda_training")) {
        s.push_str(&format!(
            "step memcheck-{t} 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
             \"$HERE/{t}\" --test-threads=1 --nocapture\n"
        ));
    }
    s.push_str("fi\nif want bench; then\n");
    s.push_str(BENCH_ROUNDS);
    for b in benches {
        s.push_str(&format!(
            "step bench-{b} 240 \"$HERE/{b}\" --bench --warm-up-time 1 --measurement-time 3\n"
        ));
    }
    s.push_str("fi\n");
    s.push_str(SCRIPT_TAIL);
    s
}

const SCRIPT_HEAD: &str = r#"#!/usr/bin/env bash
# GPU verification of lucir-rs, written by `cargo xtask gpu-check`: runs the GPU tests, the
# same tests under compute-sanitizer, the GPU benchmarks and PyTorch's training step on this
# machine's card, and writes summary.txt and one log per step into $OUT. Arguments name the
# parts to run (tests, bench, e2e, cifar; all when none), so that the check fits calls of
# limited length: `bash gpu-check.sh tests bench`, then `bash gpu-check.sh e2e cifar`.
set -u
PARTS="$*"
want() { [ -z "$PARTS" ] || [[ " $PARTS " == *" $1 "* ]]; }
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="${OUT:-$HERE/out}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

# CUDA libraries: PyTorch's wheels first (site-packages/nvidia/*/lib), then a toolkit.
PY="$(command -v python3 || command -v python || true)"
LIBS=""
if [ -n "$PY" ]; then
  SITE="$("$PY" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null || true)"
  if [ -n "$SITE" ] && [ -d "$SITE/nvidia" ]; then
    for d in "$SITE"/nvidia/*/lib; do LIBS="$LIBS:$d"; done
  fi
fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && LIBS="$LIBS:$d"
done
export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
note "libraries: ${LIBS#:}"
note "card: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'none (nvidia-smi found no GPU)')"
if [ -n "$PY" ]; then
  note "pytorch: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>/dev/null || echo 'not importable')"
fi

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit into $OUT/NAME.log and adds
# one summary line. A test binary that found no GPU prints "skipped: no CUDA device": that is
# a skip, never a pass.
step() {
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS status
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  status=$?
  local secs=$((SECONDS - t0))
  if [ "$status" -eq 124 ]; then
    note "TIMEOUT $name (${limit} s)"
  elif [ "$status" -eq 127 ]; then
    note "MISSING $name: $1 not found"
  elif [ "$status" -ne 0 ]; then
    note "FAIL    $name (exit $status, ${secs} s): $(tail -n 3 "$OUT/$name.log" | tr '\n' ' ')"
  elif grep -q "skipped: no CUDA device\|skipped GPU head benchmark" "$OUT/$name.log"; then
    note "SKIP    $name (no CUDA device, ${secs} s)"
  else
    note "PASS    $name (${secs} s)"
  fi
}

"#;

/// The training step, ours and PyTorch's eager one, in three interleaved rounds on the card.
const BENCH_ROUNDS: &str = r#"for r in 1 2 3; do
  step "bench-lucir-resnet32-r$r" 120 "$HERE/bin-lucir-driver" bench --device cuda --model resnet32 --input 3x32x32 --batch 128 --steps 50
  if [ -n "$PY" ]; then
    step "pytorch-resnet32-eager-r$r" 120 "$PY" "$REPO/benches/reference/pytorch_train_step.py" --model resnet32 --input 3x32x32 --device cuda --steps 50
  fi
done
"#;

const SCRIPT_TAIL: &str = r#"if want e2e && [ -d "$HERE/fashion-mnist" ]; then
  step "fmnist-quick-gpu-seed1993" 240 "$HERE/bin-lucir-driver" --device cuda --data-dir "$HERE/fashion-mnist" --out "$OUT/runs/seed-1993" --quiet
  step "fmnist-quick-gpu-seeds" 300 "$HERE/bin-lucir-driver" --device cuda --data-dir "$HERE/fashion-mnist" --seeds 1994..2000 --out "$OUT/runs/seeds" --quiet
elif want e2e; then
  note "SKIP    fmnist-quick (no Fashion-MNIST beside the script)"
fi
if want e2e && [ -n "$PY" ]; then
  step "pytorch-resnet32-compiled" 300 "$PY" "$REPO/benches/reference/pytorch_train_step.py" --model resnet32 --input 3x32x32 --device cuda --steps 50 --compile
fi
# The paper's CIFAR-100 protocol on synthetic data in the CIFAR-100 binary layout, one epoch a
# phase: results.json gives each phase's training seconds, ×160 the paper's schedule.
if want cifar && [ -n "$PY" ]; then
  CIFAR="${TMPDIR:-/tmp}/lucir-cifar100-synthetic"
  step cifar100-synthetic-data 120 "$PY" -c '
import os, sys, numpy as np
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(1993)
for name, n in (("train.bin", 50000), ("test.bin", 10000)):
    fine = np.repeat(np.arange(100, dtype=np.uint8), n // 100); rng.shuffle(fine)
    rec = np.empty((n, 3074), np.uint8)
    rec[:, 0] = fine // 5; rec[:, 1] = fine
    rec[:, 2:] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    rec.tofile(os.path.join(d, name))
' "$CIFAR"
  step cifar100-b50-inc10-one-epoch-a-phase 500 "$HERE/bin-lucir-driver" --preset cifar100-b50-inc10 --device cuda --data-dir "$CIFAR" --epochs 1 --out "$OUT/runs/cifar100-one-epoch" --quiet
  grep -h '"train_seconds"' "$OUT"/runs/cifar100-one-epoch/results.json >> "$SUMMARY" 2>/dev/null || true
elif want cifar; then
  note "SKIP    cifar100 (no python3 with numpy to write the data)"
fi
note "done: $OUT"
grep -h '^{' "$OUT"/bench-lucir-*.log "$OUT"/pytorch-*.log >> "$SUMMARY" 2>/dev/null || true
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_runs_each_binary_as_a_step() {
        let s = super::script_text(&["test-a".into()], &["bench-b".into()]);
        assert!(s.contains("step test-test-a 240 \"$HERE/test-a\""));
        assert!(s.contains("bench --device cuda"));
        assert!(s.contains("if want e2e"));
        assert!(s.contains("--preset cifar100-b50-inc10 --device cuda"));
        assert!(s.contains("compute-sanitizer --tool memcheck"));
        assert!(s.contains("step bench-bench-b"));
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
    }
}
